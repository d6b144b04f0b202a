#include "runtime/null_backend.h"

#include <algorithm>
#include <string>

#include "runtime/error.h"

namespace kvactor {

null_backend::null_backend(model_config config, int32_t num_pages, int32_t page_size)
    : config_(std::move(config)),
      layout_{config_.num_layers, num_pages, page_size, config_.num_kv_heads, config_.head_dim} {
  if (config_.vocab_size <= 0 || num_pages <= 0 || page_size <= 0)
    throw error("null_backend: vocab_size, num_pages and page_size must be positive, got " +
                std::to_string(config_.vocab_size) + ", " + std::to_string(num_pages) + ", " +
                std::to_string(page_size));
}

void null_backend::forward(const forward_batch& batch, std::vector<float>& logits) {
  const size_t vocab = size_t(config_.vocab_size);
  logits.assign(size_t(batch.num_logits()) * vocab, 0.0f); // [rows, vocab]
  size_t row = 0;
  for (const seq_step& s : batch.seqs) {
    if (!s.want_logits) continue;
    const size_t last = size_t(s.start_pos) + s.tokens.size() - 1;
    logits[row * vocab + last % vocab] = 1.0f;
    ++row;
  }
}

} // namespace kvactor
