#pragma once
// A backend that computes nothing: every logits row is the same fixed vector,
// returned at once. It measures what the engine costs around the model
// (scheduling, KV bookkeeping, messaging, sampling) and nothing else.
#include <cstdint>
#include <vector>

#include "runtime/backend.h"

namespace kvactor {

class null_backend final : public backend {
 public:
  // Logits favour token (position of the row's last token) % vocab_size, so
  // greedy output is a predictable count. Throws kvactor::error unless
  // config.vocab_size, num_pages and page_size are positive.
  null_backend(model_config config, int32_t num_pages, int32_t page_size);

  const model_config& config() const override { return config_; }
  const kv_layout& layout() const override { return layout_; }
  void forward(const forward_batch& batch, std::vector<float>& logits) override;

 private:
  model_config config_;
  kv_layout layout_;
};

} // namespace kvactor
