#include "gpu/cuda_check.h"
#include "gpu/launch.cuh"
#include "gpu/reduce.cuh"
#include "gpu/rope_kv.cuh"

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

// One block per 2^shift consecutive tokens (for steps of few tokens, one
// token per group of blockDim.x / 32 heads), one warp per (head, token) at a
// time. Per block and token, before the loop: the angles (float64, exact at
// every position), the cache slot and the position, so that the loop itself
// is loads, a rotation and stores. A lane moves element pairs (4-byte
// loads): pair i of the first half rotates with pair i of the second. (Two
// blocks a multiprocessor: 64 registers with heads_in_flight heads' pairs
// held.)
__global__ void __launch_bounds__(32 * rope_kv_max_warps, 2) rope_kv_kernel(const rope_kv_params p, int shift,
                                                                              int32_t num_tokens) {
  extern __shared__ size_t rope_smem[];
  const int hd = p.head_dim, half = hd / 2, block_tokens = 1 << shift;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  size_t* slot_s = rope_smem;                                          // [block_tokens]
  int32_t* pos_s = reinterpret_cast<int32_t*>(slot_s + block_tokens); // [block_tokens]
  float* cos_s = reinterpret_cast<float*>(pos_s + block_tokens);      // [block_tokens][half]
  float* sin_s = cos_s + block_tokens * half;                          // [block_tokens][half]
  launch_next_kernel();

  // All of it depends on the step's metadata alone (copied before the step's
  // first kernel): done while the previous kernel ends.
  const int32_t t0 = blockIdx.x * block_tokens;
  const int tokens = min(block_tokens, num_tokens - t0);
  for (int i = threadIdx.x; i < tokens; i += blockDim.x) {
    const int32_t pos = p.positions[t0 + i];
    pos_s[i] = pos;
    if (pos >= 0 && !p.kv_stage) slot_s[i] = kv_slot(p, t0 + i, pos);
  }
  for (int i = threadIdx.x; i < tokens * half; i += blockDim.x) {
    const int32_t pos = p.positions[t0 + i / half];
    if (pos >= 0) rope_angle(p, pos, i % half, cos_s[i], sin_s[i]);
  }
  __syncthreads();
  wait_for_previous_kernel();

  const int num_q = p.num_heads, num_qk = p.num_heads + p.num_kv_heads, num_all = num_qk + p.num_kv_heads;
  // Where the block's token tt puts its k (v: kv = 1) head h: its slot in
  // the page, or the token's staging row.
  const auto kv_dst = [&](int tt, int kv, int h, __nv_bfloat16*& dst, float*& staged) {
    if (p.kv_stage)
      staged = p.kv_stage + (size_t(t0 + tt) * 2 + kv) * p.num_kv_heads * hd + size_t(h) * hd;
    else
      dst = (kv == 0 ? p.kv.k_bf16() : p.kv.v_bf16()) + slot_s[tt] + size_t(h) * hd;
  };

  // A warp's (head, token) items in batches of heads_in_flight, every load of
  // a batch issued before the first is used (a token's 48 heads over 16 warps
  // would otherwise be three load round trips in a row).
  const int items = num_all << shift, stride = warps * gridDim.y;
  for (int w0 = blockIdx.y * warps + warp; w0 < items; w0 += heads_in_flight * stride) { // warp-uniform
    float2 lo[heads_in_flight][pairs_per_lane], hi[heads_in_flight][pairs_per_lane];
#pragma unroll
    for (int j = 0; j < heads_in_flight; ++j) {
      const int w = w0 + j * stride, h = w >> shift, tt = w & (block_tokens - 1);
      if (w >= items) break;
      if (tt >= tokens) continue;
      const __nv_bfloat16* src = p.qkv + (size_t(t0 + tt) * num_all + h) * hd;
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
      const int w = w0 + j * stride, h = w >> shift, tt = w & (block_tokens - 1);
      if (w >= items) break;
      if (tt >= tokens || pos_s[tt] < 0) continue; // a padding row of a decode plan: no K/V, q unused
      __nv_bfloat16* dst = nullptr;
      float* staged = nullptr;
      if (h >= num_qk) { // a v head: stored as it is
        kv_dst(tt, 1, h - num_qk, dst, staged);
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
      if (is_q)
        dst = p.q_out + (size_t(t0 + tt) * p.num_heads + h) * hd;
      else
        kv_dst(tt, 0, h - num_q, dst, staged);
      const float* cs = cos_s + tt * half;
      const float* sn = sin_s + tt * half;
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
        store_pair(dst, staged, i, a0 * cs[i] - b0 * sn[i], a1 * cs[i + 1] - b1 * sn[i + 1]);
        store_pair(dst, staged, i + half, b0 * cs[i] + a0 * sn[i], b1 * cs[i + 1] + a1 * sn[i + 1]);
      }
    }
  }
}

} // namespace

void launch_rope_kv(const rope_kv_params& params, int32_t num_tokens, cudaStream_t stream) {
  if (num_tokens == 0) return;
  // Many tokens: blocks of up to 8 tokens, looping over their heads, while
  // that leaves at least 256 blocks (a wave at two a multiprocessor). Few:
  // more blocks per token, so that the step still fills the GPU.
  const bool many = num_tokens >= 128;
  const int warps = many ? rope_kv_max_warps : 4;
  int shift = 0;
  while (many && shift < 3 && num_tokens >= (512 << shift)) ++shift; // 2^shift tokens a block, up to 8
  const int32_t tokens = 1 << shift;
  const size_t smem = (sizeof(size_t) + sizeof(int32_t) + sizeof(float) * size_t(params.head_dim)) * size_t(tokens);
  const int num_all = params.num_heads + 2 * params.num_kv_heads;
  const dim3 grid(unsigned((num_tokens + tokens - 1) / tokens), many ? 1u : unsigned((num_all + warps - 1) / warps));
  launch_kernel(rope_kv_kernel, grid, 32 * warps, smem, stream, params, shift, num_tokens);
}

} // namespace kvactor::gpu
