// A request's output must not depend on what it is batched with, how its
// prompt is chunked, whether its prefix came from the cache, or whether it
// was preempted and recomputed. Six requests on the default model, each run
// alone and through the one-request generator, must give byte-identical
// output under every engine configuration below.
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "runtime/cpu_backend.h"
#include "runtime/default_model.h"
#include "runtime/generator.h"
#include "runtime/model_loader.h"
#include "runtime/tokenizer.h"
#include "sync_engine.h"

using namespace kvactor;

namespace {

const loaded_model& model() {
  static const loaded_model m = load_model(default_model_dir());
  return m;
}

const tokenizer& tok() {
  static const tokenizer t = tokenizer::from_file(default_model_dir() + "/tokenizer.json");
  return t;
}

sampling_params sampling(float temperature, uint64_t seed) {
  sampling_params p;
  p.temperature = temperature;
  p.seed = seed;
  return p;
}

// Shares a preamble of several pages, so the prefix cache has work to do.
std::vector<seq_params> make_requests() {
  const std::string preamble =
      "This chapter explains the meaning of the elements of expressions in Python. "
      "Syntax notes: in this and the following chapters, extended BNF notation will be "
      "used to describe syntax, not lexical analysis. ";
  struct spec {
    std::string ending;
    sampling_params sampling;
    int32_t max_tokens;
  };
  std::vector<spec> specs{
      {"When a description of an arithmetic operator below uses the phrase", sampling(0, 0), 40},
      {"An identifier occurring as an atom is a name.", sampling(0.8f, 11), 32},
      {"The import statement", sampling(1.0f, 12), 36},
      {"A parenthesized form is an optional expression list enclosed in parentheses.", sampling(0, 0), 28},
      {"Generator expressions", sampling(0.7f, 13), 40},
      {"The power operator binds more tightly than unary operators on its left;", sampling(1.2f, 14), 24},
  };
  specs[1].sampling.top_p = 0.9f;
  specs[2].sampling.top_k = 20;
  specs[3].sampling.repetition_penalty = 1.3f;
  specs[4].sampling.min_p = 0.05f;
  std::vector<seq_params> out;
  for (size_t i = 0; i < specs.size(); ++i) {
    seq_params p;
    p.id = seq_id(i + 1);
    p.prompt = std::make_shared<const std::vector<int32_t>>(tok().encode(preamble + specs[i].ending, true));
    p.sampling = specs[i].sampling;
    p.max_tokens = specs[i].max_tokens;
    p.stop_token_ids = model().config.eos_token_ids;
    out.push_back(std::move(p));
  }
  return out;
}

struct run_config {
  std::string name;
  bool reversed = false;     // arrival order; reversed also delays half of them
  int32_t prefill_chunk = 0; // 0 = unlimited
  bool prefix_cache = true;
  int32_t num_pages = 96;
  size_t depth = 1;          // steps in flight
};

struct run_result {
  std::map<seq_id, std::vector<int32_t>> outputs;
  int64_t preemptions = 0;
  int64_t hit_tokens = 0;
};

run_result run(const std::vector<seq_params>& requests, const run_config& c) {
  const int32_t page_size = 16;
  cpu_backend b(model().config, model().weights, c.num_pages, page_size, 2);
  scheduler_options so;
  so.budget = step_budget{page_size, 2048, 256, c.prefill_chunk};
  so.num_pages = c.num_pages;
  so.prefix_cache = c.prefix_cache;
  so.max_steps_in_flight = int32_t(c.depth);
  kv_cache_options ko;
  ko.num_pages = c.num_pages;
  ko.page_size = page_size;
  ko.prefix_cache = c.prefix_cache;
  test::sync_engine engine(b, so, ko, c.depth);

  std::vector<seq_params> order = requests;
  if (c.reversed) std::reverse(order.begin(), order.end());
  const size_t first_wave = c.reversed ? order.size() / 2 : order.size();
  for (size_t i = 0; i < first_wave; ++i) engine.add(order[i]);
  engine.run([&](int64_t steps) {
    if (steps == 3)
      for (size_t i = first_wave; i < order.size(); ++i) engine.add(order[i]);
  });
  for (const auto& r : requests) {
    REQUIRE(engine.finished.contains(r.id));
    CHECK(engine.finished[r.id].error == error_code::none);
  }
  CHECK(engine.kv().pool().consistent());
  CHECK(engine.kv().pool().num_free() == c.num_pages); // everything went back
  return {engine.outputs, engine.core().counters().preemptions, engine.kv().counters().hit_tokens};
}

} // namespace

TEST_CASE("outputs are identical alone, together, chunked, cached and preempted") {
  const auto requests = make_requests();

  // References: the one-request generator, then the engine with one request.
  std::map<seq_id, std::vector<int32_t>> reference;
  for (const auto& r : requests) {
    cpu_backend b(model().config, model().weights, 16, 16, 2);
    generation_options o;
    o.sampling = r.sampling;
    o.max_tokens = r.max_tokens;
    reference[r.id] = generate(b, *r.prompt, o).tokens;
    const auto alone = run({r}, run_config{"alone", false, 64});
    CHECK_MESSAGE(alone.outputs.at(r.id) == reference[r.id], "request ", r.id, " alone");
    MESSAGE("request ", r.id, ": prompt ", r.prompt->size(), " tokens, output ", reference[r.id].size(),
            " tokens: ", tok().decode(reference[r.id], true));
  }

  std::vector<run_config> configs;
  for (bool reversed : {false, true})
    for (int32_t chunk : {16, 64, 0})
      for (bool cache : {true, false})
        configs.push_back(run_config{std::string(reversed ? "reversed" : "in order") + ", chunk " +
                                         std::to_string(chunk) + (cache ? ", cache on" : ", cache off"),
                                     reversed, chunk, cache});
  // 14 pages of 16 tokens hold two of these requests at a time.
  for (bool cache : {true, false})
    configs.push_back(run_config{std::string("small pool, chunk 16") + (cache ? ", cache on" : ", cache off"),
                                 false, 16, cache, 14});
  configs.push_back(run_config{"small pool, reversed, chunk 64, cache on", true, 64, true, 14});
  configs.push_back(run_config{"two steps in flight, reversed, chunk 16, cache on", true, 16, true, 96, 2});

  for (const auto& c : configs) {
    const run_result r = run(requests, c);
    bool identical = true;
    for (const auto& req : requests) {
      const auto& got = r.outputs.at(req.id);
      identical = identical && got == reference[req.id] &&
                  tok().decode(got, false) == tok().decode(reference[req.id], false);
      CHECK_MESSAGE(got == reference[req.id], c.name, ": request ", req.id);
    }
    CHECK_MESSAGE(identical, c.name, ": token ids and decoded text");
    if (c.num_pages == 14) CHECK_MESSAGE(r.preemptions > 0, c.name);
    // Late arrivals and recomputes find the shared preamble cached.
    if (c.prefix_cache && (c.reversed || c.num_pages == 14)) CHECK_MESSAGE(r.hit_tokens > 0, c.name);
    MESSAGE(c.name, ": ", identical ? "identical" : "DIFFERENT", ", preemptions ", r.preemptions,
            ", prefix-cache hit tokens ", r.hit_tokens);
  }
}
