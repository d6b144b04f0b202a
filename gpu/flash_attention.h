#pragma once
// Attention for prefill and mixed batches on the tensor cores (FlashAttention-2
// style, mma.sync m16n8k16 in bf16 with fp32 accumulation) over the paged KV
// cache. A block of 4 or 8 warps takes one tile of a sequence's new tokens
// and one kv head: its 64 to 256 query rows are the tile's tokens x the kv
// head's `group` q heads, so each K/V tile staged in shared memory serves all of
// them. K/V tiles are gathered page by page with cp.async, two stages deep;
// the online softmax stays in registers. Same inputs and semantics as
// launch_paged_attention (attention_params), with tile_tokens =
// flash_attention_tile_tokens(head_dim, group, variant).
#include <cuda_runtime.h>

#include <cstdint>

#include "gpu/paged_attention.h"

namespace kvactor::gpu {

// Trade-offs between the work a block holds and how many blocks fit on a
// multiprocessor: query rows per block (16 or 32 per warp; with 32, each K/V
// fragment read from shared memory serves two m-tiles), keys per K/V tile,
// and whether the warp's Q fragments stay in registers.
enum class flash_variant {
  rows64_keys64_q_registers,
  rows64_keys32_q_registers,
  rows64_keys32_q_shared,
  rows128_keys64,
  rows128_keys32,
  rows256_keys64, // 8 warps: half the K/V loads per query row
  rows256_keys32,
};

// The executor's choice for bf16 caches (docs/performance.md has the
// measurements), and the only variant of 8-bit ones: they dequantize a tile
// ahead in registers, which leaves none for tiles of 64 keys.
constexpr flash_variant default_flash_variant = flash_variant::rows256_keys64;
constexpr flash_variant kv8_flash_variant = flash_variant::rows128_keys32;

constexpr flash_variant flash_variant_for(kv_format format) {
  return kv_is_quantized(format) ? kv8_flash_variant : default_flash_variant;
}

// Head sizes 16, 32, 64, 128 with at most 64 q heads per kv head.
bool flash_attention_supports(int32_t head_dim, int32_t group);

// Query rows of one block, and the tokens of one tile: as many as fit.
int32_t flash_attention_rows(int32_t head_dim, flash_variant variant);
int32_t flash_attention_tile_tokens(int32_t head_dim, int32_t group, flash_variant variant);

// Raises the kernels' shared-memory limit; once per device before launching.
void init_flash_attention();

// bf16, fp8 and int8 caches; 8-bit ones run kv8_flash_variant whatever
// `variant` says.
void launch_flash_attention(const attention_params& params, int32_t num_tiles, cudaStream_t stream,
                            flash_variant variant = default_flash_variant);

} // namespace kvactor::gpu
