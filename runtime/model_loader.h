#pragma once
// Loads a Hugging Face model directory: config.json, generation_config.json
// when present, and the weights from model.safetensors or from the shards that
// model.safetensors.index.json lists. Every tensor the config calls for must be
// there with its exact shape; others (e.g. rotary inv_freq) are ignored.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/model_config.h"
#include "runtime/model_weights.h"
#include "runtime/safetensors.h"

namespace kvactor {

struct loaded_model {
  model_config config;
  std::shared_ptr<const model_weights> weights;
  std::string dir; // empty for a dummy model
};

// One tensor as stored on disk, for a backend that uploads it itself (e.g.
// bf16 straight to the GPU).
struct weight_view {
  std::string name;                             // HF name, e.g. "model.norm.weight"
  safetensors_view view;                        // f32, f16 or bf16; shape checked
  std::shared_ptr<const safetensors_file> file; // keeps view.data mapped
};

// config.json, with generation_config.json's bos/eos ids when that file exists.
model_config load_model_dir_config(const std::string& dir);

// Every tensor `config` calls for, in a fixed order: embed_tokens, then per
// layer input_layernorm, q/k/v (biases, q/k norms where the config has them),
// o_proj, post_attention_layernorm, gate/up/down; then norm and lm_head (absent
// when tied). Each shard is mapped once. Throws load_error naming the file for
// a missing tensor, a wrong shape or a non-float element type.
std::vector<weight_view> load_weight_views(const std::string& dir, const model_config& config);

// The whole model as fp32: f32 tensors point into the mapped files (no copy),
// bf16/f16 ones are converted once.
loaded_model load_model(const std::string& dir);

// Random weights of the shapes `config` describes, for benchmarks of models we
// have no files for. Matrices ~ N(0, 1/fan_in), norm weights near 1, biases
// small. The same (config, seed) always gives the same weights.
loaded_model make_dummy_model(const model_config& config, uint64_t seed);

} // namespace kvactor
