#pragma once
// The KV cache's bookkeeping behind one door: the page_pool and the
// prefix_index share page state (evicting a cached page and forgetting its
// index entry are one act), so one object owns both and applies a whole
// step's worth of changes at once (see kv_step.h for the order).
//
// Per sequence it keeps the tokens it was admitted with plus those appended
// since, and a prefix_cursor, so that an insert hashes only pages it has not
// seen. A pin is a page_pool owner that never runs: it holds the cached pages
// of a system prompt so they are never evicted.
//
// With a sliding window (every layer sliding), pages behind a sequence's
// window are released while it runs (kv_trim), and an admission keeps only
// the hits its window still sees. A released page that was cached stays in
// the prefix index, evictable: its KV depends only on the tokens before it,
// so it is still a valid hit for another sequence. A sequence whose chain
// is broken (its cursor's page evicted) cannot re-insert behind its window
// and stops inserting; see prefix_index::insert.
//
// Single-threaded; the KV cache actor calls it.
#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/kv_step.h"
#include "runtime/page_pool.h"
#include "runtime/prefix_index.h"

namespace kvactor {

struct kv_cache_options {
  int32_t num_pages = 0;
  int32_t page_size = 16;
  int32_t watermark = 0;
  bool prefix_cache = true;         // off: no lookups, inserts or hits
  double max_pinned_fraction = 0.5; // of all pages
  int32_t sliding_window = 0;       // reclaimable_window(); 0 = pages stay until release
};

class kv_cache_manager {
 public:
  // Throws kvactor::error for invalid sizes (see page_pool, prefix_index).
  explicit kv_cache_manager(const kv_cache_options& options);

  kv_cache_manager(const kv_cache_manager&) = delete;
  kv_cache_manager& operator=(const kv_cache_manager&) = delete;

  // Applies one step's request. Throws kvactor::error when the request breaks
  // the protocol: an admission of a sequence that holds pages, growth or an
  // insert of one that holds none. Nothing is applied after the throw.
  kv_step_reply apply(const kv_step_request& request);

  // -- pins ---------------------------------------------------------------------

  // Pins every whole page of `tokens`, all of which must be cached. Returns
  // the pinned tokens, or 0 (nothing changed) when the prefix cache is off,
  // a page is missing, the name is taken, or the pin would exceed
  // max_pinned_fraction of the pool.
  int32_t pin(const std::string& name, uint64_t ns, std::span<const int32_t> tokens);
  // Drops a pin; its pages become evictable. False for an unknown name.
  bool unpin(const std::string& name);

  // -- inspection (tests, metrics) ----------------------------------------------

  const page_pool& pool() const { return pool_; }
  kv_counters counters() const;

 private:
  struct seq_state {
    std::vector<int32_t> tokens; // known tokens, prefix cache only
    prefix_cursor cursor;
  };

  void check(const kv_step_request& request) const;
  void insert(const kv_insert& insert);
  void release(seq_id id);
  bool share_hits(const kv_scheduled& entry);
  bool allocate(seq_id id, int32_t n, page_claim claim);
  cached_prefix probe(const kv_probe& probe) const;

  kv_cache_options options_;
  page_pool pool_;
  prefix_index index_;
  std::unordered_map<seq_id, seq_state> seqs_;
  std::unordered_map<std::string, seq_id> pins_; // name -> pin owner
  std::vector<int32_t> pins_of_page_;             // [num_pages] pins holding each page
  seq_id next_pin_owner_;
  int32_t pinned_pages_ = 0;
  int64_t queried_tokens_ = 0;
  int64_t hit_tokens_ = 0;
  int64_t evictions_ = 0;
  int64_t window_released_ = 0;
  int64_t pinned_hits_ = 0;
  int64_t pinned_hit_tokens_ = 0;
};

} // namespace kvactor
