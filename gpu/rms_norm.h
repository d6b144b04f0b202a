#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kvactor::gpu {

// Fused residual add and RMSNorm, one output row per source row s:
//   x = residual[s] + delta[s]          (delta may be null)
//   residual[s] = x                     (when update_residual)
//   out[r] = bf16(x * rsqrt(mean(x^2) + eps) * weight)
// s = rows[r], or r itself when rows is null (then num_rows rows).
// hidden is a multiple of 8 and at most rms_norm_max_hidden.
void launch_add_rms_norm(const int32_t* rows,        // [num_rows] or null
                         float* residual,            // [*, hidden]
                         const __nv_bfloat16* delta, // [*, hidden] or null
                         bool update_residual,
                         const float* weight,        // [hidden]
                         __nv_bfloat16* out,         // [num_rows, hidden]
                         int32_t num_rows, int32_t hidden, float eps, cudaStream_t stream);

// A row and the norm's weights stay in registers between the two passes: 8
// vectors of 4 each per thread, at most 512 threads.
constexpr int32_t rms_norm_max_hidden = 8 * 4 * 512;

} // namespace kvactor::gpu
