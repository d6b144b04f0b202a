#include "gpu/cuda_check.h"

#include <string>

#include "runtime/error.h"

namespace kvactor::gpu {

namespace {

std::string where(const char* expr, const char* file, int line) {
  return std::string(file) + ":" + std::to_string(line) + ": " + expr + ": ";
}

} // namespace

void throw_cuda_error(cudaError_t status, const char* expr, const char* file, int line) {
  throw error(where(expr, file, line) + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line) {
  throw error(where(expr, file, line) + cublasLtGetStatusName(status) + " (" + cublasLtGetStatusString(status) +
              ")");
}

} // namespace kvactor::gpu
