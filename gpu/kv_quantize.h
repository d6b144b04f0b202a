#pragma once
// Writing new K/V into an 8-bit paged cache (runtime/kv_quant.h's formats,
// bit for bit what the CPU backend stores). rope_kv leaves each new token's
// K and V in fp32 in a staging buffer; this writes them into their pages.
//   int8: each (token, kv head) on its own, with its scale.
//   fp8:  the scale is per (page, kv head) and must cover every token of the
//         page, so one warp takes the step's tokens of one page and head in
//         slot order, growing the scale and requantizing the slots before
//         as fp8_write_token does.
#include <cuda_runtime.h>

#include <cstdint>

#include "gpu/paged_kv.h"

namespace kvactor::gpu {

struct kv_quantize_params {
  const float* stage = nullptr;       // [num_tokens, 2 (K, V), num_kv_heads, head_dim]
  const int32_t* positions = nullptr; // [num_tokens]; -1 marks a padding row, skipped
  const int32_t* token_seq = nullptr; // [num_tokens]; a sequence's tokens are consecutive
  paged_kv_view kv;                   // fp8 or int8
  int32_t num_tokens = 0;
};

void launch_kv_quantize(const kv_quantize_params& params, cudaStream_t stream);

} // namespace kvactor::gpu
