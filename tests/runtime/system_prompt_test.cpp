// Pinned system prompts through the scheduling loop: prefilled by warm-up
// sequences, pinned under the cap, hit by requests naming them or merely
// starting with the same tokens, and swapped by a reload.
#include <doctest/doctest.h>

#include <numeric>

#include "runtime/cpu_backend.h"
#include "runtime/model_loader.h"
#include "sync_engine.h"

using namespace kvactor;

namespace {

model_config tiny_config() {
  model_config c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 1;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 16;
  c.max_position_embeddings = 4096;
  c.layer_sliding = {false};
  c.weight_dtype = dtype::f32;
  return c;
}

token_list tokens(size_t n, int32_t seed) {
  auto t = std::make_shared<std::vector<int32_t>>(n);
  for (size_t i = 0; i < n; ++i) (*t)[i] = int32_t((i * 7 + size_t(seed) * 13) % 64);
  return t;
}

using test::greedy;

std::vector<int32_t> concat(const token_list& a, std::vector<int32_t> b) {
  std::vector<int32_t> out(*a);
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

struct fixture {
  explicit fixture(int32_t num_pages = 64, bool prefix_cache = true)
      : model(make_dummy_model(tiny_config(), 5)),
        b(model.config, model.weights, num_pages, 16, 1),
        engine(b, scheduler(num_pages, prefix_cache), cache(num_pages, prefix_cache)) {}

  static scheduler_options scheduler(int32_t num_pages, bool prefix_cache) {
    scheduler_options o;
    o.budget = step_budget{16, 256, 8, 64};
    o.num_pages = num_pages;
    o.prefix_cache = prefix_cache;
    o.max_pinned_fraction = 0.5;
    return o;
  }
  static kv_cache_options cache(int32_t num_pages, bool prefix_cache) {
    kv_cache_options o;
    o.num_pages = num_pages;
    o.page_size = 16;
    o.prefix_cache = prefix_cache;
    o.max_pinned_fraction = 0.5;
    return o;
  }

  loaded_model model;
  cpu_backend b;
  test::sync_engine engine;
};

} // namespace

TEST_CASE("system prompts are prefilled and pinned by warm-ups that produce no output") {
  fixture f;
  const token_list doc = tokens(100, 1), chat = tokens(40, 2);
  const system_prompt_change change = f.engine.core().set_system_prompts({{"doc", doc}, {"chat", chat}}, 0);
  CHECK(change.refused.empty());
  CHECK(change.added == std::vector<std::string>{"doc", "chat"});
  CHECK_FALSE(f.engine.core().system_prompts_settled());
  // A second change while the first prefills is refused.
  CHECK(f.engine.core().set_system_prompts({}, 0).refused == "the previous system prompts are still being prefilled");
  f.engine.run();
  CHECK(f.engine.core().system_prompts_settled());
  CHECK(f.engine.core().system_prompt_failures().empty());
  CHECK(f.engine.outputs.empty());   // warm-ups emit no tokens...
  CHECK(f.engine.finished.empty());  // ...and no endings
  CHECK(f.engine.life.empty());      // ...and no lifecycle events
  CHECK(f.engine.core().counters().generated_tokens == 0);
  const kv_counters c = f.engine.kv().counters();
  CHECK(c.pins == 2);
  CHECK(c.pages_pinned == 100 / 16 + 40 / 16);
  CHECK(c.pages_used == c.pages_pinned);
}

TEST_CASE("a request naming the prompt, or merely starting with it, starts from its pinned pages") {
  fixture f;
  const token_list doc = tokens(100, 1);
  REQUIRE(f.engine.core().set_system_prompts({{"doc", doc}}, 0).refused.empty());
  f.engine.run();

  seq_params named = greedy(1, concat(doc, {5, 6, 7}), 4);
  named.system = "doc";
  named.system_tokens = 100;
  f.engine.add(named);
  f.engine.add(greedy(2, concat(doc, {9, 9}), 4)); // same tokens, no name
  f.engine.run();
  CHECK(f.engine.finished.at(1).usage.cached_tokens == 96);
  CHECK(f.engine.finished.at(2).usage.cached_tokens == 96);
  const kv_counters c = f.engine.kv().counters();
  CHECK(c.pinned_hits == 2);
  CHECK(c.pinned_hit_tokens == 2 * 96);

  // Outputs as without any pin.
  fixture cold;
  cold.engine.add(greedy(1, concat(doc, {5, 6, 7}), 4));
  cold.engine.run();
  CHECK(cold.engine.finished.at(1).usage.cached_tokens == 0);
  CHECK(f.engine.outputs.at(1) == cold.engine.outputs.at(1));
}

TEST_CASE("a reload unpins what is gone or changed and pins what is new") {
  fixture f;
  const token_list doc = tokens(100, 1), chat = tokens(40, 2), chat2 = tokens(48, 3), code = tokens(64, 4);
  REQUIRE(f.engine.core().set_system_prompts({{"doc", doc}, {"chat", chat}}, 0).refused.empty());
  f.engine.run();
  const system_prompt_change change =
      f.engine.core().set_system_prompts({{"chat", chat2}, {"code", code}, {"doc", doc}}, 0);
  CHECK(change.refused.empty());
  CHECK(change.kept == std::vector<std::string>{"doc"});
  CHECK(change.removed == std::vector<std::string>{"chat"});
  CHECK(change.added == std::vector<std::string>{"chat", "code"});
  f.engine.run();
  const kv_counters c = f.engine.kv().counters();
  CHECK(c.pins == 3);
  CHECK(c.pages_pinned == 6 + 3 + 4);
  CHECK(f.engine.kv().pool().consistent());

  // Removing everything unpins everything.
  REQUIRE(f.engine.core().set_system_prompts({}, 0).removed.size() == 3);
  f.engine.run();
  CHECK(f.engine.kv().counters().pins == 0);
  CHECK(f.engine.kv().counters().pages_pinned == 0);
}

TEST_CASE("prompts over max_pinned_fraction, repeated or empty are refused and change nothing") {
  fixture f(64); // the cap: 32 pages
  REQUIRE(f.engine.core().set_system_prompts({{"doc", tokens(100, 1)}}, 0).refused.empty());
  f.engine.run();
  const auto over = f.engine.core().set_system_prompts({{"doc", tokens(100, 1)}, {"big", tokens(450, 2)}}, 0);
  CHECK(over.refused ==
        "system prompt \"big\" (450 tokens) brings the pinned pages to 34, over the cap of 32: "
        "prefix_cache.max_pinned_fraction 0.5 of 64 KV pages");
  CHECK(over.added.empty());
  CHECK(f.engine.core().set_system_prompts({{"a", tokens(20, 1)}, {"a", tokens(20, 2)}}, 0).refused ==
        "system prompt \"a\" is given twice");
  CHECK(f.engine.core().set_system_prompts({{"a", tokens(0, 1)}}, 0).refused == "system prompt \"a\" has no tokens");
  f.engine.run();
  CHECK(f.engine.kv().counters().pins == 1);
  CHECK(f.engine.kv().counters().pages_pinned == 6);
}

TEST_CASE("with the prefix cache off nothing is prefilled or pinned") {
  fixture f(64, false);
  const auto change = f.engine.core().set_system_prompts({{"doc", tokens(100, 1)}}, 0);
  CHECK(change.added == std::vector<std::string>{"doc"});
  CHECK(f.engine.core().system_prompts_settled());
  CHECK(f.engine.core().num_sequences() == 0);
}
