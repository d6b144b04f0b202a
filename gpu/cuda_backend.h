#pragma once
// The CUDA backend: a Llama-family forward pass on one GPU (built for Hopper,
// sm_90a), as the engine's `backend`. It shares a cuda_model (weights and
// the paged KV cache) and owns one cuda_executor on a stream of its own;
// make_stream() gives another backend over the same model on another stream,
// for the engine's next executor. forward() returns once the logits are on
// the host; forward_and_sample() once the tokens are.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "gpu/cuda_executor.h"
#include "gpu/cuda_model.h"
#include "runtime/backend.h"
#include "runtime/model_loader.h"
#include "runtime/model_weights.h"
#include "runtime/sampler.h"

namespace kvactor {

class cuda_backend final : public backend {
 public:
  // From the tensors of a model directory (load_weight_views), converted to
  // bf16 on upload.
  cuda_backend(model_config config, const std::vector<weight_view>& weights, int32_t num_pages, int32_t page_size,
               cuda_executor_options options = {});
  // From fp32 weights, e.g. make_dummy_model's, converted to bf16 on upload.
  cuda_backend(model_config config, const model_weights& weights, int32_t num_pages, int32_t page_size,
               cuda_executor_options options = {});
  explicit cuda_backend(std::shared_ptr<cuda_model> model, cuda_executor_options options = {});

  const model_config& config() const override { return model_->config(); }
  const kv_layout& layout() const override { return model_->layout(); }
  void forward(const forward_batch& batch, std::vector<float>& logits) override;
  // Yes: the kernels never read keys behind a token's window, and the step's
  // plan checks that no page it attends to was released.
  bool accepts_released_pages() const override { return true; }
  // cuda_executor::forward_and_sample: only token ids cross to the host.
  // Always true.
  bool forward_and_sample(const forward_batch& batch, std::span<const sampling_params> params,
                          std::span<const std::span<const int32_t>> histories, std::span<const uint64_t> counters,
                          std::vector<int32_t>& tokens) override;
  // A cuda_backend over the same model on a new stream, with this one's
  // options and, when they use graphs, its decode graphs captured
  // (cuda_executor::capture_decode_graphs).
  // note: call before the KV cache holds anything.
  std::shared_ptr<backend> make_stream() override;

  const std::shared_ptr<cuda_model>& model() const { return model_; }
  cuda_executor& executor() { return executor_; }

 private:
  std::shared_ptr<cuda_model> model_;
  cuda_executor_options options_;
  cuda_executor executor_;
};

// A backend for the model directory `dir` (config.json, generation_config.json
// and the safetensors files). Throws load_error / kvactor::error.
std::unique_ptr<cuda_backend> load_cuda_backend(const std::string& dir, int32_t num_pages, int32_t page_size,
                                                cuda_executor_options options = {});

} // namespace kvactor
