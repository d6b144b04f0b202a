#include "runtime/engine_step.h"

#include <string>

#include "runtime/error.h"

namespace kvactor {

std::vector<int32_t> sample_step(const engine_step& step, std::span<float> logits, int32_t vocab) {
  const size_t width = size_t(vocab);
  if (logits.size() != step.rows.size() * width)
    throw error("sample_step: " + std::to_string(logits.size()) + " logits for " +
                std::to_string(step.rows.size()) + " rows of " + std::to_string(vocab));
  std::vector<int32_t> tokens;
  tokens.reserve(step.rows.size());
  for (size_t r = 0; r < step.rows.size(); ++r) {
    const step_row& row = step.rows[r];
    std::span<const int32_t> history;
    if (row.history) history = *row.history;
    tokens.push_back(sample_token(logits.subspan(r * width, width), row.sampling, history, row.counter));
  }
  return tokens;
}

std::vector<int32_t> run_step(backend& b, const engine_step& step, std::vector<float>& logits) {
  if (step.rows.size() != size_t(step.batch.num_logits()))
    throw error("run_step: " + std::to_string(step.rows.size()) + " sampling rows for " +
                std::to_string(step.batch.num_logits()) + " logit rows");
  b.forward(step.batch, logits); // [rows, vocab]
  return sample_step(step, logits, b.config().vocab_size);
}

} // namespace kvactor
