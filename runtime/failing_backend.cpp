#include "runtime/failing_backend.h"

#include <string>

#include "runtime/error.h"

namespace kvactor {

failing_backend::failing_backend(std::shared_ptr<backend> inner, int64_t fail_at)
    : inner_(std::move(inner)), fail_at_(fail_at) {}

void failing_backend::forward(const forward_batch& batch, std::vector<float>& logits) {
  if (++passes_ == fail_at_)
    throw error("forward pass " + std::to_string(fail_at_) + " failed on purpose (KVACTOR_FAULT_STEP)");
  inner_->forward(batch, logits);
}

} // namespace kvactor
