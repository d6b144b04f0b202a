#include "runtime/prefix_index.h"

#include <doctest/doctest.h>

#include <numeric>
#include <vector>

#include "runtime/error.h"

using namespace kvactor;

namespace {

constexpr int32_t P = 4; // page size
constexpr uint64_t ns = 7;

using tokens = std::vector<int32_t>;
using pages = std::vector<page_id>;

tokens iota_tokens(int32_t n, int32_t first) {
  tokens t(size_t(n), 0);
  std::iota(t.begin(), t.end(), first);
  return t;
}

tokens concat(std::initializer_list<tokens> parts) {
  tokens t;
  for (const auto& p : parts) t.insert(t.end(), p.begin(), p.end());
  return t;
}

tokens repeat(int32_t token, int32_t n) { return tokens(size_t(n), token); }

pages table_of(const page_pool& pool, seq_id owner) {
  auto t = pool.page_table(owner);
  return {t.begin(), t.end()};
}

// Allocates pages for `toks`, as if their KV were computed, and inserts them.
prefix_cursor compute(page_pool& pool, prefix_index& index, seq_id owner, const tokens& toks,
                      uint64_t space = ns) {
  REQUIRE(pool.allocate(owner, int32_t(toks.size() + P - 1) / P));
  prefix_cursor cursor = prefix_index::root(space);
  index.insert(cursor, toks, pool.page_table(owner));
  return cursor;
}

// A hash that ignores the tokens: every page at the same depth collides.
uint64_t colliding_hash(uint64_t parent_key, std::span<const int32_t>) {
  return parent_key * 31 + 1;
}

} // namespace

TEST_CASE("prefix_index: insert a chain and look up the longest cached prefix") {
  page_pool pool(16, 0);
  prefix_index index(pool, P);
  const tokens a = iota_tokens(10, 100); // 2 full pages and a partial one
  CHECK(pool.allocate(1, 3));
  prefix_cursor cursor = prefix_index::root(ns);
  CHECK(index.insert(cursor, a, pool.page_table(1)) == 2);
  CHECK(cursor.num_pages == 2);
  CHECK(cursor.page == 1);
  CHECK(pool.is_cached(0));
  CHECK(pool.is_cached(1));
  CHECK_FALSE(pool.is_cached(2)); // partial last page is not cached

  CHECK(index.lookup(ns, a).pages == pages{0, 1});
  CHECK(index.lookup(ns, a).num_unreferenced == 0); // sequence 1 holds them
  // Same first two pages, different tail.
  CHECK(index.lookup(ns, concat({iota_tokens(8, 100), {1, 2, 3}})).pages == pages{0, 1});
  // Diverges in the second page.
  CHECK(index.lookup(ns, concat({iota_tokens(4, 100), iota_tokens(8, 0)})).pages == pages{0});
  // Diverges in the first token.
  CHECK(index.lookup(ns, iota_tokens(10, 101)).pages.empty());
  // Never the whole prompt: 8 tokens may only hit 1 page, 9 tokens 2.
  CHECK(index.lookup(ns, iota_tokens(8, 100)).pages == pages{0});
  CHECK(index.lookup(ns, iota_tokens(9, 100)).pages == pages{0, 1});
  CHECK(index.lookup(ns, iota_tokens(1, 100)).pages.empty());
  CHECK(index.lookup(ns, tokens{}).pages.empty());

  // Two more tokens fill page 2: only it is new.
  CHECK(index.insert(cursor, iota_tokens(12, 100), pool.page_table(1)) == 1);
  const prefix_hit hit = index.lookup(ns, iota_tokens(13, 100));
  CHECK(hit.pages == pages{0, 1, 2});
  CHECK(hit.cursor.num_pages == 3);
  CHECK(hit.cursor.page == 2);
  CHECK(pool.consistent());
}

TEST_CASE("prefix_index: hit and queried token counters; peek does not count") {
  page_pool pool(8, 0);
  prefix_index index(pool, P);
  compute(pool, index, 1, iota_tokens(8, 0));
  CHECK(index.peek(ns, iota_tokens(10, 0)).pages == pages{0, 1});
  CHECK(index.stats().queried_tokens == 0);
  CHECK(index.stats().hit_tokens == 0);

  index.lookup(ns, iota_tokens(10, 0)); // hits 8
  index.lookup(ns, iota_tokens(6, 0));  // hits 4
  index.lookup(ns, iota_tokens(5, 50)); // hits 0
  CHECK(index.stats().queried_tokens == 21);
  CHECK(index.stats().hit_tokens == 12);
}

TEST_CASE("prefix_index: unreferenced cached pages are evicted least recently released") {
  page_pool pool(6, 0);
  prefix_index index(pool, P);
  const tokens a = iota_tokens(9, 0);
  const tokens b = iota_tokens(9, 50);
  compute(pool, index, 1, tokens(a.begin(), a.begin() + 8)); // pages 0 1
  compute(pool, index, 2, tokens(b.begin(), b.begin() + 8)); // pages 2 3
  CHECK(pool.release(1)); // LRU: 1 0
  CHECK(pool.release(2)); // LRU: 1 0 3 2
  CHECK(pool.num_free() == 6);
  CHECK(index.lookup(ns, a).pages == pages{0, 1});
  CHECK(index.lookup(ns, a).num_unreferenced == 2);

  CHECK(pool.allocate(3, 3)); // free 4 5, then evicts 1
  CHECK(table_of(pool, 3) == pages{4, 5, 1});
  CHECK(index.lookup(ns, a).pages == pages{0});
  CHECK(index.lookup(ns, a).num_unreferenced == 1);

  CHECK(pool.allocate(4, 1)); // evicts 0
  CHECK(table_of(pool, 4) == pages{0});
  CHECK(index.lookup(ns, a).pages.empty());
  CHECK(index.lookup(ns, b).pages == pages{2, 3});

  CHECK(pool.allocate(4, 1)); // evicts 3, the deeper page of b first
  CHECK(table_of(pool, 4) == pages{0, 3});
  CHECK(index.lookup(ns, b).pages == pages{2});
  CHECK(pool.num_cached() == 1);
  CHECK(pool.consistent());
}

TEST_CASE("prefix_index: pinned pages are never evicted") {
  page_pool pool(4, 0);
  prefix_index index(pool, P);
  const seq_id pin = 1000;
  const tokens system_prompt = iota_tokens(9, 0);
  compute(pool, index, 1, tokens(system_prompt.begin(), system_prompt.begin() + 8));
  CHECK(pool.share(pin, index.lookup(ns, system_prompt).pages));
  CHECK(pool.release(1));

  CHECK(pool.allocate(2, 2));
  CHECK(table_of(pool, 2) == pages{2, 3});
  CHECK_FALSE(pool.allocate(2, 1)); // only pinned pages are left
  CHECK(index.lookup(ns, system_prompt).pages == pages{0, 1});

  CHECK(pool.release(pin));
  CHECK(pool.allocate(2, 1)); // unpinned: the deeper page goes first
  CHECK(table_of(pool, 2) == pages{2, 3, 1});
  CHECK(index.lookup(ns, system_prompt).pages == pages{0});
  CHECK(pool.consistent());
}

TEST_CASE("prefix_index: namespaces isolate equal tokens") {
  page_pool pool(8, 0);
  prefix_index index(pool, P);
  const tokens t = iota_tokens(9, 0);
  compute(pool, index, 1, tokens(t.begin(), t.begin() + 8), 1); // pages 0 1
  CHECK(index.lookup(1, t).pages == pages{0, 1});
  CHECK(index.lookup(2, t).pages.empty());

  // The same tokens computed under namespace 2 are cached on their own.
  prefix_cursor c2 = compute(pool, index, 2, tokens(t.begin(), t.begin() + 8), 2); // pages 2 3
  CHECK(c2.num_pages == 2);
  CHECK(index.lookup(2, t).pages == pages{2, 3});
  CHECK(index.lookup(1, t).pages == pages{0, 1});
  CHECK(pool.num_cached() == 4);
}

TEST_CASE("prefix_index: hash collisions never return pages of other content") {
  page_pool pool(8, 0);
  prefix_index index(pool, P, colliding_hash);
  const tokens a = concat({repeat(1, 4), repeat(2, 4), {9}});
  const tokens b = concat({repeat(7, 4), repeat(2, 4), {9}});
  compute(pool, index, 1, tokens(a.begin(), a.begin() + 8)); // pages 0 1

  // b's pages have a's keys, but another first page.
  CHECK(index.lookup(ns, b).pages.empty());
  // Its second page even has a's tokens; the parent check keeps a's page 1
  // (computed after 1 1 1 1) away from b (computed after 7 7 7 7).
  CHECK(pool.allocate(2, 2)); // pages 2 3
  prefix_cursor cb = prefix_index::root(ns);
  CHECK(index.insert(cb, tokens(b.begin(), b.begin() + 8), pool.page_table(2)) == 2);
  CHECK(index.lookup(ns, b).pages == pages{2, 3});
  CHECK(index.lookup(ns, a).pages == pages{0, 1});

  // Same first page as a, colliding second page with other tokens.
  const tokens c = concat({repeat(1, 4), repeat(3, 4), {9}});
  CHECK(index.lookup(ns, c).pages == pages{0});
  CHECK(pool.consistent());
}

TEST_CASE("prefix_index: a page computed twice stays uncached; the chain goes through its twin") {
  page_pool pool(8, 0);
  prefix_index index(pool, P);
  const tokens t = iota_tokens(13, 0);
  // Two sequences prefill the same prompt in the same step: neither hit.
  CHECK(pool.allocate(1, 3)); // 0 1 2
  CHECK(pool.allocate(2, 3)); // 3 4 5
  prefix_cursor c1 = prefix_index::root(ns);
  prefix_cursor c2 = prefix_index::root(ns);
  CHECK(index.insert(c1, tokens(t.begin(), t.begin() + 8), pool.page_table(1)) == 2);
  CHECK(index.insert(c2, tokens(t.begin(), t.begin() + 8), pool.page_table(2)) == 0);
  CHECK_FALSE(pool.is_cached(3));
  CHECK_FALSE(pool.is_cached(4));
  CHECK(c2.page == 1); // rests on the twin

  // Sequence 2 fills its third page first: it hangs below page 1.
  CHECK(index.insert(c2, tokens(t.begin(), t.begin() + 12), pool.page_table(2)) == 1);
  CHECK(index.lookup(ns, t).pages == pages{0, 1, 5});

  // Its own copies become free, not evictable, when it finishes.
  CHECK(pool.release(2));
  CHECK(pool.refcount(3) == 0);
  CHECK(pool.num_evictable() == 1); // page 5
  CHECK(pool.consistent());
}

TEST_CASE("prefix_index: a cursor resting on an evicted twin restarts from the root") {
  page_pool pool(6, 0);
  prefix_index index(pool, P);
  const tokens t = iota_tokens(13, 0);
  CHECK(pool.allocate(1, 2)); // 0 1
  prefix_cursor c1 = prefix_index::root(ns);
  CHECK(index.insert(c1, tokens(t.begin(), t.begin() + 8), pool.page_table(1)) == 2);
  CHECK(pool.allocate(2, 3)); // 2 3 4
  prefix_cursor c2 = prefix_index::root(ns);
  CHECK(index.insert(c2, tokens(t.begin(), t.begin() + 8), pool.page_table(2)) == 0);

  CHECK(pool.release(1)); // LRU: 1 0
  CHECK(pool.allocate(3, 3)); // 5, then evicts 1 and 0
  CHECK(table_of(pool, 3) == pages{5, 1, 0});
  CHECK(index.lookup(ns, t).pages.empty());

  // Sequence 2 still holds its own copies: they are cached now, with page 4.
  CHECK(index.insert(c2, tokens(t.begin(), t.begin() + 12), pool.page_table(2)) == 3);
  CHECK(index.lookup(ns, t).pages == pages{2, 3, 4});
  CHECK(pool.consistent());
}

TEST_CASE("prefix_index: a child is only reachable through the parent it was computed after") {
  page_pool pool(6, 0);
  prefix_index index(pool, P);
  const seq_id pin = 1000;
  const tokens t = iota_tokens(9, 0);
  compute(pool, index, 1, tokens(t.begin(), t.begin() + 8)); // pages 0 1
  CHECK(pool.share(pin, pages{1})); // keeps the child, not its parent
  CHECK(pool.release(1));
  CHECK(pool.allocate(2, 5)); // 2 3 4 5, then evicts 0
  CHECK(table_of(pool, 2) == pages{2, 3, 4, 5, 0});
  CHECK(index.lookup(ns, t).pages.empty());
  CHECK(pool.release(2));

  // The first page is recomputed into page 0 again, at a newer generation.
  // Page 1 hangs below the old page 0 and is not found through the new one.
  compute(pool, index, 3, tokens(t.begin(), t.begin() + 4));
  CHECK(table_of(pool, 3) == pages{0});
  CHECK(index.lookup(ns, t).pages == pages{0});
  CHECK(pool.consistent());
}

TEST_CASE("prefix_index: bad page size is refused") {
  page_pool pool(4, 0);
  CHECK_THROWS_AS(prefix_index(pool, 0), error);
}
