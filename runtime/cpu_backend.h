#pragma once
// The reference backend: a Llama-family forward pass in fp32 over a paged KV
// cache held in host memory. Every token of a step goes through each
// projection as one matmul; attention reads each sequence's pages.
//
// The cache stores f32 (the default, exact), bf16, fp8 or int8 elements
// (kv_quant.h): K/V are converted when written and dequantized inside
// attention, a tile of keys at a time; no full-precision copy is kept.
//
// Each output element is computed the same way whatever else is in the batch,
// so a sequence's logits do not depend on how its prompt was chunked or what
// it was batched with. NOTE: with fp8 the one exception is a step in which a
// page's scale grows: tokens of that step that come before the growing one
// read the requantized page.
#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/backend.h"
#include "runtime/kv_quant.h"
#include "runtime/model_weights.h"
#include "runtime/thread_pool.h"

namespace kvactor {

class cpu_backend final : public backend {
 public:
  // Throws kvactor::error when a weight's shape does not match `config` or
  // the cache dimensions are invalid. `num_threads` 0 = hardware_concurrency.
  cpu_backend(model_config config, std::shared_ptr<const model_weights> weights, int32_t num_pages,
              int32_t page_size, int32_t num_threads = 0, kv_format kv = kv_format::f32);

  const model_config& config() const override { return config_; }
  const kv_layout& layout() const override { return layout_; }
  void forward(const forward_batch& batch, std::vector<float>& logits) override;
  // When every layer slides: pages before the first key any token of the
  // step sees may be no_page.
  bool accepts_released_pages() const override { return true; }

  kv_format format() const { return format_; }
  // Bytes allocated for the cache's elements and for its scales.
  size_t kv_element_bytes() const;
  size_t kv_scale_bytes() const { return kv_scales_.size() * sizeof(float); }

 private:
  // Where one token of the step sits: its sequence and absolute position.
  struct token_ref {
    int32_t seq;
    int32_t pos;
  };

  void validate(const forward_batch& batch) const;
  void run_layer(int32_t layer, const forward_batch& batch);
  void apply_rope(float* x, int32_t num_heads); // x: [num_tokens, num_heads, head_dim]
  void write_kv(int32_t layer, const forward_batch& batch);
  void attention(int32_t layer, const forward_batch& batch);
  void matmul(const float* x, const float* w, float* y, int64_t rows, int64_t n, int64_t k);

  model_config config_;
  std::shared_ptr<const model_weights> weights_;
  kv_layout layout_;
  kv_format format_;
  int32_t window_everywhere_ = 0; // the sliding window when every layer slides, else 0
  // The cache's elements, in the one vector of format_ (layout_.total_elems()),
  // and its scales (kv_scale_count).
  std::vector<float> kv_f32_;
  std::vector<uint16_t> kv_bf16_;
  std::vector<uint8_t> kv_q8_;  // fp8 bytes, or int8 as two's complement
  std::vector<float> kv_scales_;
  std::vector<double> inv_freq_; // [head_dim / 2], rope scaling applied
  thread_pool pool_;

  // Scratch of the current step, reused across steps.
  std::vector<token_ref> tokens_; // [num_tokens]
  std::vector<float> rope_cos_, rope_sin_; // [num_tokens, head_dim / 2]
  std::vector<float> x_;    // [num_tokens, hidden] residual stream
  std::vector<float> xn_;   // [num_tokens, hidden] normed input of a block
  std::vector<float> q_;    // [num_tokens, q_dim]
  std::vector<float> k_, v_; // [num_tokens, kv_dim]
  std::vector<float> attn_; // [num_tokens, q_dim]
  std::vector<float> gate_, up_; // [num_tokens, intermediate]
  std::vector<float> out_;  // [num_tokens, hidden] output of o_proj / down_proj
};

} // namespace kvactor
