#pragma once
// A test hook, not a feature: a backend that passes every step to another
// one, except that its Nth forward pass throws. kvactord installs it when
// KVACTOR_FAULT_STEP=N is set, so that tests can watch the engine survive a
// failing step (docs/reliability.md); without the variable it is not there
// at all, so it costs the normal path nothing.
#include <atomic>
#include <cstdint>
#include <memory>

#include "runtime/backend.h"

namespace kvactor {

class failing_backend final : public backend {
 public:
  // Forward pass number `fail_at` (1 = the first) throws kvactor::error;
  // passes before and after it run on `inner`.
  failing_backend(std::shared_ptr<backend> inner, int64_t fail_at);

  const model_config& config() const override { return inner_->config(); }
  const kv_layout& layout() const override { return inner_->layout(); }
  void forward(const forward_batch& batch, std::vector<float>& logits) override;
  bool accepts_released_pages() const override { return inner_->accepts_released_pages(); }
  // NOTE: forward_and_sample and make_stream keep their defaults, so every
  // step comes through forward() and is counted once.

 private:
  std::shared_ptr<backend> inner_;
  const int64_t fail_at_;
  std::atomic<int64_t> passes_{0};
};

} // namespace kvactor
