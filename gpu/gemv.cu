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
  add_f32,  // y += bf16(x . w), the new y to y_bf16 too (the fp32 residual stream)
  silu_mul, // two weight rows, gate and up: y = bf16(silu(gate) * up)
  rope_kv,  // two weight rows, the halves of a rotation pair of a q, k or v head: RoPE, then q out, K and V to pages
};

struct gemv_params {
  const __nv_bfloat16* x = nullptr; // [m, k]
  const float* g = nullptr;         // [k], the norm's weights (NORM)
  const __nv_bfloat16* w = nullptr; // [n, k]; [2 n, k] for silu_mul
  void* y = nullptr;                // [m, n]
  __nv_bfloat16* y_bf16 = nullptr;  // [m, n] (add_f32)
  int32_t m = 0, n = 0, k = 0;      // n: output columns, or rotation pairs for rope_kv
  float eps = 0.0f;
  rope_kv_params rope; // (rope_kv)
};

// One warp per output column: ROWS weight rows against the m <= M activation
// rows. Each lane walks the rows in 16-byte chunks, U chunks per weight row
// in flight before the first use. The first U are loaded before waiting for
// the kernel that writes x, so the weights stream while that kernel
// finishes.
//
// With NORM, x is the residual stream (its bf16 copy) and the kernel is the
// RMSNorm too: every warp reads the whole row anyway, so it sums its squares
// on the way, multiplies x by the norm's weights g (fp32, from L1) before the
// dot products and scales those by the inverse RMS at the end. out::add_f32
// and out::rope_kv write where no other warp writes: one warp owns each
// column (each rotation pair).
template <int M, bool NORM, out O>
__global__ void __launch_bounds__(gemv_threads) gemv_kernel(const gemv_params p) {
  constexpr int ROWS = O == out::silu_mul || O == out::rope_kv ? 2 : 1;
  // 16-byte loads per lane and weight row in flight; fewer with more rows of
  // x to hold (two weight rows, normed, of 2 rows need 132 registers at 8:
  // one block a multiprocessor), and fewer for the short qkv projection, so
  // that all its blocks fit the GPU at once (4 a multiprocessor).
  constexpr int U = O != out::rope_kv && (M == 1 || (M == 2 && !(ROWS == 2 && NORM))) ? 8 : 4;
  const int lane = threadIdx.x % 32;
  const int32_t col = blockIdx.x * gemv_warps + threadIdx.x / 32;
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
  wait_for_previous_kernel();
  if (col >= n) return;

  float acc[ROWS][M], ss[M];
#pragma unroll
  for (int i = 0; i < M; ++i) {
    ss[i] = 0.0f;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r][i] = 0.0f;
  }

  // The products of chunk `c` (weight rows wc, x rows xv) into acc and ss.
  const auto accumulate = [&](const uint4 (&wc)[ROWS], const uint4 (&xv)[M], int32_t c) {
    float gv[8];
    if constexpr (NORM) {
      const float4* gc = reinterpret_cast<const float4*>(p.g) + 2 * c;
      const float4 lo = __ldg(gc), hi = __ldg(gc + 1);
      gv[0] = lo.x, gv[1] = lo.y, gv[2] = lo.z, gv[3] = lo.w, gv[4] = hi.x, gv[5] = hi.y, gv[6] = hi.z, gv[7] = hi.w;
    }
#pragma unroll
    for (int i = 0; i < M; ++i) {
      if constexpr (NORM) {
        float xf[8];
        unpack8(xv[i], xf);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          ss[i] = fmaf(xf[e], xf[e], ss[i]);
          xf[e] *= gv[e];
        }
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
          float wf[8];
          unpack8(wc[r], wf);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r][i] = fmaf(wf[e], xf[e], acc[r][i]);
        }
      } else {
#pragma unroll
        for (int r = 0; r < ROWS; ++r) acc[r][i] = dot8(wc[r], xv[i], acc[r][i]);
      }
    }
  };

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
    for (int u = 0; u < U; ++u) {
      uint4 wc[ROWS];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) wc[r] = wv[r][u];
      accumulate(wc, xv[u], base + u * 32);
    }
  }
  for (; base < chunks; base += 32) {
    uint4 wc[ROWS], xv[M];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) wc[r] = load_streaming(wr[r] + base);
#pragma unroll
    for (int i = 0; i < M; ++i) xv[i] = i < m ? __ldg(xr + size_t(i) * chunks + base) : make_uint4(0, 0, 0, 0);
    accumulate(wc, xv, base);
  }
#pragma unroll
  for (int i = 0; i < M; ++i) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r][i] = warp_sum(acc[r][i]);
    if constexpr (NORM) {
      const float inv = 1.0f / sqrtf(warp_sum(ss[i]) / float(k) + p.eps);
#pragma unroll
      for (int r = 0; r < ROWS; ++r) acc[r][i] *= inv;
    }
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
    } else if constexpr (O == out::add_f32) {
      float& r = static_cast<float*>(p.y)[at];
      r += __bfloat162float(__float2bfloat16(acc[0][i]));
      p.y_bf16[at] = __float2bfloat16(r);
    } else if constexpr (O == out::silu_mul) {
      const float gate = acc[0][i];
      static_cast<__nv_bfloat16*>(p.y)[at] = __float2bfloat16(gate / (1.0f + expf(-gate)) * acc[1][i]);
    } else {
      store_rope_pair(p.rope, i, row[0], acc[0][i], acc[1][i]);
    }
  }
}

template <bool NORM, out O>
void launch(const gemv_params& p, cudaStream_t stream) {
  if (p.m < 0 || p.m > gemv_max_rows || p.k % 8 != 0)
    throw error("gemv: " + std::to_string(p.m) + " rows of " + std::to_string(p.k) + " (at most " +
                std::to_string(gemv_max_rows) + " rows, a multiple of 8 columns)");
  if (p.m == 0 || p.n == 0) return;
  const unsigned blocks = unsigned((p.n + gemv_warps - 1) / gemv_warps);
  const auto kernel = p.m <= 1   ? gemv_kernel<1, NORM, O>
                      : p.m <= 2 ? gemv_kernel<2, NORM, O>
                                 : gemv_kernel<4, NORM, O>;
  launch_kernel(kernel, blocks, gemv_threads, 0, stream, p);
}

gemv_params params(const __nv_bfloat16* x, const float* g, const __nv_bfloat16* w, void* y, int32_t m, int32_t n,
                   int32_t k, float eps) {
  gemv_params p;
  p.x = x;
  p.g = g;
  p.w = w;
  p.y = y;
  p.m = m;
  p.n = n;
  p.k = k;
  p.eps = eps;
  return p;
}

} // namespace

void launch_gemv(const __nv_bfloat16* x, const __nv_bfloat16* w, void* y, bool y_fp32, int32_t m, int32_t n, int32_t k,
                 cudaStream_t stream) {
  const gemv_params p = params(x, nullptr, w, y, m, n, k, 0.0f);
  if (y_fp32)
    launch<false, out::f32>(p, stream);
  else
    launch<false, out::bf16>(p, stream);
}

void launch_gemv_add(const __nv_bfloat16* x, const __nv_bfloat16* w, float* residual, __nv_bfloat16* residual_bf16,
                     int32_t m, int32_t n, int32_t k, cudaStream_t stream) {
  gemv_params p = params(x, nullptr, w, residual, m, n, k, 0.0f);
  p.y_bf16 = residual_bf16;
  launch<false, out::add_f32>(p, stream);
}

void launch_rms_norm_gemv(const __nv_bfloat16* residual, const float* norm_weight, const __nv_bfloat16* w,
                          __nv_bfloat16* y, int32_t m, int32_t n, int32_t k, float eps, cudaStream_t stream) {
  launch<true, out::bf16>(params(residual, norm_weight, w, y, m, n, k, eps), stream);
}

void launch_rms_norm_gemv_gated(const __nv_bfloat16* residual, const float* norm_weight, const __nv_bfloat16* w,
                                __nv_bfloat16* act, int32_t m, int32_t n, int32_t k, float eps, cudaStream_t stream) {
  launch<true, out::silu_mul>(params(residual, norm_weight, w, act, m, n, k, eps), stream);
}

void launch_rms_norm_gemv_rope_kv(const __nv_bfloat16* residual, const float* norm_weight, const __nv_bfloat16* w,
                                  const rope_kv_params& rope, int32_t m, int32_t k, float eps, cudaStream_t stream) {
  if (!rope_kv_fusable(rope))
    throw error("gemv: RoPE and the K/V write fused need a bf16 cache and no q/k norms");
  gemv_params p = params(residual, norm_weight, w, nullptr, m,
                         (rope.num_heads + 2 * rope.num_kv_heads) * (rope.head_dim / 2), k, eps);
  p.rope = rope;
  launch<true, out::rope_kv>(p, stream);
}

} // namespace kvactor::gpu
