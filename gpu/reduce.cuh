#pragma once
// Warp and block reductions shared by the kernels.
#include <cuda_runtime.h>

namespace kvactor::gpu {

__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

__device__ __forceinline__ float warp_max(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

// Sum over the block, returned to every thread. blockDim.x must be a multiple
// of 32; `scratch` holds 32 floats and may be reused after the call returns.
__device__ __forceinline__ float block_sum(float x, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  x = warp_sum(x);
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < warps ? scratch[lane] : 0.0f;
  x = warp_sum(x);
  __syncthreads(); // every thread has read scratch before anyone reuses it
  return x;
}

} // namespace kvactor::gpu
