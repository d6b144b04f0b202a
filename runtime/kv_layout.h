#pragma once
// The paged KV cache layout, shared by the CPU and GPU backends.
//
// One buffer holds every layer's K and V pages:
//   [num_layers, 2 (K then V), num_pages, page_size, num_kv_heads, head_dim]
// A sequence's token at position p lives in page page_table[p / page_size],
// slot p % page_size. Pages are the unit the page pool hands out; a page id
// indexes the same page in every layer.
#include <cstddef>
#include <cstdint>

namespace kvactor {

struct kv_layout {
  int32_t num_layers = 0;
  int32_t num_pages = 0;
  int32_t page_size = 16;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;

  // Elements of one token's K (or V) in one layer.
  size_t token_elems() const { return size_t(num_kv_heads) * head_dim; }
  size_t page_elems() const { return size_t(page_size) * token_elems(); }
  size_t total_elems() const { return size_t(num_layers) * 2 * num_pages * page_elems(); }

  // Offset of (layer, kv, page, slot, head 0, dim 0); kv is 0 for K, 1 for V.
  size_t offset(int32_t layer, int32_t kv, int32_t page, int32_t slot) const {
    return ((size_t(layer) * 2 + kv) * num_pages + page) * page_elems() + size_t(slot) * token_elems();
  }
};

// KV bytes per token of a model: layers x kv_heads x head_dim x 2 (K and V)
// x element bytes. The design notes' formula, before paging.
constexpr size_t kv_bytes_per_token(int32_t num_layers, int32_t num_kv_heads, int32_t head_dim,
                                    size_t elem_bytes) {
  return size_t(num_layers) * num_kv_heads * head_dim * 2 * elem_bytes;
}

} // namespace kvactor
