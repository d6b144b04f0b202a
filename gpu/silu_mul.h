#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kvactor::gpu {

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, intermediate + i], in fp32;
// intermediate is a multiple of 8.
void launch_silu_mul(const __nv_bfloat16* gate_up, // [num_tokens, 2 intermediate]
                     __nv_bfloat16* out,           // [num_tokens, intermediate]
                     int32_t num_tokens, int32_t intermediate, cudaStream_t stream);

} // namespace kvactor::gpu
