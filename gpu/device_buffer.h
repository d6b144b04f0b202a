#pragma once
// Owning handles for device memory, pinned host memory and a stream. Freeing
// never throws: a failure there has nobody left to report to.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "gpu/cuda_check.h"

namespace kvactor::gpu {

// `count` elements of T in device memory.
template <typename T>
class device_buffer {
 public:
  device_buffer() = default;
  explicit device_buffer(size_t count) : count_(count) {
    if (count > 0) KVACTOR_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data_), count * sizeof(T)));
  }
  device_buffer(device_buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(count_, o.count_);
    return *this;
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer() {
    if (data_) cudaFree(data_);
  }

  T* get() const { return data_; }
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }

  // NOTE: 0xff bytes are NaN in fp32 and bf16. Scratch starts poisoned so a
  // read of anything no kernel wrote shows up in the logits.
  void poison(cudaStream_t stream) {
    if (count_ > 0) KVACTOR_CUDA_CHECK(cudaMemsetAsync(data_, 0xff, count_ * sizeof(T), stream));
  }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

// `count` elements of T in page-locked host memory (asynchronous copies).
template <typename T>
class pinned_buffer {
 public:
  pinned_buffer() = default;
  explicit pinned_buffer(size_t count) : count_(count) {
    if (count > 0) KVACTOR_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&data_), count * sizeof(T)));
  }
  pinned_buffer(pinned_buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  pinned_buffer& operator=(pinned_buffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(count_, o.count_);
    return *this;
  }
  pinned_buffer(const pinned_buffer&) = delete;
  pinned_buffer& operator=(const pinned_buffer&) = delete;
  ~pinned_buffer() {
    if (data_) cudaFreeHost(data_);
  }

  T* get() const { return data_; }
  size_t size() const { return count_; }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

class cuda_stream {
 public:
  cuda_stream() { KVACTOR_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  cuda_stream(const cuda_stream&) = delete;
  cuda_stream& operator=(const cuda_stream&) = delete;
  ~cuda_stream() { cudaStreamDestroy(stream_); }

  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

} // namespace kvactor::gpu
