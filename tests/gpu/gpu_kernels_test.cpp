// The fast kernels against the references they replace, on random inputs
// drawn fresh on every run (the seed is printed with a failure):
// tensor-core attention vs the general attention kernel, split-KV decode
// attention vs the general kernel with and without splits, GEMV (plain,
// with the residual add, with the RMSNorm and SwiGLU) vs float64, the qkv
// GEMV with RoPE and the K/V write vs the GEMV then the RoPE/KV kernel,
// the RoPE/KV kernel vs float64,
// GPU sampling vs the CPU sampler; 8-bit KV writes vs the CPU's
// quantization, 8-bit KV reads vs the same kernels on the dequantized values.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gpu/batch_plan.h"
#include "gpu/cuda_check.h"
#include "gpu/decode_attention.h"
#include "gpu/device_buffer.h"
#include "gpu/flash_attention.h"
#include "gpu/gemv.h"
#include "gpu/kv_quantize.h"
#include "gpu/paged_attention.h"
#include "gpu/rope_kv.h"
#include "gpu/sampling.h"
#include "runtime/dtype.h"
#include "runtime/kv_quant.h"
#include "runtime/sampler.h"
#include "tests/logit_distance.h"

using namespace kvactor;
using bf16 = __nv_bfloat16;
using gpu::device_buffer;

namespace {

using test::rel_l2;

uint32_t fresh_seed() {
  static std::random_device device;
  return device();
}

void summary(const std::string& line) {
  std::printf("summary: %s\n", line.c_str());
  std::fflush(stdout);
}

std::string fixed(double x) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3g", x);
  return text;
}

// Host values rounded to bf16 (the values the device sees).
std::vector<uint16_t> random_bf16(size_t n, float scale, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = f32_to_bf16(u(rng));
  return v;
}

template <typename T, typename H>
device_buffer<T> upload(const std::vector<H>& host) {
  static_assert(sizeof(T) == sizeof(H));
  device_buffer<T> d(host.size());
  KVACTOR_CUDA_CHECK(cudaMemcpy(d.get(), host.data(), host.size() * sizeof(H), cudaMemcpyHostToDevice));
  return d;
}

std::vector<float> download_bf16(const device_buffer<bf16>& d) {
  std::vector<uint16_t> raw(d.size());
  KVACTOR_CUDA_CHECK(cudaMemcpy(raw.data(), d.get(), raw.size() * 2, cudaMemcpyDeviceToHost));
  std::vector<float> out(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) out[i] = bf16_to_f32(raw[i]);
  return out;
}

template <typename T>
std::vector<T> download(const device_buffer<T>& d) {
  std::vector<T> out(d.size());
  KVACTOR_CUDA_CHECK(cudaMemcpy(out.data(), d.get(), out.size() * sizeof(T), cudaMemcpyDeviceToHost));
  return out;
}

// ---- attention ----------------------------------------------------------------

struct attention_shape {
  int32_t head_dim, num_heads, num_kv_heads, window;
};

// Shapes of Llama 3 8B, of GQA groups of 3 (ragged tiles) with a window, of
// every head size, and of groups of 1 and 8.
const std::vector<attention_shape> attention_shapes{
    {128, 32, 8, 0}, {64, 6, 2, 37}, {32, 6, 2, 0}, {16, 4, 4, 0}, {128, 4, 1, 0}, {64, 16, 2, 0}, {256, 4, 2, 20}};

// A one-layer paged cache filled with random K/V, a batch over it, its
// queries, and the attention output through each kernel.
struct attention_fixture {
  attention_fixture(const attention_shape& s, const std::vector<std::pair<int32_t, int32_t>>& seqs, std::mt19937& rng)
      : shape(s) {
    int32_t pages_needed = 0;
    for (auto [start, n] : seqs) pages_needed += (start + n + page_size - 1) / page_size;
    layout = kv_layout{1, pages_needed + 3, page_size, s.num_kv_heads, s.head_dim};
    std::vector<int32_t> pages(size_t(layout.num_pages));
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), rng); // page order must not matter
    size_t next = 0;
    for (auto [start, n] : seqs) {
      seq_step q;
      q.tokens.assign(size_t(n), 1);
      q.start_pos = start;
      const int32_t count = (start + n + page_size - 1) / page_size;
      q.page_table.assign(pages.begin() + ptrdiff_t(next), pages.begin() + ptrdiff_t(next + size_t(count)));
      next += size_t(count);
      batch.seqs.push_back(std::move(q));
    }
    kv = upload<bf16>(random_bf16(layout.total_elems(), 1.0f, rng));
    q = upload<bf16>(random_bf16(size_t(batch.num_tokens()) * s.num_heads * s.head_dim, 3.0f, rng));
  }

  // Makes the cache `f` (fp8 or int8): random K/V quantized as the CPU
  // backend does (fp8 pages written slot by slot, with magnitudes that grow
  // within a page, so that scales grow and slots are requantized), and `kv`
  // becomes its dequantized values in bf16. read_as then picks which one the
  // kernels read.
  void quantize(kv_format f, std::mt19937& rng) {
    const int32_t H = layout.num_kv_heads, D = layout.head_dim;
    std::vector<uint8_t> bytes(kv_element_bytes(layout, f));
    std::vector<float> scales(kv_scale_count(layout, f));
    std::vector<uint16_t> plain(layout.total_elems());
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(D));
    for (int32_t which = 0; which < 2; ++which)
      for (int32_t page = 0; page < layout.num_pages; ++page)
        for (int32_t head = 0; head < H; ++head)
          for (int32_t slot = 0; slot < layout.page_size; ++slot) {
            const float magnitude = slot % 5 == 4 ? 8.0f * float(slot) : 1.0f;
            for (float& e : x) e = u(rng) * magnitude;
            const size_t at = layout.offset(0, which, page, slot) + size_t(head) * D;
            const size_t s = kv_scale_index(layout, f, 0, which, page, slot, head);
            if (f == kv_format::fp8)
              fp8_write_token(bytes.data() + layout.offset(0, which, page, 0) + size_t(head) * D, size_t(H) * D, slot,
                              x.data(), D, scales[s]);
            else
              scales[s] = int8_quantize_head(x.data(), D, reinterpret_cast<int8_t*>(bytes.data() + at));
          }
    for (int32_t which = 0; which < 2; ++which)
      for (int32_t page = 0; page < layout.num_pages; ++page)
        for (int32_t slot = 0; slot < layout.page_size; ++slot)
          for (int32_t head = 0; head < H; ++head) {
            const size_t at = layout.offset(0, which, page, slot) + size_t(head) * D;
            const float scale = scales[kv_scale_index(layout, f, 0, which, page, slot, head)];
            for (int32_t d = 0; d < D; ++d) {
              const uint8_t b = bytes[at + size_t(d)];
              const float value = f == kv_format::fp8 ? fp8_e4m3_to_f32(b) : float(int8_t(b));
              plain[at + size_t(d)] = f32_to_bf16(value * scale);
            }
          }
    kv = upload<bf16>(plain);
    kv8 = upload<uint8_t>(bytes);
    kv_scales = upload<float>(scales);
    format = f;
  }

  gpu::paged_kv_view view(const gpu::batch_plan& p, const device_buffer<int32_t>& meta) const {
    gpu::paged_kv_view v;
    if (read_as != kv_format::bf16) {
      v.k = kv8.get() + layout.offset(0, 0, 0, 0);
      v.v = kv8.get() + layout.offset(0, 1, 0, 0);
      v.k_scale = kv_scales.get() + kv_scale_index(layout, read_as, 0, 0, 0, 0, 0);
      v.v_scale = kv_scales.get() + kv_scale_index(layout, read_as, 0, 1, 0, 0, 0);
      v.format = read_as;
    } else {
      v.k = kv.get() + layout.offset(0, 0, 0, 0);
      v.v = kv.get() + layout.offset(0, 1, 0, 0);
    }
    v.page_indptr = meta.get() + p.page_indptr;
    v.page_indices = meta.get() + p.page_indices;
    v.page_size = layout.page_size;
    v.num_kv_heads = layout.num_kv_heads;
    v.head_dim = layout.head_dim;
    return v;
  }

  // Through the general kernel (flash false) or a tensor-core variant.
  std::vector<float> general(bool flash, gpu::flash_variant variant = gpu::default_flash_variant) const {
    const int32_t group = shape.num_heads / shape.num_kv_heads;
    const int32_t tile = flash ? gpu::flash_attention_tile_tokens(shape.head_dim, group, variant)
                               : std::max(1, gpu::attention_tile_rows / group);
    gpu::batch_plan p;
    gpu::build_batch_plan(batch, 1 << 20, layout, tile, p);
    const auto meta = upload<int32_t>(p.data);
    device_buffer<bf16> out(q.size());
    out.poison(nullptr);
    gpu::attention_params a;
    a.q = q.get();
    a.out = out.get();
    a.kv = view(p, meta);
    a.positions = meta.get() + p.positions;
    a.token_seq = meta.get() + p.token_seq;
    a.qo_indptr = meta.get() + p.qo_indptr;
    a.tile_first = meta.get() + p.tile_first;
    a.num_heads = shape.num_heads;
    a.group = group;
    a.tile_tokens = tile;
    a.window = shape.window;
    a.scale = 1.0f / std::sqrt(float(shape.head_dim));
    if (flash) {
      gpu::init_flash_attention();
      gpu::launch_flash_attention(a, p.num_tiles, nullptr, variant);
    } else {
      gpu::init_paged_attention(shape.head_dim, tile * group);
      gpu::launch_paged_attention(a, p.num_tiles, nullptr);
    }
    KVACTOR_CUDA_CHECK(cudaDeviceSynchronize());
    return download_bf16(out);
  }

  // Through the decode kernel, the batch padded to `rows`.
  std::vector<float> decode(int32_t rows, int32_t max_splits, int32_t min_split_keys) const {
    gpu::batch_plan p;
    gpu::build_decode_plan(batch, 1 << 20, layout, rows, rows, p);
    const auto meta = upload<int32_t>(p.data);
    device_buffer<bf16> out(size_t(rows) * shape.num_heads * shape.head_dim);
    out.poison(nullptr);
    device_buffer<float> partial_out(gpu::decode_partial_out_elems(rows, max_splits, shape.num_heads, shape.head_dim));
    device_buffer<float> partial_ml(gpu::decode_partial_ml_elems(rows, max_splits, shape.num_heads));
    device_buffer<int32_t> split_done(gpu::decode_split_done_elems(rows, shape.num_kv_heads));
    KVACTOR_CUDA_CHECK(cudaMemset(split_done.get(), 0, split_done.size() * sizeof(int32_t)));
    gpu::decode_attention_params a;
    a.q = q.get(); // rows past the batch are padding: never read
    a.out = out.get();
    a.kv = view(p, meta);
    a.positions = meta.get() + p.positions;
    a.partial_out = partial_out.get();
    a.partial_ml = partial_ml.get();
    a.split_done = split_done.get();
    a.num_heads = shape.num_heads;
    a.group = shape.num_heads / shape.num_kv_heads;
    a.window = shape.window;
    a.max_splits = max_splits;
    a.min_split_keys = min_split_keys;
    a.scale = 1.0f / std::sqrt(float(shape.head_dim));
    gpu::launch_decode_attention(a, rows, nullptr);
    KVACTOR_CUDA_CHECK(cudaDeviceSynchronize());
    // The block that merges a row's splits zeroes its count for the next launch.
    const auto done = download(split_done);
    CHECK(std::count(done.begin(), done.end(), 0) == std::ptrdiff_t(done.size()));
    return download_bf16(out);
  }

  static constexpr int32_t page_size = 16;
  attention_shape shape;
  kv_layout layout;
  forward_batch batch;
  device_buffer<bf16> kv;
  device_buffer<uint8_t> kv8;      // after quantize(): the 8-bit cache
  device_buffer<float> kv_scales;  // and its scales
  kv_format format = kv_format::bf16;  // what quantize() made
  kv_format read_as = kv_format::bf16; // what the kernels read
  device_buffer<bf16> q; // [tokens, num_heads, head_dim]
};

std::string shape_name(const attention_shape& s) {
  char text[64];
  std::snprintf(text, sizeof text, "d%d h%d/%d w%d", s.head_dim, s.num_heads, s.num_kv_heads, s.window);
  return text;
}

// ---- sampling -----------------------------------------------------------------

// The candidates runtime/sampler.cpp keeps (its steps, written out again).
std::vector<int32_t> cpu_kept(std::vector<float> logits, const sampling_params& p) {
  const int32_t vocab = int32_t(logits.size());
  for (float& l : logits) l /= p.temperature;
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<double> prob(static_cast<size_t>(vocab));
  for (int32_t i = 0; i < vocab; ++i) prob[size_t(i)] = std::exp(double(logits[size_t(i)] - max_logit));
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return prob[size_t(a)] > prob[size_t(b)] || (prob[size_t(a)] == prob[size_t(b)] && a < b); });
  int32_t kept = vocab;
  if (p.top_k > 0 && p.top_k < vocab) kept = p.top_k;
  if (p.top_p < 1.0f) {
    double total = 0;
    for (int32_t i = 0; i < kept; ++i) total += prob[size_t(order[size_t(i)])];
    double cum = 0;
    int32_t n = 0;
    while (n < kept) {
      cum += prob[size_t(order[size_t(n++)])];
      if (cum >= p.top_p * total) break;
    }
    kept = n;
  }
  if (p.min_p > 0.0f) {
    int32_t n = 1;
    while (n < kept && prob[size_t(order[size_t(n)])] >= p.min_p) ++n;
    kept = n;
  }
  std::vector<int32_t> pick(order.begin(), order.begin() + kept);
  std::sort(pick.begin(), pick.end());
  return pick;
}

// The candidates a GPU cutoff keeps.
std::vector<int32_t> gpu_kept(const std::vector<float>& logits, float temperature, const gpu::sample_cutoff& cut) {
  std::vector<float> scaled(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) scaled[i] = logits[i] / temperature;
  const float max_scaled = *std::max_element(scaled.begin(), scaled.end());
  std::vector<int32_t> kept;
  for (size_t i = 0; i < logits.size(); ++i) {
    const uint32_t key = gpu::sample_order_key(scaled[i] - max_scaled);
    if (key > cut.key || (key == cut.key && int32_t(i) <= cut.index)) kept.push_back(int32_t(i));
  }
  return kept;
}

} // namespace

// ---- tests --------------------------------------------------------------------

TEST_CASE("tensor-core attention matches the general kernel on mixed batches") {
  // A whole prompt, a later chunk, a decode token, a short prompt, a chunk
  // after a page boundary.
  const std::vector<std::pair<int32_t, int32_t>> seqs{{0, 150}, {37, 70}, {300, 1}, {0, 5}, {129, 64}};
  std::string line = "tensor-core (5 variants) vs general attention, rel-L2";
  for (const attention_shape& shape : attention_shapes) {
    if (!gpu::flash_attention_supports(shape.head_dim, shape.num_heads / shape.num_kv_heads)) continue;
    const uint32_t seed = fresh_seed();
    CAPTURE(seed);
    CAPTURE(shape_name(shape));
    std::mt19937 rng(seed);
    const attention_fixture f(shape, seqs, rng);
    const std::vector<float> want = f.general(false);
    line += ", " + shape_name(shape) + ":";
    for (auto variant : {gpu::flash_variant::rows64_keys64_q_registers, gpu::flash_variant::rows64_keys32_q_registers,
                         gpu::flash_variant::rows64_keys32_q_shared, gpu::flash_variant::rows128_keys64,
                         gpu::flash_variant::rows128_keys32, gpu::flash_variant::rows256_keys64,
                         gpu::flash_variant::rows256_keys32}) {
      CAPTURE(int(variant));
      const double err = rel_l2(f.general(true, variant), want);
      CHECK(err < 1e-2);
      line += ' ';
      line += fixed(err);
    }
  }
  summary(line);
}

TEST_CASE("split-KV decode attention matches the general kernel, split or not") {
  // Positions around a page boundary, a long one, the first position.
  const std::vector<std::pair<int32_t, int32_t>> seqs{{63, 1}, {64, 1}, {1000, 1}, {0, 1}, {2047, 1}};
  const int32_t rows = 8; // three padding rows
  std::string line = "decode attention rel-L2 (1 split / 8 / 32 vs general; 8 vs 1)";
  for (const attention_shape& shape : attention_shapes) {
    if (!gpu::decode_attention_supports(shape.head_dim, shape.num_heads / shape.num_kv_heads)) continue;
    const uint32_t seed = fresh_seed();
    CAPTURE(seed);
    CAPTURE(shape_name(shape));
    std::mt19937 rng(seed);
    const attention_fixture f(shape, seqs, rng);
    const std::vector<float> want = f.general(false);
    const size_t real = want.size(), padded = size_t(rows) * shape.num_heads * shape.head_dim;
    const auto first = [&](const std::vector<float>& v) { return std::vector<float>(v.begin(), v.begin() + ptrdiff_t(real)); };
    const auto whole = f.decode(rows, 1, 64), split8 = f.decode(rows, 8, 16), split32 = f.decode(rows, 32, 1);
    REQUIRE(whole.size() == padded);
    const double e1 = rel_l2(first(whole), want), e8 = rel_l2(first(split8), want);
    const double e32 = rel_l2(first(split32), want), e81 = rel_l2(first(split8), first(whole));
    CHECK(e1 < 1e-2);
    CHECK(e8 < 1e-2);
    CHECK(e32 < 1e-2);
    CHECK(e81 < 1e-2);
    // Padding rows are written as zeros.
    for (const auto* out : {&whole, &split8, &split32})
      CHECK(std::all_of(out->begin() + ptrdiff_t(real), out->end(), [](float x) { return x == 0.0f; }));
    line += ", " + shape_name(shape) + ": " + fixed(e1) + "/" + fixed(e8) + "/" + fixed(e32) + "; " + fixed(e81);
  }
  summary(line);
}

TEST_CASE("attention over 8-bit KV equals attention over its dequantized bf16 values, bit for bit") {
  // Tensor-core (prefill and mixed) and split-KV decode kernels: each reads
  // an fp8 / int8 cache and the same values dequantized to bf16; both must
  // give the same bits, as the 8-bit paths only change where the bf16
  // values come from.
  const std::vector<std::pair<int32_t, int32_t>> mixed{{0, 150}, {37, 70}, {300, 1}, {0, 5}, {129, 64}};
  const std::vector<std::pair<int32_t, int32_t>> decode{{63, 1}, {64, 1}, {1000, 1}, {0, 1}, {2047, 1}};
  std::string line = "8-bit KV attention equal to bf16 of its values:";
  for (const attention_shape& shape : attention_shapes) {
    const int32_t group = shape.num_heads / shape.num_kv_heads;
    if (!gpu::flash_attention_supports(shape.head_dim, group)) continue;
    for (kv_format f : {kv_format::fp8, kv_format::int8}) {
      const uint32_t seed = fresh_seed();
      CAPTURE(seed);
      CAPTURE(shape_name(shape));
      CAPTURE(kv_format_name(f));
      std::mt19937 rng(seed);
      attention_fixture prefill(shape, mixed, rng);
      prefill.quantize(f, rng);
      const auto want = prefill.general(true, gpu::kv8_flash_variant);
      prefill.read_as = f;
      const auto got = prefill.general(true, gpu::kv8_flash_variant);
      CHECK(got == want);
      bool decode_same = true;
      if (gpu::decode_attention_supports(shape.head_dim, group)) {
        attention_fixture dec(shape, decode, rng);
        dec.quantize(f, rng);
        const auto want_1 = dec.decode(8, 1, 64), want_8 = dec.decode(8, 8, 16);
        dec.read_as = f;
        decode_same = dec.decode(8, 1, 64) == want_1 && dec.decode(8, 8, 16) == want_8;
        CHECK(decode_same);
      }
      line += " " + shape_name(shape) + " " + std::string(kv_format_name(f)) +
              (got == want && decode_same ? " identical," : " DIFFERENT,");
    }
  }
  summary(line);
}

TEST_CASE("8-bit KV writes store what the CPU backend stores, bit for bit") {
  // Two launches over one cache: the first writes the start of two
  // sequences, the second continues them mid-page and adds a third whose
  // prompt spans three pages. Magnitudes grow within pages, so fp8 scales
  // grow and earlier slots are requantized, across launches too. The CPU
  // side applies fp8_write_token / int8_quantize_head token by token.
  for (kv_format f : {kv_format::fp8, kv_format::int8}) {
    for (auto [heads, dim] : {std::pair{2, 64}, std::pair{1, 128}}) {
      const uint32_t seed = fresh_seed();
      CAPTURE(seed);
      CAPTURE(kv_format_name(f));
      CAPTURE(dim);
      std::mt19937 rng(seed);
      const kv_layout layout{1, 12, 16, heads, dim};
      const size_t slot_stride = size_t(heads) * dim;
      std::vector<uint8_t> want(kv_element_bytes(layout, f), 0xff);
      std::vector<float> want_scales(kv_scale_count(layout, f), std::numeric_limits<float>::quiet_NaN());
      auto bytes = upload<uint8_t>(want);
      auto scales = upload<float>(want_scales);
      std::uniform_real_distribution<float> u(-1.0f, 1.0f);
      int32_t requantized = 0;
      const auto launch = [&](const forward_batch& batch) {
        gpu::batch_plan p;
        gpu::build_batch_plan(batch, 1 << 20, layout, 1, p);
        const int32_t n = batch.num_tokens();
        std::vector<float> stage(size_t(n) * 2 * slot_stride);
        int32_t t = 0;
        for (const seq_step& q : batch.seqs)
          for (size_t i = 0; i < q.tokens.size(); ++i, ++t) {
            const int32_t pos = q.start_pos + int32_t(i), slot = pos % layout.page_size;
            const int32_t page = q.page_table[size_t(pos / layout.page_size)];
            for (int32_t which = 0; which < 2; ++which)
              for (int32_t head = 0; head < heads; ++head) {
                float* x = stage.data() + (size_t(t) * 2 + which) * slot_stride + size_t(head) * dim;
                const float magnitude = slot % 6 == 5 ? 4.0f * float(slot) : 1.0f;
                for (int32_t d = 0; d < dim; ++d) x[d] = u(rng) * magnitude;
                float& scale = want_scales[kv_scale_index(layout, f, 0, which, page, slot, head)];
                if (f == kv_format::fp8)
                  requantized += fp8_write_token(want.data() + layout.offset(0, which, page, 0) + size_t(head) * dim,
                                                 slot_stride, slot, x, dim, scale);
                else
                  scale = int8_quantize_head(
                      x, dim, reinterpret_cast<int8_t*>(want.data() + layout.offset(0, which, page, slot) + size_t(head) * dim));
              }
          }
        const auto meta = upload<int32_t>(p.data);
        const auto staged = upload<float>(stage);
        gpu::kv_quantize_params k;
        k.stage = staged.get();
        k.positions = meta.get() + p.positions;
        k.token_seq = meta.get() + p.token_seq;
        k.kv.k = bytes.get() + layout.offset(0, 0, 0, 0);
        k.kv.v = bytes.get() + layout.offset(0, 1, 0, 0);
        k.kv.k_scale = scales.get() + kv_scale_index(layout, f, 0, 0, 0, 0, 0);
        k.kv.v_scale = scales.get() + kv_scale_index(layout, f, 0, 1, 0, 0, 0);
        k.kv.page_indptr = meta.get() + p.page_indptr;
        k.kv.page_indices = meta.get() + p.page_indices;
        k.kv.page_size = layout.page_size;
        k.kv.num_kv_heads = heads;
        k.kv.head_dim = dim;
        k.kv.format = f;
        k.num_tokens = p.num_tokens;
        gpu::launch_kv_quantize(k, nullptr);
        KVACTOR_CUDA_CHECK(cudaDeviceSynchronize());
      };
      const auto ones = [](int32_t n) { return std::vector<int32_t>(size_t(n), 1); };
      forward_batch first, second;
      first.seqs.push_back({ones(20), 0, {3, 7}, true});     // slots 0..15 of page 3, 0..3 of page 7
      first.seqs.push_back({ones(35), 0, {0, 1, 2}, true});  // pages 0, 1, 2 (slot 2 last)
      second.seqs.push_back({ones(9), 20, {3, 7}, true});    // page 7, slots 4..12
      second.seqs.push_back({ones(1), 35, {0, 1, 2}, true}); // a decode token: page 2, slot 3
      second.seqs.push_back({ones(41), 0, {9, 5, 11}, true});
      launch(first);
      launch(second);
      const auto got = download(bytes);
      const auto got_scales = download(scales);
      size_t differ = 0, scales_differ = 0;
      for (size_t i = 0; i < got.size(); ++i) differ += got[i] != want[i] ? 1 : 0;
      for (size_t i = 0; i < got_scales.size(); ++i)
        scales_differ += !(got_scales[i] == want_scales[i] || (std::isnan(got_scales[i]) && std::isnan(want_scales[i])));
      CHECK(differ == 0);
      CHECK(scales_differ == 0);
      if (f == kv_format::fp8) CHECK(requantized > 0);
      summary("8-bit KV write " + std::string(kv_format_name(f)) + " d" + std::to_string(dim) + ": " +
              std::to_string(differ) + " of " + std::to_string(got.size()) + " bytes and " +
              std::to_string(scales_differ) + " of " + std::to_string(got_scales.size()) +
              " scales differ from the CPU's (" + std::to_string(requantized) + " requantizations)");
    }
  }
}

// An RMSNorm's input as the kernel before a normed GEMV prepares it
// (gpu::norm_input): x = bf16(r * g) and the sums of r^2 over each 8 columns.
struct host_norm_input {
  std::vector<uint16_t> x;
  std::vector<float> sq_parts;
  std::vector<double> sum_sq; // of each row
};

host_norm_input prepare_norm(const std::vector<float>& r, const std::vector<float>& g, int32_t m, int32_t k) {
  host_norm_input in{std::vector<uint16_t>(r.size()), std::vector<float>(r.size() / 8),
                     std::vector<double>(static_cast<size_t>(m))};
  for (size_t i = 0; i < r.size(); ++i) {
    in.sum_sq[i / size_t(k)] += double(r[i]) * r[i];
    in.sq_parts[i / 8] += r[i] * r[i];
    in.x[i] = f32_to_bf16(r[i] * g[i % size_t(k)]);
  }
  return in;
}

TEST_CASE("GEMV matches a float64 reference for 1 to 4 rows: plain, added to the residual, normed, normed+gated") {
  const uint32_t seed = fresh_seed();
  CAPTURE(seed);
  std::mt19937 rng(seed);
  const float eps = 1e-5f;
  double worst_bf16 = 0, worst_f32 = 0, worst_add = 0, worst_sum_sq = 0, worst_norm = 0, worst_gated = 0;
  // n: multiples of 8 (the residual's width); k: a partial last iteration.
  for (auto [n, k] : {std::pair{96, 64}, std::pair{1000, 264}, std::pair{40, 4104}}) {
    for (int32_t m = 1; m <= gpu::gemv_max_rows; ++m) {
      CAPTURE(m);
      CAPTURE(n);
      CAPTURE(k);
      const auto x = random_bf16(size_t(m) * k, 1.0f, rng), w = random_bf16(size_t(2 * n) * k, 1.0f, rng);
      // The residual stream (scaled so that the RMS is not 1) and the norms'
      // weights: r, g into the normed GEMVs; r0, g_next under the add.
      std::uniform_real_distribution<float> u(-3.0f, 3.0f), near_one(0.5f, 1.5f);
      std::vector<float> r(size_t(m) * k), r0(size_t(m) * n), g(static_cast<size_t>(k)), g_next(static_cast<size_t>(n));
      for (auto* v : {&r, &r0}) for (auto& e : *v) e = u(rng);
      for (auto* v : {&g, &g_next}) for (auto& e : *v) e = near_one(rng);
      const host_norm_input in = prepare_norm(r, g, m, k);
      // [m, 2n] in float64: the rows of w against the rows of x and of the normed r.
      std::vector<double> dot(size_t(m) * 2 * n), rdot(size_t(m) * 2 * n);
      for (int32_t i = 0; i < m; ++i) {
        const double inv = 1.0 / std::sqrt(in.sum_sq[size_t(i)] / k + eps);
        for (int32_t j = 0; j < 2 * n; ++j) {
          double s = 0, sr = 0;
          for (int32_t e = 0; e < k; ++e) {
            const double we = bf16_to_f32(w[size_t(j) * k + e]);
            s += double(bf16_to_f32(x[size_t(i) * k + e])) * we;
            sr += double(r[size_t(i) * k + e]) * g[size_t(e)] * we;
          }
          dot[size_t(i) * 2 * n + j] = s;
          rdot[size_t(i) * 2 * n + j] = sr * inv;
        }
      }
      std::vector<float> plain(size_t(m) * n), normed(size_t(m) * n), gated(size_t(m) * n);
      for (int32_t i = 0; i < m; ++i)
        for (int32_t j = 0; j < n; ++j) {
          const size_t at = size_t(i) * 2 * n + j;
          plain[size_t(i) * n + j] = float(dot[at]);
          normed[size_t(i) * n + j] = float(rdot[at]);
          const double gate = rdot[at], up = rdot[at + size_t(n)];
          gated[size_t(i) * n + j] = float(gate / (1 + std::exp(-gate)) * up);
        }
      const auto dx = upload<bf16>(x), dw = upload<bf16>(w);
      auto din_x = upload<bf16>(in.x);
      const auto dg_next = upload<float>(g_next);
      auto din_sq_parts = upload<float>(in.sq_parts);
      auto added = upload<float>(r0);
      device_buffer<bf16> y_bf16(size_t(m) * n), next_x(size_t(m) * n), y_norm(size_t(m) * n), y_gated(size_t(m) * n);
      device_buffer<float> y_f32(size_t(m) * n), next_sq_parts(size_t(m) * n / 8);
      const gpu::norm_input normed_in{din_x.get(), din_sq_parts.get()};
      gpu::launch_gemv(dx.get(), dw.get(), y_bf16.get(), false, m, n, k, nullptr);
      gpu::launch_gemv(dx.get(), dw.get(), y_f32.get(), true, m, n, k, nullptr);
      gpu::launch_gemv_add(dx.get(), dw.get(), added.get(), dg_next.get(), {next_x.get(), next_sq_parts.get()}, m, n, k,
                           nullptr);
      gpu::launch_rms_norm_gemv(normed_in, dw.get(), y_norm.get(), m, n, k, eps, nullptr);
      gpu::launch_rms_norm_gemv_gated(normed_in, dw.get(), y_gated.get(), m, n, k, eps, nullptr);
      KVACTOR_CUDA_CHECK(cudaDeviceSynchronize());
      // What the kernel added, the next norm's input (exactly as the
      // host rounds it) and its sums of squares.
      const std::vector<float> sum = download(added), got_x = download_bf16(next_x), got_sq = download(next_sq_parts);
      std::vector<float> delta(sum.size());
      size_t x_differ = 0;
      for (size_t i = 0; i < sum.size(); ++i) {
        delta[i] = sum[i] - r0[i];
        x_differ += got_x[i] != bf16_to_f32(f32_to_bf16(sum[i] * g_next[i % size_t(n)])) ? 1 : 0;
      }
      CHECK(x_differ == 0);
      for (size_t part = 0; part < got_sq.size(); ++part) {
        double sq = 0;
        for (size_t j = 8 * part; j < 8 * part + 8; ++j) sq += double(sum[j]) * sum[j];
        worst_sum_sq = std::max(worst_sum_sq, std::abs(got_sq[part] - sq) / sq);
      }
      CHECK(worst_sum_sq < 1e-5);
      const double ea = rel_l2(delta, plain);
      CHECK(ea < 1e-2);
      worst_add = std::max(worst_add, ea);
      const double eb = rel_l2(download_bf16(y_bf16), plain), ef = rel_l2(download(y_f32), plain);
      const double en = rel_l2(download_bf16(y_norm), normed), eg = rel_l2(download_bf16(y_gated), gated);
      CHECK(eb < 1e-2);
      CHECK(ef < 1e-5);
      CHECK(en < 1e-2);
      CHECK(eg < 1e-2);
      worst_bf16 = std::max(worst_bf16, eb);
      worst_f32 = std::max(worst_f32, ef);
      worst_norm = std::max(worst_norm, en);
      worst_gated = std::max(worst_gated, eg);
    }
  }
  char line[320];
  std::snprintf(line, sizeof line,
                "gemv vs float64, max rel-L2: bf16 out %.3g, fp32 out %.3g, added to the residual %.3g (next norm's "
                "sums of squares, rel. %.3g), normed %.3g, normed+gated %.3g",
                worst_bf16, worst_f32, worst_add, worst_sum_sq, worst_norm, worst_gated);
  summary(line);
}

TEST_CASE("the RoPE/KV kernel matches float64 RoPE for 1 to 2,051 tokens: bias, q/k norms, pages, staging") {
  const uint32_t seed = fresh_seed();
  CAPTURE(seed);
  std::mt19937 rng(seed);
  const int32_t page_size = 16, num_seqs = 3;
  const float eps = 1e-6f;
  struct shape {
    int32_t head_dim, num_heads, num_kv_heads;
    bool bias, norms, stage;
  };
  double worst = 0;
  for (const shape sh : {shape{128, 8, 2, false, false, false}, shape{64, 6, 2, true, true, false},
                         shape{128, 4, 1, true, false, true}}) {
    // 1 and 3 take the few-token path (3 with a padding row), 129 one token a
    // block, 700 two, 2,051 eight and a partial last block.
    for (const int32_t m : {1, 3, 129, 700, 2051}) {
      CAPTURE(sh.head_dim);
      CAPTURE(m);
      const int32_t hd = sh.head_dim, half = hd / 2, nq = sh.num_heads, nkv = sh.num_kv_heads;
      const int32_t num_all = nq + 2 * nkv, qkv_dim = num_all * hd;
      // Tokens t go to sequence t % 3 at consecutive positions from a random
      // start; pages are shuffled.
      std::vector<int32_t> positions(static_cast<size_t>(m)), token_seq(static_cast<size_t>(m));
      std::vector<int32_t> start(static_cast<size_t>(num_seqs)), count(static_cast<size_t>(num_seqs), 0);
      for (auto& s : start) s = int32_t(rng() % 40);
      for (int32_t t = 0; t < m; ++t) {
        const int32_t s = t % num_seqs;
        token_seq[size_t(t)] = s;
        positions[size_t(t)] = start[size_t(s)] + count[size_t(s)]++;
      }
      if (m == 3) positions[2] = -1;
      std::vector<int32_t> indptr{0}, indices;
      int32_t num_pages = 0;
      for (int32_t s = 0; s < num_seqs; ++s) num_pages += (start[size_t(s)] + count[size_t(s)]) / page_size + 1;
      std::vector<int32_t> shuffled(static_cast<size_t>(num_pages));
      std::iota(shuffled.begin(), shuffled.end(), 0);
      std::shuffle(shuffled.begin(), shuffled.end(), rng);
      for (int32_t s = 0; s < num_seqs; ++s) {
        const int32_t n = (start[size_t(s)] + count[size_t(s)]) / page_size + 1;
        indices.insert(indices.end(), shuffled.begin() + indices.size(), shuffled.begin() + indices.size() + n);
        indptr.push_back(int32_t(indices.size()));
      }
      std::uniform_real_distribution<float> u(-1.0f, 1.0f), near_one(0.5f, 1.5f);
      const auto qkv = random_bf16(size_t(m) * qkv_dim, 2.0f, rng);
      std::vector<float> bias(static_cast<size_t>(qkv_dim)), q_norm(static_cast<size_t>(hd)),
          k_norm(static_cast<size_t>(hd));
      for (auto& v : bias) v = u(rng);
      for (auto& v : q_norm) v = near_one(rng);
      for (auto& v : k_norm) v = near_one(rng);
      std::vector<double> inv_freq(static_cast<size_t>(half));
      for (int32_t i = 0; i < half; ++i) inv_freq[size_t(i)] = std::pow(500000.0, -2.0 * i / hd);

      // float64 reference: q [m, nq, hd]; K and V at their slot of the cache
      // [pages, page_size, nkv, hd] (or of the staging rows [m, 2, nkv, hd]).
      const size_t kv_elems = size_t(num_pages) * page_size * nkv * hd;
      std::vector<double> q_ref(size_t(m) * nq * hd, 0.0), k_ref(kv_elems, 0.0), v_ref(kv_elems, 0.0),
          stage_ref(size_t(m) * 2 * nkv * hd, 0.0);
      for (int32_t t = 0; t < m; ++t) {
        const int32_t pos = positions[size_t(t)];
        if (pos < 0) continue;
        const int32_t page = indices[size_t(indptr[size_t(token_seq[size_t(t)])] + pos / page_size)];
        const size_t slot = (size_t(page) * page_size + pos % page_size) * nkv * hd;
        for (int32_t h = 0; h < num_all; ++h) {
          std::vector<double> x(static_cast<size_t>(hd));
          double sum_sq = 0;
          for (int32_t i = 0; i < hd; ++i) {
            x[size_t(i)] = bf16_to_f32(qkv[size_t(t) * qkv_dim + size_t(h) * hd + i]);
            if (sh.bias) x[size_t(i)] += bias[size_t(h) * hd + i];
            sum_sq += x[size_t(i)] * x[size_t(i)];
          }
          const bool is_v = h >= nq + nkv;
          std::vector<double> y = x;
          if (!is_v) {
            if (sh.norms) {
              const auto& w = h < nq ? q_norm : k_norm;
              const double inv = 1.0 / std::sqrt(sum_sq / hd + eps);
              for (int32_t i = 0; i < hd; ++i) x[size_t(i)] *= inv * w[size_t(i)];
            }
            for (int32_t i = 0; i < half; ++i) {
              const double angle = double(pos) * inv_freq[size_t(i)];
              const double a = x[size_t(i)], b = x[size_t(i + half)];
              y[size_t(i)] = a * std::cos(angle) - b * std::sin(angle);
              y[size_t(i + half)] = b * std::cos(angle) + a * std::sin(angle);
            }
          }
          double* dst = h < nq                ? &q_ref[(size_t(t) * nq + h) * hd]
                        : sh.stage            ? &stage_ref[(size_t(t) * 2 + (is_v ? 1 : 0)) * nkv * hd +
                                                           size_t(h - nq - (is_v ? nkv : 0)) * hd]
                        : !is_v               ? &k_ref[slot + size_t(h - nq) * hd]
                                              : &v_ref[slot + size_t(h - nq - nkv) * hd];
          std::copy(y.begin(), y.end(), dst);
        }
      }

      const auto dqkv = upload<bf16>(qkv);
      const auto dbias = upload<float>(bias), dq_norm = upload<float>(q_norm), dk_norm = upload<float>(k_norm);
      const auto dpos = upload<int32_t>(positions), dseq = upload<int32_t>(token_seq);
      const auto dindptr = upload<int32_t>(indptr), dindices = upload<int32_t>(indices);
      const auto dfreq = upload<double>(inv_freq);
      device_buffer<bf16> q_out(q_ref.size()), k_cache(kv_elems), v_cache(kv_elems);
      device_buffer<float> stage(stage_ref.size());
      KVACTOR_CUDA_CHECK(cudaMemset(q_out.get(), 0, q_out.size() * sizeof(bf16)));
      KVACTOR_CUDA_CHECK(cudaMemset(k_cache.get(), 0, k_cache.size() * sizeof(bf16)));
      KVACTOR_CUDA_CHECK(cudaMemset(v_cache.get(), 0, v_cache.size() * sizeof(bf16)));
      KVACTOR_CUDA_CHECK(cudaMemset(stage.get(), 0, stage.size() * sizeof(float)));
      gpu::rope_kv_params p;
      p.qkv = dqkv.get();
      p.qkv_bias = sh.bias ? dbias.get() : nullptr;
      p.q_norm = sh.norms ? dq_norm.get() : nullptr;
      p.k_norm = sh.norms ? dk_norm.get() : nullptr;
      p.inv_freq = dfreq.get();
      p.positions = dpos.get();
      p.token_seq = dseq.get();
      p.kv.k = k_cache.get();
      p.kv.v = v_cache.get();
      p.kv.page_indptr = dindptr.get();
      p.kv.page_indices = dindices.get();
      p.kv.page_size = page_size;
      p.kv.num_kv_heads = nkv;
      p.kv.head_dim = hd;
      p.kv_stage = sh.stage ? stage.get() : nullptr;
      p.q_out = q_out.get();
      p.num_heads = nq;
      p.num_kv_heads = nkv;
      p.head_dim = hd;
      p.eps = eps;
      gpu::launch_rope_kv(p, m, nullptr);
      KVACTOR_CUDA_CHECK(cudaDeviceSynchronize());

      // Each output against the reference; what the reference leaves zero
      // (slots of no token, the padding row) stays zero.
      const auto compare = [&](const std::vector<float>& got, const std::vector<double>& want) {
        size_t stray = 0;
        std::vector<float> w(want.size());
        for (size_t i = 0; i < want.size(); ++i) {
          w[i] = float(want[i]);
          stray += (want[i] == 0.0) != (got[i] == 0.0f) ? 1 : 0;
        }
        CHECK(stray == 0);
        const double e = rel_l2(got, w);
        CHECK(e < 5e-3); // bf16 outputs: rounding alone is about 2e-3
        worst = std::max(worst, e);
      };
      compare(download_bf16(q_out), q_ref);
      if (sh.stage) {
        const auto st = download(stage);
        compare(st, stage_ref);
        CHECK(rel_l2(st, std::vector<float>(stage_ref.begin(), stage_ref.end())) < 1e-5); // fp32 staging
      } else {
        compare(download_bf16(k_cache), k_ref);
        compare(download_bf16(v_cache), v_ref);
      }
    }
  }
  summary("RoPE/KV kernel vs float64, max rel-L2 " + fixed(worst));
}

TEST_CASE("the qkv GEMV with RoPE and the K/V write fused matches the GEMV, then the RoPE/KV kernel") {
  const uint32_t seed = fresh_seed();
  CAPTURE(seed);
  std::mt19937 rng(seed);
  const float eps = 1e-5f;
  const int32_t page_size = 16, num_pages = 12, k = 264; // k: a partial last iteration
  struct shape {
    int32_t head_dim, num_heads, num_kv_heads;
    bool bias;
  };
  double worst_q = 0, worst_kv = 0;
  for (const shape sh : {shape{128, 8, 2, false}, shape{64, 4, 4, true}, shape{32, 6, 2, true}}) {
    for (int32_t m = 1; m <= gpu::gemv_max_rows; ++m) {
      CAPTURE(sh.head_dim);
      CAPTURE(m);
      const int32_t hd = sh.head_dim, qkv_dim = (sh.num_heads + 2 * sh.num_kv_heads) * hd;
      const size_t kv_elems = size_t(num_pages) * page_size * sh.num_kv_heads * hd;
      // Token t is sequence t's newest, at a random position; the last of
      // several rows is padding (position -1).
      std::vector<int32_t> positions(static_cast<size_t>(m)), token_seq(static_cast<size_t>(m)), indptr{0}, indices;
      for (int32_t t = 0; t < m; ++t) {
        positions[size_t(t)] = t == m - 1 && m > 1 ? -1 : int32_t(rng() % (3 * page_size));
        token_seq[size_t(t)] = t;
        for (int32_t j = 0; j < 3; ++j) indices.push_back(3 * t + j);
        indptr.push_back(int32_t(indices.size()));
      }
      std::uniform_real_distribution<float> u(-1.0f, 1.0f), near_one(0.5f, 1.5f);
      std::vector<float> g(static_cast<size_t>(k)), bias(static_cast<size_t>(qkv_dim));
      for (auto& v : g) v = near_one(rng);
      for (auto& v : bias) v = u(rng);
      std::vector<double> inv_freq(size_t(hd / 2));
      for (int32_t i = 0; i < hd / 2; ++i) inv_freq[size_t(i)] = std::pow(500000.0, -2.0 * i / hd);
      std::vector<float> r(size_t(m) * k);
      std::uniform_real_distribution<float> spread(-3.0f, 3.0f);
      for (auto& v : r) v = spread(rng);
      const host_norm_input in = prepare_norm(r, g, m, k);
      const auto w = random_bf16(size_t(qkv_dim) * k, 1.0f, rng);
      auto din_x = upload<bf16>(in.x), dw = upload<bf16>(w);
      auto din_sq_parts = upload<float>(in.sq_parts);
      const auto dbias = upload<float>(bias);
      const gpu::norm_input normed_in{din_x.get(), din_sq_parts.get()};
      const auto dpos = upload<int32_t>(positions), dseq = upload<int32_t>(token_seq);
      const auto dindptr = upload<int32_t>(indptr), dindices = upload<int32_t>(indices);
      const auto dfreq = upload<double>(inv_freq);
      device_buffer<bf16> qkv(size_t(m) * qkv_dim), q_want(size_t(m) * sh.num_heads * hd),
          q_got(size_t(m) * sh.num_heads * hd), k_want(kv_elems), v_want(kv_elems), k_got(kv_elems), v_got(kv_elems);
      for (auto* b : {&q_want, &q_got, &k_want, &v_want, &k_got, &v_got})
        KVACTOR_CUDA_CHECK(cudaMemset(b->get(), 0, b->size() * sizeof(bf16)));
      gpu::rope_kv_params p;
      p.qkv = qkv.get();
      p.qkv_bias = sh.bias ? dbias.get() : nullptr;
      p.inv_freq = dfreq.get();
      p.positions = dpos.get();
      p.token_seq = dseq.get();
      p.kv.page_indptr = dindptr.get();
      p.kv.page_indices = dindices.get();
      p.kv.page_size = page_size;
      p.kv.num_kv_heads = sh.num_kv_heads;
      p.kv.head_dim = hd;
      p.num_heads = sh.num_heads;
      p.num_kv_heads = sh.num_kv_heads;
      p.head_dim = hd;
      REQUIRE(gpu::rope_kv_fusable(p));
      gpu::rope_kv_params want = p, got = p;
      want.q_out = q_want.get();
      want.kv.k = k_want.get();
      want.kv.v = v_want.get();
      got.q_out = q_got.get();
      got.kv.k = k_got.get();
      got.kv.v = v_got.get();
      gpu::launch_rms_norm_gemv(normed_in, dw.get(), qkv.get(), m, qkv_dim, k, eps, nullptr);
      gpu::launch_rope_kv(want, m, nullptr);
      gpu::launch_rms_norm_gemv_rope_kv(normed_in, dw.get(), got, m, k, eps, nullptr);
      KVACTOR_CUDA_CHECK(cudaDeviceSynchronize());
      // The reference rounds q, k, v to bf16 before RoPE, the fused kernel
      // after: close, not equal. Slots nothing wrote stay zero in both.
      const auto qw = download_bf16(q_want), qg = download_bf16(q_got);
      std::vector<float> kvw = download_bf16(k_want), kvg = download_bf16(k_got);
      const auto vw = download_bf16(v_want), vg = download_bf16(v_got);
      kvw.insert(kvw.end(), vw.begin(), vw.end());
      kvg.insert(kvg.end(), vg.begin(), vg.end());
      size_t written = 0, stray = 0;
      for (size_t i = 0; i < kvw.size(); ++i) {
        written += kvw[i] != 0.0f ? 1 : 0;
        stray += (kvw[i] == 0.0f) != (kvg[i] == 0.0f) ? 1 : 0;
      }
      const int32_t real_tokens = m > 1 ? m - 1 : 1;
      CHECK(written > size_t(real_tokens) * 2 * sh.num_kv_heads * hd * 9 / 10);
      CHECK(stray == 0);
      const double eq = rel_l2(qg, qw), ekv = rel_l2(kvg, kvw);
      CHECK(eq < 1e-2);
      CHECK(ekv < 1e-2);
      worst_q = std::max(worst_q, eq);
      worst_kv = std::max(worst_kv, ekv);
    }
  }
  summary("qkv GEMV + RoPE/KV fused vs GEMV then RoPE/KV kernel, max rel-L2: q " + fixed(worst_q) + ", K/V " +
          fixed(worst_kv));
}

TEST_CASE("GPU sampling picks the CPU sampler's token and keeps the same candidates, penalized or not") {
  const uint32_t seed = fresh_seed();
  CAPTURE(seed);
  std::mt19937 rng(seed);
  const int32_t vocab = 50000;
  // temperature, top_p, top_k, min_p (seed and counter vary per row)
  const std::vector<sampling_params> kinds{
      {0.0f, 1.0f, 0, 0.0f},     {1.0f, 1.0f, 0, 0.0f},      {0.7f, 1.0f, 50, 0.0f},   {1.0f, 0.9f, 0, 0.0f},
      {1.3f, 1.0f, 0, 0.05f},    {0.9f, 0.95f, 1000, 0.01f}, {1.0f, 1.0f, 1, 0.0f},    {1.0f, 0.0f, 0, 0.0f},
      {1.0f, 1.0f, 0, 1.5f},     {0.8f, 1.0f, vocab - 1, 0.0f}, {2.0f, 0.5f, 0, 0.2f}, {0.5f, 0.99f, 40000, 0.0f}};
  const int32_t rows = 3 * int32_t(kinds.size());
  std::vector<float> logits(size_t(rows) * vocab);
  std::vector<sampling_params> params;
  std::vector<uint64_t> counters;
  std::vector<std::vector<int32_t>> histories(static_cast<size_t>(rows));
  std::vector<gpu::sample_row> device_rows;
  std::vector<int32_t> penalty_list;
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int32_t r = 0; r < rows; ++r) {
    // Every third row has coarse logits: many exact ties.
    const bool coarse = r % 3 == 1;
    for (int32_t j = 0; j < vocab; ++j) {
      const float x = normal(rng);
      logits[size_t(r) * vocab + j] = coarse ? std::round(2.0f * x) / 2.0f : x;
    }
    sampling_params p = kinds[size_t(r) % kinds.size()];
    p.seed = rng();
    counters.push_back(uint64_t(r) * 7);
    // Half the rows, every kind among them, have a repetition penalty (above
    // or below 1) over a history with repeats that holds the row's likeliest
    // token.
    auto& h = histories[size_t(r)];
    if ((r + r / int32_t(kinds.size())) % 2 != 0) {
      p.repetition_penalty = r % 3 == 0 ? 0.8f : 1.3f;
      const auto top =
          std::max_element(logits.begin() + ptrdiff_t(r) * vocab, logits.begin() + ptrdiff_t(r + 1) * vocab);
      h.push_back(int32_t(top - (logits.begin() + ptrdiff_t(r) * vocab)));
      for (int32_t i = 0; i < 1500 + r * 40; ++i) h.push_back(int32_t(rng() % 2000));
    }
    params.push_back(p);
    device_rows.push_back(gpu::make_sample_row(p, counters.back(), h, vocab, penalty_list));
  }
  const auto d_logits = upload<float>(logits);
  const auto d_penalty = upload<int32_t>(penalty_list);
  device_buffer<gpu::sample_row> d_rows(device_rows.size());
  KVACTOR_CUDA_CHECK(cudaMemcpy(d_rows.get(), device_rows.data(), device_rows.size() * sizeof(gpu::sample_row),
                                cudaMemcpyHostToDevice));
  device_buffer<int32_t> d_tokens(static_cast<size_t>(rows));
  device_buffer<gpu::sample_cutoff> d_cutoffs(static_cast<size_t>(rows));
  gpu::init_sampling(vocab);
  gpu::launch_sample(d_logits.get(), d_rows.get(), d_penalty.get(), d_tokens.get(), d_cutoffs.get(), rows, vocab,
                     nullptr);
  KVACTOR_CUDA_CHECK(cudaDeviceSynchronize());
  const auto tokens = download(d_tokens);
  const auto cutoffs = download(d_cutoffs);

  int32_t same_token = 0, same_set = 0, sets = 0;
  size_t largest_set = 0;
  for (int32_t r = 0; r < rows; ++r) {
    CAPTURE(r);
    const sampling_params& p = params[size_t(r)];
    std::vector<float> row(logits.begin() + ptrdiff_t(r) * vocab, logits.begin() + ptrdiff_t(r + 1) * vocab);
    std::vector<float> scratch = row;
    const auto& history = histories[size_t(r)];
    const int32_t want = sample_token(scratch, p, history, counters[size_t(r)]);
    // The candidates come from the penalized logits.
    apply_repetition_penalty(row, p.repetition_penalty, history);
    CHECK(tokens[size_t(r)] == want);
    same_token += tokens[size_t(r)] == want ? 1 : 0;
    if (p.temperature == 0.0f) continue;
    const auto cpu = cpu_kept(row, p), gpu_set = gpu_kept(row, p.temperature, cutoffs[size_t(r)]);
    CHECK(gpu_set == cpu);
    ++sets;
    same_set += gpu_set == cpu ? 1 : 0;
    largest_set = std::max(largest_set, cpu.size());
  }
  summary("GPU sampling vs CPU sampler: " + std::to_string(same_token) + "/" + std::to_string(rows) +
          " tokens equal (" + std::to_string(rows / 2) + " rows with a repetition penalty), " +
          std::to_string(same_set) + "/" + std::to_string(sets) +
          " candidate sets equal (largest " + std::to_string(largest_set) + ")");
}
