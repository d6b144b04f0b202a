#pragma once
// What the executors of one GPU share: a Llama-family model's weights (bf16
// matrices, fp32 norms and biases) and the paged KV cache (kv_layout's
// layout; bf16, or fp8 / int8 with fp32 scales as runtime/kv_quant.h
// describes), both allocated once on the device that is current at
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
#include "gpu/paged_kv.h"
#include "runtime/kv_layout.h"
#include "runtime/kv_quant.h"
#include "runtime/model_config.h"
#include "runtime/model_loader.h"
#include "runtime/model_weights.h"

namespace kvactor {

class cuda_model {
 public:
  // From the tensors of a model directory (load_weight_views), converted to
  // bf16 on upload.
  // The KV cache stores `format`: bf16, fp8 or int8 (f32 is the CPU's).
  cuda_model(model_config config, const std::vector<weight_view>& weights, int32_t num_pages, int32_t page_size,
             kv_format format = kv_format::bf16);
  // From fp32 weights, e.g. make_dummy_model's, converted to bf16 on upload.
  cuda_model(model_config config, const model_weights& weights, int32_t num_pages, int32_t page_size,
             kv_format format = kv_format::bf16);
  // Random weights drawn on the device (gpu::random_weights): benchmarks of
  // full-size shapes without a checkpoint.
  static std::shared_ptr<cuda_model> random(model_config config, uint64_t seed, int32_t num_pages,
                                            int32_t page_size, kv_format format = kv_format::bf16);
  // Weights already on the device, and no KV cache yet: allocate_kv() makes
  // it once the executors' memory is known (gpu/cuda_engine.h). Models may
  // share weights (kvactor profile makes one cache after another).
  cuda_model(model_config config, gpu::device_weights weights, int32_t page_size,
             kv_format format = kv_format::bf16);
  cuda_model(model_config config, std::shared_ptr<const gpu::device_weights> weights, int32_t page_size,
             kv_format format = kv_format::bf16);
  cuda_model(const cuda_model&) = delete;
  cuda_model& operator=(const cuda_model&) = delete;

  const model_config& config() const { return config_; }
  const kv_layout& layout() const { return layout_; }
  const gpu::device_weights& weights() const { return *weights_; }
  const std::shared_ptr<const gpu::device_weights>& shared_weights() const { return weights_; }
  kv_format cache_format() const { return format_; }
  // [layers, 2, pages, page_size, kv_heads, head_dim] of cache_format()
  void* kv() const { return kv_.get(); }
  // kv_scale_count(layout(), cache_format()) floats; null for bf16
  float* kv_scales() const { return kv_scales_.get(); }
  // Layer `layer`'s K and V with their scales; the page tables are the
  // caller's to fill in.
  gpu::paged_kv_view kv_view(int32_t layer) const;
  // [head_dim / 2] RoPE frequencies
  const double* inv_freq() const { return inv_freq_.get(); }
  int device() const { return device_; }

  // Makes the KV cache of `num_pages` pages, NaN-poisoned. Executors made
  // before see it from their next step on.
  // note: call once, before any step runs.
  void allocate_kv(int32_t num_pages);
  // Bytes of one page: its K and V in every layer, elements and scales.
  size_t kv_page_bytes() const;

  // All parameters, the embedding table included.
  size_t parameter_count() const;
  // Bytes of the matrices one decode step reads in full: every layer's and
  // the lm_head (of the embedding table, one row per token).
  size_t decode_weight_bytes() const;

 private:
  // Checks the config and uploads the RoPE frequencies.
  cuda_model(model_config config, int32_t page_size, kv_format format);

  model_config config_;
  kv_layout layout_;
  kv_format format_;
  int device_ = 0;
  std::shared_ptr<const gpu::device_weights> weights_;
  gpu::device_buffer<uint8_t> kv_;
  gpu::device_buffer<float> kv_scales_;
  gpu::device_buffer<double> inv_freq_;
};

// The model of directory `dir` (config.json, generation_config.json and the
// safetensors files). Throws load_error / kvactor::error.
std::shared_ptr<cuda_model> load_cuda_model(const std::string& dir, int32_t num_pages, int32_t page_size,
                                            kv_format format = kv_format::bf16);

} // namespace kvactor
