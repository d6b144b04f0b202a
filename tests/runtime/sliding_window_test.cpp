// Pages behind a sliding window go back to the pool while a sequence runs:
// page_pool::release_leading, the KV cache's trims and admissions, and a
// 4,096-token generation through the whole scheduling loop.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <tuple>

#include "runtime/cpu_backend.h"
#include "runtime/error.h"
#include "runtime/kv_cache_manager.h"
#include "runtime/model_loader.h"
#include "runtime/sliding_window.h"
#include "sync_engine.h"

using namespace kvactor;

namespace {

std::vector<page_id> table(const page_pool& pool, seq_id owner) {
  auto t = pool.page_table(owner);
  return {t.begin(), t.end()};
}

token_list tokens(size_t n, int32_t first = 0) {
  auto t = std::make_shared<std::vector<int32_t>>(n);
  std::iota(t->begin(), t->end(), first);
  return t;
}

// The Mistral reference model with its window widened to `window`.
loaded_model mistral(int32_t window) {
  loaded_model m = load_model((std::filesystem::path(KVACTOR_TEST_DATA) / "models" / "mistral").string());
  m.config.sliding_window = window;
  return m;
}

using test::greedy;

scheduler_options scheduler_for(int32_t num_pages, int32_t window) {
  scheduler_options o;
  o.budget = step_budget{16, 2048, 8, 32};
  o.num_pages = num_pages;
  o.sliding_window = window;
  return o;
}

kv_cache_options cache_for(int32_t num_pages, int32_t window) {
  kv_cache_options o;
  o.num_pages = num_pages;
  o.page_size = 16;
  o.sliding_window = window;
  return o;
}

} // namespace

TEST_CASE("sliding window: which pages no later token sees") {
  CHECK(pages_behind_window(0, 256, 16) == 0);
  CHECK(pages_behind_window(271, 256, 16) == 1);  // keys from 16: page 0 is dead
  CHECK(pages_behind_window(270, 256, 16) == 0);  // keys from 15
  CHECK(pages_behind_window(4096, 256, 16) == 240);
  CHECK(pages_behind_window(4096, 0, 16) == 0);   // no window: nothing
  model_config c;
  c.num_layers = 3;
  c.sliding_window = 8;
  c.layer_sliding = {true, true, true};
  CHECK(reclaimable_window(c) == 8);
  c.layer_sliding = {false, true, true}; // Qwen2 with max_window_layers 1
  CHECK(reclaimable_window(c) == 0);
  c.sliding_window = 0;
  c.layer_sliding = {false, false, false};
  CHECK(reclaimable_window(c) == 0);
}

TEST_CASE("page_pool: release_leading frees leading entries in place, last first") {
  page_pool pool(8, 0);
  REQUIRE(pool.allocate(1, 5));
  CHECK(pool.release_leading(1, 2) == 2);
  CHECK(table(pool, 1) == std::vector<page_id>{no_page, no_page, 2, 3, 4});
  CHECK(pool.num_free() == 5);
  CHECK(pool.num_held_pages(1) == 3);
  CHECK(pool.num_exclusive_pages(1) == 3);
  // Repeating, or going further, drops only what is still held.
  CHECK(pool.release_leading(1, 2) == 0);
  CHECK(pool.release_leading(1, 3) == 1);
  CHECK(pool.release_leading(1, 99) == 2);
  CHECK(pool.num_free() == 8);
  CHECK(pool.consistent());
  // Freed pages queue in the order they went: 1, 0, then 2, then 4, 3.
  REQUIRE(pool.allocate(2, 8));
  CHECK(table(pool, 2) == std::vector<page_id>{5, 6, 7, 1, 0, 2, 4, 3});
  CHECK(pool.release(1)); // a table of released entries only
  CHECK(pool.release_leading(99, 1) == 0);
  CHECK(pool.consistent());
}

TEST_CASE("kv_cache_manager: trims release pages; cached ones stay hits for others") {
  kv_cache_manager kv(cache_for(16, 32));
  const token_list prompt = tokens(80);
  kv_step_request admit;
  admit.scheduled.push_back(kv_scheduled{1, true, 0, 5, 0, prompt});
  REQUIRE(kv.apply(admit).tables.at(0).pages == std::vector<page_id>{0, 1, 2, 3, 4});

  // 80 computed: the next token (80) sees keys from 49, so pages 0..2 are dead.
  kv_step_request step;
  step.inserts.push_back(kv_insert{1, {}, 80});
  step.trims.push_back(kv_trim{1, pages_behind_window(80, 32, 16)});
  const kv_step_reply r = kv.apply(step);
  CHECK(r.counters.window_released_pages == 3);
  CHECK(r.counters.pages_used == 2);
  CHECK(table(kv.pool(), 1) == std::vector<page_id>{no_page, no_page, no_page, 3, 4});
  CHECK(kv.pool().num_evictable() == 3); // inserted before the trim: cached, evictable
  CHECK(kv.pool().consistent());

  // Another sequence with the same first 64 tokens hits all four pages but
  // keeps only those its window sees from position 64 (keys from 33: pages 2, 3).
  kv_step_request probe;
  probe.probes.push_back(kv_probe{2, 0, tokens(70)});
  const kv_step_reply pr = kv.apply(probe);
  CHECK(pr.probes.at(0).cached.num_tokens == 64);
  CHECK(pr.probes.at(0).cached.num_unreferenced_pages == 1); // page 2; 0 and 1 are let go at once
  kv_step_request second;
  second.scheduled.push_back(kv_scheduled{2, true, 4, 1, 0, tokens(70)});
  const kv_step_reply sr = kv.apply(second);
  REQUIRE(sr.rejected.empty());
  CHECK(sr.tables.at(0).pages == std::vector<page_id>{no_page, no_page, 2, 3, 5});
  CHECK(sr.counters.hit_tokens == 64);
  CHECK(sr.counters.window_released_pages == 5);
  CHECK(kv.pool().consistent());

  // A trim of a sequence that holds nothing is a protocol error.
  kv_step_request bad;
  bad.trims.push_back(kv_trim{7, 1});
  CHECK_THROWS_AS(kv.apply(bad), error);
}

TEST_CASE("the CPU backend refuses a released page that a token still attends to") {
  const loaded_model m = mistral(32);
  cpu_backend b(m.config, m.weights, 8, 16, 1);
  CHECK(b.accepts_released_pages());
  std::vector<float> logits;
  forward_batch ok;
  // Position 80 sees keys from 49: pages 0..2 may be released.
  ok.seqs.push_back({{5}, 80, {no_page, no_page, no_page, 3, 4, 5}, true});
  CHECK_NOTHROW(b.forward(ok, logits));
  forward_batch bad = ok;
  bad.seqs[0].start_pos = 78; // sees keys from 47: page 2 is needed
  CHECK_THROWS_WITH_AS(b.forward(bad, logits),
                       "forward: sequence 0: page 2 (positions from 32) was released, but the step attends to it",
                       error);
  // With one full-attention layer nothing may be released.
  loaded_model partial = mistral(32);
  partial.config.layer_sliding[0] = false;
  cpu_backend p(partial.config, partial.weights, 8, 16, 1);
  CHECK_THROWS_AS(p.forward(ok, logits), error);
}

TEST_CASE("window 256: a 4,096-token generation never holds more than 18 pages") {
  const loaded_model m = mistral(256);
  const std::vector<int32_t> prompt = {1, 17, 42, 99, 3, 250, 7, 7, 128, 64, 5, 19, 200, 11, 90, 33, 71, 8, 2, 61};
  const int32_t max_tokens = 4096 - int32_t(prompt.size());

  // A pool of 24 pages: without reclamation the sequence needs 256.
  cpu_backend b(m.config, m.weights, 24, 16, 2);
  test::sync_engine engine(b, scheduler_for(24, 256), cache_for(24, 256));
  engine.add(greedy(1, prompt, max_tokens));
  int32_t most_used = 0, most_held = 0;
  engine.run([&](int64_t) {
    const kv_counters c = engine.kv().counters();
    most_used = std::max(most_used, c.pages_used);
    most_held = std::max(most_held, engine.kv().pool().num_held_pages(1));
    REQUIRE(c.pages_used <= 18);
  });
  REQUIRE(engine.finished.at(1).reason == finish_reason::length);
  REQUIRE(engine.outputs.at(1).size() == size_t(max_tokens));
  const kv_counters c = engine.kv().counters();
  CHECK(c.window_released_pages == 256 - most_held);

  // The same generation with every page kept, in a pool large enough.
  cpu_backend full(m.config, m.weights, 260, 16, 2);
  test::sync_engine reference(full, scheduler_for(260, 0), cache_for(260, 0));
  reference.add(greedy(1, prompt, max_tokens));
  int32_t reference_used = 0;
  reference.run([&](int64_t) { reference_used = std::max(reference_used, reference.kv().counters().pages_used); });
  CHECK(engine.outputs.at(1) == reference.outputs.at(1));
  MESSAGE("4,096 tokens, window 256, pages of 16: at most ", most_used, " pages in use (", most_held,
          " held by the sequence), ", c.window_released_pages, " released while it ran; without reclamation ",
          reference_used, " pages; outputs identical");
}

TEST_CASE("window 256: the pool must hold the window's pages, not the sequence's") {
  const loaded_model m = mistral(256);
  // With prefill chunks of 32 a sequence holds at most pages_for(255 + 32) + 1 = 19 pages.
  cpu_backend small(m.config, m.weights, 18, 16, 1);
  test::sync_engine refused(small, scheduler_for(18, 256), cache_for(18, 256));
  refused.add(greedy(1, {1, 2, 3}, 600));
  REQUIRE(refused.finished.contains(1));
  CHECK(refused.finished.at(1).error == error_code::context_length_exceeded);
  CHECK(refused.finished.at(1).message == "603 tokens need 19 KV pages at once; the cache has 18");

  cpu_backend enough(m.config, m.weights, 19, 16, 1);
  test::sync_engine runs(enough, scheduler_for(19, 256), cache_for(19, 256));
  runs.add(greedy(1, {1, 2, 3}, 600)); // 38 pages' worth of tokens
  runs.run();
  CHECK(runs.finished.at(1).reason == finish_reason::length);
  CHECK(runs.outputs.at(1).size() == 600);
}

TEST_CASE("window 64: crowded, preempted and sharing prefixes, every output is its solo output") {
  const loaded_model m = mistral(64);
  std::vector<std::vector<int32_t>> prompts;
  const std::vector<int32_t> shared = {9, 8, 7, 6, 5, 4, 3, 2, 1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                                       21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36};
  for (int32_t i = 0; i < 6; ++i) {
    std::vector<int32_t> p = i % 2 ? shared : std::vector<int32_t>{};
    for (int32_t k = 0; k < 20 + 13 * i; ++k) p.push_back((k * 31 + i * 7) % 256);
    prompts.push_back(std::move(p));
  }
  auto run = [&](int32_t num_pages, int32_t window) {
    cpu_backend b(m.config, m.weights, num_pages, 16, 1);
    test::sync_engine e(b, scheduler_for(num_pages, window), cache_for(num_pages, window), 2);
    for (size_t i = 0; i < 3; ++i) e.add(greedy(seq_id(i + 1), prompts[i], 300));
    e.run([&](int64_t step) {
      REQUIRE(e.kv().pool().consistent());
      if (step == 5) // later arrivals: 4 and 6 may find 2's prefix cached
        for (size_t i = 3; i < prompts.size(); ++i) e.add(greedy(seq_id(i + 1), prompts[i], 300));
    });
    return std::make_tuple(e.outputs, e.core().counters().preemptions, e.kv().counters());
  };
  const auto [outputs, preemptions, counters] = run(20, 64);
  const auto [reference, reference_preemptions, reference_counters] = run(200, 0);
  CHECK(reference_preemptions == 0);
  CHECK(preemptions > 0);
  CHECK(counters.window_released_pages > 0);
  CHECK(outputs == reference);
  MESSAGE("6 sequences of up to 401 tokens, window 64, a pool of 20 pages: ", preemptions, " preemptions, ",
          counters.window_released_pages, " pages released behind the window, ", counters.hit_tokens,
          " tokens from the prefix cache; outputs equal to a 200-page run keeping every page");
}
