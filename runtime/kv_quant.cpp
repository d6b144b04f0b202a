#include "runtime/kv_quant.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

namespace kvactor {

std::string_view kv_format_name(kv_format f) {
  switch (f) {
    case kv_format::f32: return "f32";
    case kv_format::bf16: return "bf16";
    case kv_format::fp8: return "fp8";
    case kv_format::int8: return "int8";
  }
  return "?";
}

std::optional<kv_format> parse_kv_format(std::string_view name) {
  for (kv_format f : {kv_format::f32, kv_format::bf16, kv_format::fp8, kv_format::int8})
    if (kv_format_name(f) == name) return f;
  return std::nullopt;
}

// -- scale layout ---------------------------------------------------------------

size_t kv_scales_per_page(const kv_layout& l, kv_format f) {
  switch (f) {
    case kv_format::fp8: return size_t(l.num_kv_heads);
    case kv_format::int8: return size_t(l.page_size) * size_t(l.num_kv_heads);
    default: return 0;
  }
}

size_t kv_scale_count(const kv_layout& l, kv_format f) {
  return size_t(l.num_layers) * 2 * size_t(l.num_pages) * kv_scales_per_page(l, f);
}

size_t kv_scale_index(const kv_layout& l, kv_format f, int32_t layer, int32_t kv, int32_t page, int32_t slot,
                      int32_t head) {
  const size_t page_index = (size_t(layer) * 2 + size_t(kv)) * size_t(l.num_pages) + size_t(page);
  const size_t within = f == kv_format::int8 ? size_t(slot) * size_t(l.num_kv_heads) + size_t(head) : size_t(head);
  return page_index * kv_scales_per_page(l, f) + within;
}

// -- bytes ------------------------------------------------------------------------

size_t kv_page_element_bytes(const kv_layout& l, kv_format f) {
  return size_t(l.num_layers) * 2 * l.page_elems() * kv_element_size(f);
}

size_t kv_page_scale_bytes(const kv_layout& l, kv_format f) {
  return size_t(l.num_layers) * 2 * kv_scales_per_page(l, f) * sizeof(float);
}

size_t kv_element_bytes(const kv_layout& l, kv_format f) {
  return size_t(l.num_pages) * kv_page_element_bytes(l, f);
}

size_t kv_scale_bytes(const kv_layout& l, kv_format f) { return size_t(l.num_pages) * kv_page_scale_bytes(l, f); }

int64_t kv_pages_for_budget(size_t budget_bytes, const kv_layout& l, kv_format f) {
  const size_t per_page = kv_page_element_bytes(l, f);
  return per_page == 0 ? 0 : int64_t(budget_bytes / per_page);
}

// -- fp8 E4M3 ---------------------------------------------------------------------

namespace {

std::array<float, 256> make_fp8_values() {
  std::array<float, 256> v{};
  for (int b = 0; b < 256; ++b) {
    const int exponent = (b >> 3) & 0xf, mantissa = b & 7;
    float magnitude;
    if (exponent == 0xf && mantissa == 7)
      magnitude = std::numeric_limits<float>::quiet_NaN();
    else if (exponent == 0)
      magnitude = std::ldexp(float(mantissa), -9); // subnormal: m x 2^-9
    else
      magnitude = std::ldexp(1.0f + float(mantissa) / 8.0f, exponent - 7);
    v[size_t(b)] = (b & 0x80) ? -magnitude : magnitude;
  }
  return v;
}

} // namespace

const std::array<float, 256> fp8_e4m3_values = make_fp8_values();

uint8_t f32_to_fp8_e4m3(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint8_t sign = uint8_t((bits >> 24) & 0x80);
  const float a = std::fabs(x);
  if (std::isnan(x)) return uint8_t(sign | 0x7f);
  if (a > fp8_e4m3_max) return uint8_t(sign | 0x7e);
  if (a < 0x1p-6f) {
    // Subnormal: units of 2^-9; a * 2^9 is exact, rint rounds to even. A
    // result of 8 is the smallest normal, whose encoding is also 8.
    return uint8_t(sign | uint8_t(std::nearbyint(a * 0x1p9f)));
  }
  int32_t exponent = int32_t((bits >> 23) & 0xff) - 127;
  // Round the 23-bit mantissa to 3 bits, to nearest even.
  const uint32_t mantissa = bits & 0x7fffffu;
  uint32_t rounded = mantissa + 0x7ffffu + ((mantissa >> 20) & 1u);
  if (rounded & 0x800000u) {
    ++exponent;
    rounded = 0;
  }
  const uint32_t biased = uint32_t(exponent + 7), m3 = (rounded >> 20) & 7u;
  if (biased > 15 || (biased == 15 && m3 == 7)) return uint8_t(sign | 0x7e); // only 448 < a rounds there
  return uint8_t(sign | (biased << 3) | m3);
}

namespace {

// The power of two that maps `amax` to at most 448 / 2: one binade of
// headroom, so that a page's later tokens rarely need a rescale.
float fp8_page_scale(float amax) {
  int exponent = 0;
  std::frexp(amax / fp8_e4m3_max, &exponent); // amax / 448 <= 2^exponent
  return std::ldexp(1.0f, exponent + 1);
}

} // namespace

bool fp8_write_token(uint8_t* page_head, size_t slot_stride, int32_t slot, const float* x, int32_t head_dim,
                     float& scale) {
  float amax = 0;
  for (int32_t d = 0; d < head_dim; ++d) amax = std::max(amax, std::fabs(x[d]));
  bool requantized = false;
  if (slot == 0) {
    scale = amax > 0 ? fp8_page_scale(amax) : 0.0f;
  } else if (amax > scale * fp8_e4m3_max) {
    const float grown = fp8_page_scale(amax);
    const float ratio = scale / grown; // a power of two below 1; 0 from an all-zero page
    for (int32_t s = 0; s < slot; ++s) {
      uint8_t* q = page_head + size_t(s) * slot_stride;
      for (int32_t d = 0; d < head_dim; ++d) q[d] = f32_to_fp8_e4m3(fp8_e4m3_to_f32(q[d]) * ratio);
    }
    scale = grown;
    requantized = true;
  }
  uint8_t* q = page_head + size_t(slot) * slot_stride;
  const float inv = scale > 0 ? 1.0f / scale : 0.0f; // exact: scale is a power of two
  for (int32_t d = 0; d < head_dim; ++d) q[d] = f32_to_fp8_e4m3(x[d] * inv);
  return requantized;
}

// -- int8 -------------------------------------------------------------------------

float int8_quantize_head(const float* x, int32_t head_dim, int8_t* q) {
  float amax = 0;
  for (int32_t d = 0; d < head_dim; ++d) amax = std::max(amax, std::fabs(x[d]));
  const float inv = amax > 0 ? 127.0f / amax : 0.0f;
  for (int32_t d = 0; d < head_dim; ++d)
    q[d] = int8_t(std::clamp(std::nearbyint(x[d] * inv), -127.0f, 127.0f));
  return amax / 127.0f;
}

} // namespace kvactor
