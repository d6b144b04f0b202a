// The KV memory profile: the formula, the pages a paged cache rounds it to,
// the CPU backend's allocation and the resident memory measured around it.
#include "runtime/kv_profile.h"

#include <doctest/doctest.h>

#include <cstdlib>

#include "runtime/error.h"

using namespace kvactor;

namespace {

// KV-heavy and cheap to run: 8 kv heads of 64 on one layer, a tiny MLP.
model_config kv_heavy_config() {
  model_config c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 64;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_layers = 1;
  c.num_heads = 8;
  c.num_kv_heads = 8;
  c.head_dim = 64;
  c.max_position_embeddings = 4096;
  c.layer_sliding = {false};
  c.weight_dtype = dtype::f32;
  return c;
}

constexpr int64_t mib = 1 << 20;

} // namespace

TEST_CASE("the formula: batch x seq x layers x kv_heads x head_dim x 2 x bytes, scales apart") {
  model_config c;
  c.num_layers = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128; // Llama 3 8B
  CHECK(kv_formula_bytes(c, kv_format::bf16, 1, 1) == 131072);
  CHECK(kv_formula_bytes(c, kv_format::bf16, 4, 8192) == int64_t(4) * 8192 * 131072);
  CHECK(kv_formula_bytes(c, kv_format::fp8, 4, 8192) == int64_t(4) * 8192 * 65536);
  CHECK(kv_formula_scale_bytes(c, kv_format::bf16, 4, 8192, 16) == 0);
  // fp8: one fp32 per (page, layer, K/V, kv head); int8: per (token, layer, K/V, kv head).
  CHECK(kv_formula_scale_bytes(c, kv_format::fp8, 4, 8200, 16) == int64_t(4) * 513 * 32 * 2 * 8 * 4);
  CHECK(kv_formula_scale_bytes(c, kv_format::int8, 4, 8200, 16) == int64_t(4) * 8200 * 32 * 2 * 8 * 4);
}

TEST_CASE("measured: the allocation is the formula in whole pages, and it is what becomes resident") {
  const loaded_model m = make_dummy_model(kv_heavy_config(), 1);
  rss_meter meter;
  for (kv_format f : {kv_format::f32, kv_format::int8}) {
    CAPTURE(kv_format_name(f));
    kv_profile_options o;
    o.seq_lens = {1000, 2048};
    o.batch = 2;
    o.format = f;
    o.prefill_chunk = 256;
    const auto rows = profile_kv(m.config, cpu_profile_backend(m, f, 2), meter, o);
    REQUIRE(rows.size() == 2);
    for (const kv_profile_row& r : rows) {
      CAPTURE(r.seq_len);
      const int64_t per_token = kv_formula_bytes(m.config, f, 1, 1);
      CHECK(r.pages == 2 * ((r.seq_len + 15) / 16));
      CHECK(r.formula_bytes == 2 * r.seq_len * per_token);
      // Whole pages: the formula rounded up to page_size tokens per sequence.
      CHECK(r.allocated_bytes == int64_t(r.pages) * 16 * per_token);
      CHECK(r.allocated_scale_bytes == kv_formula_scale_bytes(m.config, f, 2, int64_t(r.pages / 2) * 16, 16));
      const int64_t kv = r.allocated_bytes + r.allocated_scale_bytes;
      CHECK(std::llabs(r.resident_after_alloc - kv) <= kv / 20 + mib);
      CHECK(std::llabs(r.measured_kv_bytes - kv) <= kv / 20 + mib);
      CHECK(r.peak_during_run >= r.resident_after_alloc);
      MESSAGE(kv_format_name(f), " seq ", r.seq_len, " x 2: formula ", r.formula_bytes, " B, allocated ",
              r.allocated_bytes, " + ", r.allocated_scale_bytes, " B in ", r.pages, " pages; resident after allocation ",
              r.resident_after_alloc, " B, peak during the run ", r.peak_during_run, " B");
    }
    // 2,048 tokens are exactly 128 pages: formula and allocation agree to the byte.
    CHECK(rows[1].allocated_bytes == rows[1].formula_bytes);
  }
}

TEST_CASE("bad profile options are refused") {
  const loaded_model m = make_dummy_model(kv_heavy_config(), 1);
  rss_meter meter;
  kv_profile_options o;
  o.seq_lens = {8};
  CHECK_THROWS_WITH_AS(profile_kv(m.config, cpu_profile_backend(m, kv_format::f32), meter, o),
                       "profile: sequence length 8 leaves nothing to prefill before its 8 decoded tokens", error);
  o.seq_lens = {64};
  o.batch = 0;
  CHECK_THROWS_WITH_AS(profile_kv(m.config, cpu_profile_backend(m, kv_format::f32), meter, o),
                       "profile: the batch must be positive, got 0", error);
}
