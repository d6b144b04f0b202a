#pragma once
// RoPE's angles and cache slots, for gpu/rope_kv.cu and for kernels that
// produce q, k and v themselves (the fused small-batch projection,
// gpu/gemv.cu), and one rotation pair's store for the latter: bf16 caches
// without q/k norms only (rope_kv_fusable).
#include <cuda_bf16.h>

#include "gpu/rope_kv.h"

namespace kvactor::gpu {

// The angle of rotation pair i (of head_dim / 2) at position pos, in
// float64: exact at every position.
__device__ __forceinline__ void rope_angle(const rope_kv_params& p, int32_t pos, int32_t i, float& cs, float& sn) {
  double s, co;
  sincos(double(pos) * p.inv_freq[i], &s, &co);
  cs = float(co);
  sn = float(s);
}

// Where token t (at position pos >= 0) keeps its K and V: the offset of its
// first kv head in the bf16 cache's page arrays.
__device__ __forceinline__ size_t kv_slot(const rope_kv_params& p, int32_t t, int32_t pos) {
  const int32_t page = p.kv.page_indices[p.kv.page_indptr[p.token_seq[t]] + pos / p.kv.page_size];
  return (size_t(page) * p.kv.page_size + pos % p.kv.page_size) * size_t(p.num_kv_heads) * p.head_dim;
}

// The rotation of column c (in the first half of its head) at token t's
// position: its cosine and sine, or 1 and 0 for a v head or a padding row.
// Reads only the step's metadata, so a kernel may call it before it waits
// for the kernel before it.
__device__ __forceinline__ void rope_rotation(const rope_kv_params& p, int32_t t, int32_t c, float& cs, float& sn) {
  cs = 1.0f;
  sn = 0.0f;
  const int32_t pos = p.positions[t];
  if (pos < 0 || c / p.head_dim >= p.num_heads + p.num_kv_heads) return;
  rope_angle(p, pos, c % p.head_dim, cs, sn);
}

// Token t's qkv columns c (in the first half of its head) and c + head_dim / 2,
// before the bias: adds the bias, rotates by (cs, sn) from rope_rotation,
// and writes q to q_out, k and v to the token's cache slot.
__device__ __forceinline__ void store_rope_pair(const rope_kv_params& p, int32_t t, int32_t c, float a, float b,
                                                float cs, float sn) {
  const int32_t pos = p.positions[t];
  if (pos < 0) return; // a padding row of a decode plan
  const int32_t hd = p.head_dim, half = hd / 2, h = c / hd, i = c % hd;
  if (p.qkv_bias) {
    a += p.qkv_bias[c];
    b += p.qkv_bias[c + half];
  }
  const int32_t num_q = p.num_heads, num_qk = p.num_heads + p.num_kv_heads;
  const float ra = a * cs - b * sn, rb = b * cs + a * sn;
  __nv_bfloat16* dst;
  if (h < num_q) {
    dst = p.q_out + (size_t(t) * num_q + h) * hd;
  } else {
    const size_t slot = kv_slot(p, t, pos);
    dst = h < num_qk ? p.kv.k_bf16() + slot + size_t(h - num_q) * hd : p.kv.v_bf16() + slot + size_t(h - num_qk) * hd;
  }
  dst[i] = __float2bfloat16(ra);
  dst[i + half] = __float2bfloat16(rb);
}

} // namespace kvactor::gpu
