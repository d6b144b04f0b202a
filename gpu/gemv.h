#pragma once
// Linear layers of a few rows: y[m, n] = x[m, k] . w[n, k]^T for
// m <= gemv_max_rows. At such m a layer is one pass over its weights, so each
// warp streams one weight row (two when gated) with 16-byte loads kept out of
// L1, while the few activation rows stay in L1. bf16 in, fp32 accumulation.
// k is a multiple of 8 and the pointers are 16-byte aligned.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kvactor::gpu {

// NOTE: at 8 rows cuBLASLt was faster (docs/performance.md, version 1).
constexpr int32_t gemv_max_rows = 4;

// y: [m, n], bf16 or (y_fp32) fp32.
void launch_gemv(const __nv_bfloat16* x, // [m, k]
                 const __nv_bfloat16* w, // [n, k]
                 void* y, bool y_fp32, int32_t m, int32_t n, int32_t k, cudaStream_t stream);

// The gate and up projections with the SwiGLU product fused:
// act[t, i] = silu(x[t] . w[i]) * (x[t] . w[n + i]).
void launch_gemv_gated(const __nv_bfloat16* x, // [m, k]
                       const __nv_bfloat16* w, // [2 n, k]: gate rows, then up rows
                       __nv_bfloat16* act,     // [m, n]
                       int32_t m, int32_t n, int32_t k, cudaStream_t stream);

} // namespace kvactor::gpu
