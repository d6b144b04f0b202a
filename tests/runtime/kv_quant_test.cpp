#include "runtime/kv_quant.h"

#include <doctest/doctest.h>

#include <cmath>
#include <set>
#include <vector>

using namespace kvactor;

TEST_CASE("kv formats: names round trip and element sizes") {
  for (kv_format f : {kv_format::f32, kv_format::bf16, kv_format::fp8, kv_format::int8})
    CHECK(parse_kv_format(kv_format_name(f)) == f);
  CHECK_FALSE(parse_kv_format("fp16").has_value());
  CHECK_FALSE(parse_kv_format("FP8").has_value());
  CHECK(kv_element_size(kv_format::f32) == 4);
  CHECK(kv_element_size(kv_format::bf16) == 2);
  CHECK(kv_element_size(kv_format::fp8) == 1);
  CHECK(kv_element_size(kv_format::int8) == 1);
}

TEST_CASE("fp8 E4M3: every byte decodes and encodes back to itself") {
  int nans = 0;
  for (int b = 0; b < 256; ++b) {
    const float v = fp8_e4m3_to_f32(uint8_t(b));
    if (std::isnan(v)) {
      ++nans;
      CHECK((b & 0x7f) == 0x7f);
      continue;
    }
    CHECK_MESSAGE(f32_to_fp8_e4m3(v) == uint8_t(b), "byte ", b, " value ", v);
  }
  CHECK(nans == 2);
}

TEST_CASE("fp8 E4M3: values, subnormals, ties to even and saturation") {
  CHECK(fp8_e4m3_to_f32(0x7e) == 448.0f);
  CHECK(fp8_e4m3_to_f32(0x08) == 0x1p-6f); // smallest normal
  CHECK(fp8_e4m3_to_f32(0x01) == 0x1p-9f); // smallest subnormal
  CHECK(fp8_e4m3_to_f32(0x38) == 1.0f);
  CHECK(fp8_e4m3_to_f32(0xb8) == -1.0f);
  CHECK(f32_to_fp8_e4m3(0.1f) == 0x1d);    // 1.625 x 2^-4 = 0.1015625
  CHECK(fp8_e4m3_to_f32(0x1d) == 0.1015625f);
  // 1 + 1/16 is halfway between 1 and 1.125: to even (1). 1 + 3/16: to 1.25.
  CHECK(f32_to_fp8_e4m3(1.0625f) == 0x38);
  CHECK(f32_to_fp8_e4m3(1.1875f) == 0x3a);
  // Halfway between subnormals 1 and 2 (x 2^-9): to 2; between 2 and 3: to 2.
  CHECK(f32_to_fp8_e4m3(1.5f * 0x1p-9f) == 0x02);
  CHECK(f32_to_fp8_e4m3(2.5f * 0x1p-9f) == 0x02);
  CHECK(f32_to_fp8_e4m3(0.25f * 0x1p-9f) == 0x00);
  // Just under the smallest normal rounds up into it.
  CHECK(f32_to_fp8_e4m3(0x1p-6f - 0x1p-12f) == 0x08);
  // Saturation, infinities included; NaN keeps its sign.
  CHECK(f32_to_fp8_e4m3(449.0f) == 0x7e);
  CHECK(f32_to_fp8_e4m3(1e30f) == 0x7e);
  CHECK(f32_to_fp8_e4m3(-INFINITY) == 0xfe);
  CHECK(f32_to_fp8_e4m3(NAN) == 0x7f);
  CHECK(f32_to_fp8_e4m3(-0.0f) == 0x80);
  // Mantissa rounding that carries into the exponent: 1.9375 -> 2.
  CHECK(f32_to_fp8_e4m3(1.9375f) == 0x40);
}

TEST_CASE("int8: symmetric per-vector scale, zeros stay zeros") {
  const std::vector<float> x = {0.5f, -1.0f, 0.25f, 0.0f, 1.0f / 127.0f};
  std::vector<int8_t> q(x.size());
  const float scale = int8_quantize_head(x.data(), int32_t(x.size()), q.data());
  CHECK(scale == doctest::Approx(1.0f / 127.0f));
  CHECK(q == std::vector<int8_t>{64, -127, 32, 0, 1}); // 63.5 rounds to even
  for (size_t i = 0; i < x.size(); ++i) CHECK(std::abs(q[i] * scale - x[i]) <= scale / 2 + 1e-7f);

  const std::vector<float> zeros(8, 0.0f);
  std::vector<int8_t> qz(8, 5);
  CHECK(int8_quantize_head(zeros.data(), 8, qz.data()) == 0.0f);
  CHECK(qz == std::vector<int8_t>(8, 0));
}

TEST_CASE("fp8 pages: the first token sets a power-of-two scale; a larger one rescales exactly") {
  // A page of 4 slots of one head of 4 dims, slots 4 apart (one head).
  std::vector<uint8_t> page(16, 0);
  float scale = -1;
  const std::vector<float> small = {1.0f, -0.5f, 0.25f, 0.75f};
  CHECK_FALSE(fp8_write_token(page.data(), 4, 0, small.data(), 4, scale));
  // amax 1: 1/448 <= 2^-8, one binade of headroom: 2^-7.
  CHECK(scale == 0x1p-7f);
  std::vector<float> before;
  for (int d = 0; d < 4; ++d) before.push_back(fp8_e4m3_to_f32(page[size_t(d)]) * scale);
  CHECK(before == small); // exactly representable

  // A token 100x larger does not fit 448 x 2^-7 = 3.5: the page is rescaled.
  const std::vector<float> big = {100.0f, -3.0f, 0.5f, 7.0f};
  CHECK(fp8_write_token(page.data(), 4, 1, big.data(), 4, scale));
  CHECK(scale == 0x1p-1f); // 100/448 <= 2^-2, one binade of headroom: 2^-1
  for (int d = 0; d < 4; ++d) {
    CHECK(fp8_e4m3_to_f32(page[size_t(d)]) * scale == before[size_t(d)]); // power-of-two rescale: exact
    CHECK(fp8_e4m3_to_f32(page[size_t(4 + d)]) * scale == doctest::Approx(big[size_t(d)]).epsilon(0.0625));
  }
  // A token that fits leaves the scale alone.
  const std::vector<float> fits = {-200.0f, 1.0f, 2.0f, 3.0f};
  CHECK_FALSE(fp8_write_token(page.data(), 4, 2, fits.data(), 4, scale));
  CHECK(scale == 0x1p-1f);
  // Slot 0 starts the page afresh, whatever it held.
  CHECK_FALSE(fp8_write_token(page.data(), 4, 0, small.data(), 4, scale));
  CHECK(scale == 0x1p-7f);
}

TEST_CASE("fp8 pages: an all-zero start is rescaled by the first non-zero token") {
  std::vector<uint8_t> page(8, 0xff);
  float scale = 1;
  const std::vector<float> zeros = {0, 0, 0, 0}, x = {0.0f, 2.0f, -4.0f, 1.0f};
  fp8_write_token(page.data(), 4, 0, zeros.data(), 4, scale);
  CHECK(scale == 0.0f);
  CHECK(fp8_write_token(page.data(), 4, 1, x.data(), 4, scale));
  for (int d = 0; d < 4; ++d) {
    CHECK(fp8_e4m3_to_f32(page[size_t(d)]) == 0.0f);
    CHECK(fp8_e4m3_to_f32(page[size_t(4 + d)]) * scale == x[size_t(d)]);
  }
}

TEST_CASE("scale layout: every (layer, K/V, page, slot, head) has its own scale, in range") {
  const kv_layout l{3, 5, 4, 2, 8};
  CHECK(kv_scales_per_page(l, kv_format::f32) == 0);
  CHECK(kv_scales_per_page(l, kv_format::bf16) == 0);
  CHECK(kv_scales_per_page(l, kv_format::fp8) == 2);
  CHECK(kv_scales_per_page(l, kv_format::int8) == 8);
  CHECK(kv_scale_count(l, kv_format::fp8) == 3 * 2 * 5 * 2);
  CHECK(kv_scale_count(l, kv_format::int8) == 3 * 2 * 5 * 4 * 2);
  std::set<size_t> fp8, int8;
  for (int32_t layer = 0; layer < 3; ++layer)
    for (int32_t kv = 0; kv < 2; ++kv)
      for (int32_t page = 0; page < 5; ++page)
        for (int32_t head = 0; head < 2; ++head) {
          fp8.insert(kv_scale_index(l, kv_format::fp8, layer, kv, page, 3, head));
          for (int32_t slot = 0; slot < 4; ++slot) {
            const size_t i = kv_scale_index(l, kv_format::int8, layer, kv, page, slot, head);
            int8.insert(i);
            // int8's index is the element offset of that head divided by head_dim.
            CHECK(i == (l.offset(layer, kv, page, slot) + size_t(head) * 8) / 8);
          }
        }
  CHECK(fp8.size() == kv_scale_count(l, kv_format::fp8));
  CHECK(*fp8.rbegin() == fp8.size() - 1);
  CHECK(int8.size() == kv_scale_count(l, kv_format::int8));
  CHECK(*int8.rbegin() == int8.size() - 1);
}

TEST_CASE("bytes: a page of 8-bit elements is half a bf16 page, so a budget holds twice the pages") {
  // The default model's shape: 4 layers, 2 kv heads of 32, pages of 16.
  const kv_layout l{4, 1000, 16, 2, 32};
  CHECK(kv_page_element_bytes(l, kv_format::f32) == 4 * 2 * 16 * 2 * 32 * 4);
  CHECK(kv_page_element_bytes(l, kv_format::bf16) == 16384);
  CHECK(kv_page_element_bytes(l, kv_format::fp8) == 8192);
  CHECK(kv_page_element_bytes(l, kv_format::int8) == 8192);
  CHECK(kv_page_scale_bytes(l, kv_format::bf16) == 0);
  CHECK(kv_page_scale_bytes(l, kv_format::fp8) == 4 * 2 * 2 * 4);       // per page and head
  CHECK(kv_page_scale_bytes(l, kv_format::int8) == 4 * 2 * 16 * 2 * 4); // per token and head
  CHECK(kv_element_bytes(l, kv_format::fp8) == 1000 * 8192);
  CHECK(kv_scale_bytes(l, kv_format::int8) == 1000 * 1024);

  const size_t budget = size_t(256) << 20; // kv.memory_mb = 256
  const int64_t bf16 = kv_pages_for_budget(budget, l, kv_format::bf16);
  CHECK(bf16 == 16384);
  CHECK(kv_pages_for_budget(budget, l, kv_format::f32) * 2 == bf16);
  CHECK(kv_pages_for_budget(budget, l, kv_format::fp8) == 2 * bf16);
  CHECK(kv_pages_for_budget(budget, l, kv_format::int8) == 2 * bf16);
  MESSAGE("kv_memory_mb 256 on the default model's shape: f32 ", bf16 / 2, " pages, bf16 ", bf16, ", fp8 ",
          2 * bf16, " (+", kv_page_scale_bytes(l, kv_format::fp8) * 2 * bf16 / 1024, " KiB of scales), int8 ",
          2 * bf16, " (+", kv_page_scale_bytes(l, kv_format::int8) * 2 * bf16 / 1024, " KiB of scales)");
}
