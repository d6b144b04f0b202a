#pragma once
// Random device data for benchmarks and tests, drawn on the device: an 8B
// model's weights drawn on the host would take minutes and 32 GB as fp32.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace kvactor::gpu {

// Uniform values with the given mean and standard deviation; element i
// depends on (seed, i) alone.
void fill_random(__nv_bfloat16* data, size_t count, float mean, float stddev, uint64_t seed, cudaStream_t stream);
void fill_random(float* data, size_t count, float mean, float stddev, uint64_t seed, cudaStream_t stream);

} // namespace kvactor::gpu
