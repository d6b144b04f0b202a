#include "runtime/cpu_backend.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>

#include "runtime/error.h"
#include "runtime/model_loader.h"
#include "tests/logit_distance.h"
#include "tests/reference_data.h"

using namespace kvactor;
namespace json = boost::json;

namespace {

using test::argmax;
using test::numbers;
using test::read_json;

// ---- helpers ----------------------------------------------------------------

std::vector<int32_t> iota_pages(int32_t count, int32_t first = 0) {
  std::vector<int32_t> p(count);
  std::iota(p.begin(), p.end(), first);
  return p;
}

// Logits of the last token after feeding `tokens` at positions from `start`.
std::vector<float> step(backend& b, std::vector<int32_t> tokens, int32_t start,
                        const std::vector<int32_t>& pages) {
  forward_batch batch;
  batch.seqs.push_back({std::move(tokens), start, pages, true});
  std::vector<float> logits;
  b.forward(batch, logits);
  return logits;
}

// Feeds `prompt` from position 0 in chunks of `chunk`; the last chunk's logits.
std::vector<float> prefill(backend& b, const std::vector<int32_t>& prompt, size_t chunk,
                           const std::vector<int32_t>& pages) {
  std::vector<float> logits;
  for (size_t i = 0; i < prompt.size(); i += chunk) {
    size_t end = std::min(prompt.size(), i + chunk);
    logits = step(b, {prompt.begin() + i, prompt.begin() + end}, int32_t(i), pages);
  }
  return logits;
}

// Greedy continuation of `n` tokens after a prefill whose last logits are given.
std::vector<int32_t> greedy(backend& b, std::vector<float> logits, int32_t pos, int32_t n,
                            const std::vector<int32_t>& pages) {
  std::vector<int32_t> out;
  for (int32_t i = 0; i < n; ++i) {
    out.push_back(argmax(logits));
    if (i + 1 < n) logits = step(b, {out.back()}, pos++, pages);
  }
  return out;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

std::vector<int32_t> random_tokens(int32_t n, int32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = pick(rng);
  return t;
}

// A small GQA model; `variant` 1 adds q/k/v biases, q/k norms, a head_dim
// that is not hidden / heads and a sliding window on the second layer.
model_config test_config(int variant) {
  model_config c;
  c.architecture = variant ? "Qwen3ForCausalLM" : "LlamaForCausalLM";
  c.arch = variant ? model_arch::qwen3 : model_arch::llama;
  c.vocab_size = 301;
  c.hidden_size = 64;
  c.intermediate_size = 150;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = variant ? 20 : 16;
  c.max_position_embeddings = 1024;
  c.rms_norm_eps = 1e-5f;
  c.attention_bias = variant == 1;
  c.qk_norm = variant == 1;
  c.sliding_window = variant ? 13 : 0;
  c.layer_sliding = {false, variant == 1};
  c.weight_dtype = dtype::f32;
  return c;
}

// ---- reference data ---------------------------------------------------------

void check_against_reference(const std::string& name) {
  const auto dir = std::filesystem::path(KVACTOR_TEST_DATA) / "models" / name;
  REQUIRE_MESSAGE(std::filesystem::exists(dir / "reference.json"), "missing reference data in " << dir.string());
  const loaded_model m = load_model(dir.string());
  const json::value ref = read_json(dir / "reference.json");
  cpu_backend b(m.config, m.weights, 64, 4);
  const auto pages = iota_pages(64);
  float worst = 0;
  int matched = 0, cases = 0;

  for (const auto& seq : ref.at("logits").as_array()) {
    const auto tokens = numbers<int32_t>(seq.at("tokens"));
    const auto& expected = seq.at("logits").as_array();
    REQUIRE(expected.size() == tokens.size());
    for (size_t p = 0; p < tokens.size(); ++p) {
      const auto want = numbers<float>(expected[p]);
      // The prefix up to p as one prefill, then token p alone after p steps.
      const auto whole = step(b, {tokens.begin(), tokens.begin() + p + 1}, 0, pages);
      worst = std::max(worst, max_abs_diff(whole, want));
      CHECK_MESSAGE(max_abs_diff(whole, want) < 1e-3f, name << " prefill, position " << p);
    }
    for (size_t p = 0; p < tokens.size(); ++p) {
      const auto one = step(b, {tokens[p]}, int32_t(p), pages);
      worst = std::max(worst, max_abs_diff(one, numbers<float>(expected[p])));
      CHECK_MESSAGE(max_abs_diff(one, numbers<float>(expected[p])) < 1e-3f, name << " decode, position " << p);
    }
  }
  for (const auto& g : ref.at("greedy").as_array()) {
    const auto prompt = numbers<int32_t>(g.at("prompt"));
    const auto output = numbers<int32_t>(g.at("output"));
    const auto got = greedy(b, prefill(b, prompt, prompt.size(), pages), int32_t(prompt.size()),
                            int32_t(output.size()), pages);
    CHECK_MESSAGE(got == output, name << " greedy, min_margin " << g.at("min_margin").to_number<double>());
    matched += got == output;
    ++cases;
  }
  MESSAGE(name << ": max |logit - HF float64| over every position " << worst << "; greedy continuations identical "
               << matched << "/" << cases);
}

} // namespace

// ---- tests ------------------------------------------------------------------

TEST_CASE("logits and greedy output match transformers on every reference model") {
  for (std::string name : {"llama2", "llama3", "mistral", "qwen2", "qwen3"}) {
    CAPTURE(name);
    check_against_reference(name);
  }
}

TEST_CASE("chunked prefill gives the same logits and continuation as one prefill") {
  for (int variant : {0, 1}) {
    CAPTURE(variant);
    const loaded_model m = make_dummy_model(test_config(variant), 7);
    const auto prompt = random_tokens(200, m.config.vocab_size, 1);
    const auto pages = iota_pages(16);
    std::vector<float> first_logits;
    std::vector<int32_t> first_output;
    float worst = 0;
    for (size_t chunk : {200, 64, 7, 1}) {
      CAPTURE(chunk);
      cpu_backend b(m.config, m.weights, 16, 16);
      const auto logits = prefill(b, prompt, chunk, pages);
      const auto output = greedy(b, logits, 200, 16, pages);
      if (first_logits.empty()) {
        first_logits = logits;
        first_output = output;
      }
      worst = std::max(worst, max_abs_diff(logits, first_logits));
      CHECK(max_abs_diff(logits, first_logits) < 1e-4f);
      CHECK(output == first_output);
    }
    MESSAGE("model variant " << variant << ": 200-token prompt in chunks of 200, 64, 7, 1: max last-position logit "
            "difference " << worst << ", 16-token greedy continuations identical");
  }
}

TEST_CASE("a mixed batch gives each sequence the logits it gets alone") {
  for (int variant : {0, 1}) {
    CAPTURE(variant);
    const loaded_model m = make_dummy_model(test_config(variant), 11);
    const int32_t vocab = m.config.vocab_size;
    const auto a = random_tokens(50, vocab, 2), bt = random_tokens(31, vocab, 3);
    const auto c = random_tokens(18, vocab, 4);
    const auto pa = iota_pages(8, 0), pb = iota_pages(8, 8), pc = iota_pages(8, 16);
    const int32_t a_done = 20; // A is mid-prefill; B and C decode their last token

    cpu_backend alone(m.config, m.weights, 24, 8);
    prefill(alone, {a.begin(), a.begin() + a_done}, 64, pa);
    const auto want_a = step(alone, {a.begin() + a_done, a.end()}, a_done, pa);
    prefill(alone, {bt.begin(), bt.end() - 1}, 64, pb);
    const auto want_b = step(alone, {bt.back()}, 30, pb);
    prefill(alone, {c.begin(), c.end() - 1}, 64, pc);
    const auto want_c = step(alone, {c.back()}, 17, pc);

    cpu_backend mixed(m.config, m.weights, 24, 8);
    prefill(mixed, {a.begin(), a.begin() + a_done}, 64, pa);
    prefill(mixed, {bt.begin(), bt.end() - 1}, 64, pb);
    prefill(mixed, {c.begin(), c.end() - 1}, 64, pc);
    forward_batch batch;
    batch.seqs.push_back({{a.begin() + a_done, a.end()}, a_done, pa, true});
    batch.seqs.push_back({{bt.back()}, 30, pb, true});
    batch.seqs.push_back({{c.back()}, 17, pc, true});
    std::vector<float> logits;
    mixed.forward(batch, logits);
    REQUIRE(logits.size() == size_t(3 * vocab));
    // Exact: no element's arithmetic depends on the rest of the batch.
    CHECK(std::equal(want_a.begin(), want_a.end(), logits.begin()));
    CHECK(std::equal(want_b.begin(), want_b.end(), logits.begin() + vocab));
    CHECK(std::equal(want_c.begin(), want_c.end(), logits.begin() + 2 * vocab));

    // Rows only for the sequences that ask, in batch order.
    batch.seqs[0].want_logits = false;
    mixed.forward(batch, logits);
    REQUIRE(logits.size() == size_t(2 * vocab));
    CHECK(std::equal(want_b.begin(), want_b.end(), logits.begin()));
    CHECK(std::equal(want_c.begin(), want_c.end(), logits.begin() + vocab));
  }
}

TEST_CASE("shuffled, non-contiguous page ids give identical logits") {
  for (int variant : {0, 1}) {
    CAPTURE(variant);
    const loaded_model m = make_dummy_model(test_config(variant), 5);
    const auto prompt = random_tokens(45, m.config.vocab_size, 6);
    const std::vector<int32_t> shuffled{29, 3, 17, 8, 30, 12, 0, 21};

    cpu_backend straight(m.config, m.weights, 32, 8);
    cpu_backend scattered(m.config, m.weights, 32, 8);
    auto want = prefill(straight, prompt, 16, iota_pages(8));
    auto got = prefill(scattered, prompt, 16, shuffled);
    CHECK(std::equal(want.begin(), want.end(), got.begin(), got.end()));
    for (int32_t pos = 45; pos < 60; ++pos) {
      want = step(straight, {argmax(want)}, pos, iota_pages(8));
      got = step(scattered, {argmax(got)}, pos, shuffled);
      CHECK(std::equal(want.begin(), want.end(), got.begin(), got.end()));
    }
  }
}

TEST_CASE("invalid input throws a clear error") {
  const loaded_model m = make_dummy_model(test_config(0), 1);
  cpu_backend b(m.config, m.weights, 4, 8);
  std::vector<float> logits;
  auto run = [&](std::vector<int32_t> tokens, int32_t start, std::vector<int32_t> pages) {
    forward_batch batch;
    batch.seqs.push_back({std::move(tokens), start, std::move(pages), true});
    b.forward(batch, logits);
  };
  CHECK_THROWS_WITH_AS(run({1, 301}, 0, {0}), doctest::Contains("token id 301"), error);
  CHECK_THROWS_WITH_AS(run({-1}, 0, {0}), doctest::Contains("token id -1"), error);
  CHECK_THROWS_WITH_AS(run(random_tokens(9, 301, 1), 0, {0}), doctest::Contains("page table has 1 pages"),
                       error);
  CHECK_THROWS_WITH_AS(run({1}, 8, {0}), doctest::Contains("need 2"), error);
  CHECK_THROWS_WITH_AS(run({1}, 0, {4}), doctest::Contains("page id 4"), error);
  CHECK_THROWS_WITH_AS(run({}, 0, {0}), doctest::Contains("no new tokens"), error);
  CHECK_THROWS_WITH_AS(run({1}, -1, {0}), doctest::Contains("negative start_pos"), error);

  model_config wrong = m.config;
  wrong.intermediate_size = 100;
  CHECK_THROWS_WITH_AS(cpu_backend(wrong, m.weights, 4, 8),
                       doctest::Contains("layers.0.gate_proj has shape [150, 64]"), error);
  CHECK_THROWS_AS(cpu_backend(m.config, m.weights, 0, 8), error);
}

// Run with --no-skip: prints prefill and decode speed of a small model.
TEST_CASE("throughput of a hidden 256, 4 layer model" * doctest::skip()) {
  model_config c = test_config(0);
  c.vocab_size = 2048;
  c.hidden_size = 256;
  c.intermediate_size = 768;
  c.num_layers = 4;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.head_dim = 32;
  c.layer_sliding.assign(4, false);
  const loaded_model m = make_dummy_model(c, 3);
  cpu_backend b(m.config, m.weights, 64, 16);
  const auto prompt = random_tokens(512, c.vocab_size, 9);
  const auto pages = iota_pages(64);
  using clock = std::chrono::steady_clock;

  prefill(b, prompt, 512, pages); // warm up
  auto t0 = clock::now();
  const int reps = 4;
  for (int i = 0; i < reps; ++i) prefill(b, prompt, 512, pages);
  const double prefill_s = std::chrono::duration<double>(clock::now() - t0).count();

  auto logits = prefill(b, {prompt.begin(), prompt.begin() + 128}, 128, pages);
  const int steps = 256;
  t0 = clock::now();
  for (int32_t i = 0; i < steps; ++i) logits = step(b, {argmax(logits)}, 128 + i, pages);
  const double decode_s = std::chrono::duration<double>(clock::now() - t0).count();

  MESSAGE("prefill " << reps * 512 / prefill_s << " tokens/s, decode " << steps / decode_s << " tokens/s");
}
