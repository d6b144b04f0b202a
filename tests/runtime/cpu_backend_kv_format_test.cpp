// The CPU backend over bf16, fp8 and int8 KV pages: what holds for f32 holds
// here too (page ids, batch neighbours and prefill chunks do not change a
// sequence's logits), and the cache is the size its format says.
#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "runtime/cpu_backend.h"
#include "runtime/model_loader.h"
#include "tests/logit_distance.h"

using namespace kvactor;

namespace {

using test::cosine;

// GQA with q/k norms, biases and a head_dim that is not hidden / heads.
model_config test_config() {
  model_config c;
  c.architecture = "Qwen3ForCausalLM";
  c.arch = model_arch::qwen3;
  c.vocab_size = 301;
  c.hidden_size = 64;
  c.intermediate_size = 150;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 20;
  c.max_position_embeddings = 1024;
  c.rms_norm_eps = 1e-5f;
  c.attention_bias = true;
  c.qk_norm = true;
  c.layer_sliding = {false, false};
  c.weight_dtype = dtype::f32;
  return c;
}

std::vector<int32_t> random_tokens(int32_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % 301);
  return t;
}

// Feeds `prompt` in chunks of `chunk` (0 = at once); the last logits.
std::vector<float> prefill(backend& b, const std::vector<int32_t>& prompt, size_t chunk,
                           const std::vector<int32_t>& pages) {
  std::vector<float> logits;
  if (chunk == 0) chunk = prompt.size();
  for (size_t i = 0; i < prompt.size(); i += chunk) {
    forward_batch batch;
    const size_t end = std::min(prompt.size(), i + chunk);
    batch.seqs.push_back({{prompt.begin() + ptrdiff_t(i), prompt.begin() + ptrdiff_t(end)}, int32_t(i), pages, true});
    b.forward(batch, logits);
  }
  return logits;
}

} // namespace

TEST_CASE("quantized pages: page ids, batch neighbours and chunking leave the logits alone") {
  const loaded_model m = make_dummy_model(test_config(), 11);
  const auto prompt = random_tokens(150, 1), other = random_tokens(70, 2);
  std::vector<int32_t> pages(10);
  std::iota(pages.begin(), pages.end(), 0);
  for (kv_format f : {kv_format::bf16, kv_format::fp8, kv_format::int8}) {
    CAPTURE(kv_format_name(f));
    cpu_backend b(m.config, m.weights, 32, 16, 2, f);
    const auto alone = prefill(b, prompt, 0, pages);

    // Other pages, in another order.
    std::vector<int32_t> shuffled = {31, 4, 17, 12, 25, 30, 19, 13, 16, 28};
    CHECK(prefill(b, prompt, 0, shuffled) == alone);

    // Batched with another sequence.
    std::vector<int32_t> other_pages = {20, 21, 22, 23, 24};
    forward_batch batch;
    batch.seqs.push_back({other, 0, other_pages, true});
    batch.seqs.push_back({prompt, 0, pages, true});
    std::vector<float> logits;
    b.forward(batch, logits);
    const std::vector<float> second(logits.begin() + m.config.vocab_size, logits.end());
    CHECK(second == alone);

    // In chunks of 7: the same for bf16 and int8 (each token is converted on
    // its own); fp8 may requantize a page between chunks, exactly but for
    // values pushed into its subnormals.
    const auto chunked = prefill(b, prompt, 7, pages);
    if (f == kv_format::fp8)
      CHECK(cosine(chunked, alone) > 0.99999);
    else
      CHECK(chunked == alone);
  }
}

TEST_CASE("each format allocates its element and scale bytes, no more") {
  const loaded_model m = make_dummy_model(test_config(), 11);
  const kv_layout l{2, 40, 16, 2, 20};
  for (kv_format f : {kv_format::f32, kv_format::bf16, kv_format::fp8, kv_format::int8}) {
    CAPTURE(kv_format_name(f));
    cpu_backend b(m.config, m.weights, 40, 16, 1, f);
    CHECK(b.format() == f);
    CHECK(b.kv_element_bytes() == kv_element_bytes(l, f));
    CHECK(b.kv_scale_bytes() == kv_scale_bytes(l, f));
  }
  CHECK(kv_element_bytes(l, kv_format::f32) == 2 * 2 * 40 * 16 * 2 * 20 * 4);
}
