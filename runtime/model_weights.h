#pragma once
// Weights of a Llama-family model as the CPU backend reads them: fp32, row
// major, [out_features, in_features] like torch's nn.Linear. A tensor either
// points into a mapped fp32 file (no copy) or into storage owned here (one
// conversion from bf16/fp16).
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "runtime/model_config.h"

namespace kvactor {

struct tensor_f32 {
  const float* data = nullptr;
  std::vector<int64_t> shape;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  bool empty() const { return data == nullptr; }
};

struct layer_weights {
  tensor_f32 input_norm;            // [hidden]
  tensor_f32 q_proj, k_proj, v_proj; // [q_dim, hidden], [kv_dim, hidden] x2
  tensor_f32 q_bias, k_bias, v_bias; // [q_dim], [kv_dim] x2; empty without attention_bias
  tensor_f32 q_norm, k_norm;        // [head_dim]; empty without qk_norm
  tensor_f32 o_proj;                // [hidden, q_dim]
  tensor_f32 post_attention_norm;   // [hidden]
  tensor_f32 gate_proj, up_proj;    // [intermediate, hidden]
  tensor_f32 down_proj;             // [hidden, intermediate]
};

struct model_weights {
  tensor_f32 embed_tokens;    // [vocab, hidden]
  std::vector<layer_weights> layers;
  tensor_f32 final_norm;      // [hidden]
  tensor_f32 lm_head;         // [vocab, hidden]; = embed_tokens when tied
  // Keeps mapped files and converted buffers alive.
  std::vector<std::shared_ptr<const void>> storage;
};

} // namespace kvactor
