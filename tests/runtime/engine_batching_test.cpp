// Chunked prefill next to running decodes, and prefix reuse, through the
// whole scheduling loop (scheduler_core + kv_cache_manager + cpu_backend).
#include <doctest/doctest.h>

#include <algorithm>
#include <random>

#include "runtime/cpu_backend.h"
#include "runtime/model_loader.h"
#include "sync_engine.h"

using namespace kvactor;

namespace {

// Tiny, but with room for 10,000-token prompts.
model_config long_context_config() {
  model_config c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 1;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 16;
  c.max_position_embeddings = 16384;
  c.layer_sliding = {false};
  c.weight_dtype = dtype::f32;
  return c;
}

std::vector<int32_t> random_tokens(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> v(n);
  for (auto& t : v) t = int32_t(rng() % 64);
  return v;
}

using test::greedy;

struct fixture {
  explicit fixture(int32_t num_pages, int32_t prefill_chunk, bool prefix_cache = true)
      : model(make_dummy_model(long_context_config(), 3)),
        b(model.config, model.weights, num_pages, 16, 2),
        engine(b, scheduler(num_pages, prefill_chunk, prefix_cache), cache(num_pages, prefix_cache)) {}

  static scheduler_options scheduler(int32_t num_pages, int32_t prefill_chunk, bool prefix_cache) {
    scheduler_options o;
    o.budget = step_budget{16, 2048, 256, prefill_chunk};
    o.num_pages = num_pages;
    o.prefix_cache = prefix_cache;
    return o;
  }
  static kv_cache_options cache(int32_t num_pages, bool prefix_cache) {
    kv_cache_options o;
    o.num_pages = num_pages;
    o.page_size = 16;
    o.prefix_cache = prefix_cache;
    return o;
  }

  loaded_model model;
  cpu_backend b;
  test::sync_engine engine;
};

} // namespace

TEST_CASE("a 10,000-token prompt prefills in 5 chunks of 2,000 while 8 sequences keep decoding") {
  fixture f(700, 2000);
  for (seq_id id = 1; id <= 8; ++id) f.engine.add(greedy(id, random_tokens(8, uint32_t(id)), 40));
  const seq_id big = 100;
  f.engine.run([&](int64_t steps) {
    if (steps == 2) f.engine.add(greedy(big, random_tokens(10000, 99), 2));
  });

  std::vector<std::pair<int32_t, int32_t>> chunks; // (start, length)
  for (const auto& e : f.engine.life)
    if (e.id == big && e.stage == life_stage::prefill_chunk) chunks.emplace_back(e.start_pos, e.num_tokens);
  CHECK(chunks == std::vector<std::pair<int32_t, int32_t>>{{0, 2000}, {2000, 2000}, {4000, 2000},
                                                           {6000, 2000}, {8000, 2000}});

  // The window: from the step of the first chunk to that of the last.
  std::vector<size_t> window;
  for (size_t i = 0; i < f.engine.steps.size(); ++i) {
    const auto& s = f.engine.steps[i];
    auto at = std::find(s.seqs.begin(), s.seqs.end(), big);
    if (at != s.seqs.end() && s.num_tokens[size_t(at - s.seqs.begin())] == 2000) window.push_back(i);
  }
  REQUIRE(window.size() == 5);
  CHECK(window.back() - window.front() == 4); // consecutive steps
  int32_t decode_tokens = 0;
  for (size_t i = window.front(); i <= window.back(); ++i) {
    const auto& s = f.engine.steps[i];
    for (seq_id id = 1; id <= 8; ++id) {
      CHECK_MESSAGE(std::count(s.produced.begin(), s.produced.end(), id) == 1, "step ", i, ", sequence ", id);
      ++decode_tokens;
    }
  }
  MESSAGE("prefill of 10,000 tokens: ", chunks.size(), " chunks in steps ", window.front(), "-",
          window.back(), "; the 8 decoding sequences produced ", decode_tokens,
          " tokens in those steps (8 per step)");
  for (seq_id id = 1; id <= 8; ++id) CHECK(f.engine.outputs[id].size() == 40);
  CHECK(f.engine.outputs[big].size() == 2);
}

TEST_CASE("a request sharing a 1,000-token prefix reuses 992 cached tokens and forwards the rest") {
  const auto prefix = random_tokens(1000, 5);
  auto with_suffix = [&](uint32_t seed) {
    auto p = prefix;
    const auto suffix = random_tokens(24, seed);
    p.insert(p.end(), suffix.begin(), suffix.end());
    return p;
  };
  const int32_t max_tokens = 4;

  fixture f(200, 512);
  f.engine.add(greedy(1, with_suffix(1), max_tokens));
  f.engine.run();
  const size_t steps_before = f.engine.steps.size();
  f.engine.add(greedy(2, with_suffix(2), max_tokens));
  f.engine.run();

  const seq_event& done = f.engine.finished.at(2);
  CHECK(done.usage.prompt_tokens == 1024);
  CHECK(done.usage.cached_tokens == 992);
  int32_t forwarded = 0;
  for (size_t i = steps_before; i < f.engine.steps.size(); ++i) {
    const auto& s = f.engine.steps[i];
    for (size_t j = 0; j < s.seqs.size(); ++j)
      if (s.seqs[j] == 2) forwarded += s.num_tokens[j];
  }
  // The prompt's last 32 tokens, then one decode step per token but the last.
  CHECK(forwarded == 32 + (max_tokens - 1));
  CHECK(f.engine.kv().counters().hit_tokens == 992);
  MESSAGE("second request: prompt 1024 tokens, cached_tokens ", done.usage.cached_tokens, ", forwarded ",
          forwarded, " tokens (32 of the prompt + ", max_tokens - 1, " decode steps)");

  // The reused KV gives the same output as computing everything.
  fixture cold(200, 512, false);
  cold.engine.add(greedy(2, with_suffix(2), max_tokens));
  cold.engine.run();
  CHECK(cold.engine.finished.at(2).usage.cached_tokens == 0);
  CHECK(f.engine.outputs[2] == cold.engine.outputs[2]);
}
