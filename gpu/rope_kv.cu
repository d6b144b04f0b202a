#include "gpu/cuda_check.h"
#include "gpu/reduce.cuh"
#include "gpu/rope_kv.h"

namespace kvactor::gpu {

namespace {

constexpr int rope_kv_max_warps = 16;

// One block per (token, group of blockDim.x / 32 heads), one warp per head:
// a decode step's few tokens still spread over many multiprocessors, while a
// prefill's many tokens share each token's angles among more heads.
__global__ void __launch_bounds__(32 * rope_kv_max_warps) rope_kv_kernel(const rope_kv_params p) {
  extern __shared__ float smem[];
  const int hd = p.head_dim, half = hd / 2;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  float* cos_s = smem;                         // [half]
  float* sin_s = cos_s + half;                 // [half]
  float* head_s = sin_s + half + warp * hd;    // [head_dim] this warp's head

  const int32_t t = blockIdx.x;
  const int32_t pos = p.positions[t];
  if (pos < 0) return; // a padding row of a decode plan: no K/V to write, q unused
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    double s, c;
    sincos(double(pos) * p.inv_freq[i], &s, &c);
    cos_s[i] = float(c);
    sin_s[i] = float(s);
  }
  __syncthreads();

  const int num_q = p.num_heads, num_qk = p.num_heads + p.num_kv_heads, num_all = num_qk + p.num_kv_heads;
  // K and V go to their slot in the page, or to the token's staging row.
  size_t slot = 0;
  if (!p.kv_stage) {
    const int32_t page = p.kv.page_indices[p.kv.page_indptr[p.token_seq[t]] + pos / p.kv.page_size];
    slot = (size_t(page) * p.kv.page_size + pos % p.kv.page_size) * size_t(p.num_kv_heads) * hd;
  }
  float* stage = p.kv_stage ? p.kv_stage + size_t(t) * 2 * p.num_kv_heads * hd : nullptr;
  const __nv_bfloat16* row = p.qkv + size_t(t) * num_all * hd;

  const int h = blockIdx.y * warps + warp; // the same for the whole warp
  if (h >= num_all) return;
  const __nv_bfloat16* src = row + size_t(h) * hd;
  const float* bias = p.qkv_bias ? p.qkv_bias + size_t(h) * hd : nullptr;
  if (h >= num_qk) { // a v head: bias only
    const int v_head = h - num_qk;
    for (int d = lane; d < hd; d += 32) {
      const float x = __bfloat162float(src[d]) + (bias ? bias[d] : 0.0f);
      if (stage)
        stage[size_t(p.num_kv_heads + v_head) * hd + d] = x;
      else
        p.kv.v_bf16()[slot + size_t(v_head) * hd + d] = __float2bfloat16(x);
    }
    return;
  }
  float sum_sq = 0.0f;
  for (int d = lane; d < hd; d += 32) {
    const float x = __bfloat162float(src[d]) + (bias ? bias[d] : 0.0f);
    head_s[d] = x;
    sum_sq += x * x;
  }
  const bool is_q = h < num_q;
  const float* norm = is_q ? p.q_norm : p.k_norm;
  float inv = 1.0f;
  if (norm) inv = 1.0f / sqrtf(warp_sum(sum_sq) / float(hd) + p.eps);
  __syncwarp(); // rotation pairs d with d + half, written by another lane
  float* staged = !is_q && stage ? stage + size_t(h - num_q) * hd : nullptr;
  __nv_bfloat16* dst = is_q ? p.q_out + (size_t(t) * p.num_heads + h) * hd
                            : (staged ? nullptr : p.kv.k_bf16() + slot + size_t(h - num_q) * hd);
  for (int i = lane; i < half; i += 32) {
    float a = head_s[i], b = head_s[i + half];
    if (norm) {
      a = (a * inv) * norm[i];
      b = (b * inv) * norm[i + half];
    }
    const float lo = a * cos_s[i] - b * sin_s[i], hi = b * cos_s[i] + a * sin_s[i];
    if (staged) {
      staged[i] = lo;
      staged[i + half] = hi;
    } else {
      dst[i] = __float2bfloat16(lo);
      dst[i + half] = __float2bfloat16(hi);
    }
  }
}

} // namespace

void launch_rope_kv(const rope_kv_params& params, int32_t num_tokens, cudaStream_t stream) {
  if (num_tokens == 0) return;
  const int warps = num_tokens >= 128 ? rope_kv_max_warps : 4;
  const size_t smem = sizeof(float) * size_t(params.head_dim) * (1 + warps);
  const int num_all = params.num_heads + 2 * params.num_kv_heads;
  const dim3 grid(unsigned(num_tokens), unsigned((num_all + warps - 1) / warps));
  rope_kv_kernel<<<grid, 32 * warps, smem, stream>>>(params);
  KVACTOR_CUDA_CHECK_LAUNCH();
}

} // namespace kvactor::gpu
