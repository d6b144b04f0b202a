#pragma once
// A forward_batch flattened into the int32 arrays the kernels read. The
// arrays sit in one buffer, so a step needs one host-to-device copy; each
// field below is an offset (in elements) into `data`.
//
// Two shapes of plan:
// - packed (build_batch_plan): any mixed batch, arrays back to back. Attention
//   work is planned here too: the leading sequences of one new token (the
//   running decodes, which the step planner puts first) go to the decode
//   kernel; the other sequences' new tokens are cut into tiles of
//   `tile_tokens` consecutive tokens, one thread block per tile and kv head
//   (FlashInfer's plan-on-the-host approach).
// - decode (build_decode_plan): one new token per sequence, padded to `rows`
//   sequences, every array at an offset that depends on `max_rows` alone. The
//   launches of a step then depend on `rows` alone, so a CUDA graph captured
//   once replays for every later step of that size after one copy of `data`.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "runtime/forward_batch.h"
#include "runtime/kv_layout.h"
#include "runtime/sampler.h"

namespace kvactor::gpu {

// The sampling inputs of one logits row, as the sampling kernel reads them
// (runtime/sampler.h's parameters; `uniform` is sample_uniform(seed, counter)).
struct sample_row {
  float temperature = 0.0f;        // 0 = greedy
  float top_p = 1.0f;              // 1 = off
  int32_t top_k = 0;               // 0 = off
  float min_p = 0.0f;              // 0 = off
  double uniform = 0.0;            // in [0, 1)
  float repetition_penalty = 1.0f; // 1 = off
  // The row's distinct earlier tokens (runtime/sampler.h's distinct_tokens)
  // in the sampling kernel's penalty list: [penalty_begin, + penalty_count).
  int32_t penalty_begin = 0;
  int32_t penalty_count = 0;
};
static_assert(sizeof(sample_row) == 40 && alignof(sample_row) == 8);

// The row that samples as `p` does for the token at `counter`. With a
// repetition penalty and a history, the history's distinct tokens are
// appended to `penalty_list` and the row points at them. Throws
// kvactor::error on a history token outside [0, vocab).
sample_row make_sample_row(const sampling_params& p, uint64_t counter, std::span<const int32_t> history,
                           int32_t vocab, std::vector<int32_t>& penalty_list);

struct batch_plan {
  int32_t num_tokens = 0; // rows of the activations (padded in a decode plan)
  int32_t num_seqs = 0;
  int32_t num_logits = 0; // logits rows computed (padded in a decode plan)
  int32_t real_logits = 0; // logits rows the caller asked for: the first ones
  int32_t num_tiles = 0;
  int32_t tile_tokens = 1;
  // The first decode_rows tokens are sequences of one new token each, which
  // the decode-attention kernel attends; the tiles cover the tokens after them.
  int32_t decode_rows = 0;
  bool decode_plan = false; // build_decode_plan's: every offset fixed by max_rows

  size_t token_ids = 0;    // [num_tokens]
  size_t positions = 0;    // [num_tokens] absolute position of each token; -1 marks padding
  size_t token_seq = 0;    // [num_tokens] sequence of each token
  size_t qo_indptr = 0;    // [num_seqs + 1] first token of each sequence
  size_t page_indptr = 0;  // [num_seqs + 1] first entry of each page table
  size_t page_indices = 0; // [page_indptr[num_seqs]] the pages each sequence uses
  size_t logit_rows = 0;   // [num_logits] token whose logits make each row
  size_t tile_first = 0;   // [num_tiles] first token of each attention tile; packed plans only
  size_t sample_rows = 0;  // [num_logits] sample_row, 8-byte aligned; only with sampling
  std::vector<int32_t> data;
};

// Rebuilds `plan` for `batch` (reusing its storage). Page tables are cut to
// the pages positions [0, start_pos + tokens) need. `samples` is empty or has
// one row per logits row. With a `release_window` (runtime/sliding_window.h)
// the pages wholly behind it may be no_page. Up to `max_decode_rows` leading
// one-token sequences become decode rows (0: every sequence is tiled).
// Throws kvactor::error for invalid input: no new tokens, a negative
// start_pos, a token outside the vocabulary, a page table too short or
// naming a page outside the cache, a wrong number of samples.
void build_batch_plan(const forward_batch& batch, int32_t vocab_size, const kv_layout& layout, int32_t tile_tokens,
                      batch_plan& plan, std::span<const sample_row> samples = {}, int32_t release_window = 0,
                      int32_t max_decode_rows = 0);

// True when every sequence brings exactly one new token.
bool is_decode_batch(const forward_batch& batch);

// The decode plan of `batch` (is_decode_batch, at most `rows` sequences,
// rows <= max_rows) padded to `rows` sequences: padding rows have token 0,
// position -1, no pages and greedy sampling; padding logits rows read token
// 0. Every row is a decode row; no tiles. Throws kvactor::error like
// build_batch_plan.
void build_decode_plan(const forward_batch& batch, int32_t vocab_size, const kv_layout& layout, int32_t rows,
                       int32_t max_rows, batch_plan& plan, std::span<const sample_row> samples = {},
                       int32_t release_window = 0);

// Elements of a decode plan for max_rows before its page indices.
size_t decode_plan_header(int32_t max_rows);

} // namespace kvactor::gpu
