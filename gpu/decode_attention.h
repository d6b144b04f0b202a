#pragma once
// Attention for decode steps (one new token per sequence), split over the
// keys (flash-decoding): each block takes one (sequence, kv head, split) and
// a range of that sequence's keys, so one long sequence still spreads over
// the whole GPU. GQA: the `group` q heads of a kv head share each K/V load.
// A sequence of n_s > 1 splits leaves per-split partial results, and the last
// of its split blocks to finish merges them; with one split the block writes
// the output itself.
//
// The number of splits of a sequence is computed on the device from its
// length (decode_splits), so the launches depend on the number of rows
// alone: a CUDA graph of a decode step replays for any lengths.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "gpu/paged_kv.h"

namespace kvactor::gpu {

struct decode_attention_params {
  const __nv_bfloat16* q = nullptr;   // [rows, num_heads, head_dim], roped
  __nv_bfloat16* out = nullptr;       // [rows, num_heads, head_dim]
  paged_kv_view kv;                   // page tables indexed by row
  const int32_t* positions = nullptr; // [rows] the new token's position; -1 marks a padding row
  float* partial_out = nullptr;       // [rows, max_splits, num_heads, head_dim] unnormalised sums
  float* partial_ml = nullptr;        // [rows, max_splits, num_heads, 2] max (log2 units) and sum of exp
  int32_t* split_done = nullptr;      // [rows, num_kv_heads] zeros; split blocks count themselves here,
                                      // and the launch leaves them zero again
  int32_t num_heads = 0;
  int32_t group = 1;          // q heads per kv head
  int32_t window = 0;         // keys a token sees, itself included; 0 = all
  int32_t max_splits = 1;     // splits per sequence at most (the grid's third dimension)
  int32_t min_split_keys = 64; // keys per split at least
  float scale = 1.0f;          // 1 / sqrt(head_dim)
};

// Head sizes 16, 32, 64, 128, 256 with at most 8 q heads per kv head; bf16,
// fp8 and int8 caches.
bool decode_attention_supports(int32_t head_dim, int32_t group);

// Splits for `rows` sequences on `num_sms` multiprocessors: enough blocks
// for about four per multiprocessor, at most 32.
int32_t decode_max_splits(int32_t rows, int32_t num_kv_heads, int32_t num_sms);

// Elements of partial_out and partial_ml for `rows` x `max_splits`.
size_t decode_partial_out_elems(int32_t rows, int32_t max_splits, int32_t num_heads, int32_t head_dim);
size_t decode_partial_ml_elems(int32_t rows, int32_t max_splits, int32_t num_heads);
size_t decode_split_done_elems(int32_t rows, int32_t num_kv_heads);

// split_done must be zeros before the first launch (cudaMemset).
void launch_decode_attention(const decode_attention_params& params, int32_t rows, cudaStream_t stream);

} // namespace kvactor::gpu
