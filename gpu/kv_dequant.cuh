#pragma once
// Reading 8-bit KV elements in the attention kernels: 8 elements (8 bytes)
// of a head row times their scale, as bf16 or floats. E4M3 values and int8
// are exact in half and float; only the product with the scale rounds.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "gpu/paged_kv.h"
#include "gpu/vec.cuh"

namespace kvactor::gpu {

template <kv_format F>
__device__ __forceinline__ void dequant8(const uint2 raw, const float scale, float (&f)[8]) {
  static_assert(F == kv_format::fp8 || F == kv_format::int8);
  const uint32_t words[2] = {raw.x, raw.y};
#pragma unroll
  for (int w = 0; w < 2; ++w) {
    if constexpr (F == kv_format::fp8) {
#pragma unroll
      for (int pair = 0; pair < 2; ++pair) {
        // The first element is the low byte.
        const __half2_raw h =
            __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(words[w] >> (16 * pair)), __NV_E4M3);
        const float2 v = __half22float2(__half2(h));
        f[4 * w + 2 * pair] = v.x * scale;
        f[4 * w + 2 * pair + 1] = v.y * scale;
      }
    } else {
#pragma unroll
      for (int b = 0; b < 4; ++b) f[4 * w + b] = float(int8_t(words[w] >> (8 * b))) * scale;
    }
  }
}

// The same 8 elements as 8 bf16 (what the bf16 kernels read).
template <kv_format F>
__device__ __forceinline__ uint4 dequant8_bf16(const uint2 raw, const float scale) {
  float f[8];
  dequant8<F>(raw, scale, f);
  return pack8(f);
}

// Loads 8 elements of K and V at element offset `at` of the token in `slot`
// of `page`, for kv head `head`, with their scales.
struct kv8_raw {
  uint2 k = make_uint2(0, 0), v = make_uint2(0, 0);
  float k_scale = 0.0f, v_scale = 0.0f;
};

__device__ __forceinline__ kv8_raw load_kv8(const paged_kv_view& kv, size_t at, int32_t page, int32_t slot,
                                            int32_t head) {
  kv8_raw r;
  r.k = __ldg(reinterpret_cast<const uint2*>(kv.k_bytes() + at));
  r.v = __ldg(reinterpret_cast<const uint2*>(kv.v_bytes() + at));
  const size_t s = kv.scale_index(page, slot, head);
  r.k_scale = __ldg(kv.k_scale + s);
  r.v_scale = __ldg(kv.v_scale + s);
  return r;
}

} // namespace kvactor::gpu
