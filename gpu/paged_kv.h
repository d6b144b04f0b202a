#pragma once
// One layer's view of the paged KV cache, passed to kernels by value
// (FlashInfer style: indptr / indices). Sequence s uses pages
// page_indices[page_indptr[s] .. page_indptr[s + 1]); its token at position p
// sits in page page_indices[page_indptr[s] + p / page_size], slot
// p % page_size. The buffer layout is kv_layout's, the element formats and
// scales runtime/kv_quant.h's.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/kv_quant.h"

namespace kvactor::gpu {

struct paged_kv_view {
  void* k = nullptr; // this layer's K: [num_pages, page_size, num_kv_heads, head_dim] of `format`
  void* v = nullptr; // this layer's V, same shape
  // fp8: [num_pages, num_kv_heads]; int8: [num_pages, page_size,
  // num_kv_heads]; null for bf16.
  float* k_scale = nullptr;
  float* v_scale = nullptr;
  const int32_t* page_indptr = nullptr;  // [num_seqs + 1]
  const int32_t* page_indices = nullptr; // [page_indptr[num_seqs]]; -1 for pages released behind a window
  int32_t page_size = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  kv_format format = kv_format::bf16; // bf16, fp8 or int8

  __host__ __device__ __nv_bfloat16* k_bf16() const { return static_cast<__nv_bfloat16*>(k); }
  __host__ __device__ __nv_bfloat16* v_bf16() const { return static_cast<__nv_bfloat16*>(v); }
  __host__ __device__ uint8_t* k_bytes() const { return static_cast<uint8_t*>(k); }
  __host__ __device__ uint8_t* v_bytes() const { return static_cast<uint8_t*>(v); }
  // Index of the scale of (page, slot, head) within this layer's K (or V).
  __host__ __device__ size_t scale_index(int32_t page, int32_t slot, int32_t head) const {
    return format == kv_format::fp8 ? size_t(page) * num_kv_heads + head
                                    : (size_t(page) * page_size + slot) * num_kv_heads + head;
  }
};

} // namespace kvactor::gpu
