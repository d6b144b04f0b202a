#include "runtime/kv_cache_manager.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>

#include "runtime/error.h"

using namespace kvactor;

namespace {

token_list tokens_of(std::vector<int32_t> v) { return std::make_shared<const std::vector<int32_t>>(std::move(v)); }

std::vector<int32_t> iota_tokens(int32_t n, int32_t first = 100) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

kv_scheduled admit(seq_id id, token_list tokens, int32_t hit_pages, int32_t new_pages) {
  return kv_scheduled{id, true, hit_pages, new_pages, 7, std::move(tokens)};
}

kv_scheduled grow(seq_id id, int32_t new_pages) { return kv_scheduled{id, false, 0, new_pages, 0, nullptr}; }

const std::vector<page_id>& table_of(const kv_step_reply& r, seq_id id) {
  for (const auto& t : r.tables)
    if (t.id == id) return t.pages;
  FAIL("no table for sequence ", id);
  static const std::vector<page_id> none;
  return none;
}

int32_t exclusive_of(const kv_step_reply& r, seq_id id) {
  for (const auto& h : r.holdings)
    if (h.id == id) return h.num_exclusive_pages;
  return -1;
}

kv_cache_options options(int32_t num_pages, int32_t page_size, int32_t watermark = 0) {
  kv_cache_options o;
  o.num_pages = num_pages;
  o.page_size = page_size;
  o.watermark = watermark;
  return o;
}

} // namespace

TEST_CASE("admissions allocate in plan order and the reply describes the pool") {
  kv_cache_manager kv(options(8, 4, 1));
  kv_step_request req;
  req.scheduled = {admit(1, tokens_of(iota_tokens(10)), 0, 3), admit(2, tokens_of(iota_tokens(5, 500)), 0, 2)};
  const kv_step_reply r = kv.apply(req);
  CHECK(r.rejected.empty());
  REQUIRE(r.tables.size() == 2);
  CHECK(r.tables[0].id == 1);
  CHECK(r.tables[0].pages == std::vector<page_id>{0, 1, 2});
  CHECK(r.tables[1].pages == std::vector<page_id>{3, 4});
  CHECK(r.free_pages == 3);
  CHECK(r.watermark == 1);
  CHECK(exclusive_of(r, 1) == 3);
  CHECK(exclusive_of(r, 2) == 2);
  CHECK(r.counters.pages_total == 8);
  CHECK(r.counters.pages_used == 5);
  CHECK(r.counters.queried_tokens == 15);
  CHECK(r.counters.hit_tokens == 0);
  CHECK(kv.pool().consistent());
}

TEST_CASE("computed pages are cached and a later admission shares them") {
  kv_cache_manager kv(options(8, 4));
  const auto prompt = iota_tokens(10);
  kv_step_request first;
  first.scheduled = {admit(1, tokens_of(prompt), 0, 3)};
  kv.apply(first);

  // The step computed all 10 tokens: pages 0 and 1 are full.
  kv_step_request second;
  second.inserts = {kv_insert{1, {}, 10}};
  second.releases = {1};
  std::vector<int32_t> other(prompt.begin(), prompt.begin() + 9);
  other.push_back(9999);
  second.probes = {kv_probe{2, 7, tokens_of(other)}, kv_probe{3, 8, tokens_of(other)}};
  const kv_step_reply probed = kv.apply(second);
  REQUIRE(probed.probes.size() == 2);
  CHECK(probed.probes[0].cached.num_tokens == 8);
  CHECK(probed.probes[0].cached.num_unreferenced_pages == 2);
  CHECK(probed.probes[1].cached.num_tokens == 0); // another namespace
  CHECK(probed.free_pages == 8);                  // cached pages count as free
  CHECK(probed.holdings.empty());

  kv_step_request third;
  third.scheduled = {admit(2, tokens_of(other), 2, 1)};
  const kv_step_reply r = kv.apply(third);
  // Pages 0 and 1 come back from the cache; the fresh page is the oldest free one.
  CHECK(table_of(r, 2) == std::vector<page_id>{0, 1, 3});
  CHECK(r.counters.hit_tokens == 8);
  CHECK(r.counters.queried_tokens == 20);
  CHECK(r.counters.evictions == 0);
  CHECK(kv.pool().consistent());
}

TEST_CASE("hits are shared before any allocation of the same step, then the LRU is evicted") {
  kv_cache_manager kv(options(7, 2));
  const auto x = iota_tokens(5, 100);
  const auto y = iota_tokens(5, 200);
  kv_step_request a;
  a.scheduled = {admit(1, tokens_of(x), 0, 3), admit(4, tokens_of(y), 0, 3)};
  kv.apply(a); // 1: pages 0-2, 4: pages 3-5
  kv_step_request b;
  b.inserts = {kv_insert{1, {}, 5}, kv_insert{4, {}, 5}};
  b.releases = {1, 4}; // last page first: LRU [1, 0, 4, 3], unused [6, 2, 5]
  kv.apply(b);

  // Sequence 3 comes first in the plan and needs more than the unused pages;
  // allocating before sharing would evict page 1, which sequence 2 hits.
  std::vector<int32_t> x2(x.begin(), x.begin() + 4);
  x2.push_back(7);
  kv_step_request c;
  c.scheduled = {admit(3, tokens_of(iota_tokens(7, 300)), 0, 4), admit(2, tokens_of(x2), 2, 1)};
  c.probes = {kv_probe{9, 7, tokens_of(y)}};
  const kv_step_reply r = kv.apply(c);
  CHECK(r.rejected.empty());
  CHECK(table_of(r, 3) == std::vector<page_id>{6, 2, 5, 4});
  CHECK(table_of(r, 2) == std::vector<page_id>{0, 1, 3});
  CHECK(r.counters.evictions == 2);
  CHECK(r.probes[0].cached.num_tokens == 0); // y's pages were evicted
  CHECK(r.free_pages == 0);
  CHECK(kv.pool().consistent());
}

TEST_CASE("an admission whose planned hits are gone is rejected and holds nothing") {
  kv_cache_manager kv(options(8, 4));
  kv_step_request req;
  req.scheduled = {admit(1, tokens_of(iota_tokens(10)), 2, 1), admit(2, tokens_of(iota_tokens(3)), 0, 1)};
  const kv_step_reply r = kv.apply(req);
  CHECK(r.rejected == std::vector<seq_id>{1});
  REQUIRE(r.tables.size() == 1);
  CHECK(r.tables[0].id == 2);
  CHECK(exclusive_of(r, 1) == -1);
  CHECK(r.free_pages == 7);
}

TEST_CASE("running growth that cannot be allocated is rejected and released") {
  kv_cache_manager kv(options(4, 4));
  kv_step_request a;
  a.scheduled = {admit(1, tokens_of(iota_tokens(8)), 0, 2)};
  kv.apply(a);
  kv_step_request b;
  b.scheduled = {grow(1, 3)};
  const kv_step_reply r = kv.apply(b);
  CHECK(r.rejected == std::vector<seq_id>{1});
  CHECK(r.tables.empty());
  CHECK(r.holdings.empty());
  CHECK(r.free_pages == 4);
}

TEST_CASE("tokens appended after admission extend the cached chain") {
  kv_cache_manager kv(options(8, 4));
  const auto prompt = iota_tokens(6);
  kv_step_request a;
  a.scheduled = {admit(1, tokens_of(prompt), 0, 2)};
  kv.apply(a);
  kv_step_request b;
  b.inserts = {kv_insert{1, {}, 6}}; // prefill done: page 0 is full
  auto longer = prompt;
  longer.insert(longer.end(), {7000, 7001, 7002});
  b.probes = {kv_probe{2, 7, tokens_of(longer)}};
  CHECK(kv.apply(b).probes[0].cached.num_tokens == 4);
  kv_step_request c;
  c.inserts = {kv_insert{1, {7000, 7001}, 8}}; // two decode steps fed the generated tokens
  c.probes = b.probes;
  const kv_step_reply r = kv.apply(c);
  CHECK(r.probes[0].cached.num_tokens == 8);
  CHECK(r.probes[0].cached.num_unreferenced_pages == 0); // sequence 1 still holds them
  CHECK(exclusive_of(r, 1) == 2);
}

TEST_CASE("pins keep a system prompt's pages out of eviction") {
  kv_cache_options o = options(8, 2);
  o.max_pinned_fraction = 0.3; // 2.4 pages
  kv_cache_manager kv(o);
  const auto system = iota_tokens(5, 40);
  kv_step_request a;
  a.scheduled = {admit(1, tokens_of(system), 0, 3)};
  kv.apply(a);
  kv_step_request b;
  b.inserts = {kv_insert{1, {}, 5}};
  b.pins = {kv_pin{"sys", 7, tokens_of(system)}, kv_pin{"cold", 7, tokens_of(iota_tokens(4, 900))}};
  b.releases = {1};
  const kv_step_reply pinned = kv.apply(b);
  REQUIRE(pinned.pins.size() == 2);
  CHECK(pinned.pins[0].num_tokens == 4); // the two whole pages
  CHECK(pinned.pins[1].num_tokens == 0); // not cached
  CHECK(pinned.counters.pages_pinned == 2);
  CHECK(pinned.free_pages == 6);
  CHECK(pinned.holdings.empty()); // pins are no sequences

  CHECK(kv.pin("sys", 7, system) == 0);                      // name taken
  // The same pages again under another name would pin 4 pages > 2.4.
  CHECK(kv.pin("again", 7, std::vector<int32_t>(system.begin(), system.begin() + 4)) == 0);

  // Everything else is taken; the pinned pages stay cached.
  kv_step_request c;
  c.scheduled = {admit(2, tokens_of(iota_tokens(12, 500)), 0, 6)};
  c.probes = {kv_probe{3, 7, tokens_of(system)}};
  const kv_step_reply r = kv.apply(c);
  CHECK(r.rejected.empty());
  CHECK(r.probes[0].cached.num_tokens == 4);
  CHECK(r.free_pages == 0);

  CHECK(kv.unpin("sys"));
  CHECK_FALSE(kv.unpin("sys"));
  CHECK(kv.counters().pages_pinned == 0);
  CHECK(kv.pool().num_free() == 2);
  CHECK(kv.pool().consistent());
}

TEST_CASE("with the prefix cache off nothing is cached or hit") {
  kv_cache_options o = options(8, 2);
  o.prefix_cache = false;
  kv_cache_manager kv(o);
  const auto prompt = iota_tokens(5);
  kv_step_request a;
  a.scheduled = {admit(1, tokens_of(prompt), 0, 3)};
  kv.apply(a);
  kv_step_request b;
  b.inserts = {kv_insert{1, {}, 5}};
  b.releases = {1};
  b.probes = {kv_probe{2, 7, tokens_of(prompt)}};
  const kv_step_reply r = kv.apply(b);
  CHECK(r.probes[0].cached.num_tokens == 0);
  CHECK(kv.pool().num_cached() == 0);
  kv_step_request c;
  c.scheduled = {admit(2, tokens_of(prompt), 2, 1)};
  CHECK(kv.apply(c).rejected == std::vector<seq_id>{2});
  CHECK(kv.counters().queried_tokens == 0);
}

TEST_CASE("a request that breaks the protocol throws and changes nothing") {
  kv_cache_manager kv(options(8, 4));
  kv_step_request a;
  a.scheduled = {admit(1, tokens_of(iota_tokens(6)), 0, 2)};
  kv.apply(a);
  auto rejects = [&](kv_step_request req) {
    CHECK_THROWS_AS(kv.apply(req), error);
    CHECK(kv.pool().num_free() == 6);
    CHECK(kv.pool().page_table(1).size() == 2);
  };
  kv_step_request dup;
  dup.scheduled = {grow(1, 1), admit(1, tokens_of(iota_tokens(3)), 0, 1)};
  rejects(dup);
  kv_step_request unknown_grow;
  unknown_grow.scheduled = {grow(5, 1)};
  rejects(unknown_grow);
  kv_step_request twice;
  twice.releases = {1, 1};
  rejects(twice);
  kv_step_request unknown_release;
  unknown_release.inserts = {kv_insert{1, {}, 4}};
  unknown_release.releases = {2};
  rejects(unknown_release);
  CHECK(kv.pool().num_cached() == 0); // the insert before the bad release was not applied
  kv_step_request grow_released;
  grow_released.releases = {1};
  grow_released.scheduled = {grow(1, 1)};
  rejects(grow_released);
}

TEST_CASE("a growing sequence gets only its new pages back, and holdings only when asked") {
  kv_cache_manager kv(options(8, 4));
  kv_step_request a;
  a.scheduled = {admit(1, tokens_of(iota_tokens(6)), 0, 2)};
  kv.apply(a);
  kv_step_request b;
  b.scheduled = {grow(1, 1)};
  b.want_holdings = false;
  const kv_step_reply r = kv.apply(b);
  CHECK(table_of(r, 1) == std::vector<page_id>{2});
  CHECK(r.holdings.empty());
  CHECK(kv.pool().page_table(1).size() == 3);
  kv_step_request c;
  c.scheduled = {grow(1, 0)};
  const kv_step_reply s = kv.apply(c);
  CHECK(table_of(s, 1).empty());
  CHECK(exclusive_of(s, 1) == 3);
}
