#include "gpu/cuda_model.h"

#include <algorithm>

#include "gpu/cuda_check.h"
#include "gpu/decode_attention.h"
#include "gpu/flash_attention.h"
#include "gpu/paged_attention.h"
#include "gpu/rms_norm.h"
#include "runtime/rope.h"
#include "runtime/error.h"

namespace kvactor {

using gpu::bf16;
using gpu::device_buffer;

cuda_model::cuda_model(model_config config, int32_t page_size, kv_format format)
    : config_(std::move(config)), format_(format) {
  const model_config& c = config_;
  const auto fail = [](const std::string& what) { throw error("cuda_backend: " + what); };
  if (page_size <= 0) fail("page_size must be positive, got " + std::to_string(page_size));
  if (c.num_heads <= 0 || c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0)
    fail("num_heads " + std::to_string(c.num_heads) + " is not a multiple of num_kv_heads " +
         std::to_string(c.num_kv_heads));
  if (!gpu::paged_attention_supports(c.head_dim))
    fail("head_dim " + std::to_string(c.head_dim) + " has no attention kernel (supported: 16, 32, 64, 128, 256)");
  // NOTE: activations move in 16-byte vectors of 8 bf16.
  if (c.hidden_size % 8 != 0 || c.intermediate_size % 8 != 0 || c.hidden_size > gpu::rms_norm_max_hidden)
    fail("hidden_size " + std::to_string(c.hidden_size) + " and intermediate_size " +
         std::to_string(c.intermediate_size) + " must be multiples of 8, hidden_size at most " +
         std::to_string(gpu::rms_norm_max_hidden));
  if (c.sliding_window > 0 && int32_t(c.layer_sliding.size()) != c.num_layers)
    fail("layer_sliding has " + std::to_string(c.layer_sliding.size()) + " entries for " +
         std::to_string(c.num_layers) + " layers");
  const std::vector<double> inv_freq = rope_inv_freq(c);
  const int32_t group = c.num_heads / c.num_kv_heads;
  if (format == kv_format::f32)
    fail("the GPU stores KV as bf16, fp8 or int8, not f32");
  // NOTE: 8-bit caches are read by the tensor-core and decode kernels only.
  if (kv_is_quantized(format) && !gpu::flash_attention_supports(c.head_dim, group))
    fail(std::string(kv_format_name(format)) + " KV needs head_dim 16, 32, 64 or 128 with at most 64 q heads per kv "
         "head, got head_dim " + std::to_string(c.head_dim) + " and " + std::to_string(group));

  // The general attention kernel (any group size) must fit in shared memory.
  const int32_t rows = std::max(1, gpu::attention_tile_rows / group) * group;
  const size_t smem = gpu::paged_attention_smem_bytes(c.head_dim, rows);
  int smem_limit = 0;
  KVACTOR_CUDA_CHECK(cudaGetDevice(&device_));
  KVACTOR_CUDA_CHECK(cudaDeviceGetAttribute(&smem_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_));
  if (smem > size_t(smem_limit))
    fail("attention for " + std::to_string(group) + " q heads per kv head of head_dim " +
         std::to_string(c.head_dim) + " needs " + std::to_string(smem) + " bytes of shared memory, the device has " +
         std::to_string(smem_limit));

  layout_ = kv_layout{c.num_layers, 0, page_size, c.num_kv_heads, c.head_dim};
  inv_freq_ = device_buffer<double>(inv_freq.size());
  KVACTOR_CUDA_CHECK(
      cudaMemcpy(inv_freq_.get(), inv_freq.data(), inv_freq.size() * sizeof(double), cudaMemcpyHostToDevice));
}

cuda_model::cuda_model(model_config config, const std::vector<weight_view>& weights, int32_t num_pages,
                       int32_t page_size, kv_format format)
    : cuda_model(std::move(config), page_size, format) {
  allocate_kv(num_pages);
  weights_ = std::make_shared<gpu::device_weights>(gpu::upload_weights(config_, gpu::host_tensors(weights)));
  // NOTE: a copy from pageable memory may still be in flight when cudaMemcpy
  // returns, and the executors' streams do not wait for the default one.
  KVACTOR_CUDA_CHECK(cudaDeviceSynchronize());
}

cuda_model::cuda_model(model_config config, const model_weights& weights, int32_t num_pages, int32_t page_size,
                       kv_format format)
    : cuda_model(std::move(config), page_size, format) {
  allocate_kv(num_pages);
  weights_ = std::make_shared<gpu::device_weights>(gpu::upload_weights(config_, gpu::host_tensors(weights, config_)));
  KVACTOR_CUDA_CHECK(cudaDeviceSynchronize()); // as above
}

cuda_model::cuda_model(model_config config, gpu::device_weights weights, int32_t page_size, kv_format format)
    : cuda_model(std::move(config), std::make_shared<const gpu::device_weights>(std::move(weights)), page_size,
                 format) {}

cuda_model::cuda_model(model_config config, std::shared_ptr<const gpu::device_weights> weights, int32_t page_size,
                       kv_format format)
    : cuda_model(std::move(config), page_size, format) {
  weights_ = std::move(weights);
  KVACTOR_CUDA_CHECK(cudaDeviceSynchronize()); // as above
}

std::shared_ptr<cuda_model> cuda_model::random(model_config config, uint64_t seed, int32_t num_pages,
                                               int32_t page_size, kv_format format) {
  std::shared_ptr<cuda_model> m(new cuda_model(std::move(config), page_size, format));
  m->allocate_kv(num_pages);
  m->weights_ = std::make_shared<const gpu::device_weights>(gpu::random_weights(m->config_, seed));
  return m;
}

void cuda_model::allocate_kv(int32_t num_pages) {
  if (!kv_.empty()) throw error("cuda_backend: the KV cache is already allocated");
  if (num_pages <= 0) throw error("cuda_backend: num_pages must be positive, got " + std::to_string(num_pages));
  kv_layout layout = layout_;
  layout.num_pages = num_pages;
  try {
    kv_ = device_buffer<uint8_t>(kv_element_bytes(layout, format_));
    if (kv_is_quantized(format_)) kv_scales_ = device_buffer<float>(kv_scale_count(layout, format_));
  } catch (const error& e) {
    throw error("cuda_backend: cannot allocate the KV cache of " + std::to_string(num_pages) + " pages (" +
                std::to_string((kv_element_bytes(layout, format_) + kv_scale_bytes(layout, format_)) >> 20) +
                " MiB): " + e.what());
  }
  layout_ = layout;
  // NOTE: the cache starts as NaN (0xff is NaN in bf16, fp8 and the fp32
  // scales): a slot read before any step wrote it poisons the logits
  // instead of passing as zeros.
  kv_.poison(nullptr);
  if (!kv_scales_.empty()) kv_scales_.poison(nullptr);
  KVACTOR_CUDA_CHECK(cudaDeviceSynchronize());
}

gpu::paged_kv_view cuda_model::kv_view(int32_t layer) const {
  gpu::paged_kv_view v;
  const size_t element = kv_element_size(format_);
  v.k = kv_.get() + layout_.offset(layer, 0, 0, 0) * element;
  v.v = kv_.get() + layout_.offset(layer, 1, 0, 0) * element;
  if (kv_is_quantized(format_)) {
    v.k_scale = kv_scales_.get() + kv_scale_index(layout_, format_, layer, 0, 0, 0, 0);
    v.v_scale = kv_scales_.get() + kv_scale_index(layout_, format_, layer, 1, 0, 0, 0);
  }
  v.page_size = layout_.page_size;
  v.num_kv_heads = layout_.num_kv_heads;
  v.head_dim = layout_.head_dim;
  v.format = format_;
  return v;
}

size_t cuda_model::kv_page_bytes() const {
  return kv_page_element_bytes(layout_, format_) + kv_page_scale_bytes(layout_, format_);
}

size_t cuda_model::parameter_count() const {
  const model_config& c = config_;
  const size_t h = size_t(c.hidden_size), qkv = size_t(c.q_dim() + 2 * c.kv_dim());
  size_t layer = qkv * h + h * size_t(c.q_dim()) + 3 * h * size_t(c.intermediate_size) + 2 * h;
  if (c.attention_bias) layer += qkv;
  if (c.qk_norm) layer += 2 * size_t(c.head_dim);
  const size_t table = size_t(c.vocab_size) * h;
  return table + size_t(c.num_layers) * layer + h + (c.tie_word_embeddings ? 0 : table);
}

size_t cuda_model::decode_weight_bytes() const {
  const model_config& c = config_;
  const size_t h = size_t(c.hidden_size);
  const size_t layer = size_t(c.q_dim() + 2 * c.kv_dim()) * h + h * size_t(c.q_dim()) + 3 * h * size_t(c.intermediate_size);
  return sizeof(bf16) * (size_t(c.num_layers) * layer + size_t(c.vocab_size) * h);
}

std::shared_ptr<cuda_model> load_cuda_model(const std::string& dir, int32_t num_pages, int32_t page_size,
                                            kv_format format) {
  model_config config = load_model_dir_config(dir);
  const std::vector<weight_view> views = load_weight_views(dir, config);
  return std::make_shared<cuda_model>(std::move(config), views, num_pages, page_size, format);
}

} // namespace kvactor
