#pragma once
// The shape and numerics of a Llama-family model, read from a Hugging Face
// config.json in either spelling: the older one (rope_theta, rope_scaling,
// torch_dtype) or the one transformers 5 writes (rope_parameters, dtype,
// layer_types).
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/dtype.h"

namespace kvactor {

enum class model_arch : uint8_t { llama, mistral, qwen2, qwen3 };

struct rope_config {
  float theta = 10000.0f;
  // "default" or "llama3"; anything else is refused at load.
  std::string type = "default";
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int32_t original_max_position_embeddings = 8192;
};

struct model_config {
  std::string architecture; // as written, e.g. "LlamaForCausalLM"
  model_arch arch = model_arch::llama;
  int32_t vocab_size = 0;
  int32_t hidden_size = 0;
  int32_t intermediate_size = 0;
  int32_t num_layers = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0; // explicit in Qwen3, else hidden_size / num_heads
  int32_t max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  rope_config rope;
  bool tie_word_embeddings = false;
  bool attention_bias = false; // q/k/v biases (always on for Qwen2)
  bool qk_norm = false;        // per-head RMSNorm of q and k (Qwen3)
  // Tokens a query sees, itself included; 0 = unlimited. Applies to the
  // layers marked in layer_sliding.
  int32_t sliding_window = 0;
  std::vector<bool> layer_sliding; // [num_layers]
  dtype weight_dtype = dtype::bf16;
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;

  bool uses_sliding(int32_t layer) const { return sliding_window > 0 && layer_sliding[layer]; }
  int32_t q_dim() const { return num_heads * head_dim; }
  int32_t kv_dim() const { return num_kv_heads * head_dim; }
};

// Parses config.json text; `path` only names the file in errors.
// Throws load_error for malformed JSON, missing or invalid keys and
// unsupported architectures (the message names the architecture).
model_config parse_model_config(const std::string& json_text, const std::string& path);
model_config load_model_config(const std::string& path);
// generation_config.json text: its bos_token_id / eos_token_id, where set,
// override the ones from config.json (as transformers' generate does).
void apply_generation_config(model_config& config, const std::string& json_text, const std::string& path);

} // namespace kvactor
