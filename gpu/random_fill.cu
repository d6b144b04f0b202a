#include <algorithm>

#include "gpu/cuda_check.h"
#include "gpu/random_fill.h"

namespace kvactor::gpu {

namespace {

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

template <typename T>
__device__ __forceinline__ T convert(float v);
template <>
__device__ __forceinline__ float convert<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 convert<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

template <typename T>
__global__ void fill_kernel(T* data, size_t count, float mean, float half_width, uint64_t seed) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x) {
    const float u = float(mix64(seed ^ mix64(i)) >> 40) * 0x1.0p-24f; // [0, 1)
    data[i] = convert<T>(mean + half_width * (2.0f * u - 1.0f));
  }
}

template <typename T>
void fill(T* data, size_t count, float mean, float stddev, uint64_t seed, cudaStream_t stream) {
  if (count == 0) return;
  constexpr int threads = 256;
  const unsigned blocks = unsigned(std::min<size_t>((count + threads - 1) / threads, 65536));
  // A uniform on [-a, a] has standard deviation a / sqrt(3).
  fill_kernel<T><<<blocks, threads, 0, stream>>>(data, count, mean, stddev * 1.7320508f, seed);
  KVACTOR_CUDA_CHECK_LAUNCH();
}

} // namespace

void fill_random(__nv_bfloat16* data, size_t count, float mean, float stddev, uint64_t seed, cudaStream_t stream) {
  fill(data, count, mean, stddev, seed, stream);
}

void fill_random(float* data, size_t count, float mean, float stddev, uint64_t seed, cudaStream_t stream) {
  fill(data, count, mean, stddev, seed, stream);
}

} // namespace kvactor::gpu
