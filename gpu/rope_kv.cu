#include "gpu/cuda_check.h"
#include "gpu/launch.cuh"
#include "gpu/reduce.cuh"
#include "gpu/rope_kv.h"

namespace kvactor::gpu {

namespace {

constexpr int rope_kv_max_warps = 16;
// Element pairs a lane holds of each half of a head: head_dim <= 256.
constexpr int pairs_per_lane = 2;
constexpr int heads_in_flight = 4; // per warp

__device__ __forceinline__ float2 load_pair(const __nv_bfloat16* p, const float* bias, int i) {
  float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p + i));
  if (bias) {
    x.x += bias[i];
    x.y += bias[i + 1];
  }
  return x;
}

__device__ __forceinline__ void store_pair(__nv_bfloat16* bf, float* f, int i, float a, float b) {
  if (f)
    *reinterpret_cast<float2*>(f + i) = make_float2(a, b);
  else
    *reinterpret_cast<__nv_bfloat162*>(bf + i) = __floats2bfloat162_rn(a, b);
}

// One block per token (and, for steps of few tokens, per group of
// blockDim.x / 32 heads), one warp per head at a time: the token's angles are
// computed once per block, a decode step's few tokens still spread over many
// multiprocessors. A lane moves element pairs (4-byte loads): pair i of the
// first half rotates with pair i of the second. (Two blocks a multiprocessor:
// 64 registers with heads_in_flight heads' pairs held.)
__global__ void __launch_bounds__(32 * rope_kv_max_warps, 2) rope_kv_kernel(const rope_kv_params p) {
  extern __shared__ float smem[];
  const int hd = p.head_dim, half = hd / 2;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  float* cos_s = smem;         // [half]
  float* sin_s = cos_s + half; // [half]
  launch_next_kernel();

  // The angles depend on the step's metadata alone (copied before the step's
  // first kernel): computed while the previous kernel ends.
  const int32_t t = blockIdx.x;
  const int32_t pos = p.positions[t];
  for (int i = threadIdx.x; i < half && pos >= 0; i += blockDim.x) {
    double s, c;
    sincos(double(pos) * p.inv_freq[i], &s, &c);
    cos_s[i] = float(c);
    sin_s[i] = float(s);
  }
  __syncthreads();
  wait_for_previous_kernel();
  if (pos < 0) return; // a padding row of a decode plan: no K/V to write, q unused

  const int num_q = p.num_heads, num_qk = p.num_heads + p.num_kv_heads, num_all = num_qk + p.num_kv_heads;
  // K and V go to their slot in the page, or to the token's staging row.
  __nv_bfloat16 *k_dst = nullptr, *v_dst = nullptr;
  float *k_stage = nullptr, *v_stage = nullptr;
  if (p.kv_stage) {
    k_stage = p.kv_stage + size_t(t) * 2 * p.num_kv_heads * hd;
    v_stage = k_stage + size_t(p.num_kv_heads) * hd;
  } else {
    const int32_t page = p.kv.page_indices[p.kv.page_indptr[p.token_seq[t]] + pos / p.kv.page_size];
    const size_t slot = (size_t(page) * p.kv.page_size + pos % p.kv.page_size) * size_t(p.num_kv_heads) * hd;
    k_dst = p.kv.k_bf16() + slot;
    v_dst = p.kv.v_bf16() + slot;
  }
  const __nv_bfloat16* row = p.qkv + size_t(t) * num_all * hd;

  // A warp's heads in batches of heads_in_flight, every load of a batch
  // issued before the first is used (a token's 48 heads over 16 warps would
  // otherwise be three load round trips in a row).
  const int stride = warps * gridDim.y;
  for (int h0 = blockIdx.y * warps + warp; h0 < num_all; h0 += heads_in_flight * stride) { // warp-uniform
    float2 lo[heads_in_flight][pairs_per_lane], hi[heads_in_flight][pairs_per_lane];
#pragma unroll
    for (int j = 0; j < heads_in_flight; ++j) {
      const int h = h0 + j * stride;
      if (h >= num_all) break;
      const __nv_bfloat16* src = row + size_t(h) * hd;
      const float* bias = p.qkv_bias ? p.qkv_bias + size_t(h) * hd : nullptr;
#pragma unroll
      for (int k = 0; k < pairs_per_lane; ++k) {
        const int i = 2 * (lane + 32 * k);
        if (i >= half) break;
        lo[j][k] = load_pair(src, bias, i);
        hi[j][k] = load_pair(src, bias, i + half);
      }
    }
#pragma unroll
    for (int j = 0; j < heads_in_flight; ++j) {
      const int h = h0 + j * stride;
      if (h >= num_all) break;
      if (h >= num_qk) { // a v head: stored as it is
        const size_t at = size_t(h - num_qk) * hd;
        __nv_bfloat16* dst = v_dst ? v_dst + at : nullptr;
        float* staged = v_stage ? v_stage + at : nullptr;
#pragma unroll
        for (int k = 0; k < pairs_per_lane; ++k) {
          const int i = 2 * (lane + 32 * k);
          if (i >= half) break;
          store_pair(dst, staged, i, lo[j][k].x, lo[j][k].y);
          store_pair(dst, staged, i + half, hi[j][k].x, hi[j][k].y);
        }
        continue;
      }
      float sum_sq = 0.0f;
#pragma unroll
      for (int k = 0; k < pairs_per_lane; ++k) {
        const int i = 2 * (lane + 32 * k);
        if (i >= half) break;
        sum_sq += lo[j][k].x * lo[j][k].x + lo[j][k].y * lo[j][k].y + hi[j][k].x * hi[j][k].x + hi[j][k].y * hi[j][k].y;
      }
      const bool is_q = h < num_q;
      const float* norm = is_q ? p.q_norm : p.k_norm;
      const float inv = norm ? 1.0f / sqrtf(warp_sum(sum_sq) / float(hd) + p.eps) : 1.0f;
      __nv_bfloat16* dst = nullptr;
      float* staged = nullptr;
      if (is_q)
        dst = p.q_out + (size_t(t) * p.num_heads + h) * hd;
      else if (k_stage)
        staged = k_stage + size_t(h - num_q) * hd;
      else
        dst = k_dst + size_t(h - num_q) * hd;
#pragma unroll
      for (int k = 0; k < pairs_per_lane; ++k) {
        const int i = 2 * (lane + 32 * k);
        if (i >= half) break;
        float a0 = lo[j][k].x, a1 = lo[j][k].y, b0 = hi[j][k].x, b1 = hi[j][k].y;
        if (norm) {
          a0 = (a0 * inv) * norm[i];
          a1 = (a1 * inv) * norm[i + 1];
          b0 = (b0 * inv) * norm[i + half];
          b1 = (b1 * inv) * norm[i + half + 1];
        }
        store_pair(dst, staged, i, a0 * cos_s[i] - b0 * sin_s[i], a1 * cos_s[i + 1] - b1 * sin_s[i + 1]);
        store_pair(dst, staged, i + half, b0 * cos_s[i] + a0 * sin_s[i], b1 * cos_s[i + 1] + a1 * sin_s[i + 1]);
      }
    }
  }
}

} // namespace

void launch_rope_kv(const rope_kv_params& params, int32_t num_tokens, cudaStream_t stream) {
  if (num_tokens == 0) return;
  // Many tokens: one block per token, looping over its heads. Few: more
  // blocks per token, so that the step still fills the GPU.
  const bool many = num_tokens >= 128;
  const int warps = many ? rope_kv_max_warps : 4;
  const size_t smem = sizeof(float) * size_t(params.head_dim);
  const int num_all = params.num_heads + 2 * params.num_kv_heads;
  const dim3 grid(unsigned(num_tokens), many ? 1u : unsigned((num_all + warps - 1) / warps));
  launch_kernel(rope_kv_kernel, grid, 32 * warps, smem, stream, params);
}

} // namespace kvactor::gpu
