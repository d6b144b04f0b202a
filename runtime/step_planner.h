#pragma once
// Continuous batching policy: which sequences run in the next forward step,
// how many tokens each computes, how many pages each needs, and whom to
// preempt when pages run out. A pure function object from plain data to a
// plain step_plan; it never touches pages itself. The scheduler that owns
// the queues, the page_pool and the prefix_index calls it once per step and
// applies the plan.
//
// There are no prefill and decode phases. A sequence knows num_tokens (its
// prompt plus what it has generated) and num_computed_tokens (tokens whose KV
// is in its pages); a step computes some of the difference. One new token is
// a decode; more is a chunk of a prefill. A step is filled in this order:
//   1. every running decode, one token each;
//   2. running sequences still prefilling, a chunk each;
//   3. waiting sequences, admitted while sequences, tokens and pages last.
// Each group is served by priority (higher first), then arrival (earlier
// first). A chunk is capped by prefill_chunk and by the tokens left in the
// step. Waiting sequences are served strictly in order: the first one that
// does not fit stops admission (no overtaking), and admission must leave the
// pool's watermark free for running sequences to grow.
//
// Preemption by recompute: when a running sequence needs more pages than are
// free, the last running sequence in service order (lowest priority, then
// newest) is preempted, even one already planned this step (its slot is taken
// back), until the pages suffice or the needy sequence is itself the last,
// in which case it is the one preempted. A preempted sequence loses all its
// pages and waits again with num_computed_tokens = 0; it later recomputes
// prompt + generated tokens (mostly from the prefix cache) and continues
// with the same output. No sequence is admitted in a step that preempts.
//
// Prefix caching split: the planner asks `probe` how many leading tokens of a
// waiting sequence are cached (prefix_index::peek), only for sequences it
// considers admitting. The caller applies a plan in this order:
//   a. release every preempted sequence's pages and requeue it;
//   b. for every admitted entry, prefix_index::lookup its tokens, share the
//      hit's pages (start_pos / page_size of them, as probed) and keep the
//      hit's cursor for the sequence;
//   c. then allocate num_new_pages for every entry (page_claim::admission for
//      admitted ones). Sharing before any allocation matters: an allocation
//      may evict an unreferenced cached page that a later entry hits;
//   d. after the forward step, prefix_index::insert each scheduled sequence's
//      computed tokens with its cursor, so that filled pages become hits.
// Given free_pages and num_exclusive_pages from the pool, every allocation
// in (c) succeeds.
//
// NOTE: pages are counted from positions (page p holds positions
// [p * page_size, (p + 1) * page_size)), so a sequence whose leading pages
// later slide out of a window still counts its page-table slots correctly.
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "runtime/page_pool.h"

namespace kvactor {

struct step_budget {
  int32_t page_size = 16;
  int32_t max_batch_tokens = 2048; // new tokens per step
  int32_t max_seqs = 256;          // sequences per step, and sequences holding pages
  int32_t prefill_chunk = 0;       // most new tokens of one sequence per step; 0 = no cap
};

// A sequence holding pages: admitted and not preempted since.
struct running_seq {
  seq_id id = 0;
  int32_t num_tokens = 0;          // prompt + generated so far
  int32_t num_computed_tokens = 0; // their KV is in the pages
  int32_t num_pages = 0;           // page-table slots (page_pool::page_table size)
  // Pages that become free if it is preempted: page_pool::num_exclusive_pages.
  // Pages shared only among several victims are not counted, which can cost
  // an extra preemption but never over-allocates.
  int32_t num_exclusive_pages = 0;
  int32_t priority = 0;
  uint64_t arrival = 0;
};

// A sequence without pages: new, or preempted.
struct waiting_seq {
  seq_id id = 0;
  int32_t num_tokens = 0; // prompt, or prompt + generated once preempted
  int32_t priority = 0;
  uint64_t arrival = 0;
};

// What the prefix index holds for a waiting sequence (prefix_index::peek).
struct cached_prefix {
  int32_t num_tokens = 0;             // whole pages, at most num_tokens - 1
  int32_t num_unreferenced_pages = 0; // hits that sharing takes out of the free count
};

using prefix_probe = std::function<cached_prefix(seq_id)>;

struct step_input {
  std::span<const running_seq> running;
  std::span<const waiting_seq> waiting;
  int32_t free_pages = 0; // page_pool::num_free
  int32_t watermark = 0;  // page_pool::watermark
  prefix_probe probe;     // empty: nothing is cached
};

struct scheduled_seq {
  seq_id id = 0;
  int32_t start_pos = 0;      // position of the first new token
  int32_t num_new_tokens = 0; // tokens [start_pos, start_pos + num_new_tokens)
  int32_t num_new_pages = 0;  // fresh pages to append to its page table
  bool want_logits = false;   // the chunk reaches the last known token
  bool admitted = false;      // it was waiting; start_pos tokens are cached hits
};

struct step_plan {
  std::vector<scheduled_seq> scheduled; // in service order
  std::vector<seq_id> preempted;        // in the order they were chosen
  std::vector<seq_id> refused;          // waiting with no tokens: can never run

  int32_t num_tokens() const;
  int32_t num_new_pages() const;
};

class step_planner {
 public:
  // Throws kvactor::error unless page_size, max_batch_tokens and max_seqs are
  // positive and prefill_chunk is not negative.
  explicit step_planner(step_budget budget);

  const step_budget& budget() const { return budget_; }

  // note: call with running sequences that hold their pages and waiting
  // sequences that hold none; ids unique across both. A sequence must fit
  // the pool on its own (pages for its longest length <= pool pages - pins
  // - watermark), or it will keep being preempted.
  step_plan operator()(const step_input& in) const;

 private:
  int32_t pages_for(int32_t num_tokens) const;

  step_budget budget_;
};

} // namespace kvactor
