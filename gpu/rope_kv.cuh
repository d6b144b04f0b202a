#pragma once
// One rotation pair of RoPE and its store, for kernels that produce q, k and
// v themselves (the fused small-batch projection, gpu/gemv.cu). Same
// arithmetic as rope_kv_kernel; bf16 caches without q/k norms only
// (rope_kv_fusable).
#include <cuda_bf16.h>

#include "gpu/rope_kv.h"

namespace kvactor::gpu {

// Token t's qkv columns c (in the first half of its head) and c + head_dim / 2,
// before the bias: adds the bias, rotates q and k heads by the token's
// position, and writes q to q_out, k and v to the token's cache slot.
__device__ __forceinline__ void store_rope_pair(const rope_kv_params& p, int32_t t, int32_t c, float a, float b) {
  const int32_t pos = p.positions[t];
  if (pos < 0) return; // a padding row of a decode plan
  const int32_t hd = p.head_dim, half = hd / 2, h = c / hd, i = c % hd;
  if (p.qkv_bias) {
    a += p.qkv_bias[c];
    b += p.qkv_bias[c + half];
  }
  const int32_t num_q = p.num_heads, num_qk = p.num_heads + p.num_kv_heads;
  if (h < num_qk) {
    double s, co;
    sincos(double(pos) * p.inv_freq[i], &s, &co);
    const float cs = float(co), sn = float(s);
    const float ra = a * cs - b * sn, rb = b * cs + a * sn;
    a = ra;
    b = rb;
  }
  __nv_bfloat16* dst;
  if (h < num_q) {
    dst = p.q_out + (size_t(t) * num_q + h) * hd;
  } else {
    const int32_t page = p.kv.page_indices[p.kv.page_indptr[p.token_seq[t]] + pos / p.kv.page_size];
    const size_t slot = (size_t(page) * p.kv.page_size + pos % p.kv.page_size) * size_t(p.num_kv_heads) * hd;
    dst = h < num_qk ? p.kv.k_bf16() + slot + size_t(h - num_q) * hd : p.kv.v_bf16() + slot + size_t(h - num_qk) * hd;
  }
  dst[i] = __float2bfloat16(a);
  dst[i + half] = __float2bfloat16(b);
}

} // namespace kvactor::gpu
