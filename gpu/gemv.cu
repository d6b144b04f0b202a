#include <string>

#include "gpu/cuda_check.h"
#include "gpu/gemv.h"
#include "gpu/launch.cuh"
#include "gpu/reduce.cuh"
#include "gpu/vec.cuh"
#include "runtime/error.h"

namespace kvactor::gpu {

namespace {

constexpr int gemv_threads = 256;
constexpr int gemv_warps = gemv_threads / 32;

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// One warp per output column: ROWS weight rows (2 when GATED) against the m
// <= M activation rows. Each lane walks the row in 16-byte chunks, U chunks
// per weight row in flight before the first use. The first U are loaded
// before waiting for the kernel that writes x, so the weights stream while
// that kernel finishes.
template <int M, bool GATED, typename OutT>
__global__ void __launch_bounds__(gemv_threads)
    gemv_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, OutT* __restrict__ y,
                int32_t m, int32_t n, int32_t k) {
  constexpr int U = M <= 2 ? 8 : 4; // 16-byte loads per lane and weight row in flight
  constexpr int ROWS = GATED ? 2 : 1;
  const int lane = threadIdx.x % 32;
  const int32_t col = blockIdx.x * gemv_warps + threadIdx.x / 32;
  const int32_t chunks = k / 8;
  const uint4* wr[ROWS];
  wr[0] = reinterpret_cast<const uint4*>(w + size_t(col) * k);
  if constexpr (GATED) wr[ROWS - 1] = reinterpret_cast<const uint4*>(w + size_t(n + col) * k);
  const uint4* xr = reinterpret_cast<const uint4*>(x);
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
    uint4 wv[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) wv[r] = load_streaming(wr[r] + base);
#pragma unroll
    for (int i = 0; i < M; ++i) {
      const uint4 xv = i < m ? __ldg(xr + size_t(i) * chunks + base) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int r = 0; r < ROWS; ++r) acc[r][i] = dot8(wv[r], xv, acc[r][i]);
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int i = 0; i < M; ++i) acc[r][i] = warp_sum(acc[r][i]);
  if (lane != 0) return;
#pragma unroll
  for (int i = 0; i < M; ++i) {
    if (i >= m) break;
    float v = acc[0][i];
    if constexpr (GATED) v = v / (1.0f + expf(-v)) * acc[ROWS - 1][i];
    y[size_t(i) * n + col] = from_float<OutT>(v);
  }
}

template <bool GATED, typename OutT>
void launch(const __nv_bfloat16* x, const __nv_bfloat16* w, OutT* y, int32_t m, int32_t n, int32_t k,
            cudaStream_t stream) {
  const unsigned blocks = unsigned((n + gemv_warps - 1) / gemv_warps);
  const auto kernel = m <= 1   ? gemv_kernel<1, GATED, OutT>
                      : m <= 2 ? gemv_kernel<2, GATED, OutT>
                               : gemv_kernel<4, GATED, OutT>;
  launch_kernel(kernel, blocks, gemv_threads, 0, stream, x, w, y, m, n, k);
}

void check(int32_t m, int32_t k) {
  if (m < 0 || m > gemv_max_rows || k % 8 != 0)
    throw error("gemv: " + std::to_string(m) + " rows of " + std::to_string(k) + " (at most " +
                std::to_string(gemv_max_rows) + " rows, a multiple of 8 columns)");
}

} // namespace

void launch_gemv(const __nv_bfloat16* x, const __nv_bfloat16* w, void* y, bool y_fp32, int32_t m, int32_t n, int32_t k,
                 cudaStream_t stream) {
  check(m, k);
  if (m == 0 || n == 0) return;
  if (y_fp32)
    launch<false>(x, w, static_cast<float*>(y), m, n, k, stream);
  else
    launch<false>(x, w, static_cast<__nv_bfloat16*>(y), m, n, k, stream);
}

void launch_gemv_gated(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* act, int32_t m, int32_t n,
                       int32_t k, cudaStream_t stream) {
  check(m, k);
  if (m == 0 || n == 0) return;
  launch<true>(x, w, act, m, n, k, stream);
}

} // namespace kvactor::gpu
