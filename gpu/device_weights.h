#pragma once
// A model's weights on the device. Matrices are bf16, row-major
// [out_features, in_features] like nn.Linear; q/k/v and gate/up are each fused
// into one matrix so that one GEMM computes them. Norm weights and biases stay
// fp32: they are applied in fp32 arithmetic and are tiny.
#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "gpu/device_buffer.h"
#include "runtime/dtype.h"
#include "runtime/model_config.h"
#include "runtime/model_loader.h"
#include "runtime/model_weights.h"

namespace kvactor::gpu {

using bf16 = __nv_bfloat16;

struct device_layer_weights {
  device_buffer<float> input_norm;          // [hidden]
  device_buffer<bf16> qkv;                  // [q_dim + 2 kv_dim, hidden]: q, k, v rows
  device_buffer<float> qkv_bias;            // [q_dim + 2 kv_dim]; empty without attention_bias
  device_buffer<float> q_norm, k_norm;      // [head_dim]; empty without qk_norm
  device_buffer<bf16> o_proj;               // [hidden, q_dim]
  device_buffer<float> post_attention_norm; // [hidden]
  device_buffer<bf16> gate_up;              // [2 intermediate, hidden]: gate rows, then up rows
  device_buffer<bf16> down;                 // [hidden, intermediate]
};

struct device_weights {
  device_buffer<bf16> embed_tokens; // [vocab, hidden]
  std::vector<device_layer_weights> layers;
  device_buffer<float> final_norm;  // [hidden]
  device_buffer<bf16> lm_head;      // [vocab, hidden]; empty when tied to embed_tokens

  const bf16* lm_head_matrix() const { return lm_head.empty() ? embed_tokens.get() : lm_head.get(); }
};

// One host tensor in a file element type; `data` may be unaligned.
struct host_tensor {
  dtype type = dtype::f32;
  const std::byte* data = nullptr;
  std::vector<int64_t> shape;
};

// Host tensors by Hugging Face name ("model.layers.0.mlp.up_proj.weight").
using host_tensor_map = std::map<std::string, host_tensor, std::less<>>;

// The tensors of a model directory, as load_weight_views maps them.
host_tensor_map host_tensors(const std::vector<weight_view>& views);
// The tensors of fp32 weights (a loaded or dummy model), under the names the
// files would give them; lm_head is left out when it is tied.
host_tensor_map host_tensors(const model_weights& weights, const model_config& config);

// Converts to bf16 (matrices) or fp32 (vectors) and copies to the current
// device. Throws kvactor::error naming a tensor that is missing or has the
// wrong shape.
device_weights upload_weights(const model_config& config, const host_tensor_map& tensors);

// Random weights drawn on the current device, scaled like make_dummy_model's
// (matrices 1 / sqrt(in_features), norms near 1, biases 0.05): the
// benchmarks' stand-in for a checkpoint.
device_weights random_weights(const model_config& config, uint64_t seed);

} // namespace kvactor::gpu
