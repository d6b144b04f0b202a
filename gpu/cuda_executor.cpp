#include "gpu/cuda_executor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <utility>

#include "gpu/batch_plan.h"
#include "gpu/cuda_check.h"
#include "gpu/cuda_graph.h"
#include "gpu/decode_attention.h"
#include "gpu/device_buffer.h"
#include "gpu/embedding.h"
#include "gpu/flash_attention.h"
#include "gpu/gemm.h"
#include "gpu/gemv.h"
#include "gpu/kv_quantize.h"
#include "gpu/paged_attention.h"
#include "gpu/rms_norm.h"
#include "gpu/rope_kv.h"
#include "gpu/sampling.h"
#include "gpu/silu_mul.h"
#include "runtime/error.h"
#include "runtime/sliding_window.h"

namespace kvactor {

using gpu::bf16;
using gpu::device_buffer;
using gpu::pinned_buffer;

namespace {

// Scratch grows in steps of this many tokens, so a run of slightly longer
// batches does not reallocate every time.
constexpr int64_t token_granule = 64;
// Keys per split of the decode kernel at least: fewer would cost more in
// merging than they gain in parallelism.
constexpr int32_t min_split_keys = 64;

int64_t round_up(int64_t n, int64_t granule) { return (n + granule - 1) / granule * granule; }

// The decode bucket of n sequences: the next power of two.
int32_t bucket_for(int32_t n) {
  int32_t b = 1;
  while (b < n) b *= 2;
  return b;
}

enum class output { logits, tokens };

// Room for the distinct earlier tokens of a step's rows with a repetition
// penalty (256 KiB), so that the decode graphs captured at start keep it.
constexpr size_t initial_penalty_tokens = size_t(1) << 16;

} // namespace

// ---- state --------------------------------------------------------------------

struct cuda_executor::state {
  state(std::shared_ptr<cuda_model> m, cudaStream_t s, cuda_executor_options o);

  // Grow the buffers; growing drops the graphs, which hold the old pointers.
  void reserve_tokens(int64_t n);
  void reserve_rows(int64_t n);
  void reserve_decode_meta(size_t elems);
  // Copies penalty_list to the device, ahead of the step on the stream.
  void upload_penalty_list();

  // Plans `batch`: a decode plan where it can, else a general one.
  void build(const forward_batch& batch, std::span<const gpu::sample_row> rows);
  // Runs `plan`: metadata copy, then the launches or a graph.
  void run(output out);
  // Every launch of one step, reading the metadata at `meta`.
  void launch_step(output out, const int32_t* meta);
  void run_layer(int32_t layer, const int32_t* meta);
  // y[m, n] = x[m, k] . w[n, k]^T
  void linear(const bf16* x, const bf16* w, void* y, bool y_fp32, int64_t m, int64_t n, int64_t k);

  std::shared_ptr<cuda_model> model;
  const model_config& config;
  const kv_layout& layout; // the model's: its page count is set once the KV cache is made
  const cuda_executor_options options;
  std::unique_ptr<gpu::cuda_stream> own_stream;
  cudaStream_t stream;
  gpu::gemm_runner gemm;
  int32_t num_sms = 0;
  int32_t group = 1;           // q heads per kv head
  bool flash = false;          // tensor-core attention for general steps
  int32_t tile_tokens = 1;     // attention tile of general steps
  int32_t max_decode_rows = 0; // largest decode bucket; 0 when decode steps run as general ones
  int32_t release_window = 0;  // pages behind it may come released (runtime/sliding_window.h)

  gpu::batch_plan plan;
  std::vector<gpu::sample_row> samples;
  // The distinct earlier tokens of the rows with a repetition penalty, each
  // row's at its sample_row's penalty_begin. Growing the device copy drops
  // the graphs, which hold its pointer.
  std::vector<int32_t> penalty_list;
  pinned_buffer<int32_t> penalty_host;
  device_buffer<int32_t> penalty_tokens;
  pinned_buffer<int32_t> meta_host;   // [plan.data.size()] at least
  device_buffer<int32_t> meta;        // general plans
  device_buffer<int32_t> decode_meta; // decode plans: fixed offsets, graphs read it

  // Activations, for up to token_capacity tokens.
  int64_t token_capacity = 0;
  device_buffer<float> residual; // [tokens, hidden] the residual stream
  // Steps of few tokens: the input of the next RMSNorm, prepared by the
  // kernel that updates the residual (gpu::norm_input), and its sums of
  // squares, a slot per norm of the step (2 a layer).
  device_buffer<bf16> norm_x;         // [gemv_max_rows, hidden]
  device_buffer<float> norm_sq_parts; // [2 num_layers, gemv_max_rows, hidden / 8]
  gpu::norm_input norm_slot(int32_t norm) {
    const size_t slot = size_t(gpu::gemv_max_rows) * size_t(config.hidden_size / 8);
    return {norm_x.get(), norm_sq_parts.get() + size_t(norm) * slot};
  }
  device_buffer<bf16> normed;    // [tokens, hidden] normed input of a block
  device_buffer<bf16> qkv;       // [tokens, q_dim + 2 kv_dim]
  device_buffer<bf16> q;         // [tokens, num_heads, head_dim] roped
  device_buffer<bf16> attn;      // [tokens, num_heads, head_dim]
  device_buffer<bf16> proj;      // [tokens, hidden] output of o_proj / down_proj
  device_buffer<bf16> gate_up;   // [tokens, 2 intermediate]
  device_buffer<bf16> act;       // [tokens, intermediate]
  device_buffer<float> kv_stage; // [tokens, 2, kv_dim] new K/V before an 8-bit cache stores them

  // Split-KV partial results of decode steps, for the largest bucket.
  device_buffer<float> partial_out; // [rows, splits, num_heads, head_dim]
  device_buffer<float> partial_ml;  // [rows, splits, num_heads, 2]
  device_buffer<int32_t> split_done; // [rows, num_kv_heads], zeros between launches

  // Logits rows and sampled tokens, for up to row_capacity rows.
  int64_t row_capacity = 0;
  device_buffer<bf16> final_normed;  // [rows, hidden]
  device_buffer<float> logits;       // [rows, vocab]
  device_buffer<int32_t> tokens;     // [rows]
  pinned_buffer<float> logits_host;  // [rows, vocab]
  pinned_buffer<int32_t> tokens_host; // [rows]

  std::map<std::pair<int32_t, output>, gpu::cuda_graph> graphs; // by (bucket rows, output)
};

cuda_executor::state::state(std::shared_ptr<cuda_model> m, cudaStream_t s, cuda_executor_options o)
    : model(std::move(m)),
      config(model->config()),
      layout(model->layout()),
      options(o),
      own_stream(s ? nullptr : std::make_unique<gpu::cuda_stream>()),
      stream(s ? s : own_stream->get()),
      gemm(stream, o.tune_gemms) {
  const model_config& c = config;
  int device = 0;
  KVACTOR_CUDA_CHECK(cudaGetDevice(&device));
  if (device != model->device())
    throw error("cuda_executor: the model is on device " + std::to_string(model->device()) + ", device " +
                std::to_string(device) + " is current");
  KVACTOR_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device));
  if (options.max_batch_tokens <= 0 || options.max_decode_batch < 0)
    throw error("cuda_executor: max_batch_tokens must be positive and max_decode_batch not negative");

  group = c.num_heads / c.num_kv_heads;
  release_window = reclaimable_window(c);
  flash = gpu::flash_attention_supports(c.head_dim, group);
  const gpu::flash_variant variant = gpu::flash_variant_for(model->cache_format());
  tile_tokens = flash ? gpu::flash_attention_tile_tokens(c.head_dim, group, variant)
                      : std::max(1, gpu::attention_tile_rows / group);
  if (flash)
    gpu::init_flash_attention();
  else
    gpu::init_paged_attention(c.head_dim, tile_tokens * group);
  gpu::init_sampling(c.vocab_size);

  if (options.max_decode_batch > 0 && gpu::decode_attention_supports(c.head_dim, group)) {
    max_decode_rows = bucket_for(options.max_decode_batch);
    // Any row count up to the largest bucket: the decode rows of a mixed step
    // are not padded to a bucket.
    size_t out_elems = 0, ml_elems = 0;
    for (int32_t rows = 1; rows <= max_decode_rows; ++rows) {
      const int32_t splits = gpu::decode_max_splits(rows, c.num_kv_heads, num_sms);
      out_elems = std::max(out_elems, gpu::decode_partial_out_elems(rows, splits, c.num_heads, c.head_dim));
      ml_elems = std::max(ml_elems, gpu::decode_partial_ml_elems(rows, splits, c.num_heads));
    }
    partial_out = device_buffer<float>(out_elems);
    partial_ml = device_buffer<float>(ml_elems);
    split_done = device_buffer<int32_t>(gpu::decode_split_done_elems(max_decode_rows, c.num_kv_heads));
    KVACTOR_CUDA_CHECK(cudaMemsetAsync(split_done.get(), 0, split_done.size() * sizeof(int32_t), stream));
  }
  reserve_tokens(std::max<int64_t>(options.max_batch_tokens, max_decode_rows));
  reserve_rows(std::max<int64_t>(max_decode_rows, 1));
  penalty_tokens = device_buffer<int32_t>(initial_penalty_tokens);
  penalty_host = pinned_buffer<int32_t>(initial_penalty_tokens);
  KVACTOR_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void cuda_executor::state::reserve_tokens(int64_t tokens) {
  if (tokens <= token_capacity) return;
  const model_config& c = config;
  const int64_t n = round_up(tokens, token_granule);
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
  graphs.clear();
  residual = device_buffer<float>(size_t(n * h));
  norm_x = device_buffer<bf16>(size_t(gpu::gemv_max_rows * h));
  norm_sq_parts = device_buffer<float>(size_t(2 * c.num_layers * gpu::gemv_max_rows * (h / 8)));
  normed = device_buffer<bf16>(size_t(n * h));
  qkv = device_buffer<bf16>(size_t(n * (qd + 2 * kvd)));
  q = device_buffer<bf16>(size_t(n * qd));
  attn = device_buffer<bf16>(size_t(n * qd));
  proj = device_buffer<bf16>(size_t(n * h));
  gate_up = device_buffer<bf16>(size_t(n * 2 * inter));
  act = device_buffer<bf16>(size_t(n * inter));
  if (kv_is_quantized(model->cache_format())) kv_stage = device_buffer<float>(size_t(n * 2 * kvd));
  // NOTE: 0xff bytes are NaN: a read of anything no kernel wrote shows up.
  for (auto* b : {&norm_x, &normed, &qkv, &q, &attn, &proj, &gate_up, &act}) b->poison(stream);
  for (auto* b : {&residual, &norm_sq_parts, &kv_stage}) b->poison(stream);
  token_capacity = n;
}

void cuda_executor::state::reserve_rows(int64_t rows) {
  if (rows <= row_capacity) return;
  const int64_t n = round_up(rows, token_granule);
  graphs.clear();
  final_normed = device_buffer<bf16>(size_t(n * config.hidden_size));
  logits = device_buffer<float>(size_t(n * config.vocab_size));
  tokens = device_buffer<int32_t>(size_t(n));
  logits_host = pinned_buffer<float>(size_t(n * config.vocab_size));
  tokens_host = pinned_buffer<int32_t>(size_t(n));
  final_normed.poison(stream);
  logits.poison(stream);
  row_capacity = n;
}

void cuda_executor::state::reserve_decode_meta(size_t elems) {
  if (elems <= decode_meta.size()) return;
  graphs.clear();
  decode_meta = device_buffer<int32_t>(std::max(elems, 2 * decode_meta.size()));
}

void cuda_executor::state::upload_penalty_list() {
  const size_t n = penalty_list.size();
  if (n == 0) return;
  if (n > penalty_tokens.size()) {
    graphs.clear();
    penalty_tokens = device_buffer<int32_t>(std::max(n, 2 * penalty_tokens.size()));
    penalty_host = pinned_buffer<int32_t>(penalty_tokens.size());
  }
  std::copy(penalty_list.begin(), penalty_list.end(), penalty_host.get());
  KVACTOR_CUDA_CHECK(
      cudaMemcpyAsync(penalty_tokens.get(), penalty_host.get(), n * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
}

// ---- one step ---------------------------------------------------------------

void cuda_executor::state::linear(const bf16* x, const bf16* w, void* y, bool y_fp32, int64_t m, int64_t n,
                                  int64_t k) {
  if (m <= gpu::gemv_max_rows)
    gpu::launch_gemv(x, w, y, y_fp32, int32_t(m), int32_t(n), int32_t(k), stream);
  else
    gemm.run(x, w, y, y_fp32 ? CUDA_R_32F : CUDA_R_16BF, m, n, k);
}

void cuda_executor::state::run_layer(int32_t layer, const int32_t* meta) {
  const model_config& c = config;
  const gpu::batch_plan& p = plan;
  const gpu::device_weights& weights = model->weights();
  const gpu::device_layer_weights& w = weights.layers[size_t(layer)];
  const int64_t n = p.num_tokens, h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t inter = c.intermediate_size;
  const int32_t window = c.uses_sliding(layer) ? c.sliding_window : 0;
  const float scale = 1.0f / std::sqrt(float(c.head_dim));

  gpu::paged_kv_view kv = model->kv_view(layer);
  kv.page_indptr = meta + p.page_indptr;
  kv.page_indices = meta + p.page_indices;
  const bool quantized = kv_is_quantized(kv.format);

  gpu::rope_kv_params rope;
  rope.qkv = qkv.get();
  rope.qkv_bias = w.qkv_bias.empty() ? nullptr : w.qkv_bias.get();
  rope.q_norm = w.q_norm.empty() ? nullptr : w.q_norm.get();
  rope.k_norm = w.k_norm.empty() ? nullptr : w.k_norm.get();
  rope.inv_freq = model->inv_freq();
  rope.positions = meta + p.positions;
  rope.token_seq = meta + p.token_seq;
  rope.kv = kv;
  rope.q_out = q.get();
  rope.num_heads = c.num_heads;
  rope.num_kv_heads = c.num_kv_heads;
  rope.head_dim = c.head_dim;
  rope.eps = c.rms_norm_eps;
  if (quantized) rope.kv_stage = kv_stage.get();

  // At a few tokens a layer is four GEMVs and attention: o_proj and down add
  // to the residual stream and prepare the next RMSNorm, which qkv and
  // gate/up finish (gpu::norm_input); qkv ropes and stores K/V too where it
  // can. At more, cuBLASLt runs between add+RMSNorm, RoPE/KV and SiLU-mul
  // kernels. Either way all new keys are in their pages before attention: a
  // token attends to earlier tokens of its own chunk.
  const bool few = n <= gpu::gemv_max_rows;
  if (few && gpu::rope_kv_fusable(rope)) {
    gpu::launch_rms_norm_gemv_rope_kv(norm_slot(2 * layer), w.qkv.get(), rope, int32_t(n), int32_t(h), c.rms_norm_eps,
                                      stream);
  } else {
    if (few)
      gpu::launch_rms_norm_gemv(norm_slot(2 * layer), w.qkv.get(), qkv.get(), int32_t(n), int32_t(qd + 2 * kvd),
                                int32_t(h), c.rms_norm_eps, stream);
    else
      gemm.run(normed.get(), w.qkv.get(), qkv.get(), CUDA_R_16BF, n, qd + 2 * kvd, h);
    gpu::launch_rope_kv(rope, p.num_tokens, stream);
  }
  if (quantized) {
    gpu::kv_quantize_params store;
    store.stage = kv_stage.get();
    store.positions = meta + p.positions;
    store.token_seq = meta + p.token_seq;
    store.kv = kv;
    store.num_tokens = p.num_tokens;
    gpu::launch_kv_quantize(store, stream);
  }

  if (p.decode_rows > 0) {
    gpu::decode_attention_params a;
    a.q = q.get();
    a.out = attn.get();
    a.kv = kv;
    a.positions = meta + p.positions;
    a.partial_out = partial_out.get();
    a.partial_ml = partial_ml.get();
    a.split_done = split_done.get();
    a.num_heads = c.num_heads;
    a.group = group;
    a.window = window;
    a.max_splits = gpu::decode_max_splits(p.decode_rows, c.num_kv_heads, num_sms);
    a.min_split_keys = min_split_keys;
    a.scale = scale;
    gpu::launch_decode_attention(a, p.decode_rows, stream);
  }
  if (p.num_tiles > 0) {
    gpu::attention_params a;
    a.q = q.get();
    a.out = attn.get();
    a.kv = kv;
    a.positions = meta + p.positions;
    a.token_seq = meta + p.token_seq;
    a.qo_indptr = meta + p.qo_indptr;
    a.tile_first = meta + p.tile_first;
    a.num_heads = c.num_heads;
    a.group = group;
    a.tile_tokens = p.tile_tokens;
    a.window = window;
    a.scale = scale;
    if (flash)
      gpu::launch_flash_attention(a, p.num_tiles, stream);
    else
      gpu::launch_paged_attention(a, p.num_tiles, stream);
  }

  if (few) {
    gpu::launch_gemv_add(attn.get(), w.o_proj.get(), residual.get(), w.post_attention_norm.get(),
                         norm_slot(2 * layer + 1), int32_t(n), int32_t(h), int32_t(qd), stream);
    gpu::launch_rms_norm_gemv_gated(norm_slot(2 * layer + 1), w.gate_up.get(), act.get(), int32_t(n), int32_t(inter),
                                    int32_t(h), c.rms_norm_eps, stream);
    // After the last layer the final norm reads the fp32 residual itself.
    const bool last = layer + 1 == c.num_layers;
    gpu::launch_gemv_add(act.get(), w.down.get(), residual.get(),
                         last ? nullptr : weights.layers[size_t(layer) + 1].input_norm.get(),
                         last ? gpu::norm_input{} : norm_slot(2 * layer + 2), int32_t(n), int32_t(h), int32_t(inter),
                         stream);
    return;
  }
  gemm.run(attn.get(), w.o_proj.get(), proj.get(), CUDA_R_16BF, n, h, qd);
  gpu::launch_add_rms_norm(nullptr, residual.get(), proj.get(), true, w.post_attention_norm.get(), normed.get(),
                           p.num_tokens, c.hidden_size, c.rms_norm_eps, stream);
  gemm.run(normed.get(), w.gate_up.get(), gate_up.get(), CUDA_R_16BF, n, 2 * inter, h);
  gpu::launch_silu_mul(gate_up.get(), act.get(), p.num_tokens, c.intermediate_size, stream);
  gemm.run(act.get(), w.down.get(), proj.get(), CUDA_R_16BF, n, h, inter);
  // The next layer's input norm takes the residual add along; after the last
  // layer the final norm does, for the logits rows only.
  if (layer + 1 < c.num_layers)
    gpu::launch_add_rms_norm(nullptr, residual.get(), proj.get(), true, weights.layers[size_t(layer) + 1].input_norm.get(),
                             normed.get(), p.num_tokens, c.hidden_size, c.rms_norm_eps, stream);
}

void cuda_executor::state::launch_step(output out, const int32_t* meta) {
  const model_config& c = config;
  const gpu::batch_plan& p = plan;
  const gpu::device_weights& w = model->weights();
  const bool few = p.num_tokens <= gpu::gemv_max_rows; // as in run_layer
  gpu::launch_embedding(meta + p.token_ids, w.embed_tokens.get(), residual.get(),
                        few ? w.layers[0].input_norm.get() : nullptr, few ? norm_slot(0) : gpu::norm_input{},
                        p.num_tokens, c.hidden_size, stream);
  if (!few)
    gpu::launch_add_rms_norm(nullptr, residual.get(), nullptr, false, w.layers[0].input_norm.get(), normed.get(),
                             p.num_tokens, c.hidden_size, c.rms_norm_eps, stream);
  for (int32_t layer = 0; layer < c.num_layers; ++layer) run_layer(layer, meta);
  if (p.num_logits == 0) return;
  gpu::launch_add_rms_norm(meta + p.logit_rows, residual.get(), few ? nullptr : proj.get(), false, w.final_norm.get(),
                           final_normed.get(), p.num_logits, c.hidden_size, c.rms_norm_eps, stream);
  linear(final_normed.get(), w.lm_head_matrix(), logits.get(), true, p.num_logits, c.vocab_size, c.hidden_size);
  if (out == output::tokens)
    gpu::launch_sample(logits.get(), reinterpret_cast<const gpu::sample_row*>(meta + p.sample_rows),
                       penalty_tokens.get(), tokens.get(), nullptr, p.num_logits, c.vocab_size, stream);
}

void cuda_executor::state::build(const forward_batch& batch, std::span<const gpu::sample_row> rows) {
  if (layout.num_pages == 0) throw error("cuda_executor: the model has no KV cache yet (cuda_model::allocate_kv)");
  const int32_t seqs = int32_t(batch.seqs.size());
  if (max_decode_rows > 0 && gpu::is_decode_batch(batch) && seqs <= options.max_decode_batch)
    gpu::build_decode_plan(batch, config.vocab_size, layout, bucket_for(seqs), max_decode_rows, plan, rows,
                           release_window);
  else
    gpu::build_batch_plan(batch, config.vocab_size, layout, tile_tokens, plan, rows, release_window, max_decode_rows);
}

void cuda_executor::state::run(output out) {
  const gpu::batch_plan& p = plan;
  const bool decode = p.decode_plan;
  reserve_tokens(p.num_tokens);
  reserve_rows(p.num_logits);
  // Room for every page of the cache at once, so that graphs survive
  // longer page tables; more only when shared pages are listed repeatedly.
  if (decode)
    reserve_decode_meta(std::max(p.data.size(), gpu::decode_plan_header(max_decode_rows) +
                                                    size_t(layout.num_pages) + size_t(max_decode_rows)));
  if (p.data.size() > meta_host.size()) meta_host = pinned_buffer<int32_t>(p.data.size());
  if (!decode && p.data.size() > meta.size()) meta = device_buffer<int32_t>(p.data.size());
  device_buffer<int32_t>& target = decode ? decode_meta : meta;
  std::memcpy(meta_host.get(), p.data.data(), p.data.size() * sizeof(int32_t));
  KVACTOR_CUDA_CHECK(cudaMemcpyAsync(target.get(), meta_host.get(), p.data.size() * sizeof(int32_t),
                                     cudaMemcpyHostToDevice, stream));

  if (decode && options.use_graphs) {
    const auto key = std::make_pair(p.decode_rows, out);
    if (const auto it = graphs.find(key); it != graphs.end()) {
      it->second.launch(stream);
    } else {
      // The first step of a bucket runs as it is (which also loads every
      // kernel and plans every GEMM), then is captured for the next ones.
      launch_step(out, target.get());
      KVACTOR_CUDA_CHECK(cudaStreamSynchronize(stream));
      graphs.emplace(key, gpu::cuda_graph::capture(stream, [&] { launch_step(out, target.get()); }));
    }
  } else {
    launch_step(out, target.get());
  }
}

// ---- executor -----------------------------------------------------------------

cuda_executor::cuda_executor(std::shared_ptr<cuda_model> model, cudaStream_t stream, cuda_executor_options options)
    : state_(std::make_unique<state>(std::move(model), stream, options)) {}

cuda_executor::~cuda_executor() = default;

const cuda_model& cuda_executor::model() const { return *state_->model; }

cudaStream_t cuda_executor::stream() const { return state_->stream; }

size_t cuda_executor::graphs_captured() const { return state_->graphs.size(); }

void cuda_executor::capture_decode_graphs() {
  const state& s = *state_;
  const int32_t pages = s.layout.num_pages;
  forward_batch batch;
  std::vector<sampling_params> params;
  std::vector<uint64_t> counters;
  std::vector<int32_t> tokens;
  sampling_params greedy;
  greedy.temperature = 0;
  for (int32_t bucket = 1; bucket <= s.max_decode_rows; bucket *= 2) {
    const int32_t seqs = std::min(bucket, s.options.max_decode_batch);
    batch.seqs.clear();
    for (int32_t r = 0; r < seqs; ++r) batch.seqs.push_back({{0}, 0, {pages > 0 ? r % pages : 0}, true});
    params.assign(size_t(seqs), greedy);
    counters.assign(size_t(seqs), 0);
    forward_and_sample(batch, params, {}, counters, tokens);
  }
}

void cuda_executor::forward(const forward_batch& batch, std::vector<float>& logits) {
  state& s = *state_;
  const model_config& c = s.config;
  s.build(batch, {});
  const size_t count = size_t(s.plan.real_logits) * size_t(c.vocab_size);
  logits.resize(count);
  if (s.plan.num_tokens == 0) return;
  s.run(output::logits);
  if (count > 0)
    KVACTOR_CUDA_CHECK(cudaMemcpyAsync(s.logits_host.get(), s.logits.get(), count * sizeof(float),
                                       cudaMemcpyDeviceToHost, s.stream));
  KVACTOR_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  std::copy_n(s.logits_host.get(), count, logits.data());
}

void cuda_executor::forward_and_sample(const forward_batch& batch, std::span<const sampling_params> params,
                                       std::span<const std::span<const int32_t>> histories,
                                       std::span<const uint64_t> counters, std::vector<int32_t>& tokens) {
  state& s = *state_;
  const model_config& c = s.config;
  const size_t rows = size_t(batch.num_logits());
  if (params.size() != rows || counters.size() != rows || (!histories.empty() && histories.size() != rows))
    throw error("forward_and_sample: " + std::to_string(params.size()) + " sampling params, " +
                std::to_string(histories.size()) + " histories and " + std::to_string(counters.size()) +
                " counters for " + std::to_string(rows) + " logits rows");
  s.samples.resize(rows);
  s.penalty_list.clear();
  for (size_t i = 0; i < rows; ++i) {
    const sampling_params& p = params[i];
    const auto problem = [&](const std::string& what) {
      return error("forward_and_sample: row " + std::to_string(i) + ": " + what);
    };
    if (p.temperature < 0) throw problem("temperature must be >= 0");
    if (p.repetition_penalty <= 0) throw problem("repetition_penalty must be > 0");
    s.samples[i] = gpu::make_sample_row(p, counters[i], histories.empty() ? std::span<const int32_t>() : histories[i],
                                        c.vocab_size, s.penalty_list);
  }
  s.build(batch, s.samples);
  s.upload_penalty_list();
  tokens.resize(rows);
  if (s.plan.num_tokens == 0) return;
  s.run(output::tokens);
  if (rows > 0)
    KVACTOR_CUDA_CHECK(cudaMemcpyAsync(s.tokens_host.get(), s.tokens.get(), rows * sizeof(int32_t),
                                       cudaMemcpyDeviceToHost, s.stream));
  KVACTOR_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  std::copy_n(s.tokens_host.get(), rows, tokens.data());
}

} // namespace kvactor
