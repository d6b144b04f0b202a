#pragma once
// What the executors of one GPU share: a Llama-family model's weights (bf16
// matrices, fp32 norms and biases) and the paged KV cache (bf16, kv_layout's
// layout), both allocated once on the device that is current at
// construction (the KV cache there too, or later by allocate_kv once the
// executors' memory is known). Executors (gpu/cuda_executor.h), one per
// stream, read the weights and write the KV pages of the sequences they
// run; the caller keeps two executors from writing the same page at the
// same time.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gpu/device_buffer.h"
#include "gpu/device_weights.h"
#include "runtime/kv_layout.h"
#include "runtime/model_config.h"
#include "runtime/model_loader.h"
#include "runtime/model_weights.h"

namespace kvactor {

class cuda_model {
 public:
  // From the tensors of a model directory (load_weight_views), converted to
  // bf16 on upload.
  cuda_model(model_config config, const std::vector<weight_view>& weights, int32_t num_pages, int32_t page_size);
  // From fp32 weights, e.g. make_dummy_model's, converted to bf16 on upload.
  cuda_model(model_config config, const model_weights& weights, int32_t num_pages, int32_t page_size);
  // Random weights drawn on the device (gpu::random_weights): benchmarks of
  // full-size shapes without a checkpoint.
  static std::shared_ptr<cuda_model> random(model_config config, uint64_t seed, int32_t num_pages,
                                            int32_t page_size);
  // Weights already on the device, and no KV cache yet: allocate_kv() makes
  // it once the executors' memory is known (gpu/cuda_engine.h).
  cuda_model(model_config config, gpu::device_weights weights, int32_t page_size);
  cuda_model(const cuda_model&) = delete;
  cuda_model& operator=(const cuda_model&) = delete;

  const model_config& config() const { return config_; }
  const kv_layout& layout() const { return layout_; }
  const gpu::device_weights& weights() const { return weights_; }
  // [layers, 2, pages, page_size, kv_heads, head_dim]
  gpu::bf16* kv() const { return kv_.get(); }
  // [head_dim / 2] RoPE frequencies
  const double* inv_freq() const { return inv_freq_.get(); }
  int device() const { return device_; }

  // Makes the KV cache of `num_pages` pages, NaN-poisoned. Executors made
  // before see it from their next step on.
  // note: call once, before any step runs.
  void allocate_kv(int32_t num_pages);
  // Bytes of one page: its K and V in every layer.
  size_t kv_page_bytes() const;

  // All parameters, the embedding table included.
  size_t parameter_count() const;
  // Bytes of the matrices one decode step reads in full: every layer's and
  // the lm_head (of the embedding table, one row per token).
  size_t decode_weight_bytes() const;

 private:
  // Checks the config and uploads the RoPE frequencies.
  cuda_model(model_config config, int32_t page_size);

  model_config config_;
  kv_layout layout_;
  int device_ = 0;
  gpu::device_weights weights_;
  gpu::device_buffer<gpu::bf16> kv_;
  gpu::device_buffer<double> inv_freq_;
};

// The model of directory `dir` (config.json, generation_config.json and the
// safetensors files). Throws load_error / kvactor::error.
std::shared_ptr<cuda_model> load_cuda_model(const std::string& dir, int32_t num_pages, int32_t page_size);

} // namespace kvactor
