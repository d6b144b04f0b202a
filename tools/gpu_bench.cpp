// The CUDA backend's benchmark (docs/performance.md): the device's two
// ceilings, the backend on a model's shapes with random bf16 weights, and
// the Hugging Face reference's numbers from tools/reference/hf_bench.py, in
// one table printed last.
//
//   gpu_bench [--config tools/shapes/llama3-8b/config.json] [--hf hf.json] [--json out.json]
//             [--only ceilings | --only decode | --only prefill]
//
// Measured: (1) a large device-to-device copy (bytes read + written per
// second) and a cuBLASLt bf16 GEMM of 8192^3; (2) one prompt of 8192 tokens
// prefilled in chunks of 2048; (3) decode of one sequence at context 1024,
// through graphs and without; (4) decode steps of 256 sequences at context
// 640; (5) the kernels behind them alone.
#include <cuda_runtime.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gpu/batch_plan.h"
#include "gpu/cuda_check.h"
#include "gpu/cuda_executor.h"
#include "gpu/cuda_model.h"
#include "gpu/decode_attention.h"
#include "gpu/device_buffer.h"
#include "gpu/flash_attention.h"
#include "gpu/gemm.h"
#include "gpu/gemv.h"
#include "gpu/paged_attention.h"
#include "gpu/random_fill.h"
#include "gpu/rms_norm.h"
#include "gpu/rope_kv.h"
#include "gpu/silu_mul.h"
#include "gpu/sampling.h"
#include "runtime/error.h"
#include "runtime/model_config.h"
#include "runtime/sampler.h"

using namespace kvactor;
using gpu::bf16;
using gpu::device_buffer;
namespace json = boost::json;

namespace {

using clock_type = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// Median milliseconds of `f` on `stream` over `reps` runs after `warmup`, by events.
double time_ms(cudaStream_t stream, int warmup, int reps, const std::function<void(int)>& f) {
  cudaEvent_t start, stop;
  KVACTOR_CUDA_CHECK(cudaEventCreate(&start));
  KVACTOR_CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; ++i) f(i);
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    KVACTOR_CUDA_CHECK(cudaEventRecord(start, stream));
    f(warmup + i);
    KVACTOR_CUDA_CHECK(cudaEventRecord(stop, stream));
    KVACTOR_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    KVACTOR_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return median(ms);
}

std::string fmt(const char* format, double x) {
  char text[64];
  std::snprintf(text, sizeof text, format, x);
  return text;
}

// Results by name, printed as JSON at the end.
json::object results;

void record(const std::string& name, double value) {
  results[name] = value;
  std::printf("  %-44s %12.4g\n", name.c_str(), value);
  std::fflush(stdout);
}

std::vector<int32_t> pages_from(int32_t first, int32_t count) {
  std::vector<int32_t> p(static_cast<size_t>(count));
  std::iota(p.begin(), p.end(), first);
  return p;
}

std::vector<int32_t> random_tokens(size_t n, int32_t vocab, std::mt19937& rng) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(rng() % uint32_t(vocab));
  return t;
}

// ---- ceilings -------------------------------------------------------------------

void ceilings(cudaStream_t stream) {
  std::printf("ceilings\n");
  const size_t bytes = size_t(2) << 30;
  {
    device_buffer<bf16> a(bytes / 2), b(bytes / 2);
    gpu::fill_random(a.get(), a.size(), 0.0f, 1.0f, 1, stream);
    const double ms = time_ms(stream, 3, 20, [&](int) {
      KVACTOR_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, stream));
    });
    record("copy_bandwidth_GBps", 2.0 * double(bytes) / (ms * 1e-3) / 1e9);
  }
  {
    const int64_t n = 8192;
    device_buffer<bf16> x(size_t(n * n)), w(size_t(n * n)), y(size_t(n * n));
    gpu::fill_random(x.get(), x.size(), 0.0f, 1.0f, 2, stream);
    gpu::fill_random(w.get(), w.size(), 0.0f, 1.0f, 3, stream);
    gpu::gemm_runner gemm(stream);
    const double ms = time_ms(stream, 3, 20, [&](int) { gemm.run(x.get(), w.get(), y.get(), CUDA_R_16BF, n, n, n); });
    record("gemm_bf16_8192_TFLOPs", 2.0 * double(n) * n * n / (ms * 1e-3) / 1e12);
  }
}

// ---- the model ------------------------------------------------------------------

struct bench_setup {
  std::shared_ptr<cuda_model> model;
  std::mt19937 rng{7};
  int32_t page_size = 16;
  int32_t vocab() const { return model->config().vocab_size; }
};

// One prompt of `prompt` tokens in chunks of `chunk`, the last chunk wanting logits.
void prefill(bench_setup& b, cuda_executor& ex, int32_t prompt, int32_t chunk, const std::string& name) {
  std::printf("%s: %d tokens in chunks of %d\n", name.c_str(), prompt, chunk);
  const auto tokens = random_tokens(size_t(prompt), b.vocab(), b.rng);
  const auto pages = pages_from(0, (prompt + b.page_size - 1) / b.page_size);
  std::vector<float> logits;
  const auto run = [&] {
    for (int32_t at = 0; at < prompt; at += chunk) {
      forward_batch f;
      const int32_t end = std::min(prompt, at + chunk);
      f.seqs.push_back({{tokens.begin() + at, tokens.begin() + end}, at, pages, end == prompt});
      ex.forward(f, logits);
    }
  };
  run(); // warm-up: plans every GEMM shape
  std::vector<double> s;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = clock_type::now();
    run();
    s.push_back(seconds_since(t0));
  }
  const double t = median(s);
  const double flops = 2.0 * double(b.model->parameter_count()) * prompt;
  record(name + "_seconds", t);
  record(name + "_tok_per_s", prompt / t);
  record(name + "_model_TFLOPs", flops / t / 1e12);
}

// How a decode step's tokens are chosen.
enum class pick {
  device,         // forward_and_sample
  logits,         // forward: the logits to the host, nothing sampled
  device_penalty, // forward_and_sample, every row with a repetition penalty over its context
  host_penalty,   // the same rows sampled on the host from forward's logits (the engine's way before)
};

// `steps` decode steps of `seqs` sequences from context `context`; returns
// ms per step. Sequence s uses pages from s * pages_each.
double decode(bench_setup& b, cuda_executor& ex, int32_t seqs, int32_t context, int32_t steps, pick how,
              int32_t pages_each) {
  forward_batch f;
  for (int32_t s = 0; s < seqs; ++s)
    f.seqs.push_back({{int32_t(b.rng() % uint32_t(b.vocab()))}, context, pages_from(s * pages_each, pages_each), true});
  std::vector<sampling_params> params(static_cast<size_t>(seqs));
  std::vector<uint64_t> counters(size_t(seqs), 0);
  for (int32_t s = 0; s < seqs; ++s) {
    params[size_t(s)].seed = uint64_t(s);
    // A mix of what requests ask for: greedy, temperature, top-k, top-p.
    switch (s % 4) {
      case 0: params[size_t(s)].temperature = 0.0f; break;
      case 1: params[size_t(s)].temperature = 0.8f; break;
      case 2: params[size_t(s)].top_k = 50; break;
      default: params[size_t(s)].top_p = 0.9f; break;
    }
  }
  const bool penalty = how == pick::device_penalty || how == pick::host_penalty;
  std::vector<std::vector<int32_t>> history(static_cast<size_t>(seqs));
  std::vector<std::span<const int32_t>> histories;
  if (penalty) {
    for (int32_t s = 0; s < seqs; ++s) {
      params[size_t(s)].repetition_penalty = 1.1f;
      history[size_t(s)] = random_tokens(size_t(context), b.vocab(), b.rng);
      history[size_t(s)].reserve(size_t(context + steps + 3));
    }
  }
  std::vector<float> logits;
  std::vector<int32_t> tokens;
  const int32_t vocab = b.vocab();
  const auto step = [&](int32_t i) {
    for (auto& q : f.seqs) q.start_pos = context + i;
    for (auto& c : counters) c = uint64_t(i);
    if (how == pick::logits) {
      ex.forward(f, logits);
      return;
    }
    histories.clear();
    if (penalty) histories.assign(history.begin(), history.end());
    if (how == pick::host_penalty) {
      ex.forward(f, logits);
      tokens.resize(size_t(seqs));
      for (int32_t s = 0; s < seqs; ++s)
        tokens[size_t(s)] = sample_token(std::span<float>(logits).subspan(size_t(s) * vocab, size_t(vocab)),
                                         params[size_t(s)], histories[size_t(s)], counters[size_t(s)]);
    } else {
      ex.forward_and_sample(f, params, histories, counters, tokens);
    }
    for (int32_t s = 0; s < seqs; ++s) {
      f.seqs[size_t(s)].tokens[0] = tokens[size_t(s)];
      if (penalty) history[size_t(s)].push_back(tokens[size_t(s)]);
    }
  };
  for (int32_t i = 0; i < 3; ++i) step(i); // the first captures the graph
  const auto t0 = clock_type::now();
  for (int32_t i = 3; i < 3 + steps; ++i) step(i);
  return 1e3 * seconds_since(t0) / steps;
}

// ---- kernels alone --------------------------------------------------------------

// Small-batch projections: the GEMV against cuBLASLt on one layer's shapes,
// rotating over the layers so that the weights come from memory, not L2.
void projections(bench_setup& b, cudaStream_t stream) {
  std::printf("projections, effective weight bandwidth (GB/s)\n");
  const model_config& c = b.model->config();
  const gpu::device_weights& w = b.model->weights();
  const int64_t h = c.hidden_size, inter = c.intermediate_size, qkv = c.q_dim() + 2 * c.kv_dim();
  device_buffer<bf16> x(size_t(16 * inter)), y(size_t(16 * 2 * inter));
  device_buffer<float> sq_parts(size_t(16 * h / 8)); // of the rows of x, as a normed GEMV reads them
  gpu::fill_random(x.get(), x.size(), 0.0f, 1.0f, 11, stream);
  gpu::fill_random(sq_parts.get(), sq_parts.size(), 8.0f, 1.0f, 12, stream);
  gpu::gemm_runner gemm(stream);
  struct shape {
    const char* name;
    int64_t n, k;
    std::function<const bf16*(size_t)> weight;
  };
  const std::vector<shape> shapes{
      {"qkv", qkv, h, [&](size_t l) { return w.layers[l].qkv.get(); }},
      {"o_proj", h, c.q_dim(), [&](size_t l) { return w.layers[l].o_proj.get(); }},
      {"gate_up", 2 * inter, h, [&](size_t l) { return w.layers[l].gate_up.get(); }},
      {"down", h, inter, [&](size_t l) { return w.layers[l].down.get(); }},
  };
  const size_t layers = w.layers.size();
  device_buffer<bf16> big_x(size_t(2048 * inter)), big_y(size_t(2048 * 2 * inter));
  gpu::fill_random(big_x.get(), big_x.size(), 0.0f, 1.0f, 13, stream);
  gpu::gemm_runner tuned(stream, true);
  for (const shape& s : shapes)
    for (int64_t m : {256, 2048})
      for (gpu::gemm_runner* runner : {&gemm, &tuned}) {
        const double ms = time_ms(stream, 3, 16, [&](int i) {
          runner->run(big_x.get(), s.weight(size_t(i) % layers), big_y.get(), CUDA_R_16BF, m, s.n, s.k);
        });
        record(std::string("gemm_") + s.name + "_m" + std::to_string(m) + (runner == &tuned ? "_tuned" : "") +
                   "_TFLOPs",
               2.0 * double(m) * double(s.n) * double(s.k) / (ms * 1e-3) / 1e12);
      }
  for (const shape& s : shapes) {
    const double bytes = 2.0 * double(s.n) * double(s.k);
    for (int32_t m : {1, 4, 16}) {
      const std::string base = std::string("proj_") + s.name + "_m" + std::to_string(m);
      if (m <= gpu::gemv_max_rows) {
        const double ms = time_ms(stream, 5, 64, [&](int i) {
          gpu::launch_gemv(x.get(), s.weight(size_t(i) % layers), y.get(), false, m, int32_t(s.n), int32_t(s.k), stream);
        });
        record(base + "_gemv_GBps", bytes / (ms * 1e-3) / 1e9);
        if (std::string(s.name) == "gate_up") { // as the decode step runs it: RMSNorm and SwiGLU fused
          const double gated = time_ms(stream, 5, 64, [&](int i) {
            gpu::launch_rms_norm_gemv_gated({x.get(), sq_parts.get()}, s.weight(size_t(i) % layers), y.get(), m,
                                            int32_t(inter), int32_t(h), c.rms_norm_eps, stream);
          });
          record(base + "_gemv_norm_gated_GBps", bytes / (gated * 1e-3) / 1e9);
        }
      }
      const double ms = time_ms(stream, 5, 64, [&](int i) {
        gemm.run(x.get(), s.weight(size_t(i) % layers), y.get(), CUDA_R_16BF, m, s.n, s.k);
      });
      record(base + "_cublaslt_GBps", bytes / (ms * 1e-3) / 1e9);
    }
  }
}

// One layer's attention: the decode kernel over 256 sequences at context 640
// and over one at 1024, and the prefill kernels for the last chunk of the
// 8192-token prompt (2048 new tokens after 6144 cached).
// The memory-bound kernels of a 2048-token prefill chunk, one layer's
// worth each: the bytes they must move against the copy bandwidth.
void pointwise(bench_setup& b, cudaStream_t stream) {
  std::printf("pointwise kernels at 2048 tokens, effective bandwidth (GB/s)\n");
  const model_config& c = b.model->config();
  const int64_t m = 2048, h = c.hidden_size, inter = c.intermediate_size, qkv_dim = c.q_dim() + 2 * c.kv_dim();
  device_buffer<float> residual(size_t(m * h));
  device_buffer<bf16> delta(size_t(m * h)), normed(size_t(m * h)), gate_up(size_t(m * 2 * inter)),
      act(size_t(m * inter)), qkv(size_t(m * qkv_dim)), q(size_t(m * c.q_dim()));
  gpu::fill_random(delta.get(), delta.size(), 0.0f, 1.0f, 21, stream);
  gpu::fill_random(gate_up.get(), gate_up.size(), 0.0f, 1.0f, 22, stream);
  gpu::fill_random(qkv.get(), qkv.size(), 0.0f, 1.0f, 23, stream);
  KVACTOR_CUDA_CHECK(cudaMemsetAsync(residual.get(), 0, residual.size() * sizeof(float), stream));
  const float* norm_weight = b.model->weights().final_norm.get();
  const double norm_ms = time_ms(stream, 3, 32, [&](int) {
    gpu::launch_add_rms_norm(nullptr, residual.get(), delta.get(), true, norm_weight, normed.get(), int32_t(m),
                             int32_t(h), c.rms_norm_eps, stream);
  });
  record("pointwise_add_rms_norm_m2048_GBps", double(m * h * (4 + 2 + 4 + 2)) / (norm_ms * 1e-3) / 1e9);
  const double silu_ms = time_ms(stream, 3, 32, [&](int) {
    gpu::launch_silu_mul(gate_up.get(), act.get(), int32_t(m), int32_t(inter), stream);
  });
  record("pointwise_silu_mul_m2048_GBps", double(m * inter * (4 + 2)) / (silu_ms * 1e-3) / 1e9);
  forward_batch f;
  f.seqs.push_back({std::vector<int32_t>(size_t(m), 1), 0, pages_from(0, int32_t(m) / b.page_size), false});
  gpu::batch_plan plan;
  gpu::build_batch_plan(f, c.vocab_size, b.model->layout(), 1, plan);
  device_buffer<int32_t> meta(plan.data.size());
  KVACTOR_CUDA_CHECK(cudaMemcpy(meta.get(), plan.data.data(), plan.data.size() * 4, cudaMemcpyHostToDevice));
  gpu::rope_kv_params r;
  r.qkv = qkv.get();
  r.inv_freq = b.model->inv_freq();
  r.positions = meta.get() + plan.positions;
  r.token_seq = meta.get() + plan.token_seq;
  r.kv = b.model->kv_view(0);
  r.kv.page_indptr = meta.get() + plan.page_indptr;
  r.kv.page_indices = meta.get() + plan.page_indices;
  r.q_out = q.get();
  r.num_heads = c.num_heads;
  r.num_kv_heads = c.num_kv_heads;
  r.head_dim = c.head_dim;
  r.eps = c.rms_norm_eps;
  const double rope_ms = time_ms(stream, 3, 32, [&](int) { gpu::launch_rope_kv(r, int32_t(m), stream); });
  record("pointwise_rope_kv_m2048_GBps", double(m * (qkv_dim + qkv_dim) * 2) / (rope_ms * 1e-3) / 1e9);
  // Per 8192-token prefill: two norms, one SiLU-mul and one RoPE/KV write
  // per layer and chunk.
  record("pointwise_prefill_8192_ms", 4.0 * double(c.num_layers) * (2 * norm_ms + silu_ms + rope_ms));
}

void attention(bench_setup& b, cudaStream_t stream, int32_t num_sms) {
  std::printf("attention, one layer\n");
  const model_config& c = b.model->config();
  const kv_layout& layout = b.model->layout();
  const int32_t group = c.num_heads / c.num_kv_heads, d = c.head_dim;
  const float scale = 1.0f / std::sqrt(float(d));
  const size_t kv_token_bytes = 2 * sizeof(bf16) * size_t(c.num_kv_heads) * d; // one layer, K and V
  device_buffer<bf16> q(size_t(2048) * c.q_dim()), out(size_t(2048) * c.q_dim());
  gpu::fill_random(q.get(), q.size(), 0.0f, 1.0f, 12, stream);
  gpu::batch_plan plan;
  const auto view = [&](const device_buffer<int32_t>& meta, int32_t layer) {
    gpu::paged_kv_view v = b.model->kv_view(layer);
    v.page_indptr = meta.get() + plan.page_indptr;
    v.page_indices = meta.get() + plan.page_indices;
    return v;
  };
  const auto upload = [&] {
    device_buffer<int32_t> meta(plan.data.size());
    KVACTOR_CUDA_CHECK(cudaMemcpy(meta.get(), plan.data.data(), plan.data.size() * 4, cudaMemcpyHostToDevice));
    return meta;
  };

  for (auto [seqs, context] : {std::pair{256, 640}, std::pair{1, 1024}}) {
    forward_batch f;
    const int32_t pages_each = (context + b.page_size) / b.page_size;
    for (int32_t s = 0; s < seqs; ++s) f.seqs.push_back({{1}, context, pages_from(s * pages_each, pages_each), true});
    gpu::build_decode_plan(f, c.vocab_size, layout, seqs, seqs, plan);
    const auto meta = upload();
    const int32_t splits = gpu::decode_max_splits(seqs, c.num_kv_heads, num_sms);
    device_buffer<float> part(gpu::decode_partial_out_elems(seqs, splits, c.num_heads, d));
    device_buffer<float> ml(gpu::decode_partial_ml_elems(seqs, splits, c.num_heads));
    device_buffer<int32_t> done(gpu::decode_split_done_elems(seqs, c.num_kv_heads));
    KVACTOR_CUDA_CHECK(cudaMemset(done.get(), 0, done.size() * sizeof(int32_t)));
    gpu::decode_attention_params a;
    a.q = q.get();
    a.out = out.get();
    a.positions = meta.get() + plan.positions;
    a.partial_out = part.get();
    a.partial_ml = ml.get();
    a.split_done = done.get();
    a.num_heads = c.num_heads;
    a.group = group;
    a.max_splits = splits;
    a.min_split_keys = 64;
    a.scale = scale;
    const double ms = time_ms(stream, 3, 32, [&](int i) {
      a.kv = view(meta, i % c.num_layers);
      gpu::launch_decode_attention(a, seqs, stream);
    });
    const std::string name = "decode_attention_b" + std::to_string(seqs) + "_ctx" + std::to_string(context);
    record(name + "_us", ms * 1e3);
    record(name + "_GBps", double(seqs) * (context + 1) * kv_token_bytes / (ms * 1e-3) / 1e9);
  }

  // The prefill's four chunks of 2048: each sees the cached ones and itself, causally.
  const std::vector<std::pair<std::string, gpu::flash_variant>> variants{
      {"rows64_keys64_q_registers", gpu::flash_variant::rows64_keys64_q_registers},
      {"rows64_keys32_q_registers", gpu::flash_variant::rows64_keys32_q_registers},
      {"rows64_keys32_q_shared", gpu::flash_variant::rows64_keys32_q_shared},
      {"rows128_keys64", gpu::flash_variant::rows128_keys64},
      {"rows128_keys32", gpu::flash_variant::rows128_keys32},
      {"rows256_keys64", gpu::flash_variant::rows256_keys64},
      {"rows256_keys32", gpu::flash_variant::rows256_keys32}};
  for (const auto& [variant_name, variant] : variants) {
    double total_ms = 0, total_flops = 0;
    for (int32_t chunk = 0; chunk < 4; ++chunk) {
      forward_batch f;
      f.seqs.push_back({std::vector<int32_t>(2048, 1), 2048 * chunk, pages_from(0, 8192 / b.page_size), true});
      const int32_t tile = gpu::flash_attention_tile_tokens(d, group, variant);
      gpu::build_batch_plan(f, c.vocab_size, layout, tile, plan);
      const auto meta = upload();
      gpu::attention_params a;
      a.q = q.get();
      a.out = out.get();
      a.positions = meta.get() + plan.positions;
      a.token_seq = meta.get() + plan.token_seq;
      a.qo_indptr = meta.get() + plan.qo_indptr;
      a.tile_first = meta.get() + plan.tile_first;
      a.num_heads = c.num_heads;
      a.group = group;
      a.tile_tokens = tile;
      a.scale = scale;
      total_ms += time_ms(stream, 1, 8, [&](int i) {
        a.kv = view(meta, i % c.num_layers);
        gpu::launch_flash_attention(a, plan.num_tiles, stream, variant);
      });
      total_flops += 4.0 * d * c.num_heads * 2048.0 * (2048.0 * chunk + 1024.5);
    }
    record("prefill_attention_4_chunks_" + variant_name + "_ms", total_ms);
    record("prefill_attention_4_chunks_" + variant_name + "_TFLOPs", total_flops / (total_ms * 1e-3) / 1e12);
  }

  forward_batch f;
  f.seqs.push_back({std::vector<int32_t>(2048, 1), 6144, pages_from(0, 8192 / b.page_size), true});
  const double flops = 4.0 * d * c.num_heads * 2048.0 * (6144.0 + 1024.5); // QK^T and PV, causal
  for (bool flash : {true, false}) {
    const int32_t tile =
        flash ? gpu::flash_attention_tile_tokens(d, group, gpu::default_flash_variant) : std::max(1, gpu::attention_tile_rows / group);
    gpu::build_batch_plan(f, c.vocab_size, layout, tile, plan);
    const auto meta = upload();
    gpu::attention_params a;
    a.q = q.get();
    a.out = out.get();
    a.positions = meta.get() + plan.positions;
    a.token_seq = meta.get() + plan.token_seq;
    a.qo_indptr = meta.get() + plan.qo_indptr;
    a.tile_first = meta.get() + plan.tile_first;
    a.num_heads = c.num_heads;
    a.group = group;
    a.tile_tokens = tile;
    a.scale = scale;
    if (!flash) gpu::init_paged_attention(d, tile * group);
    const double ms = time_ms(stream, 1, flash ? 16 : 2, [&](int i) {
      a.kv = view(meta, i % c.num_layers);
      if (flash)
        gpu::launch_flash_attention(a, plan.num_tiles, stream);
      else
        gpu::launch_paged_attention(a, plan.num_tiles, stream);
    });
    const std::string name = std::string("prefill_attention_chunk4_") + (flash ? "tensor_core" : "general");
    record(name + "_ms", ms);
    record(name + "_TFLOPs", flops / (ms * 1e-3) / 1e12);
  }
}

// The sampling kernel alone on 256 rows of random logits, the decode
// benchmark's mix of greedy, temperature, top-k and top-p rows.
void sampling(bench_setup& b, cudaStream_t stream) {
  std::printf("sampling\n");
  const int32_t rows = 256, vocab = b.vocab();
  // The kernel writes its order keys over the logits: each run starts from a copy.
  device_buffer<float> pristine(size_t(rows) * vocab), logits(size_t(rows) * vocab);
  gpu::fill_random(pristine.get(), pristine.size(), 0.0f, 3.0f, 14, stream);
  const auto restore = [&] {
    KVACTOR_CUDA_CHECK(cudaMemcpyAsync(logits.get(), pristine.get(), logits.size() * sizeof(float),
                                       cudaMemcpyDeviceToDevice, stream));
  };
  std::vector<gpu::sample_row> host(static_cast<size_t>(rows));
  for (int32_t r = 0; r < rows; ++r) {
    gpu::sample_row& row = host[size_t(r)];
    row.temperature = r % 4 == 0 ? 0.0f : r % 4 == 1 ? 0.8f : 1.0f;
    row.top_k = r % 4 == 2 ? 50 : 0;
    row.top_p = r % 4 == 3 ? 0.9f : 1.0f;
    row.uniform = sample_uniform(uint64_t(r), 0);
  }
  device_buffer<gpu::sample_row> d_rows(host.size());
  KVACTOR_CUDA_CHECK(cudaMemcpy(d_rows.get(), host.data(), host.size() * sizeof(gpu::sample_row), cudaMemcpyHostToDevice));
  device_buffer<int32_t> tokens(static_cast<size_t>(rows));
  gpu::init_sampling(vocab);
  const double copy_ms = time_ms(stream, 2, 10, [&](int) { restore(); });
  const double ms = time_ms(stream, 2, 10, [&](int) {
    restore();
    gpu::launch_sample(logits.get(), d_rows.get(), nullptr, tokens.get(), nullptr, rows, vocab, stream);
  });
  record("sample_b256_mixed_us", (ms - copy_ms) * 1e3);
}

json::object read_hf(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str()).as_object();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_bench: cannot read %s: %s\n", path.c_str(), e.what());
    return {};
  }
}

double number(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v && v->is_number() ? v->to_number<double>() : 0.0;
}

std::string ratio(double a, double b) { return b > 0 && a > 0 ? fmt("%.2fx", a / b) : "-"; }

} // namespace

int main(int argc, char** argv) try {
  std::string config_path = "tools/shapes/llama3-8b/config.json", hf_path, json_path;
  bool ceilings_only = false; // --only ceilings: the two ceilings, for runs that measure something else
  bool decode_only = false;   // --only decode: the decode steps at batch 1 and 256, for profiles
  bool prefill_only = false;  // --only prefill: the 8192-token prefill, for profiles
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--config")
      config_path = argv[i + 1];
    else if (flag == "--hf")
      hf_path = argv[i + 1];
    else if (flag == "--json")
      json_path = argv[i + 1];
    else if (flag == "--only" && std::string(argv[i + 1]) == "ceilings")
      ceilings_only = true;
    else if (flag == "--only" && std::string(argv[i + 1]) == "decode")
      decode_only = true;
    else if (flag == "--only" && std::string(argv[i + 1]) == "prefill")
      prefill_only = true;
    else
      throw error("gpu_bench: unknown option " + flag);
  }
  cudaDeviceProp props{};
  KVACTOR_CUDA_CHECK(cudaGetDeviceProperties(&props, 0));
  std::printf("device: %s, %d SMs\n", props.name, props.multiProcessorCount);
  gpu::cuda_stream stream;
  ceilings(stream.get());
  if (ceilings_only) {
    if (!json_path.empty()) std::ofstream(json_path) << json::serialize(results) << "\n";
    return 0;
  }

  bench_setup b;
  const model_config config = load_model_config(config_path);
  const int32_t decode_context = 640, decode_steps = 32, big_batch = 256, prompt = 8192;
  // Pages for 256 sequences of 640 + 35 tokens, which also hold the prompt.
  const int32_t pages_each = (decode_context + 3 + decode_steps + b.page_size - 1) / b.page_size;
  const int32_t num_pages = std::max(big_batch * pages_each, prompt / b.page_size + 1);
  auto t0 = clock_type::now();
  b.model = cuda_model::random(config, 5, num_pages, b.page_size);
  // Random K/V everywhere: decode at any context reads finite values.
  gpu::fill_random(static_cast<bf16*>(b.model->kv()), b.model->layout().total_elems(), 0.0f, 1.0f, 6, nullptr);
  KVACTOR_CUDA_CHECK(cudaDeviceSynchronize());
  std::printf("model: %zu parameters, %.2f GB of matrices read per decode step, %d KV pages; ready in %.1f s\n",
              b.model->parameter_count(), double(b.model->decode_weight_bytes()) / 1e9, num_pages, seconds_since(t0));
  const double kv_per_token = double(kv_bytes_per_token(config.num_layers, config.num_kv_heads, config.head_dim, 2));

  cuda_executor ex(b.model, stream.get());
  if (decode_only) {
    record("decode_b1_ctx1024_ms", decode(b, ex, 1, 1024, 128, pick::device, 1024 / b.page_size + 10));
    record("decode_b256_ctx640_ms", decode(b, ex, big_batch, decode_context, decode_steps, pick::device, pages_each));
    if (!json_path.empty()) std::ofstream(json_path) << json::serialize(results) << "\n";
    return 0;
  }
  if (prefill_only) {
    prefill(b, ex, prompt, 2048, "prefill_8192");
    if (!json_path.empty()) std::ofstream(json_path) << json::serialize(results) << "\n";
    return 0;
  }
  cuda_executor_options eager_options;
  eager_options.use_graphs = false;
  cuda_executor eager(b.model, nullptr, eager_options); // a second executor on the same model

  cuda_executor_options tuned_options;
  tuned_options.tune_gemms = true;
  cuda_executor tuned(b.model, nullptr, tuned_options);

  prefill(b, tuned, prompt, 2048, "prefill_8192_tuned");
  prefill(b, ex, prompt, 2048, "prefill_8192");
  std::printf("decode\n");
  record("decode_b1_ctx1024_ms", decode(b, ex, 1, 1024, 128, pick::device, 1024 / b.page_size + 10));
  record("decode_b1_ctx1024_logits_ms", decode(b, ex, 1, 1024, 64, pick::logits, 1024 / b.page_size + 10));
  record("decode_b1_ctx1024_eager_ms", decode(b, eager, 1, 1024, 32, pick::device, 1024 / b.page_size + 10));
  record("decode_b256_ctx640_ms", decode(b, ex, big_batch, decode_context, decode_steps, pick::device, pages_each));
  record("decode_b256_ctx640_greedy_ms", decode(b, ex, big_batch, decode_context, 16, pick::logits, pages_each));
  record("decode_b256_ctx640_penalty_ms",
         decode(b, ex, big_batch, decode_context, 16, pick::device_penalty, pages_each));
  record("decode_b256_ctx640_penalty_host_ms",
         decode(b, ex, big_batch, decode_context, 4, pick::host_penalty, pages_each));
  record("decode_b256_ctx640_tuned_ms", decode(b, tuned, big_batch, decode_context, decode_steps, pick::device, pages_each));
  record("decode_b32_ctx1024_ms", decode(b, ex, 32, 1024, 32, pick::device, 1024 / b.page_size + 10));
  projections(b, stream.get());
  pointwise(b, stream.get());
  sampling(b, stream.get());
  attention(b, stream.get(), props.multiProcessorCount);

  // ---- the table ----
  const json::object hf = hf_path.empty() ? json::object{} : read_hf(hf_path);
  const double bw = number(results, "copy_bandwidth_GBps") * 1e9, peak = number(results, "gemm_bf16_8192_TFLOPs") * 1e12;
  const double weights = double(b.model->decode_weight_bytes());
  const double b1_bytes = weights + 1025 * kv_per_token;
  const double b1_ceiling = bw / b1_bytes; // tok/s
  const double b1 = 1e3 / number(results, "decode_b1_ctx1024_ms");
  const double b1_hf = number(hf, "decode_b1_ctx1024_tok_per_s");
  const double pf = number(results, "prefill_8192_tok_per_s"), pf_hf = number(hf, "prefill_8192_tok_per_s");
  const double flops_per_token = 2.0 * double(b.model->parameter_count());
  const double b256 = number(results, "decode_b256_ctx640_ms"), b256_hf = number(hf, "decode_b256_ctx640_ms");
  const double b256_bytes = weights + big_batch * (decode_context + 17) * kv_per_token;
  const double b256_floor = std::max(b256_bytes / bw, flops_per_token * big_batch / peak) * 1e3; // ms
  results["decode_b1_bandwidth_ceiling_tok_per_s"] = b1_ceiling;
  results["decode_b256_floor_ms"] = b256_floor;

  std::printf("\n==== kvactor CUDA backend, %s shapes with random bf16 weights, %s\n", config_path.c_str(), props.name);
  std::printf("ceilings: copy %.0f GB/s (read + written), cuBLASLt bf16 GEMM 8192^3 %.0f TFLOP/s\n", bw / 1e9,
              peak / 1e12);
  std::printf("%-36s %12s %12s %9s  %s\n", "measure", "kvactor", "HF", "vs HF", "kvactor vs ceiling");
  std::printf("%-36s %12.1f %12s %9s  %.0f%% of %.0f tok/s ((%.2f GB weights + %.0f MB KV) / copy bw)\n",
              "decode b1 ctx1024, tok/s", b1, b1_hf > 0 ? fmt("%.1f", b1_hf).c_str() : "-", ratio(b1, b1_hf).c_str(),
              100 * b1 / b1_ceiling, b1_ceiling, weights / 1e9, 1025 * kv_per_token / 1e6);
  std::printf("%-36s %12.0f %12s %9s  %.0f%% of GEMM peak (%.0f TFLOP/s at 2 x %.2fB params x tokens)\n",
              "prefill 8192 (4 x 2048), tok/s", pf, pf_hf > 0 ? fmt("%.0f", pf_hf).c_str() : "-", ratio(pf, pf_hf).c_str(),
              100 * pf * flops_per_token / peak, pf * flops_per_token / 1e12, double(b.model->parameter_count()) / 1e9);
  std::printf("%-36s %12.2f %12s %9s  floor %.2f ms (bytes / copy bw vs FLOPs / GEMM peak): %.0f%%\n",
              "decode b256 ctx640 + sampling, ms", b256, b256_hf > 0 ? fmt("%.2f", b256_hf).c_str() : "-",
              ratio(b256_hf, b256).c_str(), b256_floor, 100 * b256_floor / b256);
  std::printf("%-36s %12.2f %12s %9s\n", "decode b256 ctx640 tok/s", 1e3 * big_batch / b256,
              b256_hf > 0 ? fmt("%.0f", 1e3 * big_batch / b256_hf).c_str() : "-", ratio(b256_hf, b256).c_str());
  std::printf("%-36s %12.2f %12s %9s  sampled on the host from the logits: %.2f ms\n",
              "decode b256 + repetition penalty, ms", number(results, "decode_b256_ctx640_penalty_ms"), "-", "",
              number(results, "decode_b256_ctx640_penalty_host_ms"));
  std::printf("%-36s %12.2f %12s\n", "decode b1 eager (no graph), ms", number(results, "decode_b1_ctx1024_eager_ms"),
              number(hf, "decode_b1_ctx1024_ms") > 0 ? fmt("%.2f", number(hf, "decode_b1_ctx1024_ms")).c_str() : "-");
  if (!json_path.empty()) {
    json::object all{{"kvactor", results}, {"hf", hf}};
    std::ofstream(json_path) << json::serialize(all) << "\n";
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "gpu_bench: %s\n", e.what());
  return 1;
}
