#include "gpu/gemm.h"

#include <string>

#include "gpu/cuda_check.h"
#include "runtime/error.h"

namespace kvactor::gpu {

namespace {

// cuBLASLt's recommendation for Hopper.
constexpr size_t workspace_bytes = size_t(32) << 20;
// Candidates a tuning runner times.
constexpr int tuning_candidates = 8;

void destroy(const cublasLtMatmulDesc_t op, const cublasLtMatrixLayout_t a, const cublasLtMatrixLayout_t b,
             const cublasLtMatrixLayout_t d) {
  if (d) cublasLtMatrixLayoutDestroy(d);
  if (b) cublasLtMatrixLayoutDestroy(b);
  if (a) cublasLtMatrixLayoutDestroy(a);
  if (op) cublasLtMatmulDescDestroy(op);
}

} // namespace

gemm_runner::gemm_runner(cudaStream_t stream, bool tune)
    : stream_(stream), tune_(tune), workspace_(workspace_bytes) {
  KVACTOR_CUBLAS_CHECK(cublasLtCreate(&handle_));
}

gemm_runner::~gemm_runner() {
  for (auto& [s, p] : plans_) destroy(p.op, p.a, p.b, p.d);
  if (handle_) cublasLtDestroy(handle_);
}

// NOTE: cuBLASLt is column-major. Row-major y[m, n] is column-major y^T
// [n, m] = w [n, k] . x^T [k, m], where w is read as the transpose of the
// column-major [k, n] matrix its rows form, and x^T is x's memory as-is.
const gemm_runner::plan& gemm_runner::plan_for(const shape& s, const __nv_bfloat16* x, const __nv_bfloat16* w,
                                                void* y) {
  if (const auto it = plans_.find(s); it != plans_.end()) return it->second;
  const auto [m, n, k, y_type] = s;
  plan p;
  try {
    KVACTOR_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
    KVACTOR_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose));
    KVACTOR_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof keep));
    KVACTOR_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, uint64_t(k), uint64_t(n), k)); // w
    KVACTOR_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, uint64_t(k), uint64_t(m), k)); // x
    KVACTOR_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, y_type, uint64_t(n), uint64_t(m), n));      // y

    cublasLtMatmulPreference_t pref = nullptr;
    KVACTOR_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    cublasLtMatmulHeuristicResult_t results[tuning_candidates]{};
    int found = 0;
    const size_t ws = workspace_.size();
    cublasStatus_t status =
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (status == CUBLAS_STATUS_SUCCESS)
      status = cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.d, p.d, pref, tune_ ? tuning_candidates : 1,
                                              results, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    KVACTOR_CUBLAS_CHECK(status);
    if (found == 0)
      throw error("gemm: cuBLASLt has no algorithm for [" + std::to_string(m) + ", " + std::to_string(k) + "] x [" +
                  std::to_string(n) + ", " + std::to_string(k) + "]^T");
    p.algo = found > 1 ? fastest(p, results, found, x, w, y) : results[0].algo;
  } catch (...) {
    destroy(p.op, p.a, p.b, p.d);
    throw;
  }
  return plans_.emplace(s, p).first->second;
}

cublasLtMatmulAlgo_t gemm_runner::fastest(const plan& p, const cublasLtMatmulHeuristicResult_t* candidates,
                                          int count, const __nv_bfloat16* x, const __nv_bfloat16* w, void* y) {
  cudaEvent_t start = nullptr, stop = nullptr;
  KVACTOR_CUDA_CHECK(cudaEventCreate(&start));
  KVACTOR_CUDA_CHECK(cudaEventCreate(&stop));
  const float alpha = 1.0f, beta = 0.0f;
  float best_ms = 0.0f;
  int best = -1;
  try {
    for (int i = 0; i < count; ++i) {
      const auto once = [&] {
        return cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.d, y, p.d, &candidates[i].algo,
                              workspace_.get(), workspace_.size(), stream_);
      };
      if (once() != CUBLAS_STATUS_SUCCESS) continue; // also warms it up
      KVACTOR_CUDA_CHECK(cudaEventRecord(start, stream_));
      for (int r = 0; r < 3; ++r) KVACTOR_CUBLAS_CHECK(once());
      KVACTOR_CUDA_CHECK(cudaEventRecord(stop, stream_));
      KVACTOR_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0.0f;
      KVACTOR_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (best < 0 || ms < best_ms) {
        best_ms = ms;
        best = i;
      }
    }
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return candidates[best < 0 ? 0 : best].algo;
}

void gemm_runner::run(const __nv_bfloat16* x, const __nv_bfloat16* w, void* y, cudaDataType_t y_type, int64_t m,
                      int64_t n, int64_t k) {
  if (m == 0) return;
  const plan& p = plan_for({m, n, k, y_type}, x, w, y);
  const float alpha = 1.0f, beta = 0.0f;
  KVACTOR_CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.d, y, p.d, &p.algo,
                                      workspace_.get(), workspace_.size(), stream_));
}

} // namespace kvactor::gpu
