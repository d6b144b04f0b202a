#pragma once
// One forward step as the engine runs it: the batch for the backend plus, for
// every sequence that wants logits, how to sample its next token. The
// scheduler builds it; an executor runs it with run_step().
#include <cstdint>
#include <span>
#include <vector>

#include "runtime/backend.h"
#include "runtime/forward_batch.h"
#include "runtime/kv_step.h"
#include "runtime/page_pool.h"
#include "runtime/sampler.h"

namespace kvactor {

// How to sample one token.
struct step_row {
  sampling_params sampling;
  uint64_t counter = 0; // index of the token in its request's output
  // The request's prompt and output so far; set only when the repetition
  // penalty needs it.
  token_list history;
};

struct engine_step {
  uint64_t id = 0;            // 0 = nothing to run
  forward_batch batch;
  std::vector<seq_id> seqs;   // [batch.seqs.size()]
  std::vector<step_row> rows; // [batch.num_logits()], in batch order

  bool empty() const { return batch.seqs.empty(); }
};

// Samples one token per row from `logits` ([rows, vocab], as
// backend::forward leaves them; modified in place).
std::vector<int32_t> sample_step(const engine_step& step, std::span<float> logits, int32_t vocab);

// Runs the forward pass and samples. `logits` is scratch, reused across
// calls. Throws kvactor::error as backend::forward does.
std::vector<int32_t> run_step(backend& b, const engine_step& step, std::vector<float>& logits);

} // namespace kvactor
