#include "gpu/cuda_check.h"
#include "gpu/embedding.h"
#include "gpu/launch.cuh"
#include "gpu/vec.cuh"

namespace kvactor::gpu {

namespace {

constexpr int embedding_threads = 256;

// One thread per 8 elements: one 16-byte load, two (three) 16-byte stores.
__global__ void __launch_bounds__(embedding_threads)
    embedding_kernel(const int32_t* token_ids, const __nv_bfloat16* embed, float* residual,
                     __nv_bfloat16* residual_bf16, int32_t hidden) {
  launch_next_kernel();
  wait_for_previous_kernel();
  const int32_t t = blockIdx.y;
  const int32_t chunk = blockIdx.x * blockDim.x + threadIdx.x;
  if (chunk * 8 >= hidden) return;
  const uint4 v = *reinterpret_cast<const uint4*>(embed + size_t(token_ids[t]) * hidden + chunk * 8);
  float f[8];
  unpack8(v, f);
  float4* out = reinterpret_cast<float4*>(residual + size_t(t) * hidden + chunk * 8);
  out[0] = make_float4(f[0], f[1], f[2], f[3]);
  out[1] = make_float4(f[4], f[5], f[6], f[7]);
  if (residual_bf16) *reinterpret_cast<uint4*>(residual_bf16 + size_t(t) * hidden + chunk * 8) = v;
}

} // namespace

void launch_embedding(const int32_t* token_ids, const __nv_bfloat16* embed, float* residual,
                      __nv_bfloat16* residual_bf16, int32_t num_tokens, int32_t hidden, cudaStream_t stream) {
  if (num_tokens == 0) return;
  const int chunks = hidden / 8;
  const dim3 grid(unsigned((chunks + embedding_threads - 1) / embedding_threads), unsigned(num_tokens));
  launch_kernel(embedding_kernel, grid, embedding_threads, 0, stream, token_ids, embed, residual, residual_bf16,
                hidden);
}

} // namespace kvactor::gpu
