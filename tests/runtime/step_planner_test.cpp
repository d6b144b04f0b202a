#include "runtime/step_planner.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "runtime/error.h"
#include "runtime/page_pool.h"
#include "runtime/prefix_index.h"

using namespace kvactor;

namespace {

using tokens = std::vector<int32_t>;

tokens iota_tokens(int32_t n, int32_t first) {
  tokens t(size_t(n), 0);
  std::iota(t.begin(), t.end(), first);
  return t;
}

bool same(const scheduled_seq& s, seq_id id, int32_t start, int32_t n, int32_t pages, bool logits,
          bool admitted) {
  return s.id == id && s.start_pos == start && s.num_new_tokens == n && s.num_new_pages == pages &&
         s.want_logits == logits && s.admitted == admitted;
}

std::vector<seq_id> ids_of(const step_plan& plan) {
  std::vector<seq_id> ids;
  for (const auto& s : plan.scheduled) ids.push_back(s.id);
  return ids;
}

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A scheduler loop as an engine runs it, around a fake model whose "KV" at a
// position is a hash of every token up to it, computed from the KV read back
// out of the pages. Wrong sharing, eviction of a page in use or a bad page
// table shows up as KV that differs from the reference.
class engine_sim {
 public:
  struct sequence {
    tokens toks;
    int32_t prompt_len = 0;
    int32_t max_new = 0;
    int32_t computed = 0;
    int32_t priority = 0;
    uint64_t arrival = 0;
    prefix_cursor cursor;
  };

  engine_sim(int32_t num_pages, int32_t watermark, step_budget budget)
      : pool(num_pages, watermark), index(pool, budget.page_size), planner(budget),
        kv(size_t(num_pages) * size_t(budget.page_size), 0) {}

  void submit(seq_id id, tokens prompt, int32_t max_new, int32_t priority = 0) {
    sequence s;
    s.prompt_len = int32_t(prompt.size());
    s.toks = std::move(prompt);
    s.max_new = max_new;
    s.priority = priority;
    s.arrival = next_arrival++;
    seqs[id] = std::move(s);
    waiting.push_back(id);
  }

  step_plan step() {
    std::vector<running_seq> run;
    for (seq_id id : running) {
      const sequence& s = seqs.at(id);
      run.push_back(running_seq{id, int32_t(s.toks.size()), s.computed,
                                int32_t(pool.page_table(id).size()),
                                pool.num_exclusive_pages(id), s.priority, s.arrival});
    }
    std::vector<waiting_seq> wait;
    for (seq_id id : waiting) {
      const sequence& s = seqs.at(id);
      wait.push_back(waiting_seq{id, int32_t(s.toks.size()), s.priority, s.arrival});
    }
    step_input in{run, wait, pool.num_free(), pool.watermark(), [&](seq_id id) {
                    prefix_hit hit = index.peek(ns, seqs.at(id).toks);
                    return cached_prefix{int32_t(hit.pages.size()) * index.page_size(),
                                         hit.num_unreferenced};
                  }};
    step_plan plan = planner(in);
    apply(plan);
    CHECK(pool.consistent());
    return plan;
  }

  // The plan is applied in the order step_planner.h prescribes.
  void apply(const step_plan& plan) {
    for (seq_id id : plan.preempted) {
      CHECK(pool.release(id));
      seqs.at(id).computed = 0;
      std::erase(running, id);
      waiting.push_back(id);
    }
    for (seq_id id : plan.refused) {
      std::erase(waiting, id);
      refused.push_back(id);
    }
    for (const auto& e : plan.scheduled) {
      if (!e.admitted) continue;
      sequence& s = seqs.at(e.id);
      prefix_hit hit = index.lookup(ns, s.toks);
      REQUIRE(int32_t(hit.pages.size()) * index.page_size() == e.start_pos);
      CHECK(pool.share(e.id, hit.pages));
      s.cursor = hit.cursor;
      s.computed = e.start_pos;
      std::erase(waiting, e.id);
      running.push_back(e.id);
    }
    for (const auto& e : plan.scheduled)
      REQUIRE(pool.allocate(e.id, e.num_new_pages,
                            e.admitted ? page_claim::admission : page_claim::running));

    for (const auto& e : plan.scheduled) forward(e);
    for (const auto& e : plan.scheduled) {
      sequence& s = seqs.at(e.id);
      index.insert(s.cursor, tokens(s.toks.begin(), s.toks.begin() + s.computed),
                   pool.page_table(e.id));
      if (int32_t(s.toks.size()) - s.prompt_len == s.max_new) {
        CHECK(pool.release(e.id));
        std::erase(running, e.id);
        outputs[e.id] = tokens(s.toks.begin() + s.prompt_len, s.toks.end());
      }
    }
  }

  // Runs until nothing is left; returns the number of steps.
  int run_to_end(int max_steps = 1000) {
    int steps = 0;
    while ((!running.empty() || !waiting.empty()) && steps < max_steps) {
      step();
      ++steps;
    }
    return steps;
  }

  const uint64_t ns = 1;
  page_pool pool;
  prefix_index index;
  step_planner planner;
  std::map<seq_id, sequence> seqs;
  std::vector<seq_id> running;
  std::vector<seq_id> waiting;
  std::vector<seq_id> refused;
  std::map<seq_id, tokens> outputs;

 private:
  uint64_t& kv_at(seq_id id, int32_t pos) {
    const int32_t page_size = index.page_size();
    const page_id page = pool.page_table(id)[size_t(pos / page_size)];
    return kv[size_t(page) * size_t(page_size) + size_t(pos % page_size)];
  }

  void forward(const scheduled_seq& e) {
    sequence& s = seqs.at(e.id);
    REQUIRE(s.computed == e.start_pos);
    REQUIRE(int32_t(pool.page_table(e.id).size()) * index.page_size() >=
            e.start_pos + e.num_new_tokens);
    // Everything before the chunk must already hold the reference KV.
    uint64_t expected = ns;
    bool ok = true;
    for (int32_t p = 0; p < e.start_pos; ++p) {
      expected = mix(expected ^ uint32_t(s.toks[size_t(p)]));
      ok = ok && kv_at(e.id, p) == expected;
    }
    REQUIRE(ok);
    for (int32_t p = e.start_pos; p < e.start_pos + e.num_new_tokens; ++p)
      kv_at(e.id, p) = mix((p == 0 ? ns : kv_at(e.id, p - 1)) ^ uint32_t(s.toks[size_t(p)]));
    s.computed += e.num_new_tokens;
    if (e.want_logits) {
      REQUIRE(s.computed == int32_t(s.toks.size()));
      s.toks.push_back(int32_t(kv_at(e.id, s.computed - 1) % 1000));
    }
  }

  uint64_t next_arrival = 0;
  std::vector<uint64_t> kv; // [num_pages, page_size]
};

step_budget budget(int32_t page_size, int32_t max_batch_tokens, int32_t max_seqs,
                   int32_t prefill_chunk) {
  return step_budget{page_size, max_batch_tokens, max_seqs, prefill_chunk};
}

} // namespace

TEST_CASE("step_planner: bad budgets are refused") {
  CHECK_THROWS_AS(step_planner(budget(0, 16, 4, 0)), error);
  CHECK_THROWS_AS(step_planner(budget(4, 0, 4, 0)), error);
  CHECK_THROWS_AS(step_planner(budget(4, 16, 0, 0)), error);
  CHECK_THROWS_AS(step_planner(budget(4, 16, 4, -1)), error);
}

TEST_CASE("step_planner: a token budget of 1 computes one token per step") {
  engine_sim sim(8, 0, budget(4, 1, 4, 0));
  sim.submit(1, iota_tokens(5, 10), 2);
  for (int32_t pos = 0; pos < 5; ++pos) {
    const step_plan plan = sim.step();
    REQUIRE(plan.scheduled.size() == 1);
    // A page at positions 0 and 4; logits once the prompt is in.
    CHECK(same(plan.scheduled[0], 1, pos, 1, pos % 4 == 0 ? 1 : 0, pos == 4, pos == 0));
  }
  const step_plan decode = sim.step();
  REQUIRE(decode.scheduled.size() == 1);
  CHECK(same(decode.scheduled[0], 1, 5, 1, 0, true, false));
  CHECK(sim.outputs.count(1) == 1);
  CHECK(sim.outputs[1].size() == 2);
}

TEST_CASE("step_planner: with a budget of 1, decodes still come first") {
  const step_planner planner(budget(4, 1, 8, 0));
  const std::vector<running_seq> running{{1, 9, 8, 3, 3, 0, 0}, {2, 9, 8, 3, 3, 0, 1}};
  const std::vector<waiting_seq> waiting{{3, 5, 0, 2}};
  const step_plan plan = planner(step_input{running, waiting, 10, 0, {}});
  REQUIRE(plan.scheduled.size() == 1);
  CHECK(same(plan.scheduled[0], 1, 8, 1, 0, true, false));
}

TEST_CASE("step_planner: a prompt of exactly one page") {
  engine_sim sim(8, 0, budget(4, 64, 4, 0));
  sim.submit(1, iota_tokens(4, 10), 3);
  step_plan plan = sim.step();
  REQUIRE(plan.scheduled.size() == 1);
  CHECK(same(plan.scheduled[0], 1, 0, 4, 1, true, true));
  CHECK(sim.pool.is_cached(0)); // its one full page is cached at once

  // The first decode lands on a new page.
  plan = sim.step();
  REQUIRE(plan.scheduled.size() == 1);
  CHECK(same(plan.scheduled[0], 1, 4, 1, 1, true, false));

  // The same prompt again: its only page cannot be a hit, since the last
  // token must be computed.
  sim.submit(2, iota_tokens(4, 10), 1);
  plan = sim.step();
  REQUIRE(plan.scheduled.size() == 2);
  CHECK(same(plan.scheduled[0], 1, 5, 1, 0, true, false));
  CHECK(same(plan.scheduled[1], 2, 0, 4, 1, true, true));
  CHECK(sim.run_to_end() == 0);
  CHECK(sim.outputs[2][0] == sim.outputs[1][0]);
}

TEST_CASE("step_planner: an empty prompt is refused, the others go on") {
  engine_sim sim(8, 0, budget(4, 64, 4, 0));
  sim.submit(1, {}, 4);
  sim.submit(2, iota_tokens(3, 0), 1);
  const step_plan plan = sim.step();
  CHECK(plan.refused == std::vector<seq_id>{1});
  CHECK(ids_of(plan) == std::vector<seq_id>{2});
  CHECK(sim.refused == std::vector<seq_id>{1});
  CHECK(sim.waiting.empty());
}

TEST_CASE("step_planner: decodes first, then running prefills, then waiting prompts") {
  const step_planner planner(budget(4, 6, 8, 0));
  const std::vector<running_seq> running{
      {10, 20, 8, 2, 2, 0, 0}, // prefilling: 12 tokens left
      {11, 9, 8, 2, 2, 0, 1},  // decode at position 8: needs a third page
      {12, 6, 5, 2, 2, 0, 2},  // decode at position 5: has its page
  };
  const std::vector<waiting_seq> waiting{{13, 6, 0, 3}};
  const step_plan plan = planner(step_input{running, waiting, 100, 0, {}});
  REQUIRE(plan.scheduled.size() == 3);
  CHECK(same(plan.scheduled[0], 11, 8, 1, 1, true, false));
  CHECK(same(plan.scheduled[1], 12, 5, 1, 0, true, false));
  CHECK(same(plan.scheduled[2], 10, 8, 4, 1, false, false)); // the 4 tokens left
  CHECK(plan.preempted.empty());
  CHECK(plan.num_tokens() == 6);
  CHECK(plan.num_new_pages() == 2);
}

TEST_CASE("step_planner: a 10,000-token prompt in 2000-token chunks beside 8 decodes") {
  engine_sim sim(1000, 0, budget(16, 2048, 16, 2000));
  for (seq_id id = 1; id <= 8; ++id) sim.submit(id, iota_tokens(5, int32_t(id) * 10), 100);
  step_plan plan = sim.step();
  CHECK(plan.scheduled.size() == 8);

  sim.submit(100, iota_tokens(10000, 7), 4);
  for (int32_t chunk = 0; chunk < 5; ++chunk) {
    plan = sim.step();
    REQUIRE(plan.scheduled.size() == 9);
    for (size_t i = 0; i < 8; ++i) {
      CHECK(plan.scheduled[i].id == seq_id(i + 1));
      CHECK(plan.scheduled[i].num_new_tokens == 1);
      CHECK(plan.scheduled[i].want_logits);
    }
    CHECK(same(plan.scheduled[8], 100, chunk * 2000, 2000, 125, chunk == 4, chunk == 0));
    CHECK(plan.num_tokens() == 2008);
  }
  // Now it decodes with the others.
  plan = sim.step();
  REQUIRE(plan.scheduled.size() == 9);
  CHECK(same(plan.scheduled[8], 100, 10000, 1, 1, true, false)); // position 10000 opens page 626
  CHECK(sim.seqs.at(100).toks.size() == 10002);
}

TEST_CASE("step_planner: max_seqs caps the sequences holding pages") {
  const step_planner planner(budget(4, 100, 3, 0));
  const std::vector<running_seq> running{{1, 5, 4, 1, 1, 0, 0}};
  const std::vector<waiting_seq> waiting{{2, 4, 0, 1}, {3, 4, 0, 2}, {4, 4, 0, 3}};
  const step_plan plan = planner(step_input{running, waiting, 100, 0, {}});
  CHECK(ids_of(plan) == std::vector<seq_id>{1, 2, 3});

  engine_sim sim(64, 0, budget(4, 100, 2, 0));
  sim.submit(1, iota_tokens(4, 0), 2);
  sim.submit(2, iota_tokens(4, 10), 3);
  sim.submit(3, iota_tokens(4, 20), 1);
  CHECK(ids_of(sim.step()) == std::vector<seq_id>{1, 2});
  CHECK(ids_of(sim.step()) == std::vector<seq_id>{1, 2}); // 1 finishes
  CHECK(ids_of(sim.step()) == std::vector<seq_id>{2, 3}); // 2 and 3 finish
  CHECK(sim.run_to_end() == 0);
}

TEST_CASE("step_planner: waiting sequences by priority, then arrival, without overtaking") {
  const step_planner planner(budget(4, 12, 8, 0));
  const std::vector<waiting_seq> waiting{
      {1, 4, 0, 0}, {2, 4, 5, 2}, {3, 4, 5, 1}, {4, 4, -1, 3}};
  step_plan plan = planner(step_input{{}, waiting, 100, 0, {}});
  CHECK(ids_of(plan) == std::vector<seq_id>{3, 2, 1}); // 12 tokens: 4 does not fit

  // The first in order needs 3 pages, the second 1: with 2 free, neither goes.
  const std::vector<waiting_seq> big_first{{5, 12, 1, 0}, {6, 4, 0, 1}};
  plan = planner(step_input{{}, big_first, 2, 0, {}});
  CHECK(plan.scheduled.empty());
}

TEST_CASE("step_planner: the watermark holds back admissions, not running decodes") {
  const step_planner planner(budget(4, 100, 8, 0));
  const std::vector<running_seq> running{{1, 9, 8, 2, 2, 0, 0}}; // needs a page
  const std::vector<waiting_seq> waiting{{2, 3, 0, 1}};          // needs a page
  step_plan plan = planner(step_input{running, waiting, 3, 2, {}});
  CHECK(ids_of(plan) == std::vector<seq_id>{1}); // 3 - 1 - 1 < 2
  plan = planner(step_input{running, waiting, 4, 2, {}});
  CHECK(ids_of(plan) == std::vector<seq_id>{1, 2});
  plan = planner(step_input{running, waiting, 1, 2, {}});
  CHECK(ids_of(plan) == std::vector<seq_id>{1}); // into the watermark
  CHECK(plan.preempted.empty());
}

TEST_CASE("step_planner: cached prefixes set the start and count the pages they take") {
  const step_planner planner(budget(4, 100, 8, 0));
  const std::vector<waiting_seq> waiting{{1, 10, 0, 0}};
  auto probe = [](cached_prefix c) { return [c](seq_id) { return c; }; };

  // 8 tokens cached on 2 unreferenced pages: 2 more tokens on 1 new page.
  step_plan plan = planner(step_input{{}, waiting, 3, 0, probe({8, 2})});
  REQUIRE(plan.scheduled.size() == 1);
  CHECK(same(plan.scheduled[0], 1, 8, 2, 1, true, true));
  // Taking those 2 pages out of 2 free leaves none for the new one.
  plan = planner(step_input{{}, waiting, 2, 0, probe({8, 2})});
  CHECK(plan.scheduled.empty());
  // Pages another sequence holds cost nothing.
  plan = planner(step_input{{}, waiting, 1, 0, probe({8, 0})});
  CHECK(ids_of(plan) == std::vector<seq_id>{1});
  // A probe claiming the last token, or part of a page, is cut to whole pages below it.
  const std::vector<waiting_seq> eight{{2, 8, 0, 0}};
  plan = planner(step_input{{}, eight, 10, 0, probe({8, 0})});
  CHECK(same(plan.scheduled.at(0), 2, 4, 4, 1, true, true));
  plan = planner(step_input{{}, eight, 10, 0, probe({6, 0})});
  CHECK(same(plan.scheduled.at(0), 2, 4, 4, 1, true, true));
}

TEST_CASE("step_planner: preemption takes back a slot already planned") {
  const step_planner planner(budget(4, 100, 8, 0));
  const std::vector<running_seq> running{
      {1, 9, 8, 3, 3, 0, 0},  // decode, has its page
      {2, 9, 8, 3, 3, 0, 2},  // decode, has its page: newest
      {3, 20, 8, 2, 2, 0, 1}, // prefilling: 12 tokens need 3 more pages
  };
  const std::vector<waiting_seq> waiting{{4, 4, 9, 3}};
  const step_plan plan = planner(step_input{running, waiting, 0, 0, {}});
  CHECK(plan.preempted == std::vector<seq_id>{2});
  REQUIRE(plan.scheduled.size() == 2);
  CHECK(same(plan.scheduled[0], 1, 8, 1, 0, true, false));
  CHECK(same(plan.scheduled[1], 3, 8, 12, 3, true, false));
  CHECK(plan.num_tokens() == 13); // the dropped decode's token is given back
}

TEST_CASE("step_planner: a victim frees only the pages nobody else holds") {
  const step_planner planner(budget(4, 100, 8, 0));
  const std::vector<running_seq> running{
      {1, 16, 8, 2, 2, 0, 0}, // prefilling: 8 tokens need 2 more pages
      {2, 9, 8, 3, 1, 0, 1},  // shares 2 of its 3 pages
      {3, 9, 8, 3, 1, 0, 2},  // shares 2 of its 3 pages: newest
  };
  const step_plan plan = planner(step_input{running, {}, 0, 0, {}});
  CHECK(plan.preempted == std::vector<seq_id>{3, 2});
  REQUIRE(plan.scheduled.size() == 1);
  CHECK(same(plan.scheduled[0], 1, 8, 8, 2, true, false));
}

TEST_CASE("step_planner: the newest sequence preempts itself when nothing newer is left") {
  const step_planner planner(budget(4, 100, 8, 0));
  const std::vector<running_seq> running{{1, 9, 8, 3, 3, 0, 0}, {2, 9, 8, 2, 2, 0, 1}};
  // It frees 2 pages, enough for this prompt; but a step that preempts
  // admits nobody, or the victim's pages would go to a newcomer.
  const std::vector<waiting_seq> waiting{{3, 3, 0, 2}};
  const step_plan plan = planner(step_input{running, waiting, 0, 0, {}});
  CHECK(plan.preempted == std::vector<seq_id>{2});
  CHECK(ids_of(plan) == std::vector<seq_id>{1});
}

TEST_CASE("step_planner: the newest is preempted when pages run out, and resumes with the same output") {
  const tokens prompt_a = iota_tokens(8, 0);
  const tokens prompt_b = iota_tokens(8, 100);
  std::map<seq_id, tokens> alone;
  for (auto [id, prompt] : {std::pair{seq_id(1), prompt_a}, std::pair{seq_id(2), prompt_b}}) {
    engine_sim sim(64, 0, budget(4, 64, 8, 0));
    sim.submit(id, prompt, 10);
    sim.run_to_end();
    alone[id] = sim.outputs.at(id);
  }

  engine_sim sim(6, 0, budget(4, 64, 8, 0));
  sim.submit(1, prompt_a, 10);
  sim.submit(2, prompt_b, 10);
  step_plan plan = sim.step(); // both prompts: pages 0 1 and 2 3
  CHECK(ids_of(plan) == std::vector<seq_id>{1, 2});
  plan = sim.step(); // both decodes need a third page: 4 and 5
  CHECK(plan.num_new_pages() == 2);
  for (int i = 0; i < 3; ++i) CHECK(ids_of(sim.step()) == std::vector<seq_id>{1, 2});

  // Position 12 needs a fourth page for each; none is free.
  plan = sim.step();
  CHECK(plan.preempted == std::vector<seq_id>{2});
  REQUIRE(plan.scheduled.size() == 1);
  CHECK(same(plan.scheduled[0], 1, 12, 1, 1, true, false));
  CHECK(sim.pool.page_table(1).back() == 5); // b's deepest page, evicted
  CHECK(sim.seqs.at(2).toks.size() == 13);   // prompt + 5 generated, to recompute

  // b waits: its cached pages 2 and 3 would leave no room for the rest.
  for (int i = 0; i < 4; ++i) CHECK(ids_of(sim.step()) == std::vector<seq_id>{1});
  CHECK(sim.outputs.count(1) == 1);

  // a's last page evicted page 3; b resumes from page 2 and recomputes 9 tokens.
  plan = sim.step();
  REQUIRE(plan.scheduled.size() == 1);
  CHECK(same(plan.scheduled[0], 2, 4, 9, 3, true, true));
  sim.run_to_end();
  CHECK(sim.outputs.at(1) == alone.at(1));
  CHECK(sim.outputs.at(2) == alone.at(2));
}

TEST_CASE("step_planner: a shared prompt is computed once and hit afterwards") {
  engine_sim sim(64, 0, budget(4, 64, 8, 0));
  const tokens prompt = iota_tokens(11, 0);
  sim.submit(1, prompt, 3);
  sim.step();
  sim.submit(2, prompt, 3);
  const step_plan plan = sim.step();
  REQUIRE(plan.scheduled.size() == 2);
  CHECK(same(plan.scheduled[1], 2, 8, 3, 1, true, true));
  CHECK(sim.index.stats().queried_tokens == 22);
  CHECK(sim.index.stats().hit_tokens == 8);
  sim.run_to_end();
  CHECK(sim.outputs.at(1) == sim.outputs.at(2));
}

TEST_CASE("step_planner: a crowded pool with shared prefixes gives every sequence its solo output") {
  std::mt19937 rng(12345);
  auto draw = [&](int32_t lo, int32_t hi) {
    return std::uniform_int_distribution<int32_t>(lo, hi)(rng);
  };
  const std::vector<tokens> prefixes{iota_tokens(8, 0), iota_tokens(12, 500), iota_tokens(5, 900)};
  struct request {
    seq_id id;
    tokens prompt;
    int32_t max_new;
    int32_t priority;
    int step; // when it arrives
  };
  std::vector<request> requests;
  for (seq_id id = 1; id <= 40; ++id) {
    tokens prompt = prefixes[size_t(draw(0, 2))];
    for (int32_t i = draw(0, 14); i > 0; --i) prompt.push_back(draw(0, 999));
    requests.push_back({id, prompt, draw(1, 8), draw(0, 2), draw(0, 30)});
  }

  std::map<seq_id, tokens> solo;
  for (const auto& r : requests) {
    engine_sim sim(64, 0, budget(4, 64, 8, 0));
    sim.submit(r.id, r.prompt, r.max_new);
    sim.run_to_end();
    solo[r.id] = sim.outputs.at(r.id);
  }

  engine_sim sim(24, 2, budget(4, 20, 6, 6));
  int preemptions = 0;
  for (int step = 0; step < 2000 && sim.outputs.size() < requests.size(); ++step) {
    for (const auto& r : requests)
      if (r.step == step) sim.submit(r.id, r.prompt, r.max_new, r.priority);
    const step_plan plan = sim.step();
    preemptions += int(plan.preempted.size());
    REQUIRE(plan.num_tokens() <= 20);
    REQUIRE(plan.scheduled.size() <= 6);
  }
  CHECK(sim.outputs == solo);
  CHECK(preemptions > 0); // the pool really was too small
  CHECK(sim.index.stats().hit_tokens > 0);
  CHECK(sim.pool.num_free() == 24);
}
