#pragma once
// What the scheduler asks of the KV cache once per step, and what it gets
// back. Plain data, so that the scheduler and the cache can live in different
// actors: the scheduler never sees a page_pool, only these replies.
//
// A request is applied in this order (kv_cache_manager::apply):
//   1. inserts   sequences whose KV grew in a completed step register their
//                new full pages in the prefix index;
//   2. unpins    system prompts no longer configured let their pages go;
//   3. pins      system prompts whose KV is now cached are pinned;
//   4. trims     running sequences release the leading pages their sliding
//                window has passed (sliding_window.h);
//   5. releases  finished, cancelled and preempted sequences drop their pages;
//   6. scheduled the step plan, as step_planner.h prescribes: every admitted
//                sequence shares its prefix hits first, then every entry
//                allocates its fresh pages;
//   7. probes    waiting sequences are peeked for the next plan.
// NOTE: inserts and pins come before trims and releases: the last pages of a
// sequence that has just finished, or slid out of its window, are cached,
// and a pin takes pages its sequence still references, before those
// references go. Unpins come before pins, so that a reload that swaps
// prompts stays under the pinned cap. So nothing before step 6 lowers the
// free page count the planner was given.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/page_pool.h"
#include "runtime/step_planner.h"

namespace kvactor {

// A sequence's tokens, shared read-only between the scheduler and the cache.
using token_list = std::shared_ptr<const std::vector<int32_t>>;

// -- request ------------------------------------------------------------------

struct kv_insert {
  seq_id id = 0;
  // Tokens after those the cache already holds for the sequence (its
  // admission tokens and earlier appends), in order.
  std::vector<int32_t> appended;
  int32_t num_computed = 0; // tokens [0, num_computed) have their KV in the pages
};

struct kv_pin {
  std::string name;
  uint64_t ns = 0;
  token_list tokens;
};

// A running sequence's page-table entries [0, num_pages) are dead: no future
// token sees them. Absolute, so repeating a trim changes nothing.
struct kv_trim {
  seq_id id = 0;
  int32_t num_pages = 0;
};

// One entry of a step plan (scheduled_seq) with what applying it needs.
struct kv_scheduled {
  seq_id id = 0;
  bool admitted = false;   // else a running sequence that grows
  int32_t num_hit_pages = 0; // admitted: leading pages the planner counted as cached
  int32_t num_new_pages = 0;
  uint64_t ns = 0;         // admitted only: prefix namespace...
  token_list tokens;       // ...and every token known at admission
};

struct kv_probe {
  seq_id id = 0;
  uint64_t ns = 0;
  token_list tokens;
};

struct kv_step_request {
  std::vector<kv_insert> inserts;
  std::vector<std::string> unpins; // pin names
  std::vector<kv_pin> pins;
  std::vector<kv_trim> trims;
  std::vector<seq_id> releases;
  std::vector<kv_scheduled> scheduled; // in the plan's service order
  std::vector<kv_probe> probes;
  // Whether the reply lists every sequence's exclusive pages: O(all pages
  // held), so asked only when the next plan may have to preempt.
  bool want_holdings = true;

  bool empty() const {
    return inserts.empty() && unpins.empty() && pins.empty() && trims.empty() && releases.empty() &&
           scheduled.empty() && probes.empty();
  }
};

// -- reply --------------------------------------------------------------------

struct kv_table {
  seq_id id = 0;
  // An admitted sequence's whole page table (hits first, no_page for hits
  // already behind its sliding window); for a running one only the pages
  // appended, since the scheduler has the rest.
  std::vector<page_id> pages;
};

struct kv_probe_result {
  seq_id id = 0;
  cached_prefix cached;
};

// A sequence holding pages and what preempting it would give back.
struct kv_holding {
  seq_id id = 0;
  int32_t num_exclusive_pages = 0;
};

struct kv_pin_result {
  std::string name;
  int32_t num_tokens = 0; // pinned tokens (whole pages); 0 = refused
};

struct kv_counters {
  int64_t queried_tokens = 0; // tokens of admitted sequences looked up
  int64_t hit_tokens = 0;     // of them, shared from the cache
  int64_t evictions = 0;      // cached pages handed out again
  int64_t window_released_pages = 0; // pages running sequences let go behind their sliding window
  int64_t pinned_hits = 0;           // admissions that shared pinned (system prompt) pages...
  int64_t pinned_hit_tokens = 0;     // ...and the tokens of those pages
  int32_t pages_total = 0;
  int32_t pages_used = 0;     // referenced by some sequence or pin
  int32_t pages_pinned = 0;
  int32_t pins = 0;           // pinned system prompts
};

struct kv_step_reply {
  std::vector<kv_table> tables;     // every applied scheduled entry, request order
  // Scheduled entries that could not be applied (their probe went stale, or
  // pages ran out): the cache released whatever they held.
  std::vector<seq_id> rejected;
  std::vector<kv_pin_result> pins;
  std::vector<kv_probe_result> probes;
  std::vector<kv_holding> holdings; // every sequence holding pages, if asked
  int32_t free_pages = 0;           // page_pool::num_free
  int32_t watermark = 0;
  kv_counters counters;
};

} // namespace kvactor
