#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "gpu/paged_kv.h"

namespace kvactor::gpu {

// Everything between the fused QKV GEMM and attention, per token: add the
// biases, RMSNorm each q and k head (Qwen3), rotate q and k (RoPE,
// rotate_half convention), write q out and K, V into the token's cache slot
// (bf16) or, for an 8-bit cache, into `kv_stage` in fp32 for
// launch_kv_quantize to store.
struct rope_kv_params {
  const __nv_bfloat16* qkv = nullptr; // [num_tokens, q_dim + 2 kv_dim]: q heads, k heads, v heads
  const float* qkv_bias = nullptr;    // [q_dim + 2 kv_dim] or null
  const float* q_norm = nullptr;      // [head_dim] or null (then k_norm is null too)
  const float* k_norm = nullptr;      // [head_dim] or null
  const double* inv_freq = nullptr;   // [head_dim / 2]
  const int32_t* positions = nullptr; // [num_tokens]; -1 marks a padding row, skipped
  const int32_t* token_seq = nullptr; // [num_tokens]
  paged_kv_view kv;                   // receives K and V (bf16)
  float* kv_stage = nullptr;          // [num_tokens, 2, num_kv_heads, head_dim], else receives them
  __nv_bfloat16* q_out = nullptr;     // [num_tokens, num_heads, head_dim]
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  float eps = 1e-6f; // of the q/k norms
};

void launch_rope_kv(const rope_kv_params& params, int32_t num_tokens, cudaStream_t stream);

// Whether the small-batch projection can do this kernel's work in its
// epilogue (launch_rms_norm_gemv_rope_kv): a bf16 cache, no q/k norms (those
// need a whole head in one warp).
inline bool rope_kv_fusable(const rope_kv_params& p) {
  return p.kv.format == kv_format::bf16 && !p.kv_stage && !p.q_norm && !p.k_norm;
}

} // namespace kvactor::gpu
