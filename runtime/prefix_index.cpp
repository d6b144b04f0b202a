#include "runtime/prefix_index.h"

#include <algorithm>
#include <cassert>
#include <string>

#include "runtime/error.h"

namespace kvactor {

namespace {

// splitmix64's finaliser: every input bit affects every output bit.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

} // namespace

uint64_t default_page_hash(uint64_t parent_key, std::span<const int32_t> tokens) {
  uint64_t h = mix(parent_key);
  for (int32_t t : tokens) h = mix(h ^ uint32_t(t));
  return h;
}

prefix_index::prefix_index(page_pool& pool, int32_t page_size, page_hash_fn hash)
    : pool_(pool), page_size_(page_size), hash_(hash) {
  if (page_size <= 0)
    throw error("prefix_index: page_size must be positive, got " + std::to_string(page_size));
  entries_.resize(size_t(pool.num_pages()));
  tokens_.resize(size_t(pool.num_pages()) * size_t(page_size));
}

// -- public API ---------------------------------------------------------------

prefix_hit prefix_index::lookup(uint64_t ns, std::span<const int32_t> tokens) {
  prefix_hit hit = peek(ns, tokens);
  stats_.queried_tokens += int64_t(tokens.size());
  stats_.hit_tokens += int64_t(hit.pages.size()) * page_size_;
  return hit;
}

prefix_hit prefix_index::peek(uint64_t ns, std::span<const int32_t> tokens) const {
  prefix_hit hit;
  hit.cursor = root(ns);
  const size_t max_pages = tokens.empty() ? 0 : (tokens.size() - 1) / size_t(page_size_);
  for (size_t i = 0; i < max_pages; ++i) {
    auto page_tokens = tokens.subspan(i * size_t(page_size_), size_t(page_size_));
    const uint64_t key = hash_(hit.cursor.key, page_tokens);
    const page_id page = find(key, hit.cursor, page_tokens);
    if (page == no_page) break;
    hit.pages.push_back(page);
    if (pool_.refcount(page) == 0) ++hit.num_unreferenced;
    hit.cursor = prefix_cursor{ns, key, page, pool_.generation(page), int32_t(i + 1)};
  }
  return hit;
}

int32_t prefix_index::insert(prefix_cursor& cursor, std::span<const int32_t> computed,
                             std::span<const page_id> page_table) {
  const int32_t full =
      int32_t(std::min(computed.size() / size_t(page_size_), page_table.size()));
  // The twin page a cursor rests on may have been evicted since: start over.
  if (cursor.num_pages > 0 && pool_.generation(cursor.page) != cursor.generation)
    cursor = root(cursor.ns);

  int32_t inserted = 0;
  for (int32_t i = cursor.num_pages; i < full; ++i) {
    auto page_tokens = computed.subspan(size_t(i) * size_t(page_size_), size_t(page_size_));
    const uint64_t key = hash_(cursor.key, page_tokens);
    page_id cached = find(key, cursor, page_tokens);
    if (cached == no_page) {
      const page_id page = page_table[size_t(i)];
      // A page held by nobody (or no page) cannot be cached; a page validly
      // cached under other content means the caller passed the wrong
      // tokens. Either way the chain cannot continue.
      if (pool_.refcount(page) == 0) break;
      entry& e = entries_[size_t(page)];
      if (e.indexed) {
        if (e.generation == pool_.generation(page)) break;
        unindex(page);
      }
      // Drop stale entries sharing this key so that buckets stay short.
      for (auto [it, last] = by_key_.equal_range(key); it != last;) {
        entry& other = entries_[size_t(it->second)];
        if (other.generation == pool_.generation(it->second)) {
          ++it;
        } else {
          other.indexed = false;
          it = by_key_.erase(it);
        }
      }

      e = entry{key, pool_.generation(page), cursor.key, cursor.page, cursor.generation, true};
      std::copy(page_tokens.begin(), page_tokens.end(),
                tokens_.begin() + ptrdiff_t(page) * page_size_);
      by_key_.emplace(key, page);
      const bool marked = pool_.set_cached(page);
      assert(marked);
      (void)marked;
      ++inserted;
      cached = page;
    }
    cursor = prefix_cursor{cursor.ns, key, cached, pool_.generation(cached), i + 1};
  }
  return inserted;
}

// -- internals ----------------------------------------------------------------

page_id prefix_index::find(uint64_t key, const prefix_cursor& at,
                           std::span<const int32_t> tokens) const {
  auto [first, last] = by_key_.equal_range(key);
  for (auto it = first; it != last; ++it)
    if (holds(it->second, key, at, tokens)) return it->second;
  return no_page;
}

bool prefix_index::holds(page_id page, uint64_t key, const prefix_cursor& at,
                         std::span<const int32_t> tokens) const {
  const entry& e = entries_[size_t(page)];
  if (!e.indexed || e.key != key || e.generation != pool_.generation(page)) return false;
  assert(pool_.is_cached(page));
  if (e.parent_key != at.key || e.parent != at.page || e.parent_generation != at.generation)
    return false;
  auto stored = stored_tokens(page);
  return std::equal(stored.begin(), stored.end(), tokens.begin(), tokens.end());
}

void prefix_index::unindex(page_id page) {
  entry& e = entries_[size_t(page)];
  auto [first, last] = by_key_.equal_range(e.key);
  for (auto it = first; it != last; ++it)
    if (it->second == page) {
      by_key_.erase(it);
      break;
    }
  e.indexed = false;
}

std::span<const int32_t> prefix_index::stored_tokens(page_id page) const {
  return {tokens_.data() + size_t(page) * size_t(page_size_), size_t(page_size_)};
}

} // namespace kvactor
