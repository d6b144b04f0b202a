#pragma once
// The paged attention kernel: one block per (tile of query tokens, kv head).
// Keys are walked in tiles of attention_keys: K and V of the tile are staged
// in shared memory once for all the block's query rows, scores and the online
// softmax state stay in shared memory, the output accumulates in fp32.
#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>

#include "gpu/launch.cuh"
#include "gpu/paged_attention.h"
#include "gpu/reduce.cuh"

namespace kvactor::gpu {

constexpr int attention_threads = 128;
constexpr int attention_keys = 64; // keys staged per tile

// Byte offsets of the block's shared arrays; rows = tile_tokens x group.
struct attention_smem {
  size_t q, acc, scores, m, l, alpha, k, v, total;
};

__host__ __device__ constexpr size_t align16(size_t n) { return (n + 15) / 16 * 16; }

// K rows are padded by 8 elements (16 bytes) so that the lanes of a warp,
// each reading a different key, hit different banks.
__host__ __device__ constexpr int attention_k_stride(int head_dim) { return head_dim + 8; }

__host__ __device__ constexpr attention_smem attention_smem_layout(int head_dim, int rows) {
  attention_smem s{};
  size_t at = 0;
  s.q = at;      at += sizeof(float) * rows * head_dim;         // [rows, head_dim] q x scale
  s.acc = at;    at += sizeof(float) * rows * head_dim;         // [rows, head_dim] output so far
  s.scores = at; at += sizeof(float) * rows * attention_keys;   // [rows, keys] scores, then p
  s.m = at;      at += sizeof(float) * rows;                    // [rows] running max
  s.l = at;      at += sizeof(float) * rows;                    // [rows] running sum of p
  s.alpha = at;  at += sizeof(float) * rows;                    // [rows] rescale of this tile
  at = align16(at);
  s.k = at;      at += sizeof(__nv_bfloat16) * attention_keys * attention_k_stride(head_dim); // [keys, stride]
  s.v = at;      at += sizeof(__nv_bfloat16) * attention_keys * head_dim;                      // [keys, head_dim]
  s.total = at;
  return s;
}

template <int HEAD_DIM>
__global__ void __launch_bounds__(attention_threads) paged_attention_kernel(const attention_params p) {
  constexpr int D = HEAD_DIM, KEYS = attention_keys, K_STRIDE = attention_k_stride(D), CHUNKS = D / 8;
  static_assert(D % 8 == 0, "K/V rows are moved in 16-byte chunks");
  extern __shared__ __align__(16) unsigned char smem[];
  launch_next_kernel();
  wait_for_previous_kernel();
  const int rows = p.tile_tokens * p.group;
  const attention_smem layout = attention_smem_layout(D, rows);
  float* q_s = reinterpret_cast<float*>(smem + layout.q);
  float* acc_s = reinterpret_cast<float*>(smem + layout.acc);
  float* s_s = reinterpret_cast<float*>(smem + layout.scores);
  float* m_s = reinterpret_cast<float*>(smem + layout.m);
  float* l_s = reinterpret_cast<float*>(smem + layout.l);
  float* alpha_s = reinterpret_cast<float*>(smem + layout.alpha);
  __nv_bfloat16* k_s = reinterpret_cast<__nv_bfloat16*>(smem + layout.k);
  __nv_bfloat16* v_s = reinterpret_cast<__nv_bfloat16*>(smem + layout.v);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, warps = blockDim.x / 32;
  const int32_t first = p.tile_first[blockIdx.x];
  const int kv_head = blockIdx.y;
  const int32_t seq = p.token_seq[first];
  const int ntok = min(p.tile_tokens, p.qo_indptr[seq + 1] - first);
  const int32_t pos_first = p.positions[first];
  const int32_t pos_last = pos_first + ntok - 1; // a sequence's new tokens are consecutive
  const int32_t key_lo = p.window > 0 ? max(0, pos_first - p.window + 1) : 0;
  const int32_t* pages = p.kv.page_indices + p.kv.page_indptr[seq];
  const int32_t page_size = p.kv.page_size;
  const size_t token_stride = size_t(p.kv.num_kv_heads) * D;
  // Row r is query token r / group, q head kv_head * group + r % group.
  const auto q_offset = [&](int r) {
    return (size_t(first + r / p.group) * p.num_heads + size_t(kv_head) * p.group + r % p.group) * D;
  };

  for (int i = tid; i < rows * D; i += blockDim.x) {
    const int r = i / D;
    q_s[i] = r / p.group < ntok ? __bfloat162float(p.q[q_offset(r) + i % D]) * p.scale : 0.0f;
    acc_s[i] = 0.0f;
  }
  for (int r = tid; r < rows; r += blockDim.x) {
    m_s[r] = -INFINITY;
    l_s[r] = 0.0f;
  }
  __syncthreads();

  for (int32_t k0 = key_lo; k0 <= pos_last; k0 += KEYS) {
    // Stage K and V; keys past pos_last are zero, so 0 x V stays 0.
    for (int c = tid; c < KEYS * CHUNKS; c += blockDim.x) {
      const int j = c / CHUNKS, part = c % CHUNKS;
      const int32_t key = k0 + j;
      uint4 k4 = make_uint4(0, 0, 0, 0), v4 = make_uint4(0, 0, 0, 0);
      if (key <= pos_last) {
        const size_t at = (size_t(pages[key / page_size]) * page_size + key % page_size) * token_stride +
                          size_t(kv_head) * D + part * 8;
        k4 = *reinterpret_cast<const uint4*>(p.kv.k_bf16() + at);
        v4 = *reinterpret_cast<const uint4*>(p.kv.v_bf16() + at);
      }
      *reinterpret_cast<uint4*>(k_s + j * K_STRIDE + part * 8) = k4;
      *reinterpret_cast<uint4*>(v_s + j * D + part * 8) = v4;
    }
    __syncthreads();

    // Scores; a key the row may not see is -inf.
    for (int i = tid; i < rows * KEYS; i += blockDim.x) {
      const int r = i / KEYS, j = i % KEYS, tok = r / p.group;
      const int32_t key = k0 + j, query_pos = pos_first + tok;
      const bool visible = tok < ntok && key <= query_pos && (p.window <= 0 || key > query_pos - p.window);
      float score = -INFINITY;
      if (visible) {
        const float* q = q_s + r * D;
        const __nv_bfloat16* k = k_s + j * K_STRIDE;
        float dot = 0.0f;
#pragma unroll
        for (int d = 0; d < D; d += 8) {
          const uint4 raw = *reinterpret_cast<const uint4*>(k + d);
          const __nv_bfloat162* k2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float2 kf = __bfloat1622float2(k2[e]);
            dot += q[d + 2 * e] * kf.x + q[d + 2 * e + 1] * kf.y;
          }
        }
        score = dot;
      }
      s_s[i] = score;
    }
    __syncthreads();

    // Online softmax, one warp per row: scores become p = exp(s - m).
    for (int r = warp; r < rows; r += warps) {
      float* s = s_s + r * KEYS;
      float tile_max = -INFINITY;
      for (int j = lane; j < KEYS; j += 32) tile_max = fmaxf(tile_max, s[j]);
      tile_max = warp_max(tile_max);
      const float m_old = m_s[r], m_new = fmaxf(m_old, tile_max);
      // NOTE: a row that has seen no visible key yet keeps m = -inf; its p are
      // 0, not exp(-inf - -inf) = NaN.
      const bool none = m_new == -INFINITY;
      float sum = 0.0f;
      for (int j = lane; j < KEYS; j += 32) {
        const float e = none ? 0.0f : expf(s[j] - m_new);
        s[j] = e;
        sum += e;
      }
      sum = warp_sum(sum);
      __syncwarp(); // every lane has read m_s[r] before lane 0 replaces it
      if (lane == 0) {
        const float alpha = none ? 1.0f : expf(m_old - m_new);
        m_s[r] = m_new;
        l_s[r] = l_s[r] * alpha + sum;
        alpha_s[r] = alpha;
      }
    }
    __syncthreads();

    for (int i = tid; i < rows * D; i += blockDim.x) {
      const int r = i / D, d = i % D;
      const float* prob = s_s + r * KEYS;
      float a = acc_s[i] * alpha_s[r];
#pragma unroll 8
      for (int j = 0; j < KEYS; ++j) a += prob[j] * __bfloat162float(v_s[j * D + d]);
      acc_s[i] = a;
    }
    __syncthreads();
  }

  for (int i = tid; i < rows * D; i += blockDim.x) {
    const int r = i / D;
    if (r / p.group < ntok) p.out[q_offset(r) + i % D] = __float2bfloat16(acc_s[i] / l_s[r]);
  }
}

} // namespace kvactor::gpu
