#include "gpu/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "gpu/batch_plan.h"
#include "gpu/cuda_check.h"
#include "gpu/device_buffer.h"
#include "gpu/device_weights.h"
#include "gpu/embedding.h"
#include "gpu/gemm.h"
#include "gpu/paged_attention.h"
#include "gpu/rms_norm.h"
#include "gpu/rope.h"
#include "gpu/rope_kv.h"
#include "gpu/silu_mul.h"
#include "runtime/error.h"

namespace kvactor {

using gpu::bf16;
using gpu::device_buffer;
using gpu::pinned_buffer;

namespace {

// Scratch grows in steps of this many tokens, so a run of slightly longer
// batches does not reallocate every time.
constexpr int64_t token_granule = 64;

int64_t round_up(int64_t n, int64_t granule) { return (n + granule - 1) / granule * granule; }

} // namespace

// ---- device state -----------------------------------------------------------

struct cuda_backend::state {
  explicit state(const model_config& c) : gemm(stream.get()), config(c) {}

  // Grows the per-step buffers to fit `plan`; new ones start poisoned.
  void reserve(const gpu::batch_plan& plan);

  gpu::cuda_stream stream;
  gpu::gemm_runner gemm;
  const model_config& config;
  gpu::device_weights weights;
  device_buffer<bf16> kv;           // kv_layout: [layers, 2, pages, page_size, kv_heads, head_dim]
  device_buffer<double> inv_freq;   // [head_dim / 2]
  int32_t tile_tokens = 1;          // query tokens per attention tile

  // The current step's metadata: built on the host, copied over at once.
  gpu::batch_plan plan;
  pinned_buffer<int32_t> meta_host; // [plan.data.size()] at least
  device_buffer<int32_t> meta;      // [plan.data.size()] at least

  // Activations, for up to token_capacity tokens.
  int64_t token_capacity = 0;
  device_buffer<float> residual; // [tokens, hidden] the residual stream
  device_buffer<bf16> normed;    // [tokens, hidden] normed input of a block
  device_buffer<bf16> qkv;       // [tokens, q_dim + 2 kv_dim]
  device_buffer<bf16> q;         // [tokens, num_heads, head_dim] roped
  device_buffer<bf16> attn;      // [tokens, num_heads, head_dim]
  device_buffer<bf16> proj;      // [tokens, hidden] output of o_proj / down_proj
  device_buffer<bf16> gate_up;   // [tokens, 2 intermediate]
  device_buffer<bf16> act;       // [tokens, intermediate]

  // The logits rows, for up to logit_capacity of them.
  int64_t logit_capacity = 0;
  device_buffer<bf16> final_normed;  // [rows, hidden]
  device_buffer<float> logits;       // [rows, vocab]
  pinned_buffer<float> logits_host;  // [rows, vocab]

  const int32_t* meta_at(size_t offset) const { return meta.get() + offset; }
};

void cuda_backend::state::reserve(const gpu::batch_plan& p) {
  const model_config& c = config;
  const cudaStream_t s = stream.get();
  if (p.data.size() > meta.size()) {
    meta = device_buffer<int32_t>(p.data.size());
    meta_host = pinned_buffer<int32_t>(p.data.size());
  }
  if (p.num_tokens > token_capacity) {
    const int64_t n = round_up(p.num_tokens, token_granule);
    const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
    residual = device_buffer<float>(size_t(n * h));
    normed = device_buffer<bf16>(size_t(n * h));
    qkv = device_buffer<bf16>(size_t(n * (qd + 2 * kvd)));
    q = device_buffer<bf16>(size_t(n * qd));
    attn = device_buffer<bf16>(size_t(n * qd));
    proj = device_buffer<bf16>(size_t(n * h));
    gate_up = device_buffer<bf16>(size_t(n * 2 * inter));
    act = device_buffer<bf16>(size_t(n * inter));
    residual.poison(s);
    normed.poison(s);
    qkv.poison(s);
    q.poison(s);
    attn.poison(s);
    proj.poison(s);
    gate_up.poison(s);
    act.poison(s);
    token_capacity = n;
  }
  if (p.num_logits > logit_capacity) {
    const int64_t n = round_up(p.num_logits, token_granule);
    final_normed = device_buffer<bf16>(size_t(n * c.hidden_size));
    logits = device_buffer<float>(size_t(n * c.vocab_size));
    logits_host = pinned_buffer<float>(size_t(n * c.vocab_size));
    final_normed.poison(s);
    logits.poison(s);
    logit_capacity = n;
  }
}

// ---- construction -----------------------------------------------------------

cuda_backend::cuda_backend(model_config config, int32_t num_pages, int32_t page_size)
    : config_(std::move(config)) {
  const model_config& c = config_;
  if (num_pages <= 0 || page_size <= 0)
    throw error("cuda_backend: num_pages and page_size must be positive, got " + std::to_string(num_pages) +
                " and " + std::to_string(page_size));
  if (c.num_heads <= 0 || c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0)
    throw error("cuda_backend: num_heads " + std::to_string(c.num_heads) + " is not a multiple of num_kv_heads " +
                std::to_string(c.num_kv_heads));
  if (!gpu::paged_attention_supports(c.head_dim))
    throw error("cuda_backend: head_dim " + std::to_string(c.head_dim) +
                " has no attention kernel (supported: 16, 32, 64, 128, 256)");
  if (c.sliding_window > 0 && int32_t(c.layer_sliding.size()) != c.num_layers)
    throw error("cuda_backend: layer_sliding has " + std::to_string(c.layer_sliding.size()) + " entries for " +
                std::to_string(c.num_layers) + " layers");
  const std::vector<double> inv_freq = gpu::rope_inv_freq(c);

  const int32_t group = c.num_heads / c.num_kv_heads;
  const int32_t tile_tokens = std::max(1, gpu::attention_tile_rows / group);
  const size_t smem = gpu::paged_attention_smem_bytes(c.head_dim, tile_tokens * group);
  int device = 0, smem_limit = 0;
  KVACTOR_CUDA_CHECK(cudaGetDevice(&device));
  KVACTOR_CUDA_CHECK(cudaDeviceGetAttribute(&smem_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (smem > size_t(smem_limit))
    throw error("cuda_backend: attention for " + std::to_string(group) + " q heads per kv head of head_dim " +
                std::to_string(c.head_dim) + " needs " + std::to_string(smem) + " bytes of shared memory, the device has " +
                std::to_string(smem_limit));

  layout_ = kv_layout{c.num_layers, num_pages, page_size, c.num_kv_heads, c.head_dim};
  state_ = std::make_unique<state>(config_);
  state& s = *state_;
  s.tile_tokens = tile_tokens;
  s.inv_freq = device_buffer<double>(inv_freq.size());
  KVACTOR_CUDA_CHECK(
      cudaMemcpy(s.inv_freq.get(), inv_freq.data(), inv_freq.size() * sizeof(double), cudaMemcpyHostToDevice));
  const size_t kv_bytes = layout_.total_elems() * sizeof(bf16);
  try {
    s.kv = device_buffer<bf16>(layout_.total_elems());
  } catch (const error& e) {
    throw error("cuda_backend: cannot allocate the KV cache of " + std::to_string(num_pages) + " pages (" +
                std::to_string(kv_bytes >> 20) + " MiB): " + e.what());
  }
  // NOTE: the cache starts as NaN: a slot read before any step wrote it
  // poisons the logits instead of passing as zeros.
  s.kv.poison(s.stream.get());
  KVACTOR_CUDA_CHECK(cudaStreamSynchronize(s.stream.get()));
}

cuda_backend::cuda_backend(model_config config, const std::vector<weight_view>& weights, int32_t num_pages,
                           int32_t page_size)
    : cuda_backend(std::move(config), num_pages, page_size) {
  state_->weights = gpu::upload_weights(config_, gpu::host_tensors(weights));
  // NOTE: a copy from pageable memory may still be in flight when cudaMemcpy
  // returns, and the backend's stream does not wait for the default one.
  KVACTOR_CUDA_CHECK(cudaDeviceSynchronize());
}

cuda_backend::cuda_backend(model_config config, const model_weights& weights, int32_t num_pages,
                           int32_t page_size)
    : cuda_backend(std::move(config), num_pages, page_size) {
  state_->weights = gpu::upload_weights(config_, gpu::host_tensors(weights, config_));
  KVACTOR_CUDA_CHECK(cudaDeviceSynchronize()); // as above
}

cuda_backend::~cuda_backend() = default;

std::unique_ptr<cuda_backend> load_cuda_backend(const std::string& dir, int32_t num_pages, int32_t page_size) {
  model_config config = load_model_dir_config(dir);
  const std::vector<weight_view> views = load_weight_views(dir, config);
  return std::make_unique<cuda_backend>(std::move(config), views, num_pages, page_size);
}

// ---- forward ------------------------------------------------------------------

void cuda_backend::run_layer(int32_t layer) {
  const model_config& c = config_;
  state& s = *state_;
  const gpu::batch_plan& p = s.plan;
  const gpu::device_layer_weights& w = s.weights.layers[size_t(layer)];
  const cudaStream_t stream = s.stream.get();
  const int64_t n = p.num_tokens, h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t inter = c.intermediate_size;

  gpu::paged_kv_view kv;
  kv.k = s.kv.get() + layout_.offset(layer, 0, 0, 0);
  kv.v = s.kv.get() + layout_.offset(layer, 1, 0, 0);
  kv.page_indptr = s.meta_at(p.page_indptr);
  kv.page_indices = s.meta_at(p.page_indices);
  kv.page_size = layout_.page_size;
  kv.num_kv_heads = layout_.num_kv_heads;
  kv.head_dim = layout_.head_dim;

  s.gemm.run(s.normed.get(), w.qkv.get(), s.qkv.get(), CUDA_R_16BF, n, qd + 2 * kvd, h);

  gpu::rope_kv_params rope;
  rope.qkv = s.qkv.get();
  rope.qkv_bias = w.qkv_bias.empty() ? nullptr : w.qkv_bias.get();
  rope.q_norm = w.q_norm.empty() ? nullptr : w.q_norm.get();
  rope.k_norm = w.k_norm.empty() ? nullptr : w.k_norm.get();
  rope.inv_freq = s.inv_freq.get();
  rope.positions = s.meta_at(p.positions);
  rope.token_seq = s.meta_at(p.token_seq);
  rope.kv = kv;
  rope.q_out = s.q.get();
  rope.num_heads = c.num_heads;
  rope.num_kv_heads = c.num_kv_heads;
  rope.head_dim = c.head_dim;
  rope.eps = c.rms_norm_eps;
  // All new keys are in their pages before attention: a token attends to
  // earlier tokens of its own chunk.
  gpu::launch_rope_kv(rope, p.num_tokens, stream);

  gpu::attention_params attention;
  attention.q = s.q.get();
  attention.out = s.attn.get();
  attention.kv = kv;
  attention.positions = s.meta_at(p.positions);
  attention.token_seq = s.meta_at(p.token_seq);
  attention.qo_indptr = s.meta_at(p.qo_indptr);
  attention.tile_first = s.meta_at(p.tile_first);
  attention.num_heads = c.num_heads;
  attention.group = c.num_heads / c.num_kv_heads;
  attention.tile_tokens = p.tile_tokens;
  attention.window = c.uses_sliding(layer) ? c.sliding_window : 0;
  attention.scale = 1.0f / std::sqrt(float(c.head_dim));
  gpu::launch_paged_attention(attention, p.num_tiles, stream);

  s.gemm.run(s.attn.get(), w.o_proj.get(), s.proj.get(), CUDA_R_16BF, n, h, qd);
  gpu::launch_add_rms_norm(nullptr, s.residual.get(), s.proj.get(), true, w.post_attention_norm.get(),
                           s.normed.get(), p.num_tokens, c.hidden_size, c.rms_norm_eps, stream);
  s.gemm.run(s.normed.get(), w.gate_up.get(), s.gate_up.get(), CUDA_R_16BF, n, 2 * inter, h);
  gpu::launch_silu_mul(s.gate_up.get(), s.act.get(), p.num_tokens, c.intermediate_size, stream);
  s.gemm.run(s.act.get(), w.down.get(), s.proj.get(), CUDA_R_16BF, n, h, inter);
  // The next layer's input norm takes the residual add along; after the last
  // layer the final norm does, for the logits rows only.
  if (layer + 1 < c.num_layers)
    gpu::launch_add_rms_norm(nullptr, s.residual.get(), s.proj.get(), true,
                             s.weights.layers[size_t(layer) + 1].input_norm.get(), s.normed.get(), p.num_tokens,
                             c.hidden_size, c.rms_norm_eps, stream);
}

void cuda_backend::forward(const forward_batch& batch, std::vector<float>& logits) {
  const model_config& c = config_;
  state& s = *state_;
  gpu::batch_plan& p = s.plan;
  gpu::build_batch_plan(batch, c.vocab_size, layout_, s.tile_tokens, p);
  const size_t logits_count = size_t(p.num_logits) * size_t(c.vocab_size);
  logits.resize(logits_count);
  if (p.num_tokens == 0) return;

  s.reserve(p);
  const cudaStream_t stream = s.stream.get();
  std::memcpy(s.meta_host.get(), p.data.data(), p.data.size() * sizeof(int32_t));
  KVACTOR_CUDA_CHECK(cudaMemcpyAsync(s.meta.get(), s.meta_host.get(), p.data.size() * sizeof(int32_t),
                                     cudaMemcpyHostToDevice, stream));

  gpu::launch_embedding(s.meta_at(p.token_ids), s.weights.embed_tokens.get(), s.residual.get(), p.num_tokens,
                        c.hidden_size, stream);
  gpu::launch_add_rms_norm(nullptr, s.residual.get(), nullptr, false, s.weights.layers[0].input_norm.get(),
                           s.normed.get(), p.num_tokens, c.hidden_size, c.rms_norm_eps, stream);
  for (int32_t layer = 0; layer < c.num_layers; ++layer) run_layer(layer);

  if (p.num_logits > 0) {
    gpu::launch_add_rms_norm(s.meta_at(p.logit_rows), s.residual.get(), s.proj.get(), false,
                             s.weights.final_norm.get(), s.final_normed.get(), p.num_logits, c.hidden_size,
                             c.rms_norm_eps, stream);
    s.gemm.run(s.final_normed.get(), s.weights.lm_head_matrix(), s.logits.get(), CUDA_R_32F, p.num_logits,
               c.vocab_size, c.hidden_size);
    KVACTOR_CUDA_CHECK(cudaMemcpyAsync(s.logits_host.get(), s.logits.get(), logits_count * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream));
  }
  KVACTOR_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::copy_n(s.logits_host.get(), logits_count, logits.data());
}

} // namespace kvactor
