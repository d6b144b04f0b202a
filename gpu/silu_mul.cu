#include <algorithm>

#include "gpu/cuda_check.h"
#include "gpu/silu_mul.h"

namespace kvactor::gpu {

namespace {

__global__ void silu_mul_kernel(const __nv_bfloat16* gate_up, __nv_bfloat16* out, size_t count,
                                int32_t intermediate) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x) {
    const size_t t = i / intermediate, c = i % intermediate;
    const __nv_bfloat16* row = gate_up + t * 2 * intermediate;
    const float g = __bfloat162float(row[c]);
    const float u = __bfloat162float(row[intermediate + c]);
    out[i] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
  }
}

} // namespace

void launch_silu_mul(const __nv_bfloat16* gate_up, __nv_bfloat16* out, int32_t num_tokens, int32_t intermediate,
                     cudaStream_t stream) {
  const size_t count = size_t(num_tokens) * intermediate;
  if (count == 0) return;
  constexpr int threads = 256;
  const int blocks = int(std::min<size_t>((count + threads - 1) / threads, 65536));
  silu_mul_kernel<<<blocks, threads, 0, stream>>>(gate_up, out, count, intermediate);
  KVACTOR_CUDA_CHECK_LAUNCH();
}

} // namespace kvactor::gpu
