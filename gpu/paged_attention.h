#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "gpu/paged_kv.h"

namespace kvactor::gpu {

// Query rows (tokens x q heads of one kv head) a tile aims for; a tile holds
// max(1, attention_tile_rows / group) tokens of one sequence.
constexpr int32_t attention_tile_rows = 16;

// Attention for a mixed batch in one launch. Every new token attends to its
// sequence's keys at positions [max(0, pos - window + 1), pos] (all of them
// when window is 0): the cached pages and the earlier tokens of its own chunk,
// whose K/V rope_kv has already written. GQA: the `group` q heads of a kv
// head share one read of its K/V. Softmax in fp32 (online, tile by tile).
struct attention_params {
  const __nv_bfloat16* q = nullptr;    // [num_tokens, num_heads, head_dim], roped
  __nv_bfloat16* out = nullptr;        // [num_tokens, num_heads, head_dim]
  paged_kv_view kv;
  const int32_t* positions = nullptr;  // [num_tokens]
  const int32_t* token_seq = nullptr;  // [num_tokens]
  const int32_t* qo_indptr = nullptr;  // [num_seqs + 1]
  const int32_t* tile_first = nullptr; // [num_tiles]
  int32_t num_heads = 0;
  int32_t group = 1;       // q heads per kv head
  int32_t tile_tokens = 1; // as batch_plan cut them
  int32_t window = 0;      // keys a token sees, itself included; 0 = all
  float scale = 1.0f;      // 1 / sqrt(head_dim)
};

// Head sizes with a compiled kernel: 16, 32, 64, 128, 256.
bool paged_attention_supports(int32_t head_dim);
// Dynamic shared memory of one block.
size_t paged_attention_smem_bytes(int32_t head_dim, int32_t rows);

// Raises the kernel's shared-memory limit for tiles of `rows` query rows;
// once per device before launching.
void init_paged_attention(int32_t head_dim, int32_t rows);

// bf16 caches only (8-bit ones take the tensor-core kernel).
void launch_paged_attention(const attention_params& params, int32_t num_tiles, cudaStream_t stream);

} // namespace kvactor::gpu
