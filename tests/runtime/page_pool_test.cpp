#include "runtime/page_pool.h"

#include <doctest/doctest.h>

#include <vector>

#include "runtime/error.h"

using namespace kvactor;

namespace {

std::vector<page_id> table_of(const page_pool& pool, seq_id owner) {
  auto t = pool.page_table(owner);
  return {t.begin(), t.end()};
}

} // namespace

TEST_CASE("page_pool: a fresh pool hands out pages in id order") {
  page_pool pool(8, 0);
  CHECK(pool.num_pages() == 8);
  CHECK(pool.num_free() == 8);
  CHECK(pool.allocate(1, 3));
  CHECK(pool.allocate(2, 2));
  CHECK(table_of(pool, 1) == std::vector<page_id>{0, 1, 2});
  CHECK(table_of(pool, 2) == std::vector<page_id>{3, 4});
  CHECK(pool.num_free() == 3);
  CHECK(pool.refcount(0) == 1);
  CHECK(pool.refcount(5) == 0);
  CHECK(pool.generation(0) == 1);
  CHECK(pool.generation(5) == 0);
  CHECK(pool.consistent());
}

TEST_CASE("page_pool: allocation is all or nothing and fails as a value") {
  page_pool pool(4, 0);
  CHECK(pool.allocate(1, 3));
  CHECK_FALSE(pool.allocate(2, 2));
  CHECK(table_of(pool, 2).empty());
  CHECK(pool.num_free() == 1);
  CHECK(pool.allocate(2, 1));
  CHECK(table_of(pool, 2) == std::vector<page_id>{3});
  CHECK_FALSE(pool.allocate(1, 1));
  CHECK_FALSE(pool.allocate(3, -1));
  CHECK(table_of(pool, 1) == std::vector<page_id>{0, 1, 2});
  CHECK(pool.consistent());
}

TEST_CASE("page_pool: released pages go to the back of the free list, last page first") {
  page_pool pool(4, 0);
  CHECK(pool.allocate(1, 2)); // 0 1
  CHECK(pool.allocate(2, 1)); // 2
  CHECK(pool.release(1));     // free list: 3, then 1, 0
  CHECK(pool.num_free() == 3);
  CHECK(pool.allocate(3, 3));
  CHECK(table_of(pool, 3) == std::vector<page_id>{3, 1, 0});
  CHECK(pool.generation(1) == 2);
  CHECK(pool.consistent());
}

TEST_CASE("page_pool: refcount edges - share, free on zero, double free refused") {
  page_pool pool(4, 0);
  CHECK(pool.allocate(1, 2)); // 0 1
  CHECK(pool.num_exclusive_pages(1) == 2);

  CHECK(pool.share(2, std::vector<page_id>{0, 1}));
  CHECK(table_of(pool, 2) == std::vector<page_id>{0, 1});
  CHECK(pool.refcount(0) == 2);
  CHECK(pool.refcount(1) == 2);
  CHECK(pool.num_exclusive_pages(1) == 0);
  CHECK(pool.num_free() == 2);

  CHECK(pool.release(1));
  CHECK(pool.refcount(0) == 1);
  CHECK(pool.num_free() == 2); // still held by owner 2
  CHECK(pool.num_exclusive_pages(2) == 2);

  // The second release of the same owner is refused and changes nothing.
  CHECK_FALSE(pool.release(1));
  CHECK(pool.refcount(0) == 1);
  CHECK(pool.refcount(1) == 1);

  CHECK(pool.release(2)); // last references: both pages are free again
  CHECK(pool.refcount(0) == 0);
  CHECK(pool.num_free() == 4);
  CHECK_FALSE(pool.release(2));
  CHECK_FALSE(pool.release(99));

  // A free (uncached) page holds nothing worth sharing; bad ids are refused.
  CHECK_FALSE(pool.share(3, std::vector<page_id>{0}));
  CHECK_FALSE(pool.share(3, std::vector<page_id>{4}));
  CHECK_FALSE(pool.share(3, std::vector<page_id>{no_page}));
  CHECK(table_of(pool, 3).empty());
  CHECK(pool.num_free() == 4);
  CHECK(pool.consistent());
}

TEST_CASE("page_pool: the watermark is kept free from admissions only") {
  page_pool pool(10, 2);
  CHECK(pool.watermark() == 2);
  CHECK(pool.allocate(1, 8, page_claim::admission)); // leaves exactly 2
  CHECK_FALSE(pool.allocate(2, 1, page_claim::admission));
  CHECK(table_of(pool, 2).empty());
  CHECK(pool.allocate(1, 2, page_claim::running)); // a running sequence may use them
  CHECK(pool.num_free() == 0);
  CHECK_FALSE(pool.allocate(1, 1));
  CHECK(pool.consistent());
}

TEST_CASE("page_pool: bad sizes are refused at construction") {
  CHECK_THROWS_AS(page_pool(0, 0), error);
  CHECK_THROWS_AS(page_pool(4, 5), error);
  CHECK_THROWS_AS(page_pool(4, -1), error);
}

TEST_CASE("page_pool: cached pages are evicted least recently released, after free ones") {
  page_pool pool(6, 0);
  CHECK(pool.allocate(1, 3)); // 0 1 2
  CHECK_FALSE(pool.set_cached(5)); // unreferenced: nothing to cache
  for (page_id p : {0, 1, 2}) CHECK(pool.set_cached(p));
  CHECK(pool.num_cached() == 3);

  CHECK(pool.release(1)); // LRU: 2, 1, 0
  CHECK(pool.num_free() == 6);
  CHECK(pool.num_evictable() == 3);

  CHECK(pool.allocate(2, 4)); // free 3 4 5 first, then evicts 2
  CHECK(table_of(pool, 2) == std::vector<page_id>{3, 4, 5, 2});
  CHECK_FALSE(pool.is_cached(2));
  CHECK(pool.generation(2) == 2);
  CHECK(pool.num_cached() == 2);

  CHECK(pool.share(3, std::vector<page_id>{1})); // a hit leaves the LRU list
  CHECK(pool.refcount(1) == 1);
  CHECK(pool.is_cached(1));
  CHECK(pool.num_evictable() == 1);

  CHECK(pool.allocate(4, 1)); // evicts 0, the only evictable page
  CHECK(table_of(pool, 4) == std::vector<page_id>{0});
  CHECK_FALSE(pool.allocate(4, 1));

  CHECK(pool.release(3)); // page 1 is still cached: evictable, not free
  CHECK(pool.num_evictable() == 1);
  CHECK(pool.allocate(4, 1));
  CHECK(table_of(pool, 4) == std::vector<page_id>{0, 1});
  CHECK(pool.consistent());
}

TEST_CASE("page_pool: a pinned page is never evicted") {
  page_pool pool(3, 0);
  const seq_id pin = 1000;
  CHECK(pool.allocate(1, 2)); // 0 1
  CHECK(pool.set_cached(0));
  CHECK(pool.set_cached(1));
  CHECK(pool.share(pin, std::vector<page_id>{0}));
  CHECK(pool.release(1)); // 1 evictable, 0 still pinned
  CHECK(pool.num_free() == 2);
  CHECK(pool.allocate(2, 2));
  CHECK(table_of(pool, 2) == std::vector<page_id>{2, 1});
  CHECK_FALSE(pool.allocate(2, 1));
  CHECK(pool.refcount(0) == 1);
  CHECK(pool.is_cached(0));

  CHECK(pool.release(pin)); // unpinned: now it can go
  CHECK(pool.allocate(2, 1));
  CHECK(table_of(pool, 2) == std::vector<page_id>{2, 1, 0});
  CHECK(pool.consistent());
}
