#pragma once
// An instantiated CUDA graph, captured from the launches a function makes on
// a stream.
#include <cuda_runtime.h>

#include <utility>

#include "gpu/cuda_check.h"

namespace kvactor::gpu {

class cuda_graph {
 public:
  cuda_graph() = default;
  cuda_graph(cuda_graph&& o) noexcept : exec_(std::exchange(o.exec_, nullptr)) {}
  cuda_graph& operator=(cuda_graph&& o) noexcept {
    std::swap(exec_, o.exec_);
    return *this;
  }
  cuda_graph(const cuda_graph&) = delete;
  cuda_graph& operator=(const cuda_graph&) = delete;
  ~cuda_graph() {
    if (exec_) cudaGraphExecDestroy(exec_);
  }

  // Records what `launch()` enqueues on `stream` (nothing runs). Capture is
  // thread-local: other threads' CUDA calls are not affected.
  template <typename Launch>
  static cuda_graph capture(cudaStream_t stream, Launch&& launch) {
    KVACTOR_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t graph = nullptr;
    try {
      launch();
    } catch (...) {
      cudaStreamEndCapture(stream, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    KVACTOR_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    cuda_graph g;
    const cudaError_t status = cudaGraphInstantiate(&g.exec_, graph, 0);
    cudaGraphDestroy(graph);
    KVACTOR_CUDA_CHECK(status);
    return g;
  }

  void launch(cudaStream_t stream) const { KVACTOR_CUDA_CHECK(cudaGraphLaunch(exec_, stream)); }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

} // namespace kvactor::gpu
