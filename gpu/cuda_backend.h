#pragma once
// The CUDA backend: a Llama-family forward pass on one GPU (built for Hopper,
// sm_90a). Weights live on the device in bf16, the paged KV cache in bf16 in
// kv_layout's layout, allocated once. Each step flattens the batch's metadata
// into one pinned buffer and copies it over once; the projections are
// cuBLASLt GEMMs (bf16 in and out, fp32 accumulation); the residual stream,
// norms, RoPE and softmax are fp32.
//
// All work goes to the backend's own stream on the device that was current
// when it was constructed; forward() returns once the logits are on the host.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/model_loader.h"
#include "runtime/model_weights.h"

namespace kvactor {

class cuda_backend final : public backend {
 public:
  // From the tensors of a model directory (load_weight_views), converted to
  // bf16 on upload.
  cuda_backend(model_config config, const std::vector<weight_view>& weights, int32_t num_pages, int32_t page_size);
  // From fp32 weights, e.g. make_dummy_model's, converted to bf16 on upload.
  cuda_backend(model_config config, const model_weights& weights, int32_t num_pages, int32_t page_size);
  ~cuda_backend() override;

  const model_config& config() const override { return config_; }
  const kv_layout& layout() const override { return layout_; }
  void forward(const forward_batch& batch, std::vector<float>& logits) override;

 private:
  struct state;
  cuda_backend(model_config config, int32_t num_pages, int32_t page_size);
  void run_layer(int32_t layer);

  model_config config_;
  kv_layout layout_;
  std::unique_ptr<state> state_;
};

// A backend for the model directory `dir` (config.json, generation_config.json
// and the safetensors files). Throws load_error / kvactor::error.
std::unique_ptr<cuda_backend> load_cuda_backend(const std::string& dir, int32_t num_pages, int32_t page_size);

} // namespace kvactor
