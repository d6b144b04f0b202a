#include <cuda_fp8.h>

#include "gpu/cuda_check.h"
#include "gpu/kv_quantize.h"
#include "gpu/launch.cuh"
#include "gpu/reduce.cuh"

namespace kvactor::gpu {

namespace {

__device__ __forceinline__ uint8_t to_fp8(float x) {
  return uint8_t(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}

__device__ __forceinline__ float from_fp8(uint8_t b) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t(b), __NV_E4M3);
  return __half2float(__half(h));
}

// A power of two with amax / 448 <= scale / 2 (kv_quant.cpp's fp8_page_scale).
__device__ __forceinline__ float fp8_page_scale(float amax) {
  int exponent = 0;
  frexpf(amax / fp8_e4m3_max, &exponent);
  return ldexpf(1.0f, exponent + 1);
}

__device__ __forceinline__ float head_amax(const float* x, int32_t head_dim) {
  float amax = 0.0f;
  for (int d = threadIdx.x; d < head_dim; d += 32) amax = fmaxf(amax, fabsf(x[d]));
  return warp_max(amax);
}

// One warp per (token, K or V, kv head).
__global__ void __launch_bounds__(32) int8_quantize_kernel(const kv_quantize_params p) {
  launch_next_kernel();
  wait_for_previous_kernel();
  const int32_t t = blockIdx.x, pos = p.positions[t];
  if (pos < 0) return;
  const paged_kv_view& kv = p.kv;
  const int H = kv.num_kv_heads, D = kv.head_dim, which = int(blockIdx.y) / H, head = int(blockIdx.y) % H;
  const float* x = p.stage + ((size_t(t) * 2 + which) * H + head) * D;
  const float amax = head_amax(x, D);
  const float inv = amax > 0 ? 127.0f / amax : 0.0f;
  const int32_t page = kv.page_indices[kv.page_indptr[p.token_seq[t]] + pos / kv.page_size];
  const int32_t slot = pos % kv.page_size;
  int8_t* q = reinterpret_cast<int8_t*>(which ? kv.v_bytes() : kv.k_bytes()) +
              ((size_t(page) * kv.page_size + slot) * H + head) * D;
  for (int d = threadIdx.x; d < D; d += 32) q[d] = int8_t(fminf(fmaxf(rintf(x[d] * inv), -127.0f), 127.0f));
  if (threadIdx.x == 0) (which ? kv.v_scale : kv.k_scale)[kv.scale_index(page, slot, head)] = amax / 127.0f;
}

// One warp per (first token of a page in this step, K or V, kv head); the
// other tokens' warps return at once.
__global__ void __launch_bounds__(32) fp8_quantize_kernel(const kv_quantize_params p) {
  launch_next_kernel();
  wait_for_previous_kernel();
  const int32_t t = blockIdx.x, pos = p.positions[t];
  if (pos < 0) return;
  const paged_kv_view& kv = p.kv;
  const int32_t ps = kv.page_size, seq = p.token_seq[t];
  const auto same_page = [&](int32_t u) {
    return p.token_seq[u] == seq && p.positions[u] >= 0 && p.positions[u] / ps == pos / ps;
  };
  if (t > 0 && same_page(t - 1)) return;
  const int H = kv.num_kv_heads, D = kv.head_dim, which = int(blockIdx.y) / H, head = int(blockIdx.y) % H;
  const int32_t page = kv.page_indices[kv.page_indptr[seq] + pos / ps];
  const size_t slot_stride = size_t(H) * D;
  uint8_t* page_head = (which ? kv.v_bytes() : kv.k_bytes()) + size_t(page) * ps * slot_stride + size_t(head) * D;
  float* scale_at = (which ? kv.v_scale : kv.k_scale) + kv.scale_index(page, 0, head);
  float scale = *scale_at; // what earlier steps wrote into this page under (unread when slot 0 comes first)
  for (int32_t u = t; u < p.num_tokens && same_page(u); ++u) {
    const int32_t slot = p.positions[u] % ps;
    const float* x = p.stage + ((size_t(u) * 2 + which) * H + head) * D;
    const float amax = head_amax(x, D);
    if (slot == 0) {
      scale = amax > 0 ? fp8_page_scale(amax) : 0.0f;
    } else if (amax > scale * fp8_e4m3_max) {
      const float grown = fp8_page_scale(amax);
      const float ratio = scale / grown;
      for (int i = threadIdx.x; i < slot * D; i += 32) {
        uint8_t* q = page_head + size_t(i / D) * slot_stride + i % D;
        *q = to_fp8(from_fp8(*q) * ratio);
      }
      scale = grown;
    }
    const float inv = scale > 0 ? 1.0f / scale : 0.0f;
    uint8_t* q = page_head + size_t(slot) * slot_stride;
    for (int d = threadIdx.x; d < D; d += 32) q[d] = to_fp8(x[d] * inv);
    __syncwarp(); // the next token may requantize what this one wrote
  }
  if (threadIdx.x == 0) *scale_at = scale;
}

} // namespace

void launch_kv_quantize(const kv_quantize_params& p, cudaStream_t stream) {
  if (p.num_tokens == 0) return;
  const dim3 grid(unsigned(p.num_tokens), unsigned(2 * p.kv.num_kv_heads));
  launch_kernel(p.kv.format == kv_format::fp8 ? fp8_quantize_kernel : int8_quantize_kernel, grid, 32, 0, stream, p);
}

} // namespace kvactor::gpu
