#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "gpu/gemv.h"

namespace kvactor::gpu {

// residual[t, :] = embed[token_ids[t], :] as fp32. With norm_weight, also the
// norm_input of those rows for an RMSNorm of those weights. Token ids are
// checked on the host; hidden is a multiple of 8.
void launch_embedding(const int32_t* token_ids,   // [num_tokens]
                      const __nv_bfloat16* embed, // [vocab, hidden]
                      float* residual,            // [num_tokens, hidden]
                      const float* norm_weight,   // [hidden] or null
                      norm_input next, int32_t num_tokens, int32_t hidden, cudaStream_t stream);

} // namespace kvactor::gpu
