#include "runtime/scheduler_core.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "runtime/error.h"
#include "runtime/kv_cache_manager.h"

using namespace kvactor;

namespace {

std::vector<int32_t> iota_tokens(int32_t n, int32_t first = 10) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

seq_params seq(seq_id id, int32_t prompt_tokens, int32_t max_tokens = 8) {
  seq_params p;
  p.id = id;
  p.prompt = std::make_shared<const std::vector<int32_t>>(iota_tokens(prompt_tokens, int32_t(id) * 100));
  p.sampling.temperature = 0;
  p.max_tokens = max_tokens;
  return p;
}

// The core and a real cache, driven by hand: the test plays the executor.
struct harness {
  explicit harness(int32_t num_pages = 64, int32_t page_size = 4, int32_t max_steps_in_flight = 1,
                   int32_t max_queued = 16)
      : core(options(num_pages, page_size, max_steps_in_flight, max_queued),
             [this](const life_event& e) { life.push_back(e); }),
        kv(kv_cache_options{num_pages, page_size, 0, true, 0.5}) {}

  static scheduler_options options(int32_t num_pages, int32_t page_size, int32_t depth, int32_t max_queued) {
    scheduler_options o;
    o.budget = step_budget{page_size, 64, 16, 0};
    o.num_pages = num_pages;
    o.max_queued = max_queued;
    o.max_steps_in_flight = depth;
    return o;
  }

  // One round trip to the cache; the request must exist.
  started_step exchange(bool plan = true) {
    auto request = core.next_kv_request(plan);
    REQUIRE(request);
    last_request = *request;
    return core.on_kv_reply(kv.apply(*request));
  }
  // Round trips until a step comes out.
  engine_step next_step() {
    for (int i = 0; i < 4; ++i) {
      started_step s = exchange();
      if (!s.step.empty()) return s.step;
    }
    FAIL("no step was planned");
    return {};
  }

  std::vector<life_stage> stages(seq_id id) const {
    std::vector<life_stage> out;
    for (const auto& e : life)
      if (e.id == id) out.push_back(e.stage);
    return out;
  }

  scheduler_core core;
  kv_cache_manager kv;
  kv_step_request last_request;
  std::vector<life_event> life;
};

std::vector<int32_t> same_token(const engine_step& s, int32_t token) {
  return std::vector<int32_t>(s.rows.size(), token);
}

const seq_event* find_finished(const std::vector<seq_event>& events, seq_id id) {
  for (const auto& e : events)
    if (e.id == id && e.what == seq_event::kind::finished) return &e;
  return nullptr;
}

} // namespace

TEST_CASE("a new sequence is admitted only once its probe has come back") {
  harness h;
  CHECK_FALSE(h.core.next_kv_request()); // nothing to do
  CHECK(h.core.add(seq(1, 6)).empty());
  started_step first = h.exchange();
  CHECK(first.step.empty());
  CHECK(h.last_request.scheduled.empty());
  REQUIRE(h.last_request.probes.size() == 1);
  CHECK(h.last_request.probes[0].id == 1);

  engine_step step = h.next_step();
  REQUIRE(h.last_request.scheduled.size() == 1);
  CHECK(h.last_request.scheduled[0].admitted);
  CHECK(h.last_request.scheduled[0].num_new_pages == 2);
  REQUIRE(step.batch.seqs.size() == 1);
  CHECK(step.batch.seqs[0].tokens == iota_tokens(6, 100));
  CHECK(step.batch.seqs[0].page_table == std::vector<page_id>{0, 1});
  CHECK(step.rows.size() == 1);
  CHECK(h.core.steps_in_flight() == 1);
  // With the only step slot taken and nothing pending, there is nothing to ask.
  CHECK_FALSE(h.core.next_kv_request());
}

TEST_CASE("requests that could never run are refused at once") {
  harness h(8, 4, 1, 2);
  seq_params empty = seq(1, 1);
  empty.prompt = std::make_shared<const std::vector<int32_t>>();
  auto events = h.core.add(empty);
  REQUIRE(events.size() == 1);
  CHECK(events[0].error == error_code::bad_request);
  CHECK(events[0].reason == finish_reason::error);

  events = h.core.add(seq(2, 30, 3)); // 33 tokens need 9 pages of 4; the pool has 8
  REQUIRE(events.size() == 1);
  CHECK(events[0].error == error_code::context_length_exceeded);
  seq_params capped = seq(3, 30, 100);
  capped.max_total_tokens = 32; // fits exactly
  CHECK(h.core.add(capped).empty());

  CHECK(h.core.add(seq(4, 4)).empty());
  events = h.core.add(seq(5, 4)); // the queue holds 2
  REQUIRE(events.size() == 1);
  CHECK(events[0].error == error_code::overloaded);
  events = h.core.add(seq(4, 4));
  REQUIRE(events.size() == 1);
  CHECK(events[0].error == error_code::bad_request); // id in use
  CHECK(h.core.num_waiting() == 2);
}

TEST_CASE("stop tokens, max_tokens and the context cap end sequences") {
  harness h;
  seq_params a = seq(1, 4, 8);
  a.stop_token_ids = {5};
  seq_params b = seq(2, 4, 2);
  seq_params c = seq(3, 4, 8);
  c.max_total_tokens = 5;
  for (auto& p : {a, b, c}) h.core.add(p);
  engine_step step = h.next_step();
  REQUIRE(step.seqs == std::vector<seq_id>{1, 2, 3});
  auto events = h.core.on_step_done(step.id, std::vector<int32_t>{5, 7, 7});
  REQUIRE(events.size() == 5); // three tokens, two ends
  const seq_event* end_a = find_finished(events, 1);
  const seq_event* end_c = find_finished(events, 3);
  REQUIRE(end_a);
  REQUIRE(end_c);
  CHECK(end_a->reason == finish_reason::stop);
  CHECK(end_a->usage.completion_tokens == 1);
  CHECK(end_a->usage.prompt_tokens == 4);
  CHECK(end_c->reason == finish_reason::length);
  CHECK_FALSE(find_finished(events, 2));

  step = h.next_step();
  // The finished ones' full pages are cached before their pages go.
  std::set<seq_id> inserted, released(h.last_request.releases.begin(), h.last_request.releases.end());
  for (const auto& i : h.last_request.inserts) inserted.insert(i.id);
  CHECK(inserted == std::set<seq_id>{1, 2, 3});
  CHECK(released == std::set<seq_id>{1, 3});
  REQUIRE(step.seqs == std::vector<seq_id>{2});
  CHECK(step.batch.seqs[0].tokens == std::vector<int32_t>{7}); // decode the sampled token
  CHECK(step.batch.seqs[0].start_pos == 4);
  CHECK(step.rows[0].counter == 1);
  events = h.core.on_step_done(step.id, std::vector<int32_t>{8});
  REQUIRE(find_finished(events, 2));
  CHECK(find_finished(events, 2)->reason == finish_reason::length);
  CHECK(h.stages(2) == std::vector<life_stage>{life_stage::queued, life_stage::prefill_chunk,
                                               life_stage::decoding, life_stage::finished});
}

TEST_CASE("cancel ends a waiting sequence at once and one in flight when its step completes") {
  harness h;
  h.core.add(seq(1, 6));
  h.core.add(seq(2, 6));
  engine_step step = h.next_step();
  REQUIRE(step.seqs.size() == 2);
  h.core.add(seq(3, 6));
  auto events = h.core.cancel(3);
  REQUIRE(events.size() == 1);
  CHECK(events[0].reason == finish_reason::cancelled);
  CHECK(events[0].error == error_code::cancelled);

  CHECK(h.core.cancel(1).empty()); // in flight
  CHECK(h.core.cancel(42).empty()); // unknown
  events = h.core.on_step_done(step.id, same_token(step, 9));
  REQUIRE(events.size() == 2); // 1 ends without its token; 2 gets its token
  CHECK(events[0].what == seq_event::kind::finished);
  CHECK(events[0].id == 1);
  CHECK(events[0].usage.completion_tokens == 0);
  CHECK(events[1].what == seq_event::kind::token);
  CHECK(events[1].id == 2);

  // A cancel that arrives while the cache is applying its plan waits too.
  auto request = h.core.next_kv_request();
  REQUIRE(request);
  CHECK(request->releases == std::vector<seq_id>{1});
  CHECK(h.core.cancel(2).empty());
  started_step s = h.core.on_kv_reply(h.kv.apply(*request));
  REQUIRE(s.step.seqs == std::vector<seq_id>{2});
  events = h.core.on_step_done(s.step.id, same_token(s.step, 9));
  REQUIRE(events.size() == 1);
  CHECK(events[0].reason == finish_reason::cancelled);
  CHECK(h.core.num_sequences() == 0);
}

TEST_CASE("finish() ends a sequence for a stop string found downstream") {
  harness h;
  h.core.add(seq(1, 6));
  engine_step step = h.next_step();
  h.core.on_step_done(step.id, same_token(step, 9));
  auto events = h.core.finish(1, finish_reason::stop);
  REQUIRE(events.size() == 1);
  CHECK(events[0].reason == finish_reason::stop);
  CHECK(events[0].error == error_code::none);
  CHECK(events[0].usage.completion_tokens == 1);
}

TEST_CASE("two steps in flight take disjoint halves of the sequences") {
  harness h(64, 4, 2);
  for (seq_id id = 1; id <= 8; ++id) h.core.add(seq(id, 5));
  h.exchange(); // probes
  started_step a = h.exchange();
  started_step b = h.exchange();
  REQUIRE(a.step.seqs.size() == 4);
  REQUIRE(b.step.seqs.size() == 4);
  std::set<seq_id> all(a.step.seqs.begin(), a.step.seqs.end());
  all.insert(b.step.seqs.begin(), b.step.seqs.end());
  CHECK(all.size() == 8);
  CHECK(h.core.steps_in_flight() == 2);
  CHECK_FALSE(h.core.next_kv_request()); // both slots busy, nothing pending

  // The first step completes: its sequences are planned again, not the others.
  h.core.on_step_done(a.step.id, same_token(a.step, 3));
  started_step c = h.exchange();
  CHECK(c.step.seqs == a.step.seqs);
}

TEST_CASE("a failed step ends its sequences with internal and the others go on") {
  harness h(64, 4, 2);
  for (seq_id id = 1; id <= 4; ++id) h.core.add(seq(id, 5));
  h.exchange();
  started_step a = h.exchange();
  started_step b = h.exchange();
  auto events = h.core.on_step_failed(a.step.id, "device lost");
  REQUIRE(events.size() == 2);
  for (const auto& e : events) {
    CHECK(e.error == error_code::internal);
    CHECK(e.message == "device lost");
  }
  CHECK_THROWS_AS(h.core.on_step_done(a.step.id, same_token(a.step, 1)), error);
  CHECK_THROWS_AS(h.core.on_step_done(b.step.id, std::vector<int32_t>{1}), error); // 2 rows
  events = h.core.on_step_done(b.step.id, same_token(b.step, 1));
  CHECK(events.size() == 2);
  h.exchange();
  CHECK(h.last_request.inserts.empty() == false); // b's sequences cache their full page
  for (const auto& i : h.last_request.inserts) CHECK(std::count(a.step.seqs.begin(), a.step.seqs.end(), i.id) == 0);
  CHECK(h.last_request.releases.size() == 2); // a's sequences
}

TEST_CASE("a preempted sequence waits again with its output and recomputes it") {
  // 4 pages of 4 tokens: two 7-token prompts fill them; the first decode
  // that needs an 8th slot... the 9th position needs a third page.
  harness h(4, 4);
  h.core.add(seq(1, 7, 6));
  h.core.add(seq(2, 7, 6));
  engine_step step = h.next_step();
  h.core.on_step_done(step.id, same_token(step, 3)); // both at 8 tokens, 7 computed
  step = h.next_step(); // decodes position 7: still 2 pages each
  CHECK(step.seqs.size() == 2);
  h.core.on_step_done(step.id, same_token(step, 4)); // 9 tokens, 8 computed
  step = h.next_step(); // position 8 needs page 3: the newer sequence gives way
  CHECK(h.last_request.releases == std::vector<seq_id>{2});
  CHECK(h.core.counters().preemptions == 1);
  REQUIRE(step.seqs == std::vector<seq_id>{1});
  const auto stages = h.stages(2);
  CHECK(std::count(stages.begin(), stages.end(), life_stage::preempted) == 1);
  // It is probed (and later admitted) with prompt + its two tokens.
  REQUIRE(h.last_request.probes.size() == 1);
  auto expected = iota_tokens(7, 200);
  expected.insert(expected.end(), {3, 4});
  CHECK(*h.last_request.probes[0].tokens == expected);
}
