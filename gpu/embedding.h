#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kvactor::gpu {

// residual[t, :] = embed[token_ids[t], :] as fp32, and as bf16 into
// residual_bf16 unless it is null. Token ids are checked on the host; hidden
// is a multiple of 8.
void launch_embedding(const int32_t* token_ids,     // [num_tokens]
                      const __nv_bfloat16* embed,   // [vocab, hidden]
                      float* residual,              // [num_tokens, hidden]
                      __nv_bfloat16* residual_bf16, // [num_tokens, hidden] or null
                      int32_t num_tokens, int32_t hidden, cudaStream_t stream);

} // namespace kvactor::gpu
