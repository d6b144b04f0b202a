#pragma once
// The KV cache's pages as metadata: which pages are free, who references
// which, and each owner's page table. No page memory lives here; a page id
// indexes the same page in every layer of the KV buffer (see kv_layout.h).
//
// Every page is in exactly one state:
//   free        refcount 0, not cached: in the free list (FIFO);
//   evictable   refcount 0, cached: its KV is still valid and the prefix
//               index may hand it out again; in the LRU list;
//   referenced  refcount >= 1: held by that many page-table entries.
// A page becomes cached when the prefix index registers it (set_cached); it
// stops being cached only when allocate() evicts it. num_free() counts free
// and evictable pages alike, because allocate() takes free pages first and
// then evicts the least recently released cached page. Eviction bumps the
// page's generation, which is how the prefix index notices that its entry
// for that page is stale; the pool knows nothing about hashes or tokens.
//
// Ownership: every reference belongs to exactly one entry of one owner's page
// table, and only release() drops it. An owner is usually a sequence; a pin
// (pages that must never be evicted, such as a shared system prompt) is an
// owner that never runs. A double free is therefore a release() of an owner
// that no longer exists, which is refused.
//
// The pool never decides what to do when pages run out: allocation failure
// is a return value, and the step planner alone chooses what to preempt.
// Single-threaded: the scheduler that owns the pool calls it.
//
// A page table is indexed by position / page_size. A sliding window releases
// leading pages by replacing their entries with no_page (release_leading), so
// positions never shift; release() and the counts skip no_page entries.
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

namespace kvactor {

using page_id = int32_t;
using seq_id = uint64_t;

inline constexpr page_id no_page = -1;

// Whether an allocation may dig into the watermark.
enum class page_claim : uint8_t {
  running,   // a sequence already running grows: every free page is usable
  admission, // a waiting sequence starts: leave watermark() pages free
};

class page_pool {
 public:
  // Throws kvactor::error unless num_pages > 0 and 0 <= watermark <= num_pages.
  page_pool(int32_t num_pages, int32_t watermark);

  page_pool(const page_pool&) = delete;
  page_pool& operator=(const page_pool&) = delete;

  // -- owners and their page tables ------------------------------------------

  // Appends n fresh pages to the owner's page table (created if absent).
  // All or nothing: returns false and changes nothing when fewer than n pages
  // (n + watermark() for an admission) are free or evictable.
  bool allocate(seq_id owner, int32_t n, page_claim claim = page_claim::running);

  // Appends existing pages (prefix hits, or a pin) to the owner's page table,
  // taking one reference each; an evictable page leaves the LRU list.
  // Refuses (false, nothing changed) if any page is out of range or free.
  // note: call only with pages whose content the caller has just validated,
  // e.g. the result of prefix_index::lookup with no allocation in between.
  bool share(seq_id owner, std::span<const page_id> pages);

  // Drops every reference of the owner's page table, last page first, so the
  // deepest pages of a prefix are evicted before its head. Returns false if
  // the owner has no page table (never allocated, or already released).
  bool release(seq_id owner);

  // Releases the owner's entries [0, n) (those not released already), last
  // first, and sets them to no_page. Returns the references dropped; 0 for
  // an unknown owner. n beyond the table is capped.
  int32_t release_leading(seq_id owner, int32_t n);

  // The owner's pages in position order, no_page where released; empty for
  // an unknown owner.
  std::span<const page_id> page_table(seq_id owner) const;

  // Pages of the owner's table that nobody else references: what release()
  // would make free or evictable. O(pages of the owner).
  int32_t num_exclusive_pages(seq_id owner) const;
  // Entries of the owner's table that hold a page (not no_page).
  int32_t num_held_pages(seq_id owner) const;

  // -- cache cooperation (used by prefix_index) -------------------------------

  // Marks a referenced page as holding reusable KV: when its last reference
  // goes it becomes evictable instead of free. Returns false (and changes
  // nothing) unless the page is referenced.
  bool set_cached(page_id page);
  bool is_cached(page_id page) const;
  // Incremented every time the page is handed out by allocate().
  uint64_t generation(page_id page) const;

  // -- counts -----------------------------------------------------------------

  int32_t num_pages() const { return int32_t(refcount_.size()); }
  int32_t watermark() const { return watermark_; }
  int32_t num_free() const { return num_unused_ + num_evictable_; }
  int32_t num_evictable() const { return num_evictable_; }
  int32_t num_cached() const { return num_cached_; }
  int32_t refcount(page_id page) const;

  // Walks every page and owner and checks the invariants above. O(all
  // pages + all table entries); for tests and debugging.
  bool consistent() const;

 private:
  // Two intrusive doubly-linked lists over page ids share one pair of link
  // arrays, since a page is in at most one of them.
  struct list {
    page_id head = no_page;
    page_id tail = no_page;
  };

  void push_back(list& l, page_id page);
  void unlink(list& l, page_id page);
  page_id pop_front(list& l);

  page_id take_page(); // precondition: num_free() > 0
  void drop_reference(page_id page);
  bool valid(page_id page) const { return page >= 0 && page < num_pages(); }

  std::vector<int32_t> refcount_;    // [num_pages]
  std::vector<uint8_t> cached_;      // [num_pages]
  std::vector<uint64_t> generation_; // [num_pages]
  std::vector<page_id> prev_;        // [num_pages] links of free_ / lru_
  std::vector<page_id> next_;        // [num_pages]
  list free_; // free pages, handed out oldest-released first
  list lru_;  // evictable pages, least recently released first
  int32_t num_unused_ = 0;
  int32_t num_evictable_ = 0;
  int32_t num_cached_ = 0;
  int32_t watermark_ = 0;
  std::unordered_map<seq_id, std::vector<page_id>> tables_;
};

} // namespace kvactor
