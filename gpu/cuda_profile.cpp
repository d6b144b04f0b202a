#include "gpu/cuda_profile.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "gpu/cuda_backend.h"
#include "gpu/cuda_check.h"

namespace kvactor {

void device_memory_meter::reset_peak() {
  peak_ = 0;
  current();
}

int64_t device_memory_meter::current() {
  KVACTOR_CUDA_CHECK(cudaDeviceSynchronize()); // work in flight has made what it makes
  size_t free = 0, total = 0;
  KVACTOR_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  const int64_t used = int64_t(total - free);
  peak_ = std::max(peak_, used);
  return used;
}

int64_t device_memory_meter::peak() {
  current();
  return peak_;
}

profile_backend_factory cuda_profile_backend(const model_config& config,
                                             std::shared_ptr<const gpu::device_weights> weights, kv_format format) {
  return [config, weights, format](int32_t num_pages, int32_t page_size) {
    auto model = std::make_shared<cuda_model>(config, weights, page_size, format);
    model->allocate_kv(num_pages);
    profiled_backend out;
    out.kv_element_bytes = int64_t(kv_element_bytes(model->layout(), format));
    out.kv_scale_bytes = int64_t(kv_scale_bytes(model->layout(), format));
    out.model = std::make_unique<cuda_backend>(model);
    return out;
  };
}

} // namespace kvactor
