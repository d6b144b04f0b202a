#pragma once
// One layer's view of the paged KV cache, passed to kernels by value
// (FlashInfer style: indptr / indices). Sequence s uses pages
// page_indices[page_indptr[s] .. page_indptr[s + 1]); its token at position p
// sits in page page_indices[page_indptr[s] + p / page_size], slot
// p % page_size. The buffer layout is kv_layout's.
#include <cuda_bf16.h>

#include <cstdint>

namespace kvactor::gpu {

struct paged_kv_view {
  __nv_bfloat16* k = nullptr;          // this layer's K: [num_pages, page_size, num_kv_heads, head_dim]
  __nv_bfloat16* v = nullptr;          // this layer's V, same shape
  const int32_t* page_indptr = nullptr;  // [num_seqs + 1]
  const int32_t* page_indices = nullptr; // [page_indptr[num_seqs]]
  int32_t page_size = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
};

} // namespace kvactor::gpu
