#include "runtime/page_pool.h"

#include <algorithm>
#include <cassert>
#include <string>
#include <utility>

#include "runtime/error.h"

namespace kvactor {

page_pool::page_pool(int32_t num_pages, int32_t watermark)
    : refcount_(num_pages > 0 ? num_pages : 0, 0),
      cached_(refcount_.size(), 0),
      generation_(refcount_.size(), 0),
      prev_(refcount_.size(), no_page),
      next_(refcount_.size(), no_page),
      watermark_(watermark) {
  if (num_pages <= 0)
    throw error("page_pool: num_pages must be positive, got " + std::to_string(num_pages));
  if (watermark < 0 || watermark > num_pages)
    throw error("page_pool: watermark must be in [0, " + std::to_string(num_pages) + "], got " +
                std::to_string(watermark));
  for (page_id p = 0; p < num_pages; ++p) push_back(free_, p);
  num_unused_ = num_pages;
}

// -- owners and their page tables ---------------------------------------------

bool page_pool::allocate(seq_id owner, int32_t n, page_claim claim) {
  if (n < 0) return false;
  const int32_t keep = claim == page_claim::admission ? watermark_ : 0;
  if (num_free() - n < keep) return false;
  auto& table = tables_[owner];
  table.reserve(table.size() + size_t(n));
  for (int32_t i = 0; i < n; ++i) table.push_back(take_page());
  return true;
}

bool page_pool::share(seq_id owner, std::span<const page_id> pages) {
  for (page_id p : pages)
    if (!valid(p) || (refcount_[p] == 0 && !cached_[p])) return false;
  auto& table = tables_[owner];
  for (page_id p : pages) {
    if (refcount_[p] == 0) {
      unlink(lru_, p);
      --num_evictable_;
    }
    ++refcount_[p];
    table.push_back(p);
  }
  return true;
}

bool page_pool::release(seq_id owner) {
  auto it = tables_.find(owner);
  if (it == tables_.end()) return false;
  const auto& table = it->second;
  for (auto p = table.rbegin(); p != table.rend(); ++p)
    if (*p != no_page) drop_reference(*p);
  tables_.erase(it);
  return true;
}

int32_t page_pool::release_leading(seq_id owner, int32_t n) {
  auto it = tables_.find(owner);
  if (it == tables_.end() || n <= 0) return 0;
  auto& table = it->second;
  int32_t dropped = 0;
  for (size_t i = std::min(size_t(n), table.size()); i-- > 0;) {
    if (table[i] == no_page) continue;
    drop_reference(std::exchange(table[i], no_page));
    ++dropped;
  }
  return dropped;
}

std::span<const page_id> page_pool::page_table(seq_id owner) const {
  auto it = tables_.find(owner);
  if (it == tables_.end()) return {};
  return it->second;
}

int32_t page_pool::num_exclusive_pages(seq_id owner) const {
  int32_t n = 0;
  for (page_id p : page_table(owner))
    if (p != no_page && refcount_[p] == 1) ++n;
  return n;
}

int32_t page_pool::num_held_pages(seq_id owner) const {
  int32_t n = 0;
  for (page_id p : page_table(owner)) n += p != no_page;
  return n;
}

// -- cache cooperation --------------------------------------------------------

bool page_pool::set_cached(page_id page) {
  if (!valid(page) || refcount_[page] == 0) return false;
  if (!cached_[page]) {
    cached_[page] = 1;
    ++num_cached_;
  }
  return true;
}

bool page_pool::is_cached(page_id page) const { return valid(page) && cached_[page]; }

uint64_t page_pool::generation(page_id page) const { return valid(page) ? generation_[page] : 0; }

int32_t page_pool::refcount(page_id page) const { return valid(page) ? refcount_[page] : 0; }

bool page_pool::consistent() const {
  std::vector<int32_t> refs(refcount_.size(), 0);
  for (const auto& [owner, table] : tables_)
    for (page_id p : table) {
      if (p == no_page) continue; // released by a sliding window
      if (!valid(p)) return false;
      ++refs[p];
    }
  if (refs != refcount_) return false;

  // Walk both lists forwards, checking back links and membership.
  std::vector<uint8_t> listed(refcount_.size(), 0);
  auto walk = [&](const list& l, bool want_cached, int32_t expected) {
    int32_t n = 0;
    page_id before = no_page;
    for (page_id p = l.head; p != no_page; before = p, p = next_[p]) {
      if (!valid(p) || listed[p] || prev_[p] != before) return false;
      if (refcount_[p] != 0 || bool(cached_[p]) != want_cached) return false;
      listed[p] = 1;
      ++n;
    }
    return before == l.tail && n == expected;
  };
  if (!walk(free_, false, num_unused_) || !walk(lru_, true, num_evictable_)) return false;

  int32_t cached = 0;
  for (page_id p = 0; p < num_pages(); ++p) {
    cached += cached_[p];
    if (refcount_[p] == 0 && !listed[p]) return false; // unreferenced pages are listed
  }
  return cached == num_cached_;
}

// -- internals ----------------------------------------------------------------

void page_pool::push_back(list& l, page_id page) {
  prev_[page] = l.tail;
  next_[page] = no_page;
  if (l.tail == no_page)
    l.head = page;
  else
    next_[l.tail] = page;
  l.tail = page;
}

void page_pool::unlink(list& l, page_id page) {
  if (prev_[page] == no_page)
    l.head = next_[page];
  else
    next_[prev_[page]] = next_[page];
  if (next_[page] == no_page)
    l.tail = prev_[page];
  else
    prev_[next_[page]] = prev_[page];
  prev_[page] = next_[page] = no_page;
}

page_id page_pool::pop_front(list& l) {
  page_id page = l.head;
  assert(page != no_page);
  unlink(l, page);
  return page;
}

page_id page_pool::take_page() {
  assert(num_free() > 0);
  page_id page;
  if (num_unused_ > 0) {
    page = pop_front(free_);
    --num_unused_;
  } else {
    // Evict: the prefix index sees the generation change and drops its entry.
    page = pop_front(lru_);
    --num_evictable_;
    cached_[page] = 0;
    --num_cached_;
  }
  assert(refcount_[page] == 0);
  refcount_[page] = 1;
  ++generation_[page];
  return page;
}

void page_pool::drop_reference(page_id page) {
  assert(valid(page) && refcount_[page] > 0);
  if (--refcount_[page] > 0) return;
  if (cached_[page]) {
    push_back(lru_, page);
    ++num_evictable_;
  } else {
    push_back(free_, page);
    ++num_unused_;
  }
}

} // namespace kvactor
