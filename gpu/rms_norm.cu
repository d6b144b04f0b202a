#include "gpu/cuda_check.h"
#include "gpu/reduce.cuh"
#include "gpu/rms_norm.h"

namespace kvactor::gpu {

namespace {

constexpr int rms_norm_threads = 256;

__global__ void __launch_bounds__(rms_norm_threads)
    add_rms_norm_kernel(const int32_t* rows, float* residual, const __nv_bfloat16* delta, bool update_residual,
                        const float* weight, __nv_bfloat16* out, int32_t hidden, float eps) {
  __shared__ float scratch[32];
  const int32_t r = blockIdx.x;
  const int32_t s = rows ? rows[r] : r;
  float* x = residual + size_t(s) * hidden;
  const __nv_bfloat16* dx = delta ? delta + size_t(s) * hidden : nullptr;
  // NOTE: each thread reads back only the elements it wrote itself, so the
  // second pass needs no barrier.
  float sum_sq = 0.0f;
  for (int32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    const float v = dx ? x[i] + __bfloat162float(dx[i]) : x[i];
    if (update_residual) x[i] = v;
    sum_sq += v * v;
  }
  sum_sq = block_sum(sum_sq, scratch);
  const float inv = 1.0f / sqrtf(sum_sq / float(hidden) + eps);
  __nv_bfloat16* y = out + size_t(r) * hidden;
  for (int32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    const float v = (dx && !update_residual) ? x[i] + __bfloat162float(dx[i]) : x[i];
    y[i] = __float2bfloat16((v * inv) * weight[i]);
  }
}

} // namespace

void launch_add_rms_norm(const int32_t* rows, float* residual, const __nv_bfloat16* delta, bool update_residual,
                         const float* weight, __nv_bfloat16* out, int32_t num_rows, int32_t hidden, float eps,
                         cudaStream_t stream) {
  if (num_rows == 0) return;
  add_rms_norm_kernel<<<num_rows, rms_norm_threads, 0, stream>>>(rows, residual, delta, update_residual, weight,
                                                                 out, hidden, eps);
  KVACTOR_CUDA_CHECK_LAUNCH();
}

} // namespace kvactor::gpu
