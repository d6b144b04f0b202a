#pragma once
// Every CUDA runtime and cuBLASLt call is checked; a failure throws
// kvactor::error naming the call site and the library's own description.
#include <cublasLt.h>
#include <cuda_runtime.h>

namespace kvactor::gpu {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line);

} // namespace kvactor::gpu

#define KVACTOR_CUDA_CHECK(expr)                                                        \
  do {                                                                                  \
    const cudaError_t kvactor_status_ = (expr);                                         \
    if (kvactor_status_ != cudaSuccess)                                                 \
      ::kvactor::gpu::throw_cuda_error(kvactor_status_, #expr, __FILE__, __LINE__);     \
  } while (0)

#define KVACTOR_CUBLAS_CHECK(expr)                                                      \
  do {                                                                                  \
    const cublasStatus_t kvactor_status_ = (expr);                                      \
    if (kvactor_status_ != CUBLAS_STATUS_SUCCESS)                                       \
      ::kvactor::gpu::throw_cublas_error(kvactor_status_, #expr, __FILE__, __LINE__);   \
  } while (0)

// After a kernel launch: a bad configuration is reported here, not at the
// next synchronisation.
#define KVACTOR_CUDA_CHECK_LAUNCH() KVACTOR_CUDA_CHECK(cudaGetLastError())
