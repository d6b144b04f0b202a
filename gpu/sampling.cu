#include <climits>

#include "gpu/cuda_check.h"
#include "gpu/launch.cuh"
#include "gpu/sampling.h"

namespace kvactor::gpu {

namespace {

constexpr int sample_threads = 512;
constexpr int sample_warps = sample_threads / 32;
constexpr int radix_bits = 4;
constexpr int radix_bins = 1 << radix_bits;
constexpr uint32_t full_mask = 0xffffffffu;

// Block-wide scratch; every helper ends with a barrier, so the next one may
// reuse it.
struct scratch {
  double bin_sum[sample_warps][radix_bins];
  int32_t bin_count[sample_warps][radix_bins];
  double total_sum[radix_bins];
  int32_t total_count[radix_bins];
  double d[sample_warps];
  float f[sample_warps];
  int32_t i[sample_warps];
  uint32_t u[sample_warps];
  double result_d;
  int32_t result_i;
  uint32_t result_u;
};

__device__ __forceinline__ double warp_sum(double x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(full_mask, x, offset);
  return x;
}

__device__ __forceinline__ int32_t warp_sum(int32_t x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(full_mask, x, offset);
  return x;
}

// Inclusive prefix sum across the warp, in lane order.
__device__ __forceinline__ double warp_scan(double x) {
  const int lane = threadIdx.x % 32;
  for (int offset = 1; offset < 32; offset *= 2) {
    const double y = __shfl_up_sync(full_mask, x, offset);
    if (lane >= offset) x += y;
  }
  return x;
}

// Calls f(j, values[j]) for this thread's share of a row, eight loads in
// flight at a time.
template <typename T, typename F>
__device__ __forceinline__ void for_each(const T* values, int32_t vocab, F&& f) {
  constexpr int batch = 8;
  int32_t j = threadIdx.x;
  for (; j + (batch - 1) * sample_threads < vocab; j += batch * sample_threads) {
    T v[batch];
#pragma unroll
    for (int b = 0; b < batch; ++b) v[b] = values[j + b * sample_threads];
#pragma unroll
    for (int b = 0; b < batch; ++b) f(j + b * sample_threads, v[b]);
  }
  for (; j < vocab; j += sample_threads) f(j, values[j]);
}

__device__ double block_sum(double x, scratch& s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  x = warp_sum(x);
  if (lane == 0) s.d[warp] = x;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < sample_warps; ++w) total += s.d[w];
    s.result_d = total;
  }
  __syncthreads();
  const double total = s.result_d;
  __syncthreads();
  return total;
}

__device__ int32_t block_max(int32_t x, scratch& s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) x = max(x, __shfl_xor_sync(full_mask, x, offset));
  if (lane == 0) s.i[warp] = x;
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t best = INT_MIN;
    for (int w = 0; w < sample_warps; ++w) best = max(best, s.i[w]);
    s.result_i = best;
  }
  __syncthreads();
  const int32_t best = s.result_i;
  __syncthreads();
  return best;
}

__device__ uint32_t block_min(uint32_t x, scratch& s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) x = min(x, __shfl_xor_sync(full_mask, x, offset));
  if (lane == 0) s.u[warp] = x;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t best = UINT_MAX;
    for (int w = 0; w < sample_warps; ++w) best = min(best, s.u[w]);
    s.result_u = best;
  }
  __syncthreads();
  const uint32_t best = s.result_u;
  __syncthreads();
  return best;
}

// The largest logit and its lowest index, as the CPU sampler's argmax: an
// element replaces the best only when strictly larger.
__device__ int32_t block_argmax(const float* logits, int32_t vocab, float& value, scratch& s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float best = -INFINITY;
  int32_t index = INT_MAX;
  for_each(logits, vocab, [&](int32_t j, float v) {
    if (v > best || (v == best && j < index)) {
      best = v;
      index = j;
    }
  });
  for (int offset = 16; offset > 0; offset /= 2) {
    const float v = __shfl_xor_sync(full_mask, best, offset);
    const int32_t j = __shfl_xor_sync(full_mask, index, offset);
    if (v > best || (v == best && j < index)) {
      best = v;
      index = j;
    }
  }
  if (lane == 0) {
    s.f[warp] = best;
    s.i[warp] = index;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < sample_warps; ++w)
      if (s.f[w] > s.f[0] || (s.f[w] == s.f[0] && s.i[w] < s.i[0])) {
        s.f[0] = s.f[w];
        s.i[0] = s.i[w];
      }
    // Nothing larger than -inf (or NaN only): index 0, as on the CPU.
    s.result_i = s.i[0] == INT_MAX ? 0 : s.i[0];
    s.result_d = s.f[0];
  }
  __syncthreads();
  index = s.result_i;
  value = float(s.result_d);
  __syncthreads();
  return index;
}

// One row's candidates: their order keys (sample_order_key of l / T - max),
// which the kernel writes over the row's logits once.
struct candidates {
  const uint32_t* keys;
  int32_t vocab;
};

__device__ __forceinline__ bool kept(uint32_t key, int32_t j, const sample_cutoff& c) {
  return key > c.key || (key == c.key && j <= c.index);
}

__device__ __forceinline__ bool earlier(const sample_cutoff& a, const sample_cutoff& b) {
  return a.key > b.key || (a.key == b.key && a.index < b.index);
}

// The probability of the candidates of order key `key`.
__device__ double key_probability(uint32_t key) {
  if (key == 0) return 0.0;
  const uint32_t bits = key & 0x80000000u ? key & 0x7fffffffu : ~key;
  return exp(double(__uint_as_float(bits)));
}

// The first index j whose running sum value(0) + ... + value(j) exceeds
// `target`, or -1. The sums go by warp-sized segments, each summed the same
// way twice, so the segment found and the element found agree.
template <typename Value>
__device__ int32_t find_crossing(Value value, int32_t vocab, double target, double* segment, scratch& s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int32_t segments = (vocab + 31) / 32;
  constexpr int batch = 8; // segments a warp loads at once
  for (int32_t g0 = warp * batch; g0 < segments; g0 += sample_warps * batch) {
    double v[batch];
#pragma unroll
    for (int b = 0; b < batch; ++b) {
      const int32_t j = (g0 + b) * 32 + lane;
      v[b] = j < vocab ? value(j) : 0.0;
    }
#pragma unroll
    for (int b = 0; b < batch; ++b) {
      const double total = __shfl_sync(full_mask, warp_scan(v[b]), 31);
      if (lane == 0 && g0 + b < segments) segment[g0 + b] = total;
    }
  }
  __syncthreads();
  if (warp == 0) {
    double run = 0.0;
    int32_t found = -1;
    for (int32_t g0 = 0; g0 < segments; g0 += 32) {
      const double v = g0 + lane < segments ? segment[g0 + lane] : 0.0;
      const double upto = warp_scan(v);
      const unsigned hit = __ballot_sync(full_mask, run + upto > target);
      if (hit) {
        const int f = __ffs(hit) - 1;
        const double before = run + __shfl_sync(full_mask, upto - v, f);
        const int32_t j = (g0 + f) * 32 + lane;
        const double inner = warp_scan(j < vocab ? value(j) : 0.0);
        const unsigned at = __ballot_sync(full_mask, before + inner > target);
        found = at ? (g0 + f) * 32 + __ffs(at) - 1 : -1;
        break;
      }
      run += __shfl_sync(full_mask, upto, 31);
    }
    if (lane == 0) s.result_i = found;
  }
  __syncthreads();
  const int32_t found = s.result_i;
  __syncthreads();
  return found;
}

// The shortest prefix (in candidate order) of the `active` candidates whose
// weight reaches `target`: weight 1 each (by_mass false) or probability.
// When rounding leaves the target out of reach, all of them.
__device__ sample_cutoff descend(const candidates& c, const sample_cutoff& active, bool by_mass, double target,
                                 double* segment, scratch& s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  uint32_t prefix = 0;
  double above = 0.0; // weight of the active candidates ordered before the prefix's
  int32_t ties = 0;
  for (int level = 0; level < 32 / radix_bits; ++level) {
    const int shift = 32 - radix_bits * (level + 1);
    const uint32_t high = level == 0 ? 0u : ~0u << (32 - radix_bits * level);
    double bin_sum[radix_bins];
    int32_t bin_count[radix_bins];
#pragma unroll
    for (int b = 0; b < radix_bins; ++b) {
      bin_sum[b] = 0.0;
      bin_count[b] = 0;
    }
    for_each(c.keys, c.vocab, [&](int32_t j, uint32_t key) {
      if (!kept(key, j, active) || (key & high) != prefix) return;
      const uint32_t digit = (key >> shift) & (radix_bins - 1);
      const double w = by_mass ? key_probability(key) : 1.0;
#pragma unroll
      for (int b = 0; b < radix_bins; ++b) {
        const bool hit = digit == uint32_t(b);
        bin_sum[b] += hit ? w : 0.0;
        bin_count[b] += hit ? 1 : 0;
      }
    });
#pragma unroll
    for (int b = 0; b < radix_bins; ++b) {
      bin_sum[b] = warp_sum(bin_sum[b]);
      bin_count[b] = warp_sum(bin_count[b]);
    }
    if (lane == 0)
#pragma unroll
      for (int b = 0; b < radix_bins; ++b) {
        s.bin_sum[warp][b] = bin_sum[b];
        s.bin_count[warp][b] = bin_count[b];
      }
    __syncthreads();
    if (threadIdx.x < radix_bins) {
      double sum = 0.0;
      int32_t count = 0;
      for (int w = 0; w < sample_warps; ++w) {
        sum += s.bin_sum[w][threadIdx.x];
        count += s.bin_count[w][threadIdx.x];
      }
      s.total_sum[threadIdx.x] = sum;
      s.total_count[threadIdx.x] = count;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int chosen = -1, last = -1;
      double acc = above;
      for (int b = radix_bins - 1; b >= 0; --b) {
        if (s.total_count[b] == 0) continue;
        last = b;
        if (acc + s.total_sum[b] >= target) {
          chosen = b;
          break;
        }
        acc += s.total_sum[b];
      }
      if (chosen < 0) { // out of reach: take everything down to the last bin
        chosen = last;
        acc -= s.total_sum[last];
      }
      s.result_u = prefix | uint32_t(chosen) << shift;
      s.result_d = acc;
      s.result_i = s.total_count[chosen];
    }
    __syncthreads();
    prefix = s.result_u;
    above = s.result_d;
    ties = s.result_i;
    __syncthreads();
  }

  // `ties` candidates share the key `prefix`; take the fewest that reach the
  // target, lowest indices first.
  int32_t take = 1;
  if (by_mass) {
    const double w = key_probability(prefix);
    double cum = above + w;
    while (take < ties && cum < target) {
      cum += w;
      ++take;
    }
  } else {
    take = int32_t(min(double(ties), max(1.0, target - above)));
  }
  const int32_t index = find_crossing(
      [&](int32_t j) {
        const uint32_t key = c.keys[j];
        return kept(key, j, active) && key == prefix ? 1.0 : 0.0;
      },
      c.vocab, double(take - 1), segment, s);
  return {prefix, index};
}

// The candidates with probability >= min_p, the most likely one at least.
__device__ sample_cutoff min_p_cutoff(const candidates& c, float min_p, double* segment, scratch& s) {
  uint32_t lowest = UINT_MAX;
  for_each(c.keys, c.vocab, [&](int32_t, uint32_t key) {
    if (key_probability(key) >= double(min_p)) lowest = min(lowest, key);
  });
  lowest = block_min(lowest, s);
  if (lowest == UINT_MAX) { // min_p > 1: the first candidate alone
    const uint32_t top = sample_order_key(0.0f);
    const int32_t index =
        find_crossing([&](int32_t j) { return c.keys[j] == top ? 1.0 : 0.0; }, c.vocab, 0.0, segment, s);
    return {top, index};
  }
  int32_t last = -1;
  for_each(c.keys, c.vocab, [&](int32_t j, uint32_t key) {
    if (key == lowest) last = j;
  });
  return {lowest, block_max(last, s)};
}

__global__ void __launch_bounds__(sample_threads)
    sample_kernel(float* logits, const sample_row* rows, const int32_t* penalty_tokens, int32_t* tokens,
                  sample_cutoff* cutoffs, int32_t vocab) {
  extern __shared__ double segment[]; // [ceil(vocab / 32)] for find_crossing
  __shared__ scratch s;
  launch_next_kernel();
  wait_for_previous_kernel();
  const int32_t row = blockIdx.x;
  float* l = logits + size_t(row) * vocab;
  const sample_row p = rows[row];
  if (p.repetition_penalty != 1.0f) {
    // The tokens are distinct, so each logit changes once, by one thread.
    const int32_t* seen = penalty_tokens + p.penalty_begin;
    for (int32_t i = threadIdx.x; i < p.penalty_count; i += sample_threads) {
      float& x = l[seen[i]];
      x = x > 0.0f ? __fdiv_rn(x, p.repetition_penalty) : __fmul_rn(x, p.repetition_penalty);
    }
    __syncthreads();
  }
  float max_logit = 0.0f;
  const int32_t best = block_argmax(l, vocab, max_logit, s);
  if (p.temperature == 0.0f) {
    if (threadIdx.x == 0) {
      tokens[row] = best;
      if (cutoffs) cutoffs[row] = {sample_order_key(0.0f), best};
    }
    return;
  }
  // Division by T > 0 keeps the order, so the largest l / T is max_logit / T.
  // d = l / T - max is rounded as the CPU sampler rounds it; its order key
  // replaces the logit, so later passes neither divide nor reread floats.
  const float max_scaled = __fdiv_rn(max_logit, p.temperature);
  uint32_t* keys = reinterpret_cast<uint32_t*>(l);
  for_each(l, vocab, [&](int32_t j, float logit) {
    keys[j] = sample_order_key(__fsub_rn(__fdiv_rn(logit, p.temperature), max_scaled));
  });
  __syncthreads();
  const candidates c{keys, vocab};
  sample_cutoff cut{0, vocab - 1}; // everything
  if (p.top_k > 0 && p.top_k < vocab) cut = descend(c, cut, false, double(p.top_k), segment, s);
  if (p.top_p < 1.0f) {
    double total = 0.0;
    for_each(keys, vocab, [&](int32_t j, uint32_t key) {
      if (kept(key, j, cut)) total += key_probability(key);
    });
    total = block_sum(total, s);
    cut = descend(c, cut, true, double(p.top_p) * total, segment, s);
  }
  if (p.min_p > 0.0f) {
    const sample_cutoff by_min_p = min_p_cutoff(c, p.min_p, segment, s);
    if (earlier(by_min_p, cut)) cut = by_min_p;
  }

  // Inverse CDF over the kept candidates in index order.
  double total = 0.0;
  int32_t last = -1;
  for_each(keys, vocab, [&](int32_t j, uint32_t key) {
    if (!kept(key, j, cut)) return;
    total += key_probability(key);
    last = j;
  });
  total = block_sum(total, s);
  last = block_max(last, s);
  const auto mass = [&](int32_t j) {
    const uint32_t key = keys[j];
    return kept(key, j, cut) ? key_probability(key) : 0.0;
  };
  const int32_t token = find_crossing(mass, vocab, p.uniform * total, segment, s);
  if (threadIdx.x == 0) {
    tokens[row] = token >= 0 ? token : last;
    if (cutoffs) cutoffs[row] = cut;
  }
}

} // namespace

size_t sample_smem_bytes(int32_t vocab) { return sizeof(double) * size_t((vocab + 31) / 32); }

void init_sampling(int32_t vocab) {
  KVACTOR_CUDA_CHECK(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(sample_smem_bytes(vocab))));
}

void launch_sample(float* logits, const sample_row* rows, const int32_t* penalty_tokens, int32_t* tokens,
                   sample_cutoff* cutoffs, int32_t num_rows, int32_t vocab, cudaStream_t stream) {
  if (num_rows == 0) return;
  launch_kernel(sample_kernel, num_rows, sample_threads, sample_smem_bytes(vocab), stream, logits, rows,
                penalty_tokens, tokens, cutoffs, vocab);
}

} // namespace kvactor::gpu
