#include "runtime/generator.h"

#include <doctest/doctest.h>

#include <algorithm>

#include "runtime/cpu_backend.h"
#include "runtime/error.h"
#include "runtime/model_loader.h"

using namespace kvactor;

namespace {

model_config small_config() {
  model_config c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 128;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 256;
  c.layer_sliding = {false, false};
  c.weight_dtype = dtype::f32;
  return c;
}

const std::vector<int32_t> prompt{5, 17, 99, 3, 64, 2, 41, 8, 120, 7, 33};

generation_options greedy(int32_t max_tokens) {
  generation_options o;
  o.sampling.temperature = 0;
  o.max_tokens = max_tokens;
  return o;
}

} // namespace

TEST_CASE("greedy generation is deterministic and independent of the prefill chunk") {
  const loaded_model m = make_dummy_model(small_config(), 4);
  cpu_backend b(m.config, m.weights, 8, 4);
  const auto first = generate(b, prompt, greedy(20));
  CHECK(first.finish_reason == "length");
  CHECK(first.tokens.size() == 20);
  CHECK(generate(b, prompt, greedy(20)).tokens == first.tokens);
  for (int32_t chunk : {1, 3, 11}) {
    auto o = greedy(20);
    o.prefill_chunk = chunk;
    CHECK(generate(b, prompt, o).tokens == first.tokens);
  }
  // A shorter run is a prefix of a longer one.
  const auto shorter = generate(b, prompt, greedy(7));
  CHECK(shorter.tokens == std::vector<int32_t>(first.tokens.begin(), first.tokens.begin() + 7));
}

TEST_CASE("seeded sampling is reproducible and seed dependent") {
  const loaded_model m = make_dummy_model(small_config(), 4);
  cpu_backend b(m.config, m.weights, 16, 4);
  generation_options o;
  o.max_tokens = 24;
  o.sampling.seed = 1;
  const auto a = generate(b, prompt, o);
  CHECK(generate(b, prompt, o).tokens == a.tokens);
  o.sampling.seed = 2;
  CHECK(generate(b, prompt, o).tokens != a.tokens);
}

TEST_CASE("a stop token ends generation and is reported") {
  model_config c = small_config();
  const loaded_model m = make_dummy_model(c, 4);
  cpu_backend b(m.config, m.weights, 8, 4);
  const auto full = generate(b, prompt, greedy(20));
  const int32_t stop = full.tokens[5];
  const auto stop_at = std::find(full.tokens.begin(), full.tokens.end(), stop) - full.tokens.begin();
  const std::vector<int32_t> expected(full.tokens.begin(), full.tokens.begin() + stop_at + 1);

  auto o = greedy(20);
  o.stop_token_ids = {stop};
  std::vector<int32_t> streamed;
  const auto r = generate(b, prompt, o, [&](int32_t t) { streamed.push_back(t); });
  CHECK(r.finish_reason == "stop");
  CHECK(r.tokens == expected);
  CHECK(streamed == expected);

  // The config's eos ids stop too, unless ignored.
  c.eos_token_ids = {stop};
  cpu_backend with_eos(c, m.weights, 8, 4);
  CHECK(generate(with_eos, prompt, greedy(20)).tokens == expected);
  auto ignore = greedy(20);
  ignore.ignore_eos = true;
  const auto ignored = generate(with_eos, prompt, ignore);
  CHECK(ignored.finish_reason == "length");
  CHECK(ignored.tokens == full.tokens);
}

TEST_CASE("requests that do not fit are refused") {
  const loaded_model m = make_dummy_model(small_config(), 4);
  cpu_backend b(m.config, m.weights, 4, 4); // 16 positions
  CHECK_THROWS_WITH_AS(generate(b, {}, greedy(4)), "generate: empty prompt", error);
  CHECK(generate(b, prompt, greedy(6)).tokens.size() == 6); // positions up to 15
  CHECK_THROWS_WITH_AS(generate(b, prompt, greedy(7)), doctest::Contains("need 5 KV pages"), error);
}
