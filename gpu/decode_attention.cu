#include <algorithm>
#include <string>

#include "gpu/cuda_check.h"
#include "gpu/decode_attention.h"
#include "gpu/kv_dequant.cuh"
#include "gpu/launch.cuh"
#include "gpu/mma.cuh"
#include "gpu/reduce.cuh"
#include "gpu/vec.cuh"
#include "runtime/error.h"

namespace kvactor::gpu {

namespace {

constexpr int decode_threads = 128;
constexpr int decode_warps = decode_threads / 32;
constexpr float log2e = 1.4426950408889634f;
// A finite "minus infinity" for running maxima: exp2 of a difference with it
// is 0 (or 1 against itself), never NaN.
constexpr float no_score = -1e30f;

__device__ __forceinline__ int32_t decode_splits(int32_t len, int32_t max_splits, int32_t min_keys) {
  return max(1, min(max_splits, (len + min_keys - 1) / min_keys));
}

// The keys of row `row` that its new token at `pos` sees: [lo, pos].
__device__ __forceinline__ int32_t first_key(int32_t pos, int32_t window) {
  return window > 0 ? max(0, pos - window + 1) : 0;
}

__device__ __forceinline__ float dot8(const float (&q)[8], const uint4& k) {
  float f[8];
  unpack8(k, f);
  float d = 0.0f;
#pragma unroll
  for (int e = 0; e < 8; ++e) d = fmaf(q[e], f[e], d);
  return d;
}

// Lanes of a warp split into groups of LANES = D / 8, each group one key at a
// time and each lane 8 of its dims; the warp's KPW groups and the block's
// warps form STREAMS independent key streams with their own running softmax,
// merged through shared memory at the end. 8-bit caches (F) are read as
// 8 bytes a lane and dequantized to bf16, then go the same way.
//
// A decode step reads each key once, so the kernel is a stream from memory;
// what limits it is the bytes in flight. bf16 keys are copied a loop
// iteration ahead into shared memory (cp.async), so that they fly while the
// warp computes on the ones before, and cost no registers; each thread reads
// back only what it copied itself, so no barrier is needed. The first
// iteration's copies start before the wait for the kernel before (RoPE and
// the K/V write), except the new key, which that kernel writes. 8-bit caches
// load into registers (a requantized page may change any key of it). With
// more than one split, the split block that finishes a (row, kv head) last
// merges the splits' partial results.
//
// Up to 4 q heads per kv head, four blocks a multiprocessor: 128 registers,
// which the loop fits without spilling.
template <int D, int G, kv_format F>
__global__ void __launch_bounds__(decode_threads, G > 4 ? 1 : 4)
    decode_attention_kernel(const decode_attention_params p) {
  constexpr int LANES = D / 8;
  constexpr int KPW = 32 / LANES;
  constexpr int STREAMS = decode_warps * KPW;
  constexpr int U = G > 4 ? 2 : 4; // keys per stream and iteration
  constexpr int STEP = STREAMS * U; // keys per block and iteration
  constexpr bool BF16 = F == kv_format::bf16;
  constexpr int STAGE_SLOTS = BF16 ? 2 * U * 2 : 1; // [stage][u][k or v], 16 bytes a thread each
  // The staged keys are dead by the time the streams merge.
  union shared_storage {
    uint4 kv[STAGE_SLOTS][decode_threads];
    struct {
      float m[STREAMS][G], l[STREAMS][G];
      float acc[STREAMS][G][D];
    } merge;
  };
  __shared__ __align__(16) shared_storage smem;
  __shared__ float split_weight[G][32]; // max_splits <= 32
  __shared__ float split_inv_total[G];
  __shared__ bool merges;

  launch_next_kernel();
  const int32_t row = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int g = p.group;
  const int32_t pos = p.positions[row];
  const size_t head0 = size_t(row) * p.num_heads + size_t(kv_head) * g; // first q head of this kv head
  const int32_t key_lo = pos < 0 ? 0 : first_key(pos, p.window);
  const int32_t len = pos + 1 - key_lo;
  const int32_t splits = decode_splits(len, p.max_splits, p.min_split_keys);
  const int32_t chunk = (len + splits - 1) / splits;
  const int32_t lo = key_lo + split * chunk, hi = min(pos + 1, lo + chunk);

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int sub = lane % LANES, slot_in_warp = lane / LANES;
  const int stream = warp * KPW + slot_in_warp;
  const int32_t* pages = p.kv.page_indices + p.kv.page_indptr[row];
  const int32_t page_size = p.kv.page_size;
  const bool page_pow2 = (page_size & (page_size - 1)) == 0; // shifts, not divisions
  const int page_shift = __ffs(page_size) - 1;
  const size_t token_stride = size_t(p.kv.num_kv_heads) * D;
  const size_t head_offset = size_t(kv_head) * D + sub * 8;
  const auto page_of = [&](int32_t key) { return pages[page_pow2 ? key >> page_shift : key / page_size]; };
  const auto offset_of = [&](int32_t key, int32_t page) {
    const int32_t in_page = page_pow2 ? key & (page_size - 1) : key % page_size;
    return (size_t(page) * page_size + in_page) * token_stride + head_offset;
  };
  const int32_t first_base = lo + warp * KPW;
  // bf16: this thread's keys of the iteration at `base` into stage `stage`.
  const auto stage_keys = [&](int32_t base, int stage, bool skip_new_key) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int32_t key = base + slot_in_warp + u * STREAMS;
      const bool valid = key < hi && !(skip_new_key && key == pos);
      const size_t at = valid ? offset_of(key, page_of(key)) : 0;
      cp_async_16(&smem.kv[(stage * U + u) * 2][threadIdx.x], p.kv.k_bf16() + at, valid);
      cp_async_16(&smem.kv[(stage * U + u) * 2 + 1][threadIdx.x], p.kv.v_bf16() + at, valid);
    }
    cp_async_commit();
  };
  if (BF16 && pos >= 0 && split < splits) stage_keys(first_base, 0, true);
  wait_for_previous_kernel();

  if (pos < 0) { // padding: zeros, so that the layers after it read finite values
    if (split == 0)
      for (int i = threadIdx.x; i < g * D; i += decode_threads) p.out[head0 * D + i] = __float2bfloat16(0.0f);
    return;
  }
  if (split >= splits) return;
  const float q_scale = p.scale * log2e; // scores in log2 units, for exp2

  float q[G][8], acc[G][8], m[G], l[G];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    float f[8] = {};
    if (h < g) unpack8(*reinterpret_cast<const uint4*>(p.q + (head0 + h) * D + sub * 8), f);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      q[h][e] = f[e] * q_scale;
      acc[h][e] = 0.0f;
    }
    m[h] = no_score;
    l[h] = 0.0f;
  }

  // NOTE: the trip count is the same for every lane of a warp: the score
  // reduction shuffles across the whole warp.
  int stage = 0;
  for (int32_t base = first_base; base < hi; base += STEP, stage ^= 1) {
    bool valid[U];
    uint4 kr[U], vr[U];
    if constexpr (BF16) {
      stage_keys(base + STEP, stage ^ 1, false); // empty past the end: the group count stays uniform
      cp_async_wait<1>();
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int32_t key = base + slot_in_warp + u * STREAMS;
        valid[u] = key < hi;
        kr[u] = smem.kv[(stage * U + u) * 2][threadIdx.x];
        vr[u] = smem.kv[(stage * U + u) * 2 + 1][threadIdx.x];
        if (base == first_base && key == pos) { // left out of the early copies
          const size_t at = offset_of(key, page_of(key));
          kr[u] = *reinterpret_cast<const uint4*>(p.kv.k_bf16() + at);
          vr[u] = *reinterpret_cast<const uint4*>(p.kv.v_bf16() + at);
        }
      }
    } else {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int32_t key = base + slot_in_warp + u * STREAMS;
        valid[u] = key < hi;
        kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
        if (valid[u]) {
          const int32_t page = page_of(key);
          const int32_t in_page = page_pow2 ? key & (page_size - 1) : key % page_size;
          const kv8_raw raw = load_kv8(p.kv, offset_of(key, page), page, in_page, kv_head);
          kr[u] = dequant8_bf16<F>(raw.k, raw.k_scale);
          vr[u] = dequant8_bf16<F>(raw.v, raw.v_scale);
        }
      }
    }
    float s[U][G];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int h = 0; h < G; ++h) {
        float d = dot8(q[h], kr[u]);
#pragma unroll
        for (int offset = LANES / 2; offset > 0; offset /= 2) d += __shfl_xor_sync(0xffffffffu, d, offset);
        s[u][h] = valid[u] ? d : -INFINITY;
      }
    float vf[U][8];
#pragma unroll
    for (int u = 0; u < U; ++u) unpack8(vr[u], vf[u]);
#pragma unroll
    for (int h = 0; h < G; ++h) {
      float top = no_score;
#pragma unroll
      for (int u = 0; u < U; ++u) top = fmaxf(top, s[u][h]);
      const float m_new = fmaxf(m[h], top);
      const float alpha = exp2f(m[h] - m_new);
      m[h] = m_new;
      l[h] *= alpha;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[h][e] *= alpha;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const float pu = exp2f(s[u][h] - m_new);
        l[h] += pu;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[h][e] = fmaf(pu, vf[u][e], acc[h][e]);
      }
    }
  }
  if constexpr (BF16) cp_async_wait<0>(); // nothing in flight into the storage the merge reuses
  __syncthreads();

  // Merge the block's streams.
  auto& ms = smem.merge;
#pragma unroll
  for (int h = 0; h < G; ++h) {
    if (sub == 0) {
      ms.m[stream][h] = m[h];
      ms.l[stream][h] = l[h];
    }
    float4* a = reinterpret_cast<float4*>(&ms.acc[stream][h][sub * 8]);
    a[0] = make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
    a[1] = make_float4(acc[h][4], acc[h][5], acc[h][6], acc[h][7]);
  }
  __syncthreads();
  // Row `first` + s * num_heads of the partial results is (row, split s, head h).
  const size_t first = size_t(row) * p.max_splits * p.num_heads + size_t(kv_head) * g;
  for (int i = threadIdx.x; i < g * D; i += decode_threads) {
    const int h = i / D, d = i % D;
    float top = no_score;
    for (int s = 0; s < STREAMS; ++s) top = fmaxf(top, ms.m[s][h]);
    float sum_l = 0.0f, sum_a = 0.0f;
    for (int s = 0; s < STREAMS; ++s) {
      const float w = exp2f(ms.m[s][h] - top);
      sum_l = fmaf(w, ms.l[s][h], sum_l);
      sum_a = fmaf(w, ms.acc[s][h][d], sum_a);
    }
    if (splits == 1) {
      p.out[(head0 + h) * D + d] = __float2bfloat16(sum_a / sum_l);
    } else {
      const size_t at = first + size_t(split) * p.num_heads + h;
      p.partial_out[at * D + d] = sum_a;
      if (d == 0) {
        p.partial_ml[2 * at] = top;
        p.partial_ml[2 * at + 1] = sum_l;
      }
    }
  }
  if (splits == 1) return;

  // The last of the row's split blocks for this kv head merges them: warp h
  // turns head h's maxima into weights, then every thread sums dimensions.
  int32_t* done = p.split_done + size_t(row) * p.kv.num_kv_heads + kv_head;
  __threadfence(); // the partial results are visible before the count says so
  __syncthreads();
  if (threadIdx.x == 0) merges = atomicAdd(done, 1) == splits - 1;
  __syncthreads();
  if (!merges) return;
  __threadfence();
  for (int h = warp; h < g; h += decode_warps) {
    const size_t at = first + size_t(lane) * p.num_heads + h;
    const float m_split = lane < splits ? __ldcg(p.partial_ml + 2 * at) : no_score;
    const float l_split = lane < splits ? __ldcg(p.partial_ml + 2 * at + 1) : 0.0f;
    const float top = warp_max(m_split); // every lane shuffles
    const float w = lane < splits ? exp2f(m_split - top) : 0.0f;
    split_weight[h][lane] = w;
    const float total = warp_sum(w * l_split);
    if (lane == 0) split_inv_total[h] = 1.0f / total;
  }
  __syncthreads();
  // Four dimensions a thread, the loads of up to merge_batch splits in flight
  // at once: the merge is a few L2 round trips, not one per split.
  constexpr int merge_batch = 16;
  const size_t split_stride = size_t(p.num_heads) * D / 4; // float4s from one split to the next
  for (int i = threadIdx.x; i < g * D / 4; i += decode_threads) {
    const int h = 4 * i / D, d = 4 * i % D;
    const float4* part = reinterpret_cast<const float4*>(p.partial_out + (first + h) * D + d);
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int s0 = 0; s0 < splits; s0 += merge_batch) {
      float4 x[merge_batch];
#pragma unroll
      for (int j = 0; j < merge_batch; ++j)
        x[j] = s0 + j < splits ? __ldcg(part + size_t(s0 + j) * split_stride) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
      for (int j = 0; j < merge_batch; ++j) {
        const float w = s0 + j < splits ? split_weight[h][s0 + j] : 0.0f;
        sum.x = fmaf(w, x[j].x, sum.x);
        sum.y = fmaf(w, x[j].y, sum.y);
        sum.z = fmaf(w, x[j].z, sum.z);
        sum.w = fmaf(w, x[j].w, sum.w);
      }
    }
    const float inv = split_inv_total[h];
    *reinterpret_cast<uint2*>(p.out + (head0 + h) * D + d) =
        make_uint2(pack_bf16(sum.x * inv, sum.y * inv), pack_bf16(sum.z * inv, sum.w * inv));
  }
  if (threadIdx.x == 0) *done = 0; // for the next launch
}

template <int D, kv_format F>
void launch_for_format(const decode_attention_params& p, const dim3 grid, cudaStream_t stream) {
  const auto kernel = p.group <= 1   ? decode_attention_kernel<D, 1, F>
                      : p.group <= 2 ? decode_attention_kernel<D, 2, F>
                      : p.group <= 4 ? decode_attention_kernel<D, 4, F>
                                     : decode_attention_kernel<D, 8, F>;
  launch_kernel(kernel, grid, decode_threads, 0, stream, p);
}

template <int D>
void launch_for_head_dim(const decode_attention_params& p, const dim3 grid, cudaStream_t stream) {
  switch (p.kv.format) {
    case kv_format::fp8: launch_for_format<D, kv_format::fp8>(p, grid, stream); break;
    case kv_format::int8: launch_for_format<D, kv_format::int8>(p, grid, stream); break;
    default: launch_for_format<D, kv_format::bf16>(p, grid, stream); break;
  }
}

} // namespace

bool decode_attention_supports(int32_t head_dim, int32_t group) {
  const bool dim = head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128 || head_dim == 256;
  return dim && group >= 1 && group <= 8;
}

int32_t decode_max_splits(int32_t rows, int32_t num_kv_heads, int32_t num_sms) {
  const int64_t blocks = int64_t(rows) * num_kv_heads;
  return int32_t(std::clamp<int64_t>((4 * int64_t(num_sms) + blocks - 1) / blocks, 1, 32));
}

size_t decode_partial_out_elems(int32_t rows, int32_t max_splits, int32_t num_heads, int32_t head_dim) {
  return size_t(rows) * max_splits * num_heads * head_dim;
}

size_t decode_partial_ml_elems(int32_t rows, int32_t max_splits, int32_t num_heads) {
  return size_t(rows) * max_splits * num_heads * 2;
}

size_t decode_split_done_elems(int32_t rows, int32_t num_kv_heads) { return size_t(rows) * num_kv_heads; }

void launch_decode_attention(const decode_attention_params& p, int32_t rows, cudaStream_t stream) {
  if (rows == 0) return;
  if (!decode_attention_supports(p.kv.head_dim, p.group))
    throw error("decode attention: head_dim " + std::to_string(p.kv.head_dim) + " with " + std::to_string(p.group) +
                " q heads per kv head has no kernel");
  const dim3 grid(unsigned(rows), unsigned(p.kv.num_kv_heads), unsigned(p.max_splits));
  switch (p.kv.head_dim) {
    case 16: launch_for_head_dim<16>(p, grid, stream); break;
    case 32: launch_for_head_dim<32>(p, grid, stream); break;
    case 64: launch_for_head_dim<64>(p, grid, stream); break;
    case 128: launch_for_head_dim<128>(p, grid, stream); break;
    default: launch_for_head_dim<256>(p, grid, stream); break;
  }
}

} // namespace kvactor::gpu
