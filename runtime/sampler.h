#pragma once
// Token sampling from one row of logits. Randomness comes from a counter-based
// generator keyed by (seed, index of the token in its request), so a request's
// output depends on its own seed alone, never on what it was batched with.
#include <cstdint>
#include <span>
#include <vector>

namespace kvactor {

struct sampling_params {
  float temperature = 1.0f; // 0 = greedy
  float top_p = 1.0f;       // 1 = off
  int32_t top_k = 0;        // 0 = off
  float min_p = 0.0f;       // 0 = off
  float repetition_penalty = 1.0f; // 1 = off; HF's rule on prompt + output tokens
  uint64_t seed = 0;
};

// A uniform number in [0, 1) from (seed, counter); the same on every backend.
double sample_uniform(uint64_t seed, uint64_t counter);

// The distinct tokens of `history` in first-seen order: the logits the
// repetition penalty changes, each once. Throws kvactor::error on a token
// outside [0, vocab).
std::vector<int32_t> distinct_tokens(std::span<const int32_t> history, int32_t vocab);

// Hugging Face's repetition penalty, as sample_token applies it first: the
// logit of each distinct token of `history` divided by `penalty` if
// positive, else multiplied by it.
void apply_repetition_penalty(std::span<float> logits, float penalty, std::span<const int32_t> history);

// Picks a token. `history` is the request's prompt and output so far (for the
// repetition penalty); `counter` is the index of the token being produced.
// `logits` is modified in place (penalty, temperature).
int32_t sample_token(std::span<float> logits, const sampling_params& p,
                     std::span<const int32_t> history, uint64_t counter);

} // namespace kvactor
