#pragma once
// Linear layers through cuBLASLt: y[m, n] = x[m, k] . w[n, k]^T with bf16
// inputs, fp32 accumulation and a bf16 or fp32 result. The descriptors and
// an algorithm are kept per shape: cuBLASLt's first choice, or with `tune`
// the fastest of its first candidates, timed once at the shape's first run
// (then results can differ between runners in the last bits).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "gpu/device_buffer.h"

namespace kvactor::gpu {

class gemm_runner {
 public:
  explicit gemm_runner(cudaStream_t stream, bool tune = false);
  gemm_runner(const gemm_runner&) = delete;
  gemm_runner& operator=(const gemm_runner&) = delete;
  ~gemm_runner();

  // x: [m, k], w: [n, k], both row-major; y: [m, n] of y_type (CUDA_R_16BF or
  // CUDA_R_32F). Pointers must be 16-byte aligned.
  void run(const __nv_bfloat16* x, const __nv_bfloat16* w, void* y, cudaDataType_t y_type, int64_t m, int64_t n,
           int64_t k);

 private:
  struct plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  using shape = std::tuple<int64_t, int64_t, int64_t, cudaDataType_t>; // m, n, k, y_type

  const plan& plan_for(const shape& s, const __nv_bfloat16* x, const __nv_bfloat16* w, void* y);
  // The fastest of `candidates` on these operands.
  cublasLtMatmulAlgo_t fastest(const plan& p, const cublasLtMatmulHeuristicResult_t* candidates, int count,
                               const __nv_bfloat16* x, const __nv_bfloat16* w, void* y);

  cudaStream_t stream_;
  bool tune_;
  cublasLtHandle_t handle_ = nullptr;
  device_buffer<unsigned char> workspace_;
  std::map<shape, plan> plans_;
};

} // namespace kvactor::gpu
