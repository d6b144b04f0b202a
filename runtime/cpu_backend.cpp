#include "runtime/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "runtime/error.h"
#include "runtime/page_pool.h"
#include "runtime/rope.h"
#include "runtime/safetensors.h"
#include "runtime/sliding_window.h"

// x86-64 builds carry an AVX2+FMA copy of the hot loops next to the baseline
// one; the loader picks per machine, so one binary runs everywhere.
// NOTE: not under sanitizers, whose instrumented ifunc resolvers run before
// the sanitizer runtime is up and crash.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__) && \
    !defined(__SANITIZE_ADDRESS__)
#define KVACTOR_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KVACTOR_SIMD_CLONES
#endif
// The 8-float vector helpers below are always inlined, so the ABI note GCC
// gives for passing them by value does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace kvactor {

namespace {

// ---- kernels --------------------------------------------------------------
// NOTE: every dot product accumulates 8 lanes over k, sums the lanes in a
// fixed order, then adds the k % 8 tail. Tiles of any size share that order,
// so an element's bits do not depend on the batch it was computed in.

using v8f = float __attribute__((vector_size(32)));

[[gnu::always_inline]] inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
[[gnu::always_inline]] inline void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }

[[gnu::always_inline]] inline float lane_sum(v8f v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

[[gnu::always_inline]] inline float dot(const float* a, const float* b, int64_t n) {
  v8f acc = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc += load8(a + i) * load8(b + i);
  float s = lane_sum(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y[r, c] = dot(x[r, :], w[c, :]) for R rows of x and C rows of w.
template <int R, int C>
[[gnu::always_inline]] inline void matmul_tile(const float* x, const float* w, float* y, int64_t n,
                                               int64_t k) {
  v8f acc[R][C] = {};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    v8f wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load8(w + c * k + i);
    for (int r = 0; r < R; ++r) {
      v8f xv = load8(x + r * k + i);
      for (int c = 0; c < C; ++c) acc[r][c] += xv * wv[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float s = lane_sum(acc[r][c]);
      for (int64_t j = i; j < k; ++j) s += x[r * k + j] * w[c * k + j];
      y[r * n + c] = s;
    }
}

template <int R>
[[gnu::always_inline]] inline void matmul_tile_cols(int64_t cols, const float* x, const float* w,
                                                    float* y, int64_t n, int64_t k) {
  switch (cols) {
    case 3: matmul_tile<R, 3>(x, w, y, n, k); break;
    case 2: matmul_tile<R, 2>(x, w, y, n, k); break;
    default: matmul_tile<R, 1>(x, w, y, n, k); break;
  }
}

// y[rows, n] (columns [col_begin, col_end) only) = x[rows, k] . w[n, k]^T.
// Columns go in blocks whose rows of w stay in cache while every row of x
// passes over them.
KVACTOR_SIMD_CLONES
void matmul_columns(const float* x, const float* w, float* y, int64_t rows, int64_t n, int64_t k,
                    int64_t col_begin, int64_t col_end) {
  constexpr int64_t tile_rows = 4, tile_cols = 3;
  // About 64 KiB of w per block.
  const int64_t block = std::max<int64_t>(tile_cols, 16384 / std::max<int64_t>(k, 1) / tile_cols * tile_cols);
  for (int64_t c0 = col_begin; c0 < col_end; c0 += block) {
    const int64_t c1 = std::min(c0 + block, col_end);
    for (int64_t r = 0; r < rows; r += tile_rows) {
      const float* xr = x + r * k;
      for (int64_t c = c0; c < c1; c += tile_cols) {
        const int64_t nc = std::min(tile_cols, c1 - c);
        float* yrc = y + r * n + c;
        switch (std::min(tile_rows, rows - r)) {
          case 4: matmul_tile_cols<4>(nc, xr, w + c * k, yrc, n, k); break;
          case 3: matmul_tile_cols<3>(nc, xr, w + c * k, yrc, n, k); break;
          case 2: matmul_tile_cols<2>(nc, xr, w + c * k, yrc, n, k); break;
          default: matmul_tile_cols<1>(nc, xr, w + c * k, yrc, n, k); break;
        }
      }
    }
  }
}

// HF's RMSNorm in fp32: x * rsqrt(mean(x^2) + eps) * w, row by row.
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; ++r, x += n, y += n) {
    float ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
    const float inv = 1.0f / std::sqrt(ss / float(n) + eps);
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * inv) * w[i];
  }
}

void add_rows(float* y, const float* bias, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r, y += n)
    for (int64_t i = 0; i < n; ++i) y[i] += bias[i];
}

// The cache as attention reads it: elements in one of four formats.
struct kv_view {
  kv_format format = kv_format::f32;
  const float* f32 = nullptr;     // kv_layout, f32 only
  const uint16_t* bf16 = nullptr; // kv_layout, bf16 only
  const uint8_t* q8 = nullptr;    // kv_layout, fp8 and int8
  const float* scales = nullptr;  // kv_scale_count, fp8 and int8
};

struct attention_args {
  const float* q;     // [num_tokens, num_heads, head_dim]
  float* out;         // [num_tokens, num_heads, head_dim]
  kv_view kv;         // the whole cache
  const kv_layout* layout;
  int32_t layer;
  int32_t num_heads;
  int32_t group;      // q heads per kv head
  int32_t head_dim;
  int32_t window;     // keys seen, itself included; 0 = all
  float scale;
};

// Keys dequantized at a time: a tile of K or V stays in L1.
constexpr int32_t dequant_tile_keys = 32;

// Per-thread scratch of attention, sized for the longest sequence of a step.
struct attention_scratch {
  std::vector<size_t> rows;        // [keys] offset of each key's slot in the K half of the layer
  std::vector<size_t> scale_rows;  // [keys] index of each key's K scale, kv head 0 (fp8, int8)
  std::vector<float> probs;        // [group, keys]
  std::vector<float> tile;         // [dequant_tile_keys, head_dim] dequantized K or V
  std::vector<float> acc;          // [group, head_dim] weighted sum of V
};

// out[0, 8N) = sum_j p[j] * row_j[0, 8N), accumulated in registers.
template <int N>
[[gnu::always_inline]] inline void weighted_rows(const float* base, const size_t* rows, const float* p,
                                                 int32_t keys, float* out) {
  v8f acc[N] = {};
  for (int32_t j = 0; j < keys; ++j) {
    const float* v = base + rows[j];
    for (int c = 0; c < N; ++c) acc[c] += p[j] * load8(v + 8 * c);
  }
  for (int c = 0; c < N; ++c) store8(out + 8 * c, acc[c]);
}

// Causal attention of one token at `pos` for the q heads sharing kv head
// `kv_head`, over the pages of its sequence: keys at positions [lo, pos].
KVACTOR_SIMD_CLONES
void attend(const attention_args& a, int64_t token, int32_t kv_head, int32_t pos,
            const std::vector<int32_t>& page_table, attention_scratch& scratch) {
  const int32_t hd = a.head_dim, ps = a.layout->page_size;
  const int32_t lo = a.window > 0 ? std::max(0, pos - a.window + 1) : 0, keys = pos + 1 - lo;
  size_t* rows = scratch.rows.data();
  for (int32_t j = 0; j < keys; ++j)
    rows[j] = a.layout->offset(a.layer, 0, page_table[(lo + j) / ps], (lo + j) % ps);
  const float* k_base = a.kv.f32 + int64_t(kv_head) * hd;
  const float* v_base = k_base + a.layout->offset(a.layer, 1, 0, 0) - a.layout->offset(a.layer, 0, 0, 0);

  for (int32_t g = 0; g < a.group; ++g) {
    const int64_t row = (token * a.num_heads + int64_t(kv_head) * a.group + g) * hd;
    const float* q = a.q + row;
    float* p = scratch.probs.data() + int64_t(g) * keys;
    float max_score = -INFINITY;
    for (int32_t j = 0; j < keys; ++j) {
      p[j] = dot(q, k_base + rows[j], hd) * a.scale;
      max_score = std::max(max_score, p[j]);
    }
    float sum = 0;
    for (int32_t j = 0; j < keys; ++j) sum += p[j] = std::exp(p[j] - max_score);
    const float inv = 1.0f / sum;
    for (int32_t j = 0; j < keys; ++j) p[j] *= inv;

    float* out = a.out + row;
    int32_t d = 0;
    for (; hd - d >= 32; d += 32) weighted_rows<4>(v_base + d, rows, p, keys, out + d);
    switch ((hd - d) / 8) {
      case 3: weighted_rows<3>(v_base + d, rows, p, keys, out + d); d += 24; break;
      case 2: weighted_rows<2>(v_base + d, rows, p, keys, out + d); d += 16; break;
      case 1: weighted_rows<1>(v_base + d, rows, p, keys, out + d); d += 8; break;
      default: break;
    }
    for (; d < hd; ++d) {
      float s = 0;
      for (int32_t j = 0; j < keys; ++j) s += p[j] * v_base[rows[j] + d];
      out[d] = s;
    }
  }
}

// Rows rows[0, n) of one kv head, dequantized into tile [n, head_dim].
// `scale_rows` index the rows' scales of kv head 0 (fp8, int8).
// note: call only for bf16, fp8 and int8; attend() reads f32 in place.
void dequantize_rows(const kv_view& kv, int32_t kv_head, int32_t hd, const size_t* rows, const size_t* scale_rows,
                     int32_t n, float* tile) {
  const size_t head = size_t(kv_head) * size_t(hd);
  for (int32_t j = 0; j < n; ++j) {
    float* out = tile + size_t(j) * hd;
    if (kv.format == kv_format::bf16) {
      const uint16_t* e = kv.bf16 + rows[j] + head;
      for (int32_t d = 0; d < hd; ++d) out[d] = bf16_to_f32(e[d]);
    } else if (kv.format == kv_format::fp8) {
      const uint8_t* e = kv.q8 + rows[j] + head;
      const float s = kv.scales[scale_rows[j] + size_t(kv_head)];
      for (int32_t d = 0; d < hd; ++d) out[d] = fp8_e4m3_to_f32(e[d]) * s;
    } else {
      const int8_t* e = reinterpret_cast<const int8_t*>(kv.q8 + rows[j] + head);
      const float s = kv.scales[scale_rows[j] + size_t(kv_head)];
      for (int32_t d = 0; d < hd; ++d) out[d] = float(e[d]) * s;
    }
  }
}

// y[0, n) += p * x[0, n)
[[gnu::always_inline]] inline void axpy(float p, const float* x, float* y, int32_t n) {
  int32_t d = 0;
  for (; d + 8 <= n; d += 8) store8(y + d, load8(y + d) + p * load8(x + d));
  for (; d < n; ++d) y[d] += p * x[d];
}

// attend() over a cache of bf16, fp8 or int8 elements: the same keys, each
// tile of K and then of V dequantized once for the whole group of q heads.
KVACTOR_SIMD_CLONES
void attend_dequantized(const attention_args& a, int64_t token, int32_t kv_head, int32_t pos,
                        const std::vector<int32_t>& page_table, attention_scratch& scratch) {
  const kv_layout& l = *a.layout;
  const int32_t hd = a.head_dim, ps = l.page_size;
  const int32_t lo = a.window > 0 ? std::max(0, pos - a.window + 1) : 0, keys = pos + 1 - lo;
  const bool scaled = kv_is_quantized(a.kv.format);
  size_t* rows = scratch.rows.data();
  size_t* scale_rows = scratch.scale_rows.data();
  for (int32_t j = 0; j < keys; ++j) {
    const int32_t page = page_table[(lo + j) / ps], slot = (lo + j) % ps;
    rows[j] = l.offset(a.layer, 0, page, slot);
    if (scaled) scale_rows[j] = kv_scale_index(l, a.kv.format, a.layer, 0, page, slot, 0);
  }
  // From a key's K to its V: the same (page, slot) in the V half of the layer.
  const size_t v_rows = l.offset(a.layer, 1, 0, 0) - l.offset(a.layer, 0, 0, 0);
  const size_t v_scales = scaled ? size_t(l.num_pages) * kv_scales_per_page(l, a.kv.format) : 0;
  float* tile = scratch.tile.data();
  float* p = scratch.probs.data(); // [group, keys]
  const int64_t q_row = (token * a.num_heads + int64_t(kv_head) * a.group) * hd;

  for (int32_t j0 = 0; j0 < keys; j0 += dequant_tile_keys) {
    const int32_t n = std::min(dequant_tile_keys, keys - j0);
    dequantize_rows(a.kv, kv_head, hd, rows + j0, scale_rows + j0, n, tile);
    for (int32_t g = 0; g < a.group; ++g) {
      const float* q = a.q + q_row + int64_t(g) * hd;
      for (int32_t j = 0; j < n; ++j) p[int64_t(g) * keys + j0 + j] = dot(q, tile + size_t(j) * hd, hd) * a.scale;
    }
  }
  for (int32_t g = 0; g < a.group; ++g) {
    float* pg = p + int64_t(g) * keys;
    float max_score = -INFINITY;
    for (int32_t j = 0; j < keys; ++j) max_score = std::max(max_score, pg[j]);
    float sum = 0;
    for (int32_t j = 0; j < keys; ++j) sum += pg[j] = std::exp(pg[j] - max_score);
    const float inv = 1.0f / sum;
    for (int32_t j = 0; j < keys; ++j) pg[j] *= inv;
  }

  float* acc = scratch.acc.data();
  std::fill(acc, acc + size_t(a.group) * hd, 0.0f);
  for (int32_t j = 0; j < keys; ++j) rows[j] += v_rows;
  if (scaled)
    for (int32_t j = 0; j < keys; ++j) scale_rows[j] += v_scales;
  for (int32_t j0 = 0; j0 < keys; j0 += dequant_tile_keys) {
    const int32_t n = std::min(dequant_tile_keys, keys - j0);
    dequantize_rows(a.kv, kv_head, hd, rows + j0, scale_rows + j0, n, tile);
    for (int32_t g = 0; g < a.group; ++g)
      for (int32_t j = 0; j < n; ++j)
        axpy(p[int64_t(g) * keys + j0 + j], tile + size_t(j) * hd, acc + size_t(g) * hd, hd);
  }
  for (int32_t g = 0; g < a.group; ++g)
    std::memcpy(a.out + q_row + int64_t(g) * hd, acc + size_t(g) * hd, hd * sizeof(float));
}

// ---- weight checks ----------------------------------------------------------

void check_tensor(const tensor_f32& t, const std::vector<int64_t>& shape, const std::string& name) {
  if (t.empty()) throw error("cpu_backend: weight " + name + " is missing");
  if (t.shape != shape)
    throw error("cpu_backend: weight " + name + " has shape " + shape_string(t.shape) + ", expected " +
                shape_string(shape));
}

void check_weights(const model_config& c, const model_weights& w) {
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), inter = c.intermediate_size;
  check_tensor(w.embed_tokens, {c.vocab_size, h}, "embed_tokens");
  check_tensor(w.final_norm, {h}, "norm");
  check_tensor(w.lm_head, {c.vocab_size, h}, "lm_head");
  if (int64_t(w.layers.size()) != c.num_layers)
    throw error("cpu_backend: weights have " + std::to_string(w.layers.size()) + " layers, config says " +
                std::to_string(c.num_layers));
  for (int32_t i = 0; i < c.num_layers; ++i) {
    const layer_weights& l = w.layers[i];
    const std::string p = "layers." + std::to_string(i) + ".";
    check_tensor(l.input_norm, {h}, p + "input_layernorm");
    check_tensor(l.q_proj, {q, h}, p + "q_proj");
    check_tensor(l.k_proj, {kv, h}, p + "k_proj");
    check_tensor(l.v_proj, {kv, h}, p + "v_proj");
    if (c.attention_bias) {
      check_tensor(l.q_bias, {q}, p + "q_proj.bias");
      check_tensor(l.k_bias, {kv}, p + "k_proj.bias");
      check_tensor(l.v_bias, {kv}, p + "v_proj.bias");
    }
    if (c.qk_norm) {
      check_tensor(l.q_norm, {c.head_dim}, p + "q_norm");
      check_tensor(l.k_norm, {c.head_dim}, p + "k_norm");
    }
    check_tensor(l.o_proj, {h, q}, p + "o_proj");
    check_tensor(l.post_attention_norm, {h}, p + "post_attention_layernorm");
    check_tensor(l.gate_proj, {inter, h}, p + "gate_proj");
    check_tensor(l.up_proj, {inter, h}, p + "up_proj");
    check_tensor(l.down_proj, {h, inter}, p + "down_proj");
  }
}

// Below this many multiply-adds a loop runs on the calling thread: waking the
// pool costs more than it saves.
constexpr int64_t min_parallel_work = int64_t(1) << 16;

} // namespace

// ---- cpu_backend ------------------------------------------------------------

cpu_backend::cpu_backend(model_config config, std::shared_ptr<const model_weights> weights,
                         int32_t num_pages, int32_t page_size, int32_t num_threads, kv_format kv)
    : config_(std::move(config)), weights_(std::move(weights)), format_(kv), pool_(num_threads) {
  const model_config& c = config_;
  if (!weights_) throw error("cpu_backend: no weights");
  if (num_pages <= 0 || page_size <= 0)
    throw error("cpu_backend: num_pages and page_size must be positive, got " + std::to_string(num_pages) +
                " and " + std::to_string(page_size));
  if (c.num_heads <= 0 || c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0)
    throw error("cpu_backend: num_heads " + std::to_string(c.num_heads) + " is not a multiple of num_kv_heads " +
                std::to_string(c.num_kv_heads));
  if (c.head_dim <= 0 || c.head_dim % 2 != 0)
    throw error("cpu_backend: head_dim must be positive and even, got " + std::to_string(c.head_dim));
  if (c.sliding_window > 0 && int32_t(c.layer_sliding.size()) != c.num_layers)
    throw error("cpu_backend: layer_sliding has " + std::to_string(c.layer_sliding.size()) +
                " entries for " + std::to_string(c.num_layers) + " layers");
  check_weights(c, *weights_);
  layout_ = kv_layout{c.num_layers, num_pages, page_size, c.num_kv_heads, c.head_dim};
  // Zero-filled, so that every page is resident from the start (what the
  // memory profile measures).
  switch (format_) {
    case kv_format::f32: kv_f32_.assign(layout_.total_elems(), 0.0f); break;
    case kv_format::bf16: kv_bf16_.assign(layout_.total_elems(), 0); break;
    case kv_format::fp8:
    case kv_format::int8: kv_q8_.assign(layout_.total_elems(), 0); break;
  }
  kv_scales_.assign(kv_scale_count(layout_, format_), 0.0f);
  inv_freq_ = rope_inv_freq(c);
  window_everywhere_ = reclaimable_window(c);
}

size_t cpu_backend::kv_element_bytes() const {
  return kv_f32_.size() * sizeof(float) + kv_bf16_.size() * sizeof(uint16_t) + kv_q8_.size();
}

void cpu_backend::validate(const forward_batch& batch) const {
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const seq_step& q = batch.seqs[s];
    const std::string where = "forward: sequence " + std::to_string(s) + ": ";
    if (q.tokens.empty()) throw error(where + "no new tokens");
    if (q.start_pos < 0) throw error(where + "negative start_pos " + std::to_string(q.start_pos));
    for (int32_t t : q.tokens)
      if (t < 0 || t >= config_.vocab_size)
        throw error(where + "token id " + std::to_string(t) + " is outside the vocabulary of " +
                    std::to_string(config_.vocab_size));
    const int64_t end = int64_t(q.start_pos) + int64_t(q.tokens.size());
    const int64_t pages = (end + layout_.page_size - 1) / layout_.page_size;
    if (int64_t(q.page_table.size()) < pages)
      throw error(where + "page table has " + std::to_string(q.page_table.size()) + " pages, positions [0, " +
                  std::to_string(end) + ") need " + std::to_string(pages));
    // Pages wholly before the first key of the step's first token may have
    // been released, when every layer slides.
    const int64_t released_ok = pages_behind_window(q.start_pos, window_everywhere_, layout_.page_size);
    for (int64_t i = 0; i < pages; ++i) {
      const int32_t page = q.page_table[i];
      if (page == no_page && i < released_ok) continue;
      if (page == no_page)
        throw error(where + "page " + std::to_string(i) + " (positions from " + std::to_string(i * layout_.page_size) +
                    ") was released, but the step attends to it");
      if (page < 0 || page >= layout_.num_pages)
        throw error(where + "page id " + std::to_string(page) + " is outside [0, " +
                    std::to_string(layout_.num_pages) + ")");
    }
  }
}

void cpu_backend::matmul(const float* x, const float* w, float* y, int64_t rows, int64_t n, int64_t k) {
  if (rows * n * k < min_parallel_work) {
    matmul_columns(x, w, y, rows, n, k, 0, n);
    return;
  }
  pool_.parallel_for(n, [&](int64_t begin, int64_t end) { matmul_columns(x, w, y, rows, n, k, begin, end); });
}

void cpu_backend::apply_rope(float* x, int32_t num_heads) {
  const int32_t hd = config_.head_dim, half = hd / 2;
  for (size_t t = 0; t < tokens_.size(); ++t) {
    const float* cos = rope_cos_.data() + t * half;
    const float* sin = rope_sin_.data() + t * half;
    for (int32_t h = 0; h < num_heads; ++h) {
      float* v = x + (int64_t(t) * num_heads + h) * hd;
      // rotate_half: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)
      for (int32_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cos[i] - b * sin[i];
        v[i + half] = b * cos[i] + a * sin[i];
      }
    }
  }
}

// In token order, so that each fp8 page is written slot after slot.
void cpu_backend::write_kv(int32_t layer, const forward_batch& batch) {
  const size_t kv_dim = layout_.token_elems();
  const int32_t hd = layout_.head_dim;
  for (size_t t = 0; t < tokens_.size(); ++t) {
    const token_ref r = tokens_[t];
    const int32_t page = batch.seqs[r.seq].page_table[r.pos / layout_.page_size];
    const int32_t slot = r.pos % layout_.page_size;
    for (int32_t kv = 0; kv < 2; ++kv) {
      const float* x = (kv == 0 ? k_ : v_).data() + t * kv_dim; // [num_kv_heads, head_dim]
      const size_t at = layout_.offset(layer, kv, page, slot);
      switch (format_) {
        case kv_format::f32: std::memcpy(kv_f32_.data() + at, x, kv_dim * sizeof(float)); break;
        case kv_format::bf16:
          for (size_t i = 0; i < kv_dim; ++i) kv_bf16_[at + i] = f32_to_bf16(x[i]);
          break;
        case kv_format::int8:
          for (int32_t h = 0; h < layout_.num_kv_heads; ++h)
            kv_scales_[kv_scale_index(layout_, format_, layer, kv, page, slot, h)] = int8_quantize_head(
                x + size_t(h) * hd, hd, reinterpret_cast<int8_t*>(kv_q8_.data() + at + size_t(h) * hd));
          break;
        case kv_format::fp8: {
          uint8_t* page_start = kv_q8_.data() + layout_.offset(layer, kv, page, 0);
          for (int32_t h = 0; h < layout_.num_kv_heads; ++h)
            fp8_write_token(page_start + size_t(h) * hd, kv_dim, slot, x + size_t(h) * hd, hd,
                            kv_scales_[kv_scale_index(layout_, format_, layer, kv, page, 0, h)]);
          break;
        }
      }
    }
  }
}

void cpu_backend::attention(int32_t layer, const forward_batch& batch) {
  const model_config& c = config_;
  const kv_view kv{format_, kv_f32_.data(), kv_bf16_.data(), kv_q8_.data(), kv_scales_.data()};
  const attention_args args{q_.data(),
                            attn_.data(),
                            kv,
                            &layout_,
                            layer,
                            c.num_heads,
                            c.num_heads / c.num_kv_heads,
                            c.head_dim,
                            c.uses_sliding(layer) ? c.sliding_window : 0,
                            1.0f / std::sqrt(float(c.head_dim))};
  int32_t max_keys = 0;
  int64_t work = 0; // multiply-adds
  for (const token_ref& r : tokens_) {
    const int32_t keys = args.window > 0 ? std::min(r.pos + 1, args.window) : r.pos + 1;
    max_keys = std::max(max_keys, keys);
    work += int64_t(keys) * c.q_dim() * 2;
  }
  const bool in_place = format_ == kv_format::f32;
  auto run = [&](int64_t begin, int64_t end) {
    attention_scratch scratch{std::vector<size_t>(max_keys), {}, std::vector<float>(size_t(max_keys) * args.group),
                              {}, {}};
    if (!in_place) {
      scratch.scale_rows.resize(max_keys);
      scratch.tile.resize(size_t(dequant_tile_keys) * c.head_dim);
      scratch.acc.resize(size_t(args.group) * c.head_dim);
    }
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t = i / c.num_kv_heads;
      const token_ref r = tokens_[t];
      const auto& pages = batch.seqs[r.seq].page_table;
      if (in_place)
        attend(args, t, int32_t(i % c.num_kv_heads), r.pos, pages, scratch);
      else
        attend_dequantized(args, t, int32_t(i % c.num_kv_heads), r.pos, pages, scratch);
    }
  };
  const int64_t count = int64_t(tokens_.size()) * c.num_kv_heads;
  if (work < min_parallel_work) run(0, count);
  else pool_.parallel_for(count, run);
}

void cpu_backend::run_layer(int32_t layer, const forward_batch& batch) {
  const model_config& c = config_;
  const layer_weights& w = weights_->layers[layer];
  const int64_t n = int64_t(tokens_.size()), h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t inter = c.intermediate_size;

  rms_norm(x_.data(), w.input_norm.data, xn_.data(), n, h, c.rms_norm_eps);
  matmul(xn_.data(), w.q_proj.data, q_.data(), n, qd, h);
  matmul(xn_.data(), w.k_proj.data, k_.data(), n, kvd, h);
  matmul(xn_.data(), w.v_proj.data, v_.data(), n, kvd, h);
  if (c.attention_bias) {
    add_rows(q_.data(), w.q_bias.data, n, qd);
    add_rows(k_.data(), w.k_bias.data, n, kvd);
    add_rows(v_.data(), w.v_bias.data, n, kvd);
  }
  if (c.qk_norm) { // per head, before rope
    rms_norm(q_.data(), w.q_norm.data, q_.data(), n * c.num_heads, c.head_dim, c.rms_norm_eps);
    rms_norm(k_.data(), w.k_norm.data, k_.data(), n * c.num_kv_heads, c.head_dim, c.rms_norm_eps);
  }
  apply_rope(q_.data(), c.num_heads);
  apply_rope(k_.data(), c.num_kv_heads);
  // All new keys first: a token attends to earlier tokens of its own chunk.
  write_kv(layer, batch);
  attention(layer, batch);
  matmul(attn_.data(), w.o_proj.data, out_.data(), n, h, qd);
  for (int64_t i = 0; i < n * h; ++i) x_[i] += out_[i];

  rms_norm(x_.data(), w.post_attention_norm.data, xn_.data(), n, h, c.rms_norm_eps);
  matmul(xn_.data(), w.gate_proj.data, gate_.data(), n, inter, h);
  matmul(xn_.data(), w.up_proj.data, up_.data(), n, inter, h);
  for (int64_t i = 0; i < n * inter; ++i) {
    const float g = gate_[i];
    gate_[i] = g / (1.0f + std::exp(-g)) * up_[i];
  }
  matmul(gate_.data(), w.down_proj.data, out_.data(), n, h, inter);
  for (int64_t i = 0; i < n * h; ++i) x_[i] += out_[i];
}

void cpu_backend::forward(const forward_batch& batch, std::vector<float>& logits) {
  validate(batch);
  const model_config& c = config_;
  const int64_t n = batch.num_tokens(), h = c.hidden_size, half = c.head_dim / 2;

  tokens_.clear();
  for (size_t s = 0; s < batch.seqs.size(); ++s)
    for (size_t i = 0; i < batch.seqs[s].tokens.size(); ++i)
      tokens_.push_back({int32_t(s), batch.seqs[s].start_pos + int32_t(i)});
  rope_cos_.resize(n * half);
  rope_sin_.resize(n * half);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(tokens_[t].pos) * inv_freq_[i];
      rope_cos_[t * half + i] = float(std::cos(angle));
      rope_sin_[t * half + i] = float(std::sin(angle));
    }
  x_.resize(n * h);
  xn_.resize(n * h);
  out_.resize(n * h);
  q_.resize(n * c.q_dim());
  attn_.resize(n * c.q_dim());
  k_.resize(n * c.kv_dim());
  v_.resize(n * c.kv_dim());
  gate_.resize(n * c.intermediate_size);
  up_.resize(n * c.intermediate_size);

  int64_t t = 0;
  for (const seq_step& s : batch.seqs)
    for (int32_t token : s.tokens)
      std::memcpy(&x_[t++ * h], weights_->embed_tokens.data + int64_t(token) * h, h * sizeof(float));
  for (int32_t layer = 0; layer < c.num_layers; ++layer) run_layer(layer, batch);

  // Final norm and lm_head only for the last token of each sequence asking.
  const int64_t rows = batch.num_logits();
  t = 0;
  int64_t row = 0;
  for (const seq_step& s : batch.seqs) {
    t += int64_t(s.tokens.size());
    if (s.want_logits)
      rms_norm(&x_[(t - 1) * h], weights_->final_norm.data, &xn_[row++ * h], 1, h, c.rms_norm_eps);
  }
  logits.resize(rows * c.vocab_size);
  matmul(xn_.data(), weights_->lm_head.data, logits.data(), rows, c.vocab_size, h);
}

} // namespace kvactor
