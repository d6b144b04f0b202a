#include <string>

#include "gpu/cuda_check.h"
#include "gpu/gemv.h"
#include "gpu/launch.cuh"
#include "gpu/reduce.cuh"
#include "gpu/rope_kv.cuh"
#include "gpu/vec.cuh"
#include "runtime/error.h"

namespace kvactor::gpu {

namespace {

constexpr int gemv_threads = 256;
constexpr int gemv_warps = gemv_threads / 32;

// What a warp does with its column's dot products.
enum class out {
  bf16,     // y = bf16(x . w)
  f32,      // y = x . w
  add_f32,  // y += bf16(x . w): the fp32 residual stream; with next_g, the next norm's input too
  silu_mul, // two weight rows, gate and up: y = bf16(silu(gate) * up)
  rope_kv,  // two weight rows, the halves of a rotation pair of a q, k or v head: RoPE, then q out, K and V to pages
};

struct gemv_params {
  const __nv_bfloat16* x = nullptr; // [m, k]
  const __nv_bfloat16* w = nullptr; // [n, k]; [2 n, k] for silu_mul
  void* y = nullptr;                // [m, n]
  int32_t m = 0, n = 0, k = 0;      // n: output columns, or rotation pairs for rope_kv
  // NORM: x is a norm_input, sq_parts its rows' sums of squares in parts
  // of 8 columns [m, k / 8].
  const float* sq_parts = nullptr;
  float eps = 0.0f;
  // add_f32 with next_g [n]: the norm_input of the new residual for a norm of
  // those weights into next_x, its sums of squares into next_sq_parts
  // [m, n / 8].
  const float* next_g = nullptr;
  __nv_bfloat16* next_x = nullptr;
  float* next_sq_parts = nullptr;
  rope_kv_params rope; // (rope_kv)
};

// One warp per output column: ROWS weight rows against the m <= M activation
// rows. Each lane walks the rows in 16-byte chunks, U chunks per weight row
// in flight before the first use. The first U are loaded before waiting for
// the kernel that writes x, so the weights stream while that kernel
// finishes.
//
// NORM kernels finish an RMSNorm that the kernel before them prepared (see
// gemv.h): they scale each row's dot products by its inverse RMS. out::add_f32
// and out::rope_kv write where no other warp writes: one warp owns each
// column (each rotation pair).
template <int M, bool NORM, out O>
__global__ void __launch_bounds__(gemv_threads) gemv_kernel(const gemv_params p) {
  constexpr int ROWS = O == out::silu_mul || O == out::rope_kv ? 2 : 1;
  // 16-byte loads per lane and weight row in flight: 4 with more rows of x
  // to hold, and for the qkv projection (rope_kv), so that all its blocks
  // fit the GPU at once (4 a multiprocessor).
  constexpr int U = O != out::rope_kv && M <= 2 ? 8 : 4;
  __shared__ float block_sq[gemv_warps][M]; // add_f32 with next_g
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int32_t col = blockIdx.x * gemv_warps + warp;
  const int32_t k = p.k, m = p.m, n = p.n, chunks = k / 8;
  int32_t row[ROWS];
  if constexpr (O == out::rope_kv) {
    const int32_t half = p.rope.head_dim / 2;
    row[0] = col / half * p.rope.head_dim + col % half;
    row[1] = row[0] + half;
  } else {
    row[0] = col;
    if constexpr (ROWS == 2) row[1] = n + col;
  }
  const uint4* wr[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) wr[r] = reinterpret_cast<const uint4*>(p.w + size_t(row[r]) * k);
  const uint4* xr = reinterpret_cast<const uint4*>(p.x);
  const auto load_weights = [&](uint4 (&wv)[ROWS][U], int32_t base) {
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < ROWS; ++r) wv[r][u] = load_streaming(wr[r] + base + u * 32);
  };
  launch_next_kernel();
  uint4 wv[ROWS][U];
  if (col < n && lane + 32 * (U - 1) < chunks) load_weights(wv, lane);
  // RoPE angles depend on the step's metadata only: lane t takes token t's
  // while the previous kernel ends (double sincos is slow for one lane).
  float rot_cos = 1.0f, rot_sin = 0.0f;
  if constexpr (O == out::rope_kv)
    if (col < n && lane < m) rope_rotation(p.rope, lane, row[0], rot_cos, rot_sin);
  wait_for_previous_kernel();
  // NOTE: add_f32 launches have whole blocks of columns (launch checks), and
  // every warp reaches the block's barrier below.
  if (col >= n) return;
  // The rows' inverse RMS, summed from the parts while the first weights
  // are in flight (lane 0's order, the same in every warp and run).
  float inv[M];
  if constexpr (NORM) {
    const int32_t parts = k / 8;
#pragma unroll
    for (int i = 0; i < M; ++i) {
      float sum = 0.0f;
      if (i < m)
#pragma unroll 8
        for (int32_t j = lane; j < parts; j += 32) sum += __ldcg(p.sq_parts + size_t(i) * parts + j);
      sum = warp_sum(sum);
      inv[i] = 1.0f / sqrtf(sum / float(k) + p.eps);
    }
  }

  float acc[ROWS][M];
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int i = 0; i < M; ++i) acc[r][i] = 0.0f;

  // Whole iterations first: every load of one issued before the first use.
  int32_t base = lane;
  for (; base + 32 * (U - 1) < chunks; base += 32 * U) {
    if (base != lane) load_weights(wv, base); // the first were loaded above
    uint4 xv[U][M];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int i = 0; i < M; ++i)
        xv[u][i] = i < m ? __ldg(xr + size_t(i) * chunks + base + u * 32) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int i = 0; i < M; ++i)
#pragma unroll
        for (int r = 0; r < ROWS; ++r) acc[r][i] = dot8(wv[r][u], xv[u][i], acc[r][i]);
  }
  for (; base < chunks; base += 32) {
    uint4 wc[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) wc[r] = load_streaming(wr[r] + base);
#pragma unroll
    for (int i = 0; i < M; ++i) {
      const uint4 xv = i < m ? __ldg(xr + size_t(i) * chunks + base) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int r = 0; r < ROWS; ++r) acc[r][i] = dot8(wc[r], xv, acc[r][i]);
    }
  }
  float cs[M], sn[M];
#pragma unroll
  for (int i = 0; i < M; ++i) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r][i] = warp_sum(acc[r][i]);
    if constexpr (NORM) {
#pragma unroll
      for (int r = 0; r < ROWS; ++r) acc[r][i] *= inv[i];
    }
    if constexpr (O == out::rope_kv) { // token i's angle, from lane i
      cs[i] = __shfl_sync(0xffffffffu, rot_cos, i);
      sn[i] = __shfl_sync(0xffffffffu, rot_sin, i);
    }
  }

  if constexpr (O == out::add_f32) {
    // Lane 0 updates the residual and, for the next norm, writes its input
    // and this column's square; the block's 8 columns make one part.
    if (lane == 0) {
#pragma unroll
      for (int i = 0; i < M; ++i) {
        if (i >= m) break;
        const size_t at = size_t(i) * n + col;
        float& r = static_cast<float*>(p.y)[at];
        r += __bfloat162float(__float2bfloat16(acc[0][i]));
        if (p.next_g) {
          p.next_x[at] = __float2bfloat16(r * p.next_g[col]);
          block_sq[warp][i] = r * r;
        }
      }
    }
    if (!p.next_g) return;
    __syncthreads();
    // This block's 8 columns are one part; in a fixed order, so that every
    // run of a step gives the same bits.
    if (threadIdx.x < m) {
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < gemv_warps; ++j) sum += block_sq[j][threadIdx.x];
      p.next_sq_parts[size_t(threadIdx.x) * (n / gemv_warps) + blockIdx.x] = sum;
    }
    return;
  }
  if (lane != 0) return;
#pragma unroll
  for (int i = 0; i < M; ++i) {
    if (i >= m) break;
    const size_t at = size_t(i) * n + col;
    if constexpr (O == out::bf16) {
      static_cast<__nv_bfloat16*>(p.y)[at] = __float2bfloat16(acc[0][i]);
    } else if constexpr (O == out::f32) {
      static_cast<float*>(p.y)[at] = acc[0][i];
    } else if constexpr (O == out::silu_mul) {
      const float gate = acc[0][i];
      static_cast<__nv_bfloat16*>(p.y)[at] = __float2bfloat16(gate / (1.0f + expf(-gate)) * acc[1][i]);
    } else {
      store_rope_pair(p.rope, i, row[0], acc[0][i], acc[1][i], cs[i], sn[i]);
    }
  }
}

template <bool NORM, out O>
void launch(const gemv_params& p, cudaStream_t stream) {
  if (p.m < 0 || p.m > gemv_max_rows || p.k % 8 != 0)
    throw error("gemv: " + std::to_string(p.m) + " rows of " + std::to_string(p.k) + " (at most " +
                std::to_string(gemv_max_rows) + " rows, a multiple of 8 columns)");
  if (O == out::add_f32 && p.n % gemv_warps != 0)
    throw error("gemv: adding to the residual needs a multiple of " + std::to_string(gemv_warps) + " columns, got " +
                std::to_string(p.n));
  if (p.m == 0 || p.n == 0) return;
  const unsigned blocks = unsigned((p.n + gemv_warps - 1) / gemv_warps);
  const auto kernel = p.m <= 1   ? gemv_kernel<1, NORM, O>
                      : p.m <= 2 ? gemv_kernel<2, NORM, O>
                                 : gemv_kernel<4, NORM, O>;
  launch_kernel(kernel, blocks, gemv_threads, 0, stream, p);
}

gemv_params params(const __nv_bfloat16* x, const __nv_bfloat16* w, void* y, int32_t m, int32_t n, int32_t k) {
  gemv_params p;
  p.x = x;
  p.w = w;
  p.y = y;
  p.m = m;
  p.n = n;
  p.k = k;
  return p;
}

gemv_params normed_params(const norm_input& in, const __nv_bfloat16* w, void* y, int32_t m, int32_t n, int32_t k,
                          float eps) {
  gemv_params p = params(in.x, w, y, m, n, k);
  p.sq_parts = in.sq_parts;
  p.eps = eps;
  return p;
}

} // namespace

void launch_gemv(const __nv_bfloat16* x, const __nv_bfloat16* w, void* y, bool y_fp32, int32_t m, int32_t n, int32_t k,
                 cudaStream_t stream) {
  const gemv_params p = params(x, w, y, m, n, k);
  if (y_fp32)
    launch<false, out::f32>(p, stream);
  else
    launch<false, out::bf16>(p, stream);
}

void launch_gemv_add(const __nv_bfloat16* x, const __nv_bfloat16* w, float* residual, const float* next_norm_weight,
                     norm_input next, int32_t m, int32_t n, int32_t k, cudaStream_t stream) {
  gemv_params p = params(x, w, residual, m, n, k);
  p.next_g = next_norm_weight;
  p.next_x = next.x;
  p.next_sq_parts = next.sq_parts;
  launch<false, out::add_f32>(p, stream);
}

void launch_rms_norm_gemv(norm_input in, const __nv_bfloat16* w, __nv_bfloat16* y, int32_t m, int32_t n, int32_t k,
                          float eps, cudaStream_t stream) {
  launch<true, out::bf16>(normed_params(in, w, y, m, n, k, eps), stream);
}

void launch_rms_norm_gemv_gated(norm_input in, const __nv_bfloat16* w, __nv_bfloat16* act, int32_t m, int32_t n,
                                int32_t k, float eps, cudaStream_t stream) {
  launch<true, out::silu_mul>(normed_params(in, w, act, m, n, k, eps), stream);
}

void launch_rms_norm_gemv_rope_kv(norm_input in, const __nv_bfloat16* w, const rope_kv_params& rope, int32_t m,
                                  int32_t k, float eps, cudaStream_t stream) {
  if (!rope_kv_fusable(rope))
    throw error("gemv: RoPE and the K/V write fused need a bf16 cache and no q/k norms");
  gemv_params p =
      normed_params(in, w, nullptr, m, (rope.num_heads + 2 * rope.num_kv_heads) * (rope.head_dim / 2), k, eps);
  p.rope = rope;
  launch<true, out::rope_kv>(p, stream);
}

} // namespace kvactor::gpu
