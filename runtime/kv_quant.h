#pragma once
// How the paged KV cache stores its elements, shared by the CPU and GPU
// backends. Pure: element formats, conversions, where the scales live and
// what a page costs. See docs/kv_cache.md for why each format is what it is.
//
//   f32   4 bytes, exact (the CPU reference).
//   bf16  2 bytes, round to nearest even.
//   fp8   1 byte, E4M3 (bias 7, no infinities, max 448, NVIDIA's
//         __nv_fp8_e4m3 with __NV_SATFINITE) times one fp32 scale per
//         (layer, K or V, page, kv head). The scale is a power of two.
//   int8  1 byte, symmetric: q = rint(x * 127 / amax) in [-127, 127], times
//         one fp32 scale amax / 127 per (layer, K or V, page, slot, kv head),
//         i.e. per token and kv head.
//
// Elements keep kv_layout's order whatever the format; kv_layout::offset
// counts elements, so it addresses every format. Scales sit in a second
// buffer of fp32, in the same (layer, K/V, page) order:
//   fp8   [num_layers, 2, num_pages, num_kv_heads]
//   int8  [num_layers, 2, num_pages, page_size, num_kv_heads]
//
// fp8 pages are written token by token, so a page's scale must follow its
// largest value (fp8_write_token): writing slot 0 starts the page with the
// scale its first token needs, times 2 for headroom; a later token that does
// not fit doubles the scale as often as needed (again with headroom) and
// requantizes the slots written before it. Scales are powers of two, so that
// requantizing is exact except for values pushed into E4M3's subnormal
// range.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "runtime/kv_layout.h"

namespace kvactor {

enum class kv_format : uint8_t { f32, bf16, fp8, int8 };

// "f32", "bf16", "fp8", "int8"; parse_kv_format accepts exactly these.
std::string_view kv_format_name(kv_format f);
std::optional<kv_format> parse_kv_format(std::string_view name);

constexpr size_t kv_element_size(kv_format f) {
  return f == kv_format::f32 ? 4 : f == kv_format::bf16 ? 2 : 1;
}
constexpr bool kv_is_quantized(kv_format f) { return f == kv_format::fp8 || f == kv_format::int8; }

// -- scale layout ---------------------------------------------------------------

// Scales of one page in one layer's K (or V): num_kv_heads for fp8,
// page_size x num_kv_heads for int8, none otherwise.
size_t kv_scales_per_page(const kv_layout& l, kv_format f);
// Every scale of the cache: num_layers x 2 x num_pages x kv_scales_per_page.
size_t kv_scale_count(const kv_layout& l, kv_format f);
// Index of the scale of (layer, kv, page, slot, head); kv is 0 for K, 1 for
// V; fp8 ignores the slot. note: call only for fp8 and int8.
size_t kv_scale_index(const kv_layout& l, kv_format f, int32_t layer, int32_t kv, int32_t page, int32_t slot,
                      int32_t head);

// -- bytes ------------------------------------------------------------------------

// Element bytes of one page: every layer, K and V.
size_t kv_page_element_bytes(const kv_layout& l, kv_format f);
// Scale bytes of one page: every layer, K and V (0 for f32 and bf16).
size_t kv_page_scale_bytes(const kv_layout& l, kv_format f);
// The whole cache of l.num_pages pages.
size_t kv_element_bytes(const kv_layout& l, kv_format f);
size_t kv_scale_bytes(const kv_layout& l, kv_format f);
// Pages whose elements fit `budget_bytes`; l.num_pages is ignored. The
// scales come on top of the budget (kv_page_scale_bytes per page), so an
// 8-bit cache holds exactly twice the pages of a bf16 one.
int64_t kv_pages_for_budget(size_t budget_bytes, const kv_layout& l, kv_format f);

// -- fp8 E4M3 ---------------------------------------------------------------------

inline constexpr float fp8_e4m3_max = 448.0f;

// Round to nearest even; magnitudes above 448 (infinities included) saturate
// to +-448; NaN becomes 0x7f with its sign.
uint8_t f32_to_fp8_e4m3(float x);

// Every byte's value, NaN for 0x7f and 0xff.
extern const std::array<float, 256> fp8_e4m3_values;
inline float fp8_e4m3_to_f32(uint8_t b) { return fp8_e4m3_values[b]; }

// Writes one token's head vector x[0, head_dim) into `slot` of a page's
// head, whose slot s starts at page_head + s * slot_stride, and keeps the
// page's `scale` (that head's) sufficient; see the top of this file. Slot 0
// starts the page afresh. Returns whether earlier slots were requantized.
// note: call in slot order within a page; slots [0, slot) must have been
// written under the current scale.
bool fp8_write_token(uint8_t* page_head, size_t slot_stride, int32_t slot, const float* x, int32_t head_dim,
                     float& scale);

// -- int8 -------------------------------------------------------------------------

// Quantizes one token's head vector; returns its scale (amax / 127; 0 when
// the vector is all zeros, which then stores zeros).
float int8_quantize_head(const float* x, int32_t head_dim, int8_t* q);

} // namespace kvactor
