#include "gpu/cuda_check.h"
#include "gpu/embedding.h"
#include "gpu/launch.cuh"
#include "gpu/vec.cuh"

namespace kvactor::gpu {

namespace {

constexpr int embedding_threads = 256;

// One thread per 8 elements: one 16-byte load, two 16-byte stores (three,
// and the 8 elements' sum of squares, with a norm to prepare).
__global__ void __launch_bounds__(embedding_threads)
    embedding_kernel(const int32_t* token_ids, const __nv_bfloat16* embed, float* residual, const float* norm_weight,
                     norm_input next, int32_t hidden) {
  launch_next_kernel();
  wait_for_previous_kernel();
  const int32_t t = blockIdx.y;
  const int32_t chunk = blockIdx.x * blockDim.x + threadIdx.x;
  if (chunk * 8 >= hidden) return;
  float f[8];
  unpack8(*reinterpret_cast<const uint4*>(embed + size_t(token_ids[t]) * hidden + chunk * 8), f);
  float4* out = reinterpret_cast<float4*>(residual + size_t(t) * hidden + chunk * 8);
  out[0] = make_float4(f[0], f[1], f[2], f[3]);
  out[1] = make_float4(f[4], f[5], f[6], f[7]);
  if (!norm_weight) return;
  float sum_sq = 0.0f, x[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    sum_sq = fmaf(f[e], f[e], sum_sq);
    x[e] = f[e] * norm_weight[chunk * 8 + e];
  }
  *reinterpret_cast<uint4*>(next.x + size_t(t) * hidden + chunk * 8) = pack8(x);
  next.sq_parts[size_t(t) * (hidden / 8) + chunk] = sum_sq;
}

} // namespace

void launch_embedding(const int32_t* token_ids, const __nv_bfloat16* embed, float* residual, const float* norm_weight,
                      norm_input next, int32_t num_tokens, int32_t hidden, cudaStream_t stream) {
  if (num_tokens == 0) return;
  const int chunks = hidden / 8;
  const dim3 grid(unsigned((chunks + embedding_threads - 1) / embedding_threads), unsigned(num_tokens));
  launch_kernel(embedding_kernel, grid, embedding_threads, 0, stream, token_ids, embed, residual, norm_weight, next,
                hidden);
}

} // namespace kvactor::gpu
