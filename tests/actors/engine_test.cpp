// The engine through its public API (kvactor/engine.h) on CAF's threaded
// scheduler: concurrent requests, cancellation, errors, stop strings, two
// executors, a failing executor and pinned system prompts. Every wait is
// bounded.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <span>

#include "kvactor/engine.h"
#include "runtime/cpu_backend.h"
#include "runtime/default_model.h"
#include "runtime/error.h"
#include "runtime/generator.h"
#include "runtime/tokenizer.h"

using namespace kvactor;
using namespace std::chrono_literals;

namespace {

// -- what the sink and the observer saw --------------------------------------------

struct collector {
  std::mutex m;
  std::condition_variable cv;
  std::map<uint64_t, std::string> text;
  std::map<uint64_t, std::vector<int32_t>> tokens;
  std::map<uint64_t, std::vector<generate_result>> results;
  std::map<uint64_t, std::vector<life_stage>> stages;

  bool wait(const std::function<bool()>& done, std::chrono::seconds limit = 120s) {
    std::unique_lock lock(m);
    return cv.wait_for(lock, limit, done);
  }
  bool wait_finished(const std::vector<uint64_t>& ids) {
    return wait([&] {
      return std::all_of(ids.begin(), ids.end(), [&](uint64_t id) { return results.contains(id); });
    });
  }
  generate_result result(uint64_t id) {
    std::lock_guard lock(m);
    REQUIRE(results[id].size() == 1); // exactly one final message
    return results[id][0];
  }
};

generation_sink::behavior_type sink(generation_sink::pointer, std::shared_ptr<collector> c) {
  return {
    [c](const token_delta& d) {
      std::lock_guard lock(c->m);
      c->text[d.request_id] += d.text;
      auto& t = c->tokens[d.request_id];
      t.insert(t.end(), d.token_ids.begin(), d.token_ids.end());
      c->cv.notify_all();
    },
    [c](const generation_done& d) {
      std::lock_guard lock(c->m);
      c->results[d.request_id].push_back(d.result);
      c->cv.notify_all();
    },
  };
}

lifecycle_observer observer_for(const std::shared_ptr<collector>& c) {
  return [c](const life_event& e) {
    std::lock_guard lock(c->m);
    auto& s = c->stages[e.id];
    if (e.stage == life_stage::prefill_chunk && !s.empty() && s.back() == life_stage::prefill_chunk) return;
    s.push_back(e.stage);
  };
}

// -- the engine ------------------------------------------------------------------------

struct engine_fixture {
  explicit engine_fixture(engine_config c = small_config(), backend_factory make_backend = {})
      : sys(cfg), collected(std::make_shared<collector>()), self(sys) {
    engine = spawn_engine(sys, c, engine_hooks{std::move(make_backend), observer_for(collected)});
    out = sys.spawn(sink, collected);
  }
  ~engine_fixture() {
    caf::anon_send_exit(engine, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(out, caf::exit_reason::user_shutdown);
  }

  static engine_config small_config() {
    engine_config c;
    c.num_pages = 256;
    c.cpu_threads = 2;
    return c;
  }

  uint64_t generate(const generate_request& r) {
    uint64_t id = 0;
    self->request(engine, 10s, generate_atom_v, r, out)
      .receive([&](uint64_t x) { id = x; }, [&](caf::error& e) { FAIL("generate failed: ", sys.render(e)); });
    return id;
  }

  engine_stats stats() {
    engine_stats s;
    self->request(engine, 10s, stats_atom_v)
      .receive([&](const engine_stats& x) { s = x; }, [&](caf::error& e) { FAIL(sys.render(e)); });
    return s;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
  std::shared_ptr<collector> collected;
  caf::scoped_actor self;
  engine_actor engine;
  generation_sink out;
};

const tokenizer& tok() {
  static const tokenizer t = tokenizer::from_file(default_model_dir() + "/tokenizer.json");
  return t;
}

const loaded_model& model() {
  static const loaded_model m = load_model(default_model_dir());
  return m;
}

// The one-request generator's output: what the engine must produce.
std::vector<int32_t> reference(const generate_request& r) {
  cpu_backend b(model().config, model().weights, 80, 16, 2);
  generation_options o;
  o.sampling = r.sampling;
  o.max_tokens = r.max_tokens;
  o.ignore_eos = r.ignore_eos;
  const auto prompt = r.prompt_tokens.empty() ? tok().encode(r.prompt, true) : r.prompt_tokens;
  return generate(b, prompt, o).tokens;
}

generate_request request(std::string prompt, float temperature, uint64_t seed, int32_t max_tokens) {
  generate_request r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = temperature;
  r.sampling.seed = seed;
  r.max_tokens = max_tokens;
  return r;
}

const std::vector<std::string> topics{
    "The for statement is used to iterate over", "A class definition defines a class object",
    "The with statement", "Lambda expressions", "The del statement", "Names refer to objects.",
    "An object's identity never changes", "The global statement"};

std::vector<generate_request> sixteen_requests() {
  std::vector<generate_request> out;
  for (size_t i = 0; i < 16; ++i) {
    auto r = request(topics[i % topics.size()], i % 3 == 0 ? 0.0f : 0.9f, 100 + i, 12 + int32_t(i));
    if (i % 4 == 1) r.sampling.top_k = 40;
    if (i % 5 == 2) {
      r.prompt_tokens = tok().encode(r.prompt, true);
      r.prompt.clear();
    }
    out.push_back(std::move(r));
  }
  return out;
}

// Runs `requests` at once; each must end without error, its output the
// one-request generator's.
void outputs_match_generator(engine_fixture& f, const std::vector<generate_request>& requests) {
  std::vector<uint64_t> ids;
  for (const auto& r : requests) ids.push_back(f.generate(r));
  REQUIRE(f.collected->wait_finished(ids));
  for (size_t i = 0; i < requests.size(); ++i) {
    CHECK(f.collected->result(ids[i]).error == error_code::none);
    std::lock_guard lock(f.collected->m);
    CHECK_MESSAGE(f.collected->tokens[ids[i]] == reference(requests[i]), "request ", i);
  }
}

} // namespace

TEST_CASE("16 concurrent requests, a cancellation and bad requests") {
  engine_fixture f;
  const auto requests = sixteen_requests();
  std::vector<uint64_t> ids;
  for (const auto& r : requests) ids.push_back(f.generate(r));

  // A long request, cancelled once it has produced a token.
  auto endless = request("Python is", 0.8f, 7, 600);
  endless.ignore_eos = true;
  const uint64_t cancelled = f.generate(endless);
  REQUIRE(f.collected->wait([&] { return !f.collected->tokens[cancelled].empty(); }));
  caf::anon_send(f.engine, cancel_atom_v, cancelled);

  // Requests that must fail, each with its code.
  generate_request empty;
  generate_request out_of_vocab;
  out_of_vocab.prompt_tokens = {5, 4096};
  generate_request too_long;
  too_long.prompt_tokens.assign(1100, 7);
  generate_request unknown_system = request("hi", 0, 0, 4);
  unknown_system.system = "pirate";
  generate_request bad_sampling = request("hi", -1, 0, 4);
  const std::map<uint64_t, error_code> failing{{f.generate(empty), error_code::bad_request},
                                               {f.generate(out_of_vocab), error_code::bad_request},
                                               {f.generate(too_long), error_code::context_length_exceeded},
                                               {f.generate(unknown_system), error_code::bad_request},
                                               {f.generate(bad_sampling), error_code::bad_request}};

  std::vector<uint64_t> all = ids;
  all.push_back(cancelled);
  for (const auto& [id, code] : failing) all.push_back(id);
  REQUIRE(f.collected->wait_finished(all));

  int64_t produced = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const generate_result r = f.collected->result(ids[i]);
    CHECK(r.error == error_code::none);
    CHECK((r.reason == finish_reason::stop || r.reason == finish_reason::length));
    const auto expected = reference(requests[i]);
    std::lock_guard lock(f.collected->m);
    CHECK_MESSAGE(f.collected->tokens[ids[i]] == expected, "request ", i);
    CHECK(f.collected->text[ids[i]] == tok().decode(expected, true));
    CHECK(r.usage.completion_tokens == int32_t(expected.size()));
    CHECK(r.usage.prompt_tokens > 0);
    CHECK(r.timings.ttft_ms > 0);
    CHECK(r.timings.total_ms >= r.timings.ttft_ms);
    CHECK(f.collected->stages[ids[i]].front() == life_stage::submitted);
    CHECK(f.collected->stages[ids[i]] == std::vector<life_stage>{life_stage::submitted, life_stage::queued,
                                                                 life_stage::prefill_chunk, life_stage::decoding,
                                                                 life_stage::finished});
    produced += r.usage.completion_tokens;
  }
  const generate_result c = f.collected->result(cancelled);
  CHECK(c.reason == finish_reason::cancelled);
  CHECK(c.error == error_code::cancelled);
  CHECK(c.usage.completion_tokens >= 1);
  CHECK(c.usage.completion_tokens < 600);
  for (const auto& [id, code] : failing) {
    const generate_result r = f.collected->result(id);
    CHECK(r.reason == finish_reason::error);
    CHECK_MESSAGE(r.error == code, r.message);
    CHECK_FALSE(r.message.empty());
  }
  const engine_stats s = f.stats();
  CHECK(s.generated_tokens == produced + c.usage.completion_tokens);
  CHECK(s.running == 0);
  CHECK(s.waiting == 0);
  MESSAGE("16 requests produced ", produced, " tokens in ", s.steps, " steps; the cancelled one stopped after ",
          c.usage.completion_tokens, "; errors: ", failing.size(), " requests refused with their codes");
}

TEST_CASE("a stop string ends the output just before it") {
  engine_fixture f;
  const auto plain = request("The while statement is used for", 0, 0, 40);
  const uint64_t first = f.generate(plain);
  REQUIRE(f.collected->wait_finished({first}));
  const generate_result full_result = f.collected->result(first);
  std::string full;
  {
    std::lock_guard lock(f.collected->m);
    full = f.collected->text[first];
  }
  REQUIRE(full.size() > 12);
  const std::string stop = full.substr(full.size() / 2, 4);
  const std::string expected = full.substr(0, full.find(stop));

  auto stopped = plain;
  stopped.stop = {stop};
  const uint64_t id = f.generate(stopped);
  REQUIRE(f.collected->wait_finished({id}));
  const generate_result r = f.collected->result(id);
  CHECK(r.reason == finish_reason::stop);
  CHECK(r.error == error_code::none);
  CHECK(r.usage.completion_tokens < full_result.usage.completion_tokens);
  std::lock_guard lock(f.collected->m);
  CHECK(f.collected->text[id] == expected);
  MESSAGE("stop string \"", stop, "\": ", expected.size(), " of ", full.size(), " bytes sent, ",
          r.usage.completion_tokens, " of ", full_result.usage.completion_tokens, " tokens");
}

TEST_CASE("two executors keep two steps in flight and give the same outputs") {
  engine_config c = engine_fixture::small_config();
  c.streams = 2;
  engine_fixture f(c);
  const auto requests = sixteen_requests();
  outputs_match_generator(f, requests);
}

namespace {

// Delegates to a real backend but throws on one chosen forward pass.
class failing_backend final : public backend {
 public:
  failing_backend(std::shared_ptr<backend> inner, int32_t fail_at) : inner_(std::move(inner)), fail_at_(fail_at) {}
  const model_config& config() const override { return inner_->config(); }
  const kv_layout& layout() const override { return inner_->layout(); }
  void forward(const forward_batch& batch, std::vector<float>& logits) override {
    if (calls_++ == fail_at_) throw error("injected failure");
    inner_->forward(batch, logits);
  }

 private:
  std::shared_ptr<backend> inner_;
  int32_t fail_at_;
  int32_t calls_ = 0;
};

} // namespace

TEST_CASE("an executor failure ends its step's requests with internal and the engine keeps serving") {
  backend_factory flaky = [](const loaded_model& m, int32_t num_pages, const engine_config& c) {
    return std::make_shared<failing_backend>(cpu_backend_factory()(m, num_pages, c), 4);
  };
  // Two executors: the failed step holds only some of the requests.
  engine_config c = engine_fixture::small_config();
  c.streams = 2;
  engine_fixture f(c, flaky);
  const auto requests = sixteen_requests();
  std::vector<uint64_t> ids;
  for (size_t i = 0; i < 6; ++i) ids.push_back(f.generate(requests[i]));
  REQUIRE(f.collected->wait_finished(ids));
  int failed = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const generate_result r = f.collected->result(ids[i]);
    if (r.error == error_code::internal) {
      ++failed;
      CHECK(r.reason == finish_reason::error);
      CHECK(r.message == "injected failure");
      continue;
    }
    CHECK(r.error == error_code::none);
    std::lock_guard lock(f.collected->m);
    CHECK(f.collected->tokens[ids[i]] == reference(requests[i]));
  }
  CHECK(failed >= 1);
  CHECK(failed < 6);
  const uint64_t later = f.generate(requests[7]);
  REQUIRE(f.collected->wait_finished({later}));
  CHECK(f.collected->result(later).error == error_code::none);
  std::lock_guard lock(f.collected->m);
  CHECK(f.collected->tokens[later] == reference(requests[7]));
  MESSAGE("the failed step ended ", failed, " of 6 requests with `internal`; a later request completed");
}

namespace {

// Samples where the logits are, as a device backend does: forward, then
// sample_token with each row's history. Counts the rows that had one.
class sampling_backend final : public backend {
 public:
  sampling_backend(std::shared_ptr<backend> inner, std::shared_ptr<std::atomic<int32_t>> rows_with_history)
      : inner_(std::move(inner)), rows_with_history_(std::move(rows_with_history)) {}
  const model_config& config() const override { return inner_->config(); }
  const kv_layout& layout() const override { return inner_->layout(); }
  void forward(const forward_batch& batch, std::vector<float>& logits) override { inner_->forward(batch, logits); }
  bool forward_and_sample(const forward_batch& batch, std::span<const sampling_params> params,
                          std::span<const std::span<const int32_t>> histories, std::span<const uint64_t> counters,
                          std::vector<int32_t>& tokens) override {
    inner_->forward(batch, logits_);
    const size_t vocab = size_t(config().vocab_size);
    tokens.clear();
    for (size_t r = 0; r < params.size(); ++r) {
      const std::span<const int32_t> history = histories.empty() ? std::span<const int32_t>() : histories[r];
      *rows_with_history_ += history.empty() ? 0 : 1;
      tokens.push_back(sample_token(std::span(logits_).subspan(r * vocab, vocab), params[r], history, counters[r]));
    }
    return true;
  }

 private:
  std::shared_ptr<backend> inner_;
  std::shared_ptr<std::atomic<int32_t>> rows_with_history_;
  std::vector<float> logits_;
};

} // namespace

TEST_CASE("a backend that samples gets the history of each row with a repetition penalty") {
  auto rows_with_history = std::make_shared<std::atomic<int32_t>>(0);
  backend_factory make = [rows_with_history](const loaded_model& m, int32_t num_pages, const engine_config& c) {
    return std::make_shared<sampling_backend>(cpu_backend_factory()(m, num_pages, c), rows_with_history);
  };
  engine_fixture f(engine_fixture::small_config(), make);
  auto requests = sixteen_requests();
  requests.resize(8);
  for (size_t i = 0; i < requests.size(); i += 2) requests[i].sampling.repetition_penalty = 1.3f;
  outputs_match_generator(f, requests);
  CHECK(*rows_with_history > 0);
}

TEST_CASE("a system prompt is pinned once computed and later requests reuse it") {
  engine_config c = engine_fixture::small_config();
  const std::string system_text =
      "You answer questions about the Python language reference. Answer briefly and precisely, "
      "quoting the grammar where it helps. ";
  c.system_prompts = {{"doc", system_text}};
  engine_fixture f(c);
  auto first = request("What is a list display?", 0, 0, 8);
  first.system = "doc";
  const uint64_t a = f.generate(first);
  REQUIRE(f.collected->wait_finished({a}));
  const engine_stats s = f.stats();
  const auto system_tokens = tok().encode(system_text, true);
  CHECK(s.pages_pinned == int32_t(system_tokens.size() / 16));

  auto second = request("What does the yield statement do?", 0, 0, 8);
  second.system = "doc";
  const uint64_t b = f.generate(second);
  REQUIRE(f.collected->wait_finished({b}));
  const generate_result r = f.collected->result(b);
  CHECK(r.usage.cached_tokens == int32_t(system_tokens.size() / 16 * 16));
  // The output is that of the system prompt's tokens followed by the user's.
  generate_request as_tokens = second;
  as_tokens.system.clear();
  as_tokens.prompt_tokens = system_tokens;
  const auto user = tok().encode(second.prompt, false);
  as_tokens.prompt_tokens.insert(as_tokens.prompt_tokens.end(), user.begin(), user.end());
  std::lock_guard lock(f.collected->m);
  CHECK(f.collected->tokens[b] == reference(as_tokens));
  MESSAGE("system prompt of ", system_tokens.size(), " tokens: ", s.pages_pinned, " pages pinned, ",
          r.usage.cached_tokens, " tokens reused by the next request");
}

TEST_CASE("the type-ID block registers the public message types") {
  // Not needed for an engine in one process (every test above runs without
  // it), but an application that prints or ships messages can add them.
  caf::actor_system_config cfg;
  cfg.add_message_types<caf::id_block::kvactor>();
  caf::actor_system sys{cfg};
  CHECK(std::string(caf::type_name<generation_done>::value) == "kvactor::generation_done");
  CHECK(caf::id_block::kvactor::end - caf::id_block::kvactor::begin == 8);
  CHECK(caf::to_string(caf::make_message(token_delta{3, "hi", {7}})).find("hi") != std::string::npos);
}


TEST_CASE("a bad configuration is refused before anything is spawned") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto refused = [&](engine_config c) {
    try {
      spawn_engine(sys, c);
    } catch (const error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  engine_config c = engine_fixture::small_config();
  c.page_size = 0;
  CHECK(refused(c) == "engine_config: page_size must be positive");
  c = engine_fixture::small_config();
  c.device = "cuda";
  CHECK(refused(c) == "engine_config: device \"cuda\" needs a backend factory; this build runs on \"cpu\"");
  c = engine_fixture::small_config();
  c.watermark_pages = 300;
  CHECK(refused(c) == "engine_config: watermark_pages 300 exceeds the 256 KV pages");
  c = engine_fixture::small_config();
  c.model_dir = "/nonexistent/model";
  CHECK(refused(c).find("/nonexistent/model") != std::string::npos);
}
