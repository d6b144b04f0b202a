#include <algorithm>

#include "gpu/cuda_check.h"
#include "gpu/launch.cuh"
#include "gpu/silu_mul.h"
#include "gpu/vec.cuh"

namespace kvactor::gpu {

namespace {

// One thread per 8 outputs: two 16-byte loads, one 16-byte store.
__global__ void silu_mul_kernel(const __nv_bfloat16* gate_up, __nv_bfloat16* out, size_t chunks,
                                int32_t intermediate) {
  launch_next_kernel();
  wait_for_previous_kernel();
  const int32_t row_chunks = intermediate / 8;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < chunks; i += size_t(gridDim.x) * blockDim.x) {
    const size_t t = i / row_chunks, c = i % row_chunks;
    const __nv_bfloat16* row = gate_up + t * 2 * intermediate;
    float g[8], u[8], y[8];
    unpack8(*reinterpret_cast<const uint4*>(row + c * 8), g);
    unpack8(*reinterpret_cast<const uint4*>(row + intermediate + c * 8), u);
#pragma unroll
    for (int e = 0; e < 8; ++e) y[e] = g[e] / (1.0f + expf(-g[e])) * u[e];
    *reinterpret_cast<uint4*>(out + t * intermediate + c * 8) = pack8(y);
  }
}

} // namespace

void launch_silu_mul(const __nv_bfloat16* gate_up, __nv_bfloat16* out, int32_t num_tokens, int32_t intermediate,
                     cudaStream_t stream) {
  const size_t chunks = size_t(num_tokens) * (intermediate / 8);
  if (chunks == 0) return;
  constexpr int threads = 256;
  const int blocks = int(std::min<size_t>((chunks + threads - 1) / threads, 65536));
  launch_kernel(silu_mul_kernel, blocks, threads, 0, stream, gate_up, out, chunks, intermediate);
}

} // namespace kvactor::gpu
