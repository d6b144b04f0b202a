#include "gpu/batch_plan.h"

#include <cstring>
#include <string>

#include "runtime/error.h"
#include "runtime/page_pool.h"
#include "runtime/sliding_window.h"

namespace kvactor::gpu {

namespace {

constexpr size_t sample_row_elems = sizeof(sample_row) / sizeof(int32_t);

void validate(const seq_step& q, size_t index, int32_t vocab_size, const kv_layout& layout, int32_t release_window) {
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
  // Pages wholly behind the window of the step's first token may have been
  // released: no kernel reads them.
  const int64_t released_ok = pages_behind_window(q.start_pos, release_window, layout.page_size);
  for (int64_t i = 0; i < pages; ++i) {
    const int32_t page = q.page_table[size_t(i)];
    if (page == no_page && i < released_ok) continue;
    if (page < 0 || page >= layout.num_pages)
      throw error(where + "page id " + std::to_string(page) + " at index " + std::to_string(i) + " is outside [0, " +
                  std::to_string(layout.num_pages) + ")" +
                  (page == no_page ? " (released, but the step attends to it)" : ""));
  }
}

int32_t pages_of(const seq_step& q, const kv_layout& layout) {
  return (q.start_pos + int32_t(q.tokens.size()) + layout.page_size - 1) / layout.page_size;
}

void check_samples(std::span<const sample_row> samples, int32_t num_logits) {
  if (!samples.empty() && samples.size() != size_t(num_logits))
    throw error("forward: " + std::to_string(samples.size()) + " sampling rows for " + std::to_string(num_logits) +
                " logits rows");
}

void put_samples(batch_plan& p, std::span<const sample_row> samples) {
  if (!samples.empty()) std::memcpy(p.data.data() + p.sample_rows, samples.data(), samples.size_bytes());
}

} // namespace

sample_row make_sample_row(const sampling_params& p, uint64_t counter, std::span<const int32_t> history,
                           int32_t vocab, std::vector<int32_t>& penalty_list) {
  sample_row r{p.temperature, p.top_p, p.top_k > 0 && p.top_k < vocab ? p.top_k : 0, p.min_p,
               sample_uniform(p.seed, counter)};
  if (p.repetition_penalty == 1.0f || history.empty()) return r;
  const std::vector<int32_t> seen = distinct_tokens(history, vocab);
  r.repetition_penalty = p.repetition_penalty;
  r.penalty_begin = int32_t(penalty_list.size());
  r.penalty_count = int32_t(seen.size());
  penalty_list.insert(penalty_list.end(), seen.begin(), seen.end());
  return r;
}

void build_batch_plan(const forward_batch& batch, int32_t vocab_size, const kv_layout& layout, int32_t tile_tokens,
                      batch_plan& plan, std::span<const sample_row> samples, int32_t release_window,
                      int32_t max_decode_rows) {
  int64_t num_tokens = 0, num_pages = 0, num_tiles = 0;
  int32_t decode_rows = 0;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const seq_step& q = batch.seqs[s];
    validate(q, s, vocab_size, layout, release_window);
    const int64_t n = int64_t(q.tokens.size());
    num_tokens += n;
    num_pages += pages_of(q, layout);
    if (n == 1 && size_t(decode_rows) == s && decode_rows < max_decode_rows)
      ++decode_rows;
    else
      num_tiles += (n + tile_tokens - 1) / tile_tokens;
  }
  if (num_tokens > INT32_MAX || num_pages > INT32_MAX)
    throw error("forward: a batch of " + std::to_string(num_tokens) + " tokens and " + std::to_string(num_pages) +
                " page entries is too large");
  check_samples(samples, batch.num_logits());

  batch_plan& p = plan;
  p.num_tokens = int32_t(num_tokens);
  p.num_seqs = int32_t(batch.seqs.size());
  p.num_logits = batch.num_logits();
  p.real_logits = p.num_logits;
  p.num_tiles = int32_t(num_tiles);
  p.tile_tokens = tile_tokens;
  p.decode_rows = decode_rows;
  p.decode_plan = false;
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
  if (!samples.empty()) {
    offset += offset % 2; // 8-byte alignment of the sample rows
    p.sample_rows = place(samples.size() * sample_row_elems);
  }
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
    const int32_t pages = pages_of(q, layout);
    for (int32_t i = 0; i < pages; ++i) d[p.page_indices + page_entry + i] = q.page_table[size_t(i)];
    if (s >= decode_rows)
      for (int32_t i = 0; i < n; i += tile_tokens) d[p.tile_first + tile++] = token + i;
    if (q.want_logits) d[p.logit_rows + logit++] = token + n - 1;
    token += n;
    page_entry += pages;
  }
  d[p.qo_indptr + p.num_seqs] = token;
  d[p.page_indptr + p.num_seqs] = page_entry;
  put_samples(p, samples);
}

bool is_decode_batch(const forward_batch& batch) {
  for (const seq_step& q : batch.seqs)
    if (q.tokens.size() != 1) return false;
  return !batch.seqs.empty();
}

size_t decode_plan_header(int32_t max_rows) {
  const size_t m = size_t(max_rows);
  const size_t arrays = 6 * m + 2; // token_ids .. logit_rows
  return arrays + arrays % 2 + m * sample_row_elems;
}

void build_decode_plan(const forward_batch& batch, int32_t vocab_size, const kv_layout& layout, int32_t rows,
                       int32_t max_rows, batch_plan& plan, std::span<const sample_row> samples,
                       int32_t release_window) {
  const int32_t real = int32_t(batch.seqs.size());
  if (!is_decode_batch(batch) || real > rows || rows > max_rows)
    throw error("build_decode_plan: needs 1 to " + std::to_string(rows) + " sequences of one new token each");
  int64_t num_pages = 0;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    validate(batch.seqs[s], s, vocab_size, layout, release_window);
    num_pages += pages_of(batch.seqs[s], layout);
  }
  if (num_pages > INT32_MAX) throw error("forward: " + std::to_string(num_pages) + " page entries are too many");
  check_samples(samples, batch.num_logits());

  batch_plan& p = plan;
  const size_t m = size_t(max_rows);
  p.num_tokens = rows;
  p.num_seqs = rows;
  p.num_logits = rows;
  p.real_logits = batch.num_logits();
  p.num_tiles = 0;
  p.tile_tokens = 1;
  p.decode_rows = rows;
  p.decode_plan = true;
  p.token_ids = 0;
  p.positions = m;
  p.token_seq = 2 * m;
  p.qo_indptr = 3 * m;
  p.page_indptr = 4 * m + 1;
  p.logit_rows = 5 * m + 2;
  p.tile_first = 0; // no tiles
  p.sample_rows = (6 * m + 2) + (6 * m + 2) % 2;
  p.page_indices = decode_plan_header(max_rows);
  p.data.resize(p.page_indices + size_t(num_pages));

  int32_t* d = p.data.data();
  int32_t page_entry = 0, logit = 0;
  for (int32_t s = 0; s < rows; ++s) {
    const bool padding = s >= real;
    d[p.token_ids + s] = padding ? 0 : batch.seqs[size_t(s)].tokens[0];
    d[p.positions + s] = padding ? -1 : batch.seqs[size_t(s)].start_pos;
    d[p.token_seq + s] = s;
    d[p.qo_indptr + s] = s;
    d[p.page_indptr + s] = page_entry;
    if (padding) continue;
    const seq_step& q = batch.seqs[size_t(s)];
    const int32_t pages = pages_of(q, layout);
    for (int32_t i = 0; i < pages; ++i) d[p.page_indices + page_entry + i] = q.page_table[size_t(i)];
    page_entry += pages;
    if (q.want_logits) d[p.logit_rows + logit++] = s;
  }
  d[p.qo_indptr + rows] = rows;
  d[p.page_indptr + rows] = page_entry;
  for (int32_t r = logit; r < rows; ++r) d[p.logit_rows + r] = 0;
  put_samples(p, samples);
  const sample_row greedy{};
  for (int32_t r = int32_t(samples.size()); r < rows; ++r)
    std::memcpy(d + p.sample_rows + size_t(r) * sample_row_elems, &greedy, sizeof greedy);
}

} // namespace kvactor::gpu
