#include "gpu/batch_plan.h"

#include <string>

#include "runtime/error.h"

namespace kvactor::gpu {

namespace {

void validate(const seq_step& q, size_t index, int32_t vocab_size, const kv_layout& layout) {
  const std::string where = "forward: sequence " + std::to_string(index) + ": ";
  if (q.tokens.empty()) throw error(where + "no new tokens");
  if (q.start_pos < 0) throw error(where + "negative start_pos " + std::to_string(q.start_pos));
  for (int32_t t : q.tokens)
    if (t < 0 || t >= vocab_size)
      throw error(where + "token id " + std::to_string(t) + " is outside the vocabulary of " +
                  std::to_string(vocab_size));
  const int64_t end = int64_t(q.start_pos) + int64_t(q.tokens.size());
  if (end > INT32_MAX) throw error(where + "positions up to " + std::to_string(end) + " do not fit in int32");
  const int64_t pages = (end + layout.page_size - 1) / layout.page_size;
  if (int64_t(q.page_table.size()) < pages)
    throw error(where + "page table has " + std::to_string(q.page_table.size()) + " pages, positions [0, " +
                std::to_string(end) + ") need " + std::to_string(pages));
  for (int64_t i = 0; i < pages; ++i)
    if (q.page_table[i] < 0 || q.page_table[i] >= layout.num_pages)
      throw error(where + "page id " + std::to_string(q.page_table[i]) + " is outside [0, " +
                  std::to_string(layout.num_pages) + ")");
}

} // namespace

void build_batch_plan(const forward_batch& batch, int32_t vocab_size, const kv_layout& layout, int32_t tile_tokens,
                      batch_plan& plan) {
  int64_t num_tokens = 0, num_pages = 0, num_tiles = 0;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const seq_step& q = batch.seqs[s];
    validate(q, s, vocab_size, layout);
    const int64_t n = int64_t(q.tokens.size());
    num_tokens += n;
    num_pages += (q.start_pos + n + layout.page_size - 1) / layout.page_size;
    num_tiles += (n + tile_tokens - 1) / tile_tokens;
  }
  if (num_tokens > INT32_MAX || num_pages > INT32_MAX)
    throw error("forward: a batch of " + std::to_string(num_tokens) + " tokens and " + std::to_string(num_pages) +
                " page entries is too large");

  batch_plan& p = plan;
  p.num_tokens = int32_t(num_tokens);
  p.num_seqs = int32_t(batch.seqs.size());
  p.num_logits = batch.num_logits();
  p.num_tiles = int32_t(num_tiles);
  p.tile_tokens = tile_tokens;
  size_t offset = 0;
  const auto place = [&](size_t count) {
    const size_t at = offset;
    offset += count;
    return at;
  };
  p.token_ids = place(size_t(num_tokens));
  p.positions = place(size_t(num_tokens));
  p.token_seq = place(size_t(num_tokens));
  p.qo_indptr = place(size_t(p.num_seqs) + 1);
  p.page_indptr = place(size_t(p.num_seqs) + 1);
  p.page_indices = place(size_t(num_pages));
  p.logit_rows = place(size_t(p.num_logits));
  p.tile_first = place(size_t(num_tiles));
  p.data.resize(offset);

  int32_t* d = p.data.data();
  int32_t token = 0, page_entry = 0, logit = 0, tile = 0;
  for (int32_t s = 0; s < p.num_seqs; ++s) {
    const seq_step& q = batch.seqs[size_t(s)];
    const int32_t n = int32_t(q.tokens.size());
    d[p.qo_indptr + s] = token;
    d[p.page_indptr + s] = page_entry;
    for (int32_t i = 0; i < n; ++i) {
      d[p.token_ids + token + i] = q.tokens[size_t(i)];
      d[p.positions + token + i] = q.start_pos + i;
      d[p.token_seq + token + i] = s;
    }
    const int32_t pages = (q.start_pos + n + layout.page_size - 1) / layout.page_size;
    for (int32_t i = 0; i < pages; ++i) d[p.page_indices + page_entry + i] = q.page_table[size_t(i)];
    for (int32_t i = 0; i < n; i += tile_tokens) d[p.tile_first + tile++] = token + i;
    if (q.want_logits) d[p.logit_rows + logit++] = token + n - 1;
    token += n;
    page_entry += pages;
  }
  d[p.qo_indptr + p.num_seqs] = token;
  d[p.page_indptr + p.num_seqs] = page_entry;
}

} // namespace kvactor::gpu
