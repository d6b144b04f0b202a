#include "gpu/cuda_backend.h"

#include "gpu/cuda_check.h"

namespace kvactor {

cuda_backend::cuda_backend(model_config config, const std::vector<weight_view>& weights, int32_t num_pages,
                           int32_t page_size, cuda_executor_options options)
    : cuda_backend(std::make_shared<cuda_model>(std::move(config), weights, num_pages, page_size), options) {}

cuda_backend::cuda_backend(model_config config, const model_weights& weights, int32_t num_pages, int32_t page_size,
                           cuda_executor_options options)
    : cuda_backend(std::make_shared<cuda_model>(std::move(config), weights, num_pages, page_size), options) {}

cuda_backend::cuda_backend(std::shared_ptr<cuda_model> model, cuda_executor_options options)
    : model_(std::move(model)), options_(options), executor_(model_, nullptr, options) {}

// NOTE: each call may come from another thread (the engine's executors are
// threads of their own), and the current device is per thread.
void cuda_backend::forward(const forward_batch& batch, std::vector<float>& logits) {
  KVACTOR_CUDA_CHECK(cudaSetDevice(model_->device()));
  executor_.forward(batch, logits);
}

bool cuda_backend::forward_and_sample(const forward_batch& batch, std::span<const sampling_params> params,
                                      std::span<const std::span<const int32_t>> histories,
                                      std::span<const uint64_t> counters, std::vector<int32_t>& tokens) {
  KVACTOR_CUDA_CHECK(cudaSetDevice(model_->device()));
  executor_.forward_and_sample(batch, params, histories, counters, tokens);
  return true;
}

std::shared_ptr<backend> cuda_backend::make_stream() {
  KVACTOR_CUDA_CHECK(cudaSetDevice(model_->device()));
  auto stream = std::make_shared<cuda_backend>(model_, options_);
  if (options_.use_graphs) stream->executor().capture_decode_graphs();
  return stream;
}

std::unique_ptr<cuda_backend> load_cuda_backend(const std::string& dir, int32_t num_pages, int32_t page_size,
                                                cuda_executor_options options) {
  return std::make_unique<cuda_backend>(load_cuda_model(dir, num_pages, page_size), options);
}

} // namespace kvactor
