#include "gpu/cuda_check.h"
#include "gpu/launch.cuh"
#include "gpu/reduce.cuh"
#include "gpu/rms_norm.h"
#include "gpu/vec.cuh"

namespace kvactor::gpu {

namespace {

constexpr int cached_vectors = 8; // float4 per thread held between the passes

__global__ void __launch_bounds__(rms_norm_max_hidden / (cached_vectors * 4))
    add_rms_norm_kernel(const int32_t* rows, float* residual, const __nv_bfloat16* delta, bool update_residual,
                        const float* weight, __nv_bfloat16* out, int32_t hidden, float eps) {
  __shared__ float scratch[32];
  launch_next_kernel();
  // The norm's weights are constant: loaded while the previous kernel ends.
  const int32_t vectors = hidden / 4;
  const float4* w = reinterpret_cast<const float4*>(weight);
  float4 g[cached_vectors];
#pragma unroll
  for (int c = 0; c < cached_vectors; ++c) {
    const int32_t i = threadIdx.x + c * blockDim.x;
    if (i >= vectors) break;
    g[c] = w[i];
  }
  wait_for_previous_kernel();
  const int32_t r = blockIdx.x;
  const int32_t s = rows ? rows[r] : r;
  float4* x = reinterpret_cast<float4*>(residual + size_t(s) * hidden);
  const uint2* dx = delta ? reinterpret_cast<const uint2*>(delta + size_t(s) * hidden) : nullptr;
  float4 v[cached_vectors];
  float sum_sq = 0.0f;
#pragma unroll
  for (int c = 0; c < cached_vectors; ++c) {
    const int32_t i = threadIdx.x + c * blockDim.x;
    if (i >= vectors) break;
    float4 a = x[i];
    if (dx) {
      const uint2 d = dx[i];
      a.x += bf16_lo(d.x);
      a.y += bf16_hi(d.x);
      a.z += bf16_lo(d.y);
      a.w += bf16_hi(d.y);
      if (update_residual) x[i] = a;
    }
    v[c] = a;
    sum_sq += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
  }
  sum_sq = block_sum(sum_sq, scratch);
  const float inv = 1.0f / sqrtf(sum_sq / float(hidden) + eps);
  uint2* y = reinterpret_cast<uint2*>(out + size_t(r) * hidden);
#pragma unroll
  for (int c = 0; c < cached_vectors; ++c) {
    const int32_t i = threadIdx.x + c * blockDim.x;
    if (i >= vectors) break;
    y[i] = make_uint2(pack_bf16((v[c].x * inv) * g[c].x, (v[c].y * inv) * g[c].y),
                      pack_bf16((v[c].z * inv) * g[c].z, (v[c].w * inv) * g[c].w));
  }
}

} // namespace

void launch_add_rms_norm(const int32_t* rows, float* residual, const __nv_bfloat16* delta, bool update_residual,
                         const float* weight, __nv_bfloat16* out, int32_t num_rows, int32_t hidden, float eps,
                         cudaStream_t stream) {
  if (num_rows == 0) return;
  // Enough threads that each holds at most cached_vectors vectors, in whole warps.
  const int32_t per_thread = cached_vectors * 4;
  const int threads = ((hidden + per_thread - 1) / per_thread + 31) / 32 * 32;
  launch_kernel(add_rms_norm_kernel, num_rows, threads, 0, stream, rows, residual, delta, update_residual, weight, out,
                hidden, eps);
}

} // namespace kvactor::gpu
