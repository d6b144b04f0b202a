#include "gpu/cuda_backend.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <numeric>
#include <random>
#include <string>

#include "runtime/cpu_backend.h"
#include "runtime/default_model.h"
#include "runtime/error.h"
#include "runtime/model_loader.h"
#include "runtime/sampler.h"
#include "runtime/sliding_window.h"
#include "sync_engine.h"
#include "tests/logit_distance.h"
#include "tests/reference_data.h"

using namespace kvactor;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

using test::argmax;
using test::cosine;
using test::numbers;
using test::read_json;
using test::rel_l2;

// bf16 weights and activations against fp32 / float64 references.
constexpr double max_rel_l2 = 2e-2;
// Where the fp32 top-1 / top-2 margin is below this, a bf16 greedy pick may
// legitimately differ.
constexpr float close_margin = 0.05f;

const std::vector<std::string> reference_models{"llama2", "llama3", "mistral", "qwen2", "qwen3"};

// ---- environment --------------------------------------------------------------

// The test data directory: $KVACTOR_TEST_DATA (the GPU machine has another
// checkout path), else the source tree's.
fs::path test_data() {
  const char* env = std::getenv("KVACTOR_TEST_DATA");
  return env && *env ? fs::path(env) : fs::path(KVACTOR_TEST_DATA);
}

// Fresh inputs on every run; the seed is captured so that a failure can be replayed.
uint32_t fresh_seed() {
  static std::random_device device;
  return device();
}

// One line of the run's summary; scripts/gpu_tests.sh collects them.
void summary(const std::string& line) {
  std::printf("summary: %s\n", line.c_str());
  std::fflush(stdout);
}

std::string fixed(double x, int digits = 4) {
  char text[32];
  std::snprintf(text, sizeof text, "%.*g", digits, x);
  return text;
}

// ---- helpers ------------------------------------------------------------------

std::vector<int32_t> iota_pages(int32_t count, int32_t first = 0) {
  std::vector<int32_t> p(static_cast<size_t>(count));
  std::iota(p.begin(), p.end(), first);
  return p;
}

// Logits of the last token after feeding `tokens` at positions from `start`.
// The output starts as NaN, so a row the backend does not write fails.
std::vector<float> step(backend& b, std::vector<int32_t> tokens, int32_t start, const std::vector<int32_t>& pages) {
  forward_batch batch;
  batch.seqs.push_back({std::move(tokens), start, pages, true});
  std::vector<float> logits(size_t(b.config().vocab_size), std::numeric_limits<float>::quiet_NaN());
  b.forward(batch, logits);
  return logits;
}

// Feeds `prompt` from position 0 in chunks of `chunk`; the last chunk's logits.
std::vector<float> prefill(backend& b, const std::vector<int32_t>& prompt, size_t chunk,
                           const std::vector<int32_t>& pages) {
  std::vector<float> logits;
  for (size_t i = 0; i < prompt.size(); i += chunk) {
    const size_t end = std::min(prompt.size(), i + chunk);
    logits = step(b, {prompt.begin() + ptrdiff_t(i), prompt.begin() + ptrdiff_t(end)}, int32_t(i), pages);
  }
  return logits;
}

// Top-1 minus top-2.
float margin(std::vector<float> v) {
  std::partial_sort(v.begin(), v.begin() + 2, v.end(), std::greater<float>());
  return v[0] - v[1];
}

std::vector<float> row(const std::vector<float>& logits, size_t r, size_t vocab) {
  return {logits.begin() + ptrdiff_t(r * vocab), logits.begin() + ptrdiff_t((r + 1) * vocab)};
}

std::vector<int32_t> random_tokens(int32_t n, int32_t vocab, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> pick(0, vocab - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = pick(rng);
  return t;
}

std::unique_ptr<cuda_backend> gpu_backend(const loaded_model& m, int32_t num_pages, int32_t page_size,
                                          kv_format format = kv_format::bf16) {
  return std::make_unique<cuda_backend>(
      std::make_shared<cuda_model>(m.config, *m.weights, num_pages, page_size, format));
}

// ---- greedy decoding ----------------------------------------------------------

// `n` greedy tokens after prefilling `prompt` whole.
std::vector<int32_t> greedy(backend& b, const std::vector<int32_t>& prompt, size_t n,
                            const std::vector<int32_t>& pages) {
  std::vector<float> logits = prefill(b, prompt, prompt.size(), pages);
  std::vector<int32_t> out;
  for (size_t i = 0; i < n; ++i) {
    out.push_back(argmax(logits));
    if (i + 1 < n) logits = step(b, {out.back()}, int32_t(prompt.size() + i), pages);
  }
  return out;
}

// The logits before each token of `output`, feeding `output` itself.
std::vector<std::vector<float>> teacher_forced(backend& b, const std::vector<int32_t>& prompt,
                                               const std::vector<int32_t>& output, const std::vector<int32_t>& pages) {
  std::vector<std::vector<float>> trace{prefill(b, prompt, prompt.size(), pages)};
  for (size_t i = 0; i + 1 < output.size(); ++i)
    trace.push_back(step(b, {output[i]}, int32_t(prompt.size() + i), pages));
  return trace;
}

// The GPU's free-running greedy continuation must equal the reference up to
// the first step whose fp32 margin is below close_margin; fed the reference
// tokens, its pick must agree at every step with a clear margin. Returns how
// many tokens the free run matched.
size_t check_greedy(const std::string& label, backend& gpu, backend& cpu, const std::vector<int32_t>& prompt,
                    const std::vector<int32_t>& want, const std::vector<int32_t>& pages) {
  const auto got = greedy(gpu, prompt, want.size(), pages);
  std::vector<float> margins;
  for (const auto& logits : teacher_forced(cpu, prompt, want, pages)) margins.push_back(margin(logits));
  size_t first = 0;
  while (first < want.size() && got[first] == want[first]) ++first;
  std::string line = label + ": free run " + std::to_string(first) + "/" + std::to_string(want.size());
  if (first < want.size()) {
    line += " (first difference at step " + std::to_string(first) + ", fp32 margin " + fixed(margins[first], 3) + ")";
    CHECK_MESSAGE(margins[first] < close_margin, line);
  }
  const auto forced = teacher_forced(gpu, prompt, want, pages);
  size_t agree = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const bool same = argmax(forced[i]) == want[i];
    agree += same ? 1 : 0;
    if (margins[i] >= close_margin) CHECK_MESSAGE(same, label << ": teacher-forced step " << i);
  }
  line += ", teacher-forced " + std::to_string(agree) + "/" + std::to_string(want.size());
  summary(line);
  return first;
}

// ---- small models of other shapes ---------------------------------------------

// 0: Llama 3 style, 4 q heads per kv head, head_dim 128, llama3 rope scaling
//    (original length 64, so it changes frequencies at the test's positions),
//    tied embeddings.
// 1: Qwen style, q/k/v biases, q/k norms, 3 q heads per kv head (ragged
//    attention tiles), head_dim 64 with q_dim != hidden, a sliding window of
//    37 on the middle one of 3 layers.
// 2: multi-head attention of head_dim 256 with a window of 20 on every layer.
model_config dummy_config(int variant) {
  model_config c;
  c.vocab_size = 512;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-5f;
  c.weight_dtype = dtype::f32;
  c.hidden_size = 256;
  switch (variant) {
    case 0:
      c.architecture = "LlamaForCausalLM";
      c.arch = model_arch::llama;
      c.intermediate_size = 512;
      c.num_layers = 2;
      c.num_heads = 4;
      c.num_kv_heads = 1;
      c.head_dim = 128;
      c.rope = rope_config{500000.0f, "llama3", 8.0f, 1.0f, 4.0f, 64};
      c.tie_word_embeddings = true;
      c.layer_sliding = {false, false};
      break;
    case 1:
      c.architecture = "Qwen3ForCausalLM";
      c.arch = model_arch::qwen3;
      c.intermediate_size = 384;
      c.num_layers = 3;
      c.num_heads = 6;
      c.num_kv_heads = 2;
      c.head_dim = 64;
      c.rope.theta = 1000000.0f;
      c.attention_bias = true;
      c.qk_norm = true;
      c.sliding_window = 37;
      c.layer_sliding = {false, true, false};
      break;
    default:
      c.architecture = "MistralForCausalLM";
      c.arch = model_arch::mistral;
      c.intermediate_size = 256;
      c.num_layers = 2;
      c.num_heads = 2;
      c.num_kv_heads = 2;
      c.head_dim = 256;
      c.sliding_window = 20;
      c.layer_sliding = {true, true};
      break;
  }
  return c;
}

} // namespace

// ---- tests --------------------------------------------------------------------

TEST_CASE("logits match the float64 reference at every position of every reference model") {
  for (const std::string& name : reference_models) {
    CAPTURE(name);
    const fs::path dir = test_data() / "models" / name;
    const json::value ref = read_json(dir / "reference.json");
    auto gpu = load_cuda_backend(dir.string(), 512, 4);
    const size_t vocab = size_t(gpu->config().vocab_size);
    double worst_prefill = 0, worst_decode = 0, worst_batch = 0;
    for (const auto& seq : ref.at("logits").as_array()) {
      const auto tokens = numbers<int32_t>(seq.at("tokens"));
      const auto& expected = seq.at("logits").as_array();
      REQUIRE(expected.size() == tokens.size());
      REQUIRE(tokens.size() <= 40);
      // Each prefix as one prefill (pages 0-9); token by token (pages 10-19);
      // every prefix as its own sequence of one batch (10 pages each from 20).
      forward_batch all;
      for (size_t p = 0; p < tokens.size(); ++p) {
        CAPTURE(p);
        const auto want = numbers<float>(expected[p]);
        const std::vector<int32_t> prefix(tokens.begin(), tokens.begin() + ptrdiff_t(p + 1));
        const double whole = rel_l2(step(*gpu, prefix, 0, iota_pages(10, 0)), want);
        const double one = rel_l2(step(*gpu, {tokens[p]}, int32_t(p), iota_pages(10, 10)), want);
        CHECK(whole < max_rel_l2);
        CHECK(one < max_rel_l2);
        worst_prefill = std::max(worst_prefill, whole);
        worst_decode = std::max(worst_decode, one);
        all.seqs.push_back({prefix, 0, iota_pages(10, 20 + 10 * int32_t(p)), true});
      }
      std::vector<float> logits(all.seqs.size() * vocab, std::numeric_limits<float>::quiet_NaN());
      gpu->forward(all, logits);
      REQUIRE(logits.size() == all.seqs.size() * vocab);
      for (size_t p = 0; p < tokens.size(); ++p) {
        const double batched = rel_l2(row(logits, p, vocab), numbers<float>(expected[p]));
        CHECK_MESSAGE(batched < max_rel_l2, "batched prefix " << p);
        worst_batch = std::max(worst_batch, batched);
      }
    }
    summary("reference logits " + name + ": max rel-L2 prefill " + fixed(worst_prefill) + ", decode " +
            fixed(worst_decode) + ", all prefixes in one batch " + fixed(worst_batch));
  }
}

TEST_CASE("greedy continuations match the reference wherever the fp32 margin is clear") {
  size_t matched = 0, total = 0;
  for (const std::string& name : reference_models) {
    CAPTURE(name);
    const fs::path dir = test_data() / "models" / name;
    const json::value ref = read_json(dir / "reference.json");
    auto gpu = load_cuda_backend(dir.string(), 64, 4);
    const loaded_model m = load_model(dir.string());
    cpu_backend cpu(m.config, m.weights, 64, 4, 1);
    int index = 0;
    for (const auto& g : ref.at("greedy").as_array()) {
      const auto output = numbers<int32_t>(g.at("output"));
      matched += check_greedy("greedy " + name + " case " + std::to_string(index++), *gpu, cpu,
                              numbers<int32_t>(g.at("prompt")), output, iota_pages(64));
      total += output.size();
    }
  }

  // The embedded default model (bf16 weights) and its own reference.
  const std::string dir = default_model_dir();
  const loaded_model m = load_model(dir);
  auto gpu = load_cuda_backend(dir, 64, 16);
  cpu_backend cpu(m.config, m.weights, 64, 16, 1);
  const json::value ref = read_json(test_data() / "models" / "default_reference.json");
  int index = 0;
  double worst = 0;
  for (const auto& c : ref.as_array()) {
    const auto ids = numbers<int32_t>(c.at("ids"));
    const double err = rel_l2(step(*gpu, ids, 0, iota_pages(64)), numbers<float>(c.at("last_logits")));
    CHECK(err < max_rel_l2);
    worst = std::max(worst, err);
    const auto output = numbers<int32_t>(c.at("greedy"));
    matched += check_greedy("greedy default case " + std::to_string(index++), *gpu, cpu, ids, output, iota_pages(64));
    total += output.size();
  }
  summary("reference logits default: max rel-L2 of the prompts' last logits " + fixed(worst));
  summary("greedy overall: free runs match " + std::to_string(matched) + "/" + std::to_string(total) + " tokens");
}

TEST_CASE("chunked prefill (chunks 1, 16, whole) agrees with whole-prompt prefill and with the fp32 CPU backend") {
  for (int variant : {0, 1, 2}) {
    const uint32_t seed = fresh_seed();
    CAPTURE(variant);
    CAPTURE(seed);
    const loaded_model m = make_dummy_model(dummy_config(variant), seed);
    std::mt19937 rng(seed);
    const int32_t vocab = m.config.vocab_size, prompt_len = 160, steps = 16, page_size = 8, num_pages = 32;
    const auto prompt = random_tokens(prompt_len, vocab, rng);
    auto pages = iota_pages(num_pages); // shuffled: page order must not matter
    std::shuffle(pages.begin(), pages.end(), rng);

    // Whole-prompt prefill, then `steps` greedy tokens; trace[i] are the
    // logits before continuation[i].
    auto whole = gpu_backend(m, num_pages, page_size);
    std::vector<std::vector<float>> trace{prefill(*whole, prompt, prompt.size(), pages)};
    std::vector<int32_t> continuation;
    for (int32_t i = 0; i < steps; ++i) {
      continuation.push_back(argmax(trace.back()));
      trace.push_back(step(*whole, {continuation.back()}, prompt_len + i, pages));
    }

    // The same tokens through the fp32 CPU backend.
    cpu_backend cpu(m.config, m.weights, num_pages, page_size);
    double worst_cpu = rel_l2(trace[0], prefill(cpu, prompt, prompt.size(), pages));
    for (int32_t i = 0; i < steps; ++i)
      worst_cpu = std::max(worst_cpu, rel_l2(trace[size_t(i) + 1], step(cpu, {continuation[size_t(i)]}, prompt_len + i, pages)));
    // NOTE: the worst of 17 steps on a fresh random model, which bf16
    // activations put at 0.013 to 0.022 over many runs (model 1, with q/k
    // norms, the highest); the 2e-2 criterion itself is checked on the
    // reference models above and on the 1B shape (cuda_hf_compare_test).
    CHECK(worst_cpu < 1.5 * max_rel_l2);

    std::string line = "chunked prefill, model " + std::to_string(variant) + ": GPU vs fp32 CPU max rel-L2 " +
                       fixed(worst_cpu);
    for (size_t chunk : {size_t(1), size_t(16), size_t(prompt_len)}) {
      CAPTURE(chunk);
      auto b = gpu_backend(m, num_pages, page_size);
      std::vector<float> logits = prefill(*b, prompt, chunk, pages);
      double worst = 0;
      bool identical = true;
      for (int32_t i = 0; i <= steps; ++i) {
        const auto& want = trace[size_t(i)];
        identical = identical && logits == want;
        worst = std::max(worst, rel_l2(logits, want));
        if (margin(want) > close_margin) CHECK(argmax(logits) == argmax(want));
        if (i < steps) logits = step(*b, {continuation[size_t(i)]}, prompt_len + i, pages);
      }
      CHECK(worst < max_rel_l2);
      // Same inputs, same launches: anything but equal bits is a race.
      if (chunk == size_t(prompt_len)) CHECK(identical);
      line += ", chunk " + std::to_string(chunk) + " vs whole " + (identical ? "bit-identical" : fixed(worst));
    }
    summary(line);
  }
}

TEST_CASE("a mixed prefill + decode batch gives each sequence the logits it gets alone") {
  for (int variant : {0, 1, 2}) {
    const uint32_t seed = fresh_seed();
    CAPTURE(variant);
    CAPTURE(seed);
    const loaded_model m = make_dummy_model(dummy_config(variant), seed);
    std::mt19937 rng(seed);
    const int32_t vocab = m.config.vocab_size, page_size = 16;
    // A is mid-prefill (40 done, 50 new), B and D decode, C is a new prompt;
    // D wants no logits. Ten pages each.
    const auto a = random_tokens(90, vocab, rng), b = random_tokens(70, vocab, rng);
    const auto c = random_tokens(33, vocab, rng), d = random_tokens(130, vocab, rng);
    const auto pa = iota_pages(10, 0), pb = iota_pages(10, 10), pc = iota_pages(10, 20), pd = iota_pages(10, 30);
    const std::vector<int32_t> a_done(a.begin(), a.begin() + 40), a_new(a.begin() + 40, a.end());
    const std::vector<int32_t> b_done(b.begin(), b.end() - 1), d_done(d.begin(), d.end() - 1);

    auto alone = gpu_backend(m, 40, page_size);
    prefill(*alone, a_done, 64, pa);
    const auto want_a = step(*alone, a_new, 40, pa);
    prefill(*alone, b_done, 64, pb);
    const auto want_b = step(*alone, {b.back()}, 69, pb);
    const auto want_c = step(*alone, c, 0, pc);
    prefill(*alone, d_done, 64, pd);
    step(*alone, {d.back()}, 129, pd);

    const int32_t next = argmax(want_c);
    const auto want_d_next = step(*alone, {next}, 130, pd);

    // Decodes first, as the step planner orders a step, go to the decode
    // kernel; after a chunk they are attention tiles like the chunk's.
    for (bool decodes_first : {true, false}) {
      CAPTURE(decodes_first);
      auto mixed = gpu_backend(m, 40, page_size);
      prefill(*mixed, a_done, 64, pa);
      prefill(*mixed, b_done, 64, pb);
      prefill(*mixed, d_done, 64, pd);
      const seq_step sa{a_new, 40, pa, true}, sb{{b.back()}, 69, pb, true}, sc{c, 0, pc, true};
      const seq_step sd{{d.back()}, 129, pd, false};
      forward_batch batch;
      batch.seqs = decodes_first ? std::vector<seq_step>{sb, sd, sa, sc} : std::vector<seq_step>{sa, sb, sc, sd};
      std::vector<float> logits(size_t(3 * vocab), std::numeric_limits<float>::quiet_NaN());
      mixed->forward(batch, logits);
      REQUIRE(logits.size() == size_t(3 * vocab));
      const size_t row_a = decodes_first ? 1 : 0, row_b = decodes_first ? 0 : 1;
      const double err_a = rel_l2(row(logits, row_a, size_t(vocab)), want_a);
      const double err_b = rel_l2(row(logits, row_b, size_t(vocab)), want_b);
      const double err_c = rel_l2(row(logits, 2, size_t(vocab)), want_c);
      CHECK(err_a < max_rel_l2);
      CHECK(err_b < max_rel_l2);
      CHECK(err_c < max_rel_l2);

      // D's K/V were written although it asked for no logits: its next step
      // agrees on both backends.
      const double err_d = rel_l2(step(*mixed, {next}, 130, pd), want_d_next);
      CHECK(err_d < max_rel_l2);
      summary("mixed batch, model " + std::to_string(variant) + (decodes_first ? ", decodes first" : ", chunk first") +
              ": rel-L2 vs alone: prefill chunk " + fixed(err_a) + ", decode " + fixed(err_b) + ", new prompt " +
              fixed(err_c) + ", no-logits decode's next step " + fixed(err_d));
    }
  }
}

TEST_CASE("invalid input throws a clear error") {
  const loaded_model m = make_dummy_model(dummy_config(1), 1);
  auto b = gpu_backend(m, 4, 8);
  std::vector<float> logits;
  auto run = [&](std::vector<int32_t> tokens, int32_t start, std::vector<int32_t> pages) {
    forward_batch batch;
    batch.seqs.push_back({std::move(tokens), start, std::move(pages), true});
    b->forward(batch, logits);
  };
  CHECK_THROWS_WITH_AS(run({1, 512}, 0, {0}), doctest::Contains("token id 512"), error);
  CHECK_THROWS_WITH_AS(run({-1}, 0, {0}), doctest::Contains("token id -1"), error);
  CHECK_THROWS_WITH_AS(run(std::vector<int32_t>(9, 1), 0, {0}), doctest::Contains("page table has 1 pages"), error);
  CHECK_THROWS_WITH_AS(run({1}, 8, {0}), doctest::Contains("need 2"), error);
  CHECK_THROWS_WITH_AS(run({1}, 0, {4}), doctest::Contains("page id 4"), error);
  CHECK_THROWS_WITH_AS(run({}, 0, {0}), doctest::Contains("no new tokens"), error);
  CHECK_THROWS_WITH_AS(run({1}, -1, {0}), doctest::Contains("negative start_pos"), error);
  // Sampling on the device: one params, history (or none at all) and
  // counter per logits row; history tokens in the vocabulary.
  forward_batch one;
  one.seqs.push_back({{1}, 0, {0}, true});
  std::vector<int32_t> tokens;
  const std::vector<uint64_t> counter{0};
  CHECK_THROWS_WITH_AS(b->forward_and_sample(one, {}, {}, counter, tokens), doctest::Contains("0 sampling params"),
                       error);
  sampling_params penalty;
  penalty.repetition_penalty = 1.2f;
  const std::vector<int32_t> outside{3, 512};
  const std::vector<std::span<const int32_t>> two{outside, outside};
  CHECK_THROWS_WITH_AS(b->forward_and_sample(one, {&penalty, 1}, two, counter, tokens),
                       doctest::Contains("2 histories"), error);
  CHECK_THROWS_WITH_AS(b->forward_and_sample(one, {&penalty, 1}, {two.data(), 1}, counter, tokens),
                       doctest::Contains("history token 512"), error);
  sampling_params zero = penalty;
  zero.repetition_penalty = 0.0f;
  CHECK_THROWS_WITH_AS(b->forward_and_sample(one, {&zero, 1}, {}, counter, tokens),
                       doctest::Contains("repetition_penalty must be > 0"), error);
  sampling_params negative;
  negative.temperature = -1.0f;
  CHECK_THROWS_WITH_AS(b->forward_and_sample(one, {&negative, 1}, {}, counter, tokens),
                       doctest::Contains("temperature must be >= 0"), error);
  // The backend still works after refusing a batch.
  const auto ok = step(*b, {1, 2, 3}, 0, {0});
  CHECK(std::all_of(ok.begin(), ok.end(), [](float x) { return std::isfinite(x); }));

  model_config odd = m.config;
  odd.head_dim = 20;
  const loaded_model odd_model = make_dummy_model(odd, 1);
  CHECK_THROWS_WITH_AS(gpu_backend(odd_model, 4, 8), doctest::Contains("head_dim 20 has no attention kernel"), error);
  model_config wrong = m.config;
  wrong.intermediate_size = 104;
  CHECK_THROWS_WITH_AS(cuda_backend(wrong, *m.weights, 4, 8),
                       doctest::Contains("layers.0.mlp.gate_proj.weight has shape [384, 256], expected [104, 256]"),
                       error);
  model_config ragged = m.config;
  ragged.intermediate_size = 100;
  CHECK_THROWS_WITH_AS(cuda_backend(ragged, *m.weights, 4, 8), doctest::Contains("must be multiples of 8"), error);
  CHECK_THROWS_AS(cuda_backend(m.config, *m.weights, 0, 8), error);
}

TEST_CASE("decode steps replayed from CUDA graphs equal the same steps run eagerly, bit for bit") {
  for (int variant : {0, 1, 2}) {
    const uint32_t seed = fresh_seed();
    CAPTURE(variant);
    CAPTURE(seed);
    const loaded_model m = make_dummy_model(dummy_config(variant), seed);
    std::mt19937 rng(seed);
    const int32_t vocab = m.config.vocab_size, page_size = 8, pages_each = 24;
    cuda_executor_options eager_options;
    eager_options.use_graphs = false;
    cuda_backend graphs(m.config, *m.weights, 5 * pages_each, page_size);
    cuda_backend eager(m.config, *m.weights, 5 * pages_each, page_size, eager_options);
    // Five sequences with prompts of different lengths, prefilled alike.
    std::vector<int32_t> length{70, 33, 9, 100, 150};
    std::vector<std::vector<int32_t>> pages;
    for (int32_t s = 0; s < 5; ++s) {
      pages.push_back(iota_pages(pages_each, s * pages_each));
      const auto prompt = random_tokens(length[size_t(s)], vocab, rng);
      CHECK(prefill(graphs, prompt, 64, pages.back()) == prefill(eager, prompt, 64, pages.back()));
    }
    // Decode steps of 1, 2, 3 (bucket 4), 5 (bucket 8) sequences, each size
    // more than once so that graphs replay; one sequence wants no logits.
    double worst = 0;
    bool identical = true;
    size_t steps = 0;
    for (int32_t n : {1, 2, 1, 3, 5, 2, 3, 5, 5, 1}) {
      forward_batch batch;
      for (int32_t s = 0; s < n; ++s) {
        const int32_t seq = (s + steps) % 5;
        batch.seqs.push_back({{int32_t(rng() % vocab)}, length[size_t(seq)]++, pages[size_t(seq)], !(n == 5 && s == 2)});
      }
      std::vector<float> a, b;
      graphs.forward(batch, a);
      eager.forward(batch, b);
      REQUIRE(a.size() == size_t(batch.num_logits() * vocab));
      identical = identical && a == b;
      worst = std::max(worst, rel_l2(a, b));
      CHECK(std::all_of(a.begin(), a.end(), [](float x) { return std::isfinite(x); }));
      ++steps;
    }
    CHECK(identical);
    CHECK(graphs.executor().graphs_captured() == 4);
    CHECK(eager.executor().graphs_captured() == 0);
    summary("decode graphs, model " + std::to_string(variant) + ": " + std::to_string(steps) + " steps, replayed vs eager " +
            (identical ? std::string("bit-identical") : "rel-L2 " + fixed(worst)));
  }
}

TEST_CASE("forward_and_sample picks the token sample_token picks from forward's logits, penalized or not") {
  const uint32_t seed = fresh_seed();
  CAPTURE(seed);
  const loaded_model m = make_dummy_model(dummy_config(0), seed);
  std::mt19937 rng(seed);
  const int32_t vocab = m.config.vocab_size, page_size = 16;
  cuda_backend b(m.config, *m.weights, 40, page_size);
  const std::vector<sampling_params> kinds{{0.0f, 1.0f, 0, 0.0f},  {0.8f, 1.0f, 20, 0.0f}, {1.2f, 0.9f, 0, 0.05f},
                                           {1.0f, 1.0f, 0, 0.0f},  {0.7f, 0.8f, 50, 0.02f}};
  std::vector<int32_t> length{30, 17, 64, 5, 90};
  std::vector<std::vector<int32_t>> history; // prompt and tokens so far
  for (int32_t s = 0; s < 5; ++s) {
    history.push_back(random_tokens(length[size_t(s)], vocab, rng));
    prefill(b, history.back(), 32, iota_pages(8, 8 * s));
  }
  int32_t equal = 0, total = 0, penalized = 0, changed = 0;
  // Decode steps (graphs) and a mixed step with a prefill chunk (general
  // plan); every other row, each kind in turn, with a repetition penalty.
  for (int32_t round = 0; round < 4; ++round) {
    forward_batch batch;
    std::vector<sampling_params> params;
    std::vector<std::span<const int32_t>> histories;
    std::vector<uint64_t> counters;
    for (int32_t s = 0; s < 5; ++s) {
      std::vector<int32_t> tokens{int32_t(rng() % vocab)};
      if (round == 3 && s == 1) tokens = random_tokens(9, vocab, rng);
      batch.seqs.push_back({tokens, length[size_t(s)], iota_pages(8, 8 * s), true});
      length[size_t(s)] += int32_t(tokens.size());
      auto& h = history[size_t(s)];
      h.insert(h.end(), tokens.begin(), tokens.end());
      sampling_params p = kinds[size_t(s + round) % kinds.size()];
      p.seed = rng();
      if ((s + round) % 2 == 1) p.repetition_penalty = 3.0f;
      params.push_back(p);
      histories.emplace_back(h);
      counters.push_back(uint64_t(round));
    }
    std::vector<float> logits;
    std::vector<int32_t> tokens;
    // Both write the same K/V into the same slots.
    b.forward(batch, logits);
    b.forward_and_sample(batch, params, histories, counters, tokens);
    REQUIRE(tokens.size() == 5);
    for (size_t r = 0; r < 5; ++r) {
      auto l = row(logits, r, size_t(vocab));
      std::vector<float> plain(l.begin(), l.end());
      const int32_t want = sample_token(l, params[r], histories[r], counters[r]);
      CHECK_MESSAGE(tokens[r] == want, "round " << round << " row " << r);
      equal += tokens[r] == want ? 1 : 0;
      ++total;
      if (params[r].repetition_penalty == 1.0f) continue;
      ++penalized;
      sampling_params off = params[r];
      off.repetition_penalty = 1.0f;
      changed += sample_token(plain, off, {}, counters[r]) != want ? 1 : 0;
    }
  }
  CHECK(changed > 0); // the penalty matters to these rows
  summary("forward_and_sample vs sample_token on forward's logits: " + std::to_string(equal) + "/" +
          std::to_string(total) + " tokens equal; the penalty changed " + std::to_string(changed) + " of " +
          std::to_string(penalized) + " penalized rows' tokens");
}

// ---- 8-bit KV -----------------------------------------------------------------

TEST_CASE("fp8 and int8 KV on the GPU: last-position logits of the reference prompts track bf16 KV (cosine >= 0.999)") {
  // The criterion of docs/kv_cache.md, as the CPU's kv_quant_quality_test
  // applies it: every reference prompt of every reference model, prefilled
  // whole, its last position's logits against the same with bf16 KV.
  std::string line = "8-bit KV, reference prompts, min last-position cosine vs bf16 KV:";
  for (const std::string& name : reference_models) {
    CAPTURE(name);
    const fs::path dir = test_data() / "models" / name;
    const loaded_model m = load_model(dir.string());
    const json::value ref = read_json(dir / "reference.json");
    auto bf16 = gpu_backend(m, 16, 16);
    auto fp8 = gpu_backend(m, 16, 16, kv_format::fp8), int8 = gpu_backend(m, 16, 16, kv_format::int8);
    double worst_fp8 = 1, worst_int8 = 1;
    for (const auto& seq : ref.at("logits").as_array()) {
      const auto tokens = numbers<int32_t>(seq.at("tokens"));
      const auto want = step(*bf16, tokens, 0, iota_pages(16));
      worst_fp8 = std::min(worst_fp8, cosine(step(*fp8, tokens, 0, iota_pages(16)), want));
      worst_int8 = std::min(worst_int8, cosine(step(*int8, tokens, 0, iota_pages(16)), want));
    }
    CHECK(worst_fp8 >= 0.999);
    CHECK(worst_int8 >= 0.999);
    line += " " + name + " fp8 " + fixed(worst_fp8, 6) + " int8 " + fixed(worst_int8, 6) + ";";
  }
  summary(line);
}

TEST_CASE("fp8 and int8 KV on the GPU: through prefill chunks and decoding, close to bf16 KV and to the CPU's same format") {
  // Each reference model, and model 0 above (head_dim 128, 4 q heads per kv
  // head). A random prompt prefilled in chunks of 7 (fp8 pages then take
  // several tokens a step, and continue pages earlier steps began), then 40
  // decode steps: every step's logits against bf16 KV on the GPU and against
  // the CPU backend storing the same format (fp32 weights there); then 256
  // greedy tokens against bf16 KV's, reported (near ties may go either way).
  struct subject {
    std::string name;
    loaded_model model;
  };
  std::vector<subject> subjects;
  for (const std::string& name : reference_models)
    subjects.push_back({name, load_model((test_data() / "models" / name).string())});
  const uint32_t seed = fresh_seed();
  CAPTURE(seed);
  subjects.push_back({"dummy d128", make_dummy_model(dummy_config(0), seed)});
  std::mt19937 rng(seed);
  const int32_t page_size = 16, num_pages = 24, prompt_len = 150, steps = 40; // 384 tokens
  for (const subject& sub : subjects) {
    CAPTURE(sub.name);
    const loaded_model& m = sub.model;
    const auto prompt = random_tokens(prompt_len, m.config.vocab_size, rng);
    auto pages = iota_pages(num_pages);
    std::shuffle(pages.begin(), pages.end(), rng);
    auto bf16 = gpu_backend(m, num_pages, page_size);
    std::vector<std::vector<float>> want{prefill(*bf16, prompt, 7, pages)};
    std::vector<int32_t> fed;
    for (int32_t i = 0; i < steps; ++i) {
      fed.push_back(argmax(want.back()));
      want.push_back(step(*bf16, {fed.back()}, prompt_len + i, pages));
    }
    std::string line = "8-bit KV, " + sub.name + ", chunks of 7 then 40 decode steps:";
    for (kv_format f : {kv_format::fp8, kv_format::int8}) {
      CAPTURE(kv_format_name(f));
      auto gpu = gpu_backend(m, num_pages, page_size, f);
      cpu_backend cpu(m.config, m.weights, num_pages, page_size, 2, f);
      double worst_cos = 1, worst_cpu = 0;
      for (int32_t i = 0; i <= steps; ++i) {
        const std::vector<float> got = i == 0 ? prefill(*gpu, prompt, 7, pages)
                                              : step(*gpu, {fed[size_t(i) - 1]}, prompt_len + i - 1, pages);
        const std::vector<float> same = i == 0 ? prefill(cpu, prompt, 7, pages)
                                               : step(cpu, {fed[size_t(i) - 1]}, prompt_len + i - 1, pages);
        worst_cos = std::min(worst_cos, cosine(got, want[size_t(i)]));
        worst_cpu = std::max(worst_cpu, rel_l2(got, same));
      }
      // Long random contexts cost fp8 more than the reference prompts do
      // (measured down to 0.9975 on the d128 model); a wrong scale or page
      // would leave nothing of the logits.
      CHECK(worst_cos >= (f == kv_format::fp8 ? 0.99 : 0.999));
      // Both quantize, from K/V that differ by bf16 rounding, so some
      // elements round the other way: by a step of 1/8 (fp8) or 1/127 of
      // the head's largest value (int8).
      CHECK(worst_cpu < (f == kv_format::fp8 ? 0.1 : 0.05));
      const std::vector<int32_t> start(prompt.begin(), prompt.begin() + 16);
      const auto ours = greedy(*gpu_backend(m, num_pages, page_size, f), start, 256, pages);
      const auto theirs = greedy(*gpu_backend(m, num_pages, page_size), start, 256, pages);
      size_t same = 0, first = ours.size();
      for (size_t i = 0; i < ours.size(); ++i) {
        same += ours[i] == theirs[i] ? 1 : 0;
        if (ours[i] != theirs[i] && first == ours.size()) first = i;
      }
      line += " " + std::string(kv_format_name(f)) + " min cosine vs bf16 " + fixed(worst_cos, 6) +
              ", max rel-L2 vs CPU " + std::string(kv_format_name(f)) + " " + fixed(worst_cpu) +
              ", greedy 256: " + std::to_string(same) + " equal, first difference " +
              (first == ours.size() ? std::string("none") : std::to_string(first)) + ";";
    }
    summary(line);
  }
}

// ---- sliding windows ----------------------------------------------------------

TEST_CASE("pages released behind the window change nothing: same logits, bit for bit, while others reuse them") {
  // Mistral's window is 8 and every layer slides; pages of 4. Run A keeps
  // every page. Run B hands the pages behind the window back after each
  // step (no_page in its table) and has another sequence write random
  // tokens into them, as the pool would reuse them.
  const loaded_model m = load_model((test_data() / "models" / "mistral").string());
  REQUIRE(reclaimable_window(m.config) == 8);
  const uint32_t seed = fresh_seed();
  CAPTURE(seed);
  std::mt19937 rng(seed);
  for (const kv_format f : {kv_format::bf16, kv_format::fp8}) {
    CAPTURE(kv_format_name(f));
    const int32_t page_size = 4, prompt_len = 30, steps = 50, pages_needed = (prompt_len + steps) / page_size + 1;
    const auto prompt = random_tokens(prompt_len, m.config.vocab_size, rng);
    auto a = gpu_backend(m, pages_needed, page_size, f);
    auto b = gpu_backend(m, pages_needed, page_size, f);
    CHECK(b->accepts_released_pages());
    std::vector<int32_t> full = iota_pages(pages_needed), table = full;
    int32_t released = 0, pos = 0, token = 0;
    bool identical = true;
    const auto release = [&](int32_t next_pos) {
      const int32_t behind = pages_behind_window(next_pos, 8, page_size);
      if (behind <= released) return;
      // Another sequence overwrites the released pages.
      const std::vector<int32_t> reused(full.begin() + released, full.begin() + behind);
      for (int32_t i = released; i < behind; ++i) table[size_t(i)] = no_page;
      released = behind;
      step(*b, random_tokens(int32_t(reused.size()) * page_size, m.config.vocab_size, rng), 0, reused);
    };
    // The prompt in chunks of 8: each chunk starts where the window lets the
    // pages behind it go.
    std::vector<float> la, lb;
    for (; pos < prompt_len; pos += 8) {
      const std::vector<int32_t> chunk(prompt.begin() + pos, prompt.begin() + std::min(prompt_len, pos + 8));
      la = step(*a, chunk, pos, full);
      lb = step(*b, chunk, pos, table);
      identical = identical && la == lb;
      release(pos + int32_t(chunk.size()));
    }
    pos = prompt_len;
    for (int32_t i = 0; i < steps; ++i, ++pos) {
      token = argmax(la);
      la = step(*a, {token}, pos, full);
      lb = step(*b, {token}, pos, table);
      identical = identical && la == lb;
      release(pos + 1);
    }
    CHECK(identical);
    CHECK(released >= (prompt_len + steps - 8) / page_size - 1);
    // A page the next token still attends to is refused.
    std::vector<int32_t> wrong = table;
    wrong[size_t(released)] = no_page;
    CHECK_THROWS_WITH_AS(step(*b, {token}, pos, wrong), doctest::Contains("released, but the step attends to it"),
                         error);
    summary(std::string("sliding window (") + std::string(kv_format_name(f)) + "): " + std::to_string(released) +
            " of " + std::to_string(pages_needed) + " pages released and overwritten while decoding; logits " +
            (identical ? "bit-identical" : "DIFFERENT") + " to keeping every page");
  }
}

TEST_CASE("window 256 on the GPU: a 4,096-token generation never holds more than 18 pages") {
  loaded_model m = load_model((test_data() / "models" / "mistral").string());
  m.config.sliding_window = 256;
  const std::vector<int32_t> prompt = {1, 17, 42, 99, 3, 250, 7, 7, 128, 64, 5, 19, 200, 11, 90, 33, 71, 8, 2, 61};
  const int32_t max_tokens = 4096 - int32_t(prompt.size());
  const auto run = [&](int32_t pages, int32_t window, int32_t& most_used) {
    scheduler_options so;
    so.budget = step_budget{16, 2048, 8, 32};
    so.num_pages = pages;
    so.sliding_window = window;
    kv_cache_options ko;
    ko.num_pages = pages;
    ko.page_size = 16;
    ko.sliding_window = window;
    auto b = gpu_backend(m, pages, 16);
    test::sync_engine engine(*b, so, ko);
    seq_params p;
    p.id = 1;
    p.prompt = std::make_shared<const std::vector<int32_t>>(prompt);
    p.sampling.temperature = 0;
    p.max_tokens = max_tokens;
    engine.add(std::move(p));
    most_used = 0;
    engine.run([&](int64_t) { most_used = std::max(most_used, engine.kv().counters().pages_used); });
    REQUIRE(engine.outputs.at(1).size() == size_t(max_tokens));
    return std::make_pair(engine.outputs.at(1), engine.kv().counters().window_released_pages);
  };
  int32_t used = 0, reference_used = 0;
  const auto [output, released] = run(24, 256, used);
  const auto [reference, none] = run(260, 0, reference_used);
  CHECK(used <= 18);
  CHECK(none == 0);
  CHECK(output == reference);
  summary("window 256 on the GPU, 4,096 tokens, pages of 16: at most " + std::to_string(used) + " pages in use, " +
          std::to_string(released) + " released while it ran; without release " + std::to_string(reference_used) +
          " pages; outputs " + (output == reference ? "identical" : "DIFFERENT"));
}
