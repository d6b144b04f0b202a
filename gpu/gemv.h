#pragma once
// Linear layers of a few rows: y[m, n] = x[m, k] . w[n, k]^T for
// m <= gemv_max_rows. At such m a layer is one pass over its weights, so each
// warp streams one weight row (two when gated or roped) with 16-byte loads
// kept out of L1, while the few activation rows stay in L1. bf16 in, fp32
// accumulation. What sits between the projections of a layer (the RMSNorms,
// RoPE and the K/V write, SwiGLU, the residual adds) is done by them, in the
// same pass: a decode step is four GEMVs and attention per layer.
// k is a multiple of 8 and the pointers are 16-byte aligned.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "gpu/rope_kv.h"

namespace kvactor::gpu {

// NOTE: at 8 rows cuBLASLt was faster (docs/performance.md, version 1).
constexpr int32_t gemv_max_rows = 4;

// y: [m, n], bf16 or (y_fp32) fp32.
void launch_gemv(const __nv_bfloat16* x, // [m, k]
                 const __nv_bfloat16* w, // [n, k]
                 void* y, bool y_fp32, int32_t m, int32_t n, int32_t k, cudaStream_t stream);

// An RMSNorm split between the kernel that produces the residual and the
// projection after it: the first writes x = bf16(r * norm_weight) and each
// row's sums of r^2 over every 8 columns; the projection adds those up (in
// a fixed order: a step gives the same bits every time) and scales its dot
// products with x by rsqrt(sum / k + eps). Rounded where a norm kernel
// rounds its output, and no pass over the row of its own.
struct norm_input {
  __nv_bfloat16* x = nullptr;  // [m, k]
  float* sq_parts = nullptr;   // [m, k / 8]
};

// residual[m, n] += bf16(x . w^T): the projection added to the fp32
// residual stream (rounded to bf16 first, as an add of the bf16 result
// would be). With next_norm_weight ([n]), also the norm_input of the new
// residual for a norm of those weights. n is a multiple of 8.
void launch_gemv_add(const __nv_bfloat16* x, // [m, k]
                     const __nv_bfloat16* w, // [n, k]
                     float* residual,        // [m, n]
                     const float* next_norm_weight, norm_input next, int32_t m, int32_t n, int32_t k,
                     cudaStream_t stream);

// y = bf16(rmsnorm(r) . w^T), the norm prepared in `in`.
void launch_rms_norm_gemv(norm_input in, const __nv_bfloat16* w, // [n, k]
                          __nv_bfloat16* y,                      // [m, n]
                          int32_t m, int32_t n, int32_t k, float eps, cudaStream_t stream);

// The same for the gate and up projections, with the SwiGLU product fused:
// act[t, i] = silu(g) * u, g and u the normed row against w[i] and w[n + i].
void launch_rms_norm_gemv_gated(norm_input in,
                                const __nv_bfloat16* w, // [2 n, k]: gate rows, then up rows
                                __nv_bfloat16* act,     // [m, n]
                                int32_t m, int32_t n, int32_t k, float eps, cudaStream_t stream);

// The qkv projection and launch_rope_kv's work in one pass: each warp
// computes a rotation pair (columns i and i + head_dim / 2 of a head) and
// stores it roped, q to rope.q_out and k, v to their cache slots. rope.qkv
// is not used; rope_kv_fusable(rope) must hold.
void launch_rms_norm_gemv_rope_kv(norm_input in,
                                  const __nv_bfloat16* w, // [q_dim + 2 kv_dim, k]
                                  const rope_kv_params& rope, int32_t m, int32_t k, float eps, cudaStream_t stream);

} // namespace kvactor::gpu
