#pragma once
// Kernel launches with programmatic dependent launch (Hopper): a step's
// kernels follow each other on one stream, and each is launched while the
// one before it still runs, instead of after it has drained. Its blocks take
// the multiprocessors the previous kernel's tail leaves idle, do what needs
// none of its results (a GEMV issues its weight loads) and then wait.
//
// The contract of every kernel launched with launch_kernel: it calls
// wait_for_previous_kernel() before it reads anything an earlier kernel
// wrote, before it writes anything, and before any of its threads can exit;
// so a kernel always finishes after the one before it, and the waits chain.
// Inside a CUDA graph the launches become programmatic edges.
#include <cuda_runtime.h>

#include <utility>

#include "gpu/cuda_check.h"

namespace kvactor::gpu {

// Returns once the previous kernel in the stream has finished and its writes
// are visible; at once when the kernel was launched the ordinary way.
__device__ __forceinline__ void wait_for_previous_kernel() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }

// Lets the next kernel launch as soon as every block of this one has started
// (it still waits for this one to finish before reading its results).
__device__ __forceinline__ void launch_next_kernel() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  cudaLaunchAttribute early{};
  early.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  early.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &early;
  config.numAttrs = 1;
  KVACTOR_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

} // namespace kvactor::gpu
