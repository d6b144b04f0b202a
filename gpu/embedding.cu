#include "gpu/cuda_check.h"
#include "gpu/embedding.h"

namespace kvactor::gpu {

namespace {

__global__ void embedding_kernel(const int32_t* token_ids, const __nv_bfloat16* embed, float* residual,
                                 int32_t hidden) {
  const int32_t t = blockIdx.x;
  const __nv_bfloat16* row = embed + size_t(token_ids[t]) * hidden;
  float* out = residual + size_t(t) * hidden;
  for (int32_t i = threadIdx.x; i < hidden; i += blockDim.x) out[i] = __bfloat162float(row[i]);
}

} // namespace

void launch_embedding(const int32_t* token_ids, const __nv_bfloat16* embed, float* residual, int32_t num_tokens,
                      int32_t hidden, cudaStream_t stream) {
  embedding_kernel<<<num_tokens, 256, 0, stream>>>(token_ids, embed, residual, hidden);
  KVACTOR_CUDA_CHECK_LAUNCH();
}

} // namespace kvactor::gpu
