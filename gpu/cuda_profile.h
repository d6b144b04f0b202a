#pragma once
// `kvactor profile --device cuda`: the KV memory profile (runtime/kv_profile.h)
// on the GPU. Each row gets a cuda_model with a KV cache of its own over
// weights uploaded once, and a cuda_backend (executor scratch, decode
// graphs); the meter reads the device's memory in use.
#include <memory>

#include "gpu/device_weights.h"
#include "runtime/kv_profile.h"

namespace kvactor {

// Device memory in use (cudaMemGetInfo: total - free) on the current
// device. The peak is the largest use seen by current(), which the profile
// calls after every step: the backend allocates nothing that it frees again
// within a step, so nothing escapes it.
class device_memory_meter final : public memory_meter {
 public:
  std::string name() const override { return "device"; }
  void reset_peak() override;
  int64_t current() override;
  int64_t peak() override;

 private:
  int64_t peak_ = 0;
};

// A cuda_backend over `weights` storing `format` (bf16, fp8, int8).
profile_backend_factory cuda_profile_backend(const model_config& config,
                                             std::shared_ptr<const gpu::device_weights> weights, kv_format format);

} // namespace kvactor
