#pragma once
// Content-addressed full KV pages, so that requests sharing a prefix (a system
// prompt, a conversation so far) reuse its KV instead of recomputing it.
//
// A full page's key chains its parent's key and its own tokens:
//   key(0) = hash(ns, tokens[0, P)),  key(i) = hash(key(i-1), tokens[iP, (i+1)P))
// where P is the page size and ns a namespace seed (model, system-prompt
// family): equal tokens under different namespaces never share KV.
//
// Cooperation with page_pool: the pool owns every page and its refcount; the
// index only remembers, per cached page, the content it holds. A page is
// inserted once its KV is complete and some sequence still references it; the
// index then marks it cached in the pool, so when its last reference goes it
// becomes evictable (kept, counted as free) rather than free. allocate()
// takes free pages first and only then evicts the least recently released
// cached page, bumping its generation; the index treats an entry whose
// generation no longer matches the pool's as gone. A pinned page is simply
// one that some owner (a pin) references, so it is never evictable.
//
// Collision safety: a hash only finds candidates. A hit also requires equal
// tokens, the same parent key, and the same parent page at the same
// generation as the page matched one level up. By induction every returned
// page holds KV computed from exactly these tokens, whatever the hash does.
//
// Costs: lookup and insert are O(P) hashing plus O(1) expected map work per
// page; nothing scans the pool.
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "runtime/page_pool.h"

namespace kvactor {

// hash(parent key, one page of tokens). Replaceable so that tests can force
// collisions.
using page_hash_fn = uint64_t (*)(uint64_t parent_key, std::span<const int32_t> tokens);
uint64_t default_page_hash(uint64_t parent_key, std::span<const int32_t> tokens);

// Where a sequence's chain of full pages stands: after `num_pages` pages, the
// last cached one being `page` (at `generation`) with key `key`. A sequence
// keeps one cursor so that insert() only hashes pages it has not seen; a
// stale cursor costs a rehash from the root, never a wrong entry.
struct prefix_cursor {
  uint64_t ns = 0;
  uint64_t key = 0;           // ns while num_pages == 0
  page_id page = no_page;     // no_page while num_pages == 0
  uint64_t generation = 0;
  int32_t num_pages = 0;
};

struct prefix_hit {
  std::vector<page_id> pages; // cached pages for tokens [0, pages.size() * page_size)
  // Of them, pages nobody references now: sharing them takes them out of
  // the pool's free count.
  int32_t num_unreferenced = 0;
  prefix_cursor cursor;       // continues the chain after `pages`
};

struct prefix_stats {
  int64_t queried_tokens = 0; // prompt tokens passed to lookup()
  int64_t hit_tokens = 0;     // of them, found in cached pages
};

class prefix_index {
 public:
  // Throws kvactor::error unless page_size > 0. The pool must outlive the index.
  prefix_index(page_pool& pool, int32_t page_size, page_hash_fn hash = default_page_hash);

  prefix_index(const prefix_index&) = delete;
  prefix_index& operator=(const prefix_index&) = delete;

  int32_t page_size() const { return page_size_; }

  // The longest run of cached pages that starts `tokens`, capped at
  // (tokens.size() - 1) tokens rounded down to whole pages: the last token
  // is always computed, so that the sequence gets logits. lookup() counts
  // the query in stats(); peek() is the same answer without counting, for
  // planning a step that may not admit the sequence yet.
  prefix_hit lookup(uint64_t ns, std::span<const int32_t> tokens);
  prefix_hit peek(uint64_t ns, std::span<const int32_t> tokens) const;

  // Inserts the full pages of a sequence that are not yet behind its cursor.
  // `computed` are the tokens whose KV is in the pages (a partial last page
  // is skipped); `page_table` is the sequence's page table. A page whose
  // content is already cached elsewhere stays uncached (it becomes free when
  // released) and the chain continues through the cached twin. Advances the
  // cursor and returns how many pages became cached.
  // note: call only with pages the sequence references, after the step that
  // wrote their KV.
  int32_t insert(prefix_cursor& cursor, std::span<const int32_t> computed,
                 std::span<const page_id> page_table);

  // A cursor at the root of a namespace, for a sequence with no hits.
  static prefix_cursor root(uint64_t ns) { return prefix_cursor{ns, ns, no_page, 0, 0}; }

  const prefix_stats& stats() const { return stats_; }

 private:
  struct entry {
    uint64_t key = 0;
    uint64_t generation = 0;        // the page's generation when inserted
    uint64_t parent_key = 0;        // ns for a first page
    page_id parent = no_page;       // cached page one level up
    uint64_t parent_generation = 0;
    bool indexed = false;           // present in by_key_
  };

  // The valid entry for one level of a chain, or no_page.
  page_id find(uint64_t key, const prefix_cursor& at, std::span<const int32_t> tokens) const;
  bool holds(page_id page, uint64_t key, const prefix_cursor& at,
             std::span<const int32_t> tokens) const;
  void unindex(page_id page);
  std::span<const int32_t> stored_tokens(page_id page) const;

  page_pool& pool_;
  int32_t page_size_;
  page_hash_fn hash_;
  std::vector<entry> entries_;                     // [num_pages]
  std::vector<int32_t> tokens_;                    // [num_pages, page_size]
  std::unordered_multimap<uint64_t, page_id> by_key_; // at most one entry per page
  prefix_stats stats_;
};

} // namespace kvactor
