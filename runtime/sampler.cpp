#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "runtime/error.h"

namespace kvactor {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Lowest index wins ties, so greedy decoding is reproducible everywhere.
int32_t argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = int32_t(i);
  return best;
}

} // namespace

double sample_uniform(uint64_t seed, uint64_t counter) {
  uint64_t h = splitmix64(splitmix64(seed) ^ counter);
  return double(h >> 11) * 0x1.0p-53;
}

std::vector<int32_t> distinct_tokens(std::span<const int32_t> history, int32_t vocab) {
  std::vector<bool> seen(size_t(std::max(vocab, 0)));
  std::vector<int32_t> distinct;
  for (int32_t t : history) {
    if (t < 0 || t >= vocab)
      throw error("history token " + std::to_string(t) + " is outside the vocabulary of " +
                  std::to_string(vocab));
    if (seen[size_t(t)]) continue;
    seen[size_t(t)] = true;
    distinct.push_back(t);
  }
  return distinct;
}

// HF's RepetitionPenaltyLogitsProcessor: each distinct token seen once.
void apply_repetition_penalty(std::span<float> logits, float penalty, std::span<const int32_t> history) {
  for (int32_t t : distinct_tokens(history, int32_t(logits.size()))) {
    float& l = logits[size_t(t)];
    l = l > 0 ? l / penalty : l * penalty;
  }
}

int32_t sample_token(std::span<float> logits, const sampling_params& p,
                     std::span<const int32_t> history, uint64_t counter) {
  if (logits.empty()) throw error("sample_token: empty logits");
  if (p.repetition_penalty <= 0) throw error("sample_token: repetition_penalty must be > 0");
  if (p.temperature < 0) throw error("sample_token: temperature must be >= 0");
  if (p.repetition_penalty != 1.0f) apply_repetition_penalty(logits, p.repetition_penalty, history);
  if (p.temperature == 0) return argmax(logits);

  const int32_t vocab = int32_t(logits.size());
  for (float& l : logits) l /= p.temperature;
  const float max_logit = logits[argmax(logits)];
  std::vector<double> prob(vocab); // [vocab], unnormalised
  for (int32_t i = 0; i < vocab; ++i) prob[i] = std::exp(double(logits[i] - max_logit));

  // Candidates by descending probability, lower index first among equals.
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  auto by_prob = [&](int32_t a, int32_t b) { return prob[a] > prob[b] || (prob[a] == prob[b] && a < b); };
  int32_t kept = vocab;
  if (p.top_k > 0 && p.top_k < vocab) {
    kept = p.top_k;
    std::partial_sort(order.begin(), order.begin() + kept, order.end(), by_prob);
  } else if (p.top_p < 1.0f || p.min_p > 0.0f) {
    std::sort(order.begin(), order.end(), by_prob);
  }
  if (p.top_p < 1.0f) {
    double total = 0;
    for (int32_t i = 0; i < kept; ++i) total += prob[order[i]];
    double cum = 0;
    int32_t n = 0;
    while (n < kept) {
      cum += prob[order[n++]];
      if (cum >= p.top_p * total) break;
    }
    kept = n;
  }
  if (p.min_p > 0.0f) {
    // The most likely token has unnormalised probability 1.
    int32_t n = 1;
    while (n < kept && prob[order[n]] >= p.min_p) ++n;
    kept = n;
  }

  // Inverse CDF over the kept tokens in index order, so the token a given
  // uniform number selects does not depend on how the candidates were sorted.
  std::vector<int32_t> pick(order.begin(), order.begin() + kept);
  std::sort(pick.begin(), pick.end());
  double total = 0;
  for (int32_t t : pick) total += prob[t];
  const double target = sample_uniform(p.seed, counter) * total;
  double cum = 0;
  for (int32_t t : pick) {
    cum += prob[t];
    if (target < cum) return t;
  }
  return pick.back();
}

} // namespace kvactor
