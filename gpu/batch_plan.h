#pragma once
// A forward_batch flattened into the int32 arrays the kernels read. The
// arrays sit back to back in one buffer, so a step needs one host-to-device
// copy; each field below is an offset (in elements) into `data`.
//
// Attention work is planned here too: each sequence's new tokens are cut into
// tiles of `tile_tokens` consecutive tokens, one thread block per tile and
// kv head (FlashInfer's plan-on-the-host approach).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/forward_batch.h"
#include "runtime/kv_layout.h"

namespace kvactor::gpu {

struct batch_plan {
  int32_t num_tokens = 0;
  int32_t num_seqs = 0;
  int32_t num_logits = 0;
  int32_t num_tiles = 0;
  int32_t tile_tokens = 1;

  size_t token_ids = 0;    // [num_tokens]
  size_t positions = 0;    // [num_tokens] absolute position of each token
  size_t token_seq = 0;    // [num_tokens] sequence of each token
  size_t qo_indptr = 0;    // [num_seqs + 1] first token of each sequence
  size_t page_indptr = 0;  // [num_seqs + 1] first entry of each page table
  size_t page_indices = 0; // [page_indptr[num_seqs]] the pages each sequence uses
  size_t logit_rows = 0;   // [num_logits] token whose logits make each row
  size_t tile_first = 0;   // [num_tiles] first token of each attention tile
  std::vector<int32_t> data;
};

// Rebuilds `plan` for `batch` (reusing its storage). Page tables are cut to
// the pages positions [0, start_pos + tokens) need. Throws kvactor::error for
// invalid input: no new tokens, a negative start_pos, a token outside the
// vocabulary, a page table too short or naming a page outside the cache.
void build_batch_plan(const forward_batch& batch, int32_t vocab_size, const kv_layout& layout, int32_t tile_tokens,
                      batch_plan& plan);

} // namespace kvactor::gpu
