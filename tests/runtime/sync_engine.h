#pragma once
// The engine in one thread, for tests: scheduler_core, kv_cache_manager and a
// backend called in turn exactly as the actors call them, with up to `depth`
// steps planned ahead of the one that runs (as with several executors).
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "runtime/backend.h"
#include "runtime/engine_step.h"
#include "runtime/error.h"
#include "runtime/kv_cache_manager.h"
#include "runtime/scheduler_core.h"

namespace kvactor::test {

struct step_record {
  std::vector<seq_id> seqs;          // in batch order
  std::vector<int32_t> start_pos;    // [seqs]
  std::vector<int32_t> num_tokens;   // [seqs]
  std::vector<seq_id> produced;      // sequences that got a token
};

class sync_engine {
 public:
  sync_engine(backend& b, const scheduler_options& so, const kv_cache_options& ko, size_t depth = 1)
      : backend_(b),
        core_(so, [this](const life_event& e) { life.push_back(e); }),
        kv_(ko),
        depth_(depth) {}

  void add(seq_params p) { absorb(core_.add(std::move(p))); }
  void cancel(seq_id id) { absorb(core_.cancel(id)); }

  // Runs until every sequence has finished. `after_step(n)` runs after the
  // n-th completed step (arrivals, cancellations). Throws if stuck.
  void run(const std::function<void(int64_t)>& after_step = {}) {
    std::deque<engine_step> planned;
    int64_t done = 0;
    while (core_.num_sequences() > 0 || !planned.empty()) {
      while (planned.size() < depth_) {
        auto request = core_.next_kv_request();
        if (!request) break;
        started_step s = core_.on_kv_reply(kv_.apply(*request));
        absorb(s.events);
        if (!s.step.empty()) planned.push_back(std::move(s.step));
      }
      if (planned.empty()) {
        if (core_.num_sequences() == 0) break;
        throw error("sync_engine: sequences are left but nothing can be planned");
      }
      const engine_step step = std::move(planned.front());
      planned.pop_front();
      const auto tokens = run_step(backend_, step, logits_);
      step_record record{step.seqs, {}, {}, {}};
      for (const auto& s : step.batch.seqs) {
        record.start_pos.push_back(s.start_pos);
        record.num_tokens.push_back(int32_t(s.tokens.size()));
      }
      auto events = core_.on_step_done(step.id, tokens);
      for (const auto& e : events)
        if (e.what == seq_event::kind::token) record.produced.push_back(e.id);
      steps.push_back(std::move(record));
      absorb(events);
      if (after_step) after_step(++done);
    }
    // Hand the last releases and inserts to the cache, as the actor would.
    while (auto request = core_.next_kv_request()) absorb(core_.on_kv_reply(kv_.apply(*request)).events);
  }

  scheduler_core& core() { return core_; }
  kv_cache_manager& kv() { return kv_; }

  std::map<seq_id, std::vector<int32_t>> outputs;
  std::map<seq_id, seq_event> finished;
  std::vector<life_event> life;
  std::vector<step_record> steps;

 private:
  void absorb(const std::vector<seq_event>& events) {
    for (const auto& e : events) {
      if (e.what == seq_event::kind::token)
        outputs[e.id].push_back(e.token);
      else
        finished[e.id] = e;
    }
  }

  backend& backend_;
  scheduler_core core_;
  kv_cache_manager kv_;
  size_t depth_;
  std::vector<float> logits_;
};

// A request for `max_tokens` greedy tokens after `prompt`.
inline seq_params greedy(seq_id id, std::vector<int32_t> prompt, int32_t max_tokens) {
  seq_params p;
  p.id = id;
  p.prompt = std::make_shared<const std::vector<int32_t>>(std::move(prompt));
  p.sampling.temperature = 0;
  p.max_tokens = max_tokens;
  return p;
}

} // namespace kvactor::test
