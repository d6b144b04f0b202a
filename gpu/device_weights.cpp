#include "gpu/device_weights.h"

#include <cstdint>
#include <cmath>
#include <cstring>

#include "gpu/random_fill.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"

namespace kvactor::gpu {

namespace {

std::string layer_name(int32_t layer, const char* suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}

float element(const host_tensor& t, size_t i) {
  if (t.type == dtype::f32) {
    float f;
    std::memcpy(&f, t.data + 4 * i, 4);
    return f;
  }
  uint16_t bits;
  std::memcpy(&bits, t.data + 2 * i, 2);
  return t.type == dtype::bf16 ? bf16_to_f32(bits) : f16_to_f32(bits);
}

size_t numel(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (auto d : shape) n *= size_t(d);
  return n;
}

// The tensor `name` with exactly `shape`, or a kvactor::error.
const host_tensor& find(const host_tensor_map& tensors, const std::string& name, const std::vector<int64_t>& shape) {
  const auto it = tensors.find(name);
  if (it == tensors.end() || !it->second.data) throw error("cuda_backend: weight " + name + " is missing");
  if (it->second.shape != shape)
    throw error("cuda_backend: weight " + name + " has shape " + shape_string(it->second.shape) + ", expected " +
                shape_string(shape));
  return it->second;
}

// Row-wise concatenation of matrices with the same number of columns, as bf16.
device_buffer<bf16> upload_matrix(const host_tensor_map& tensors, const std::vector<std::string>& names,
                                  const std::vector<int64_t>& rows, int64_t cols) {
  size_t total = 0;
  for (auto r : rows) total += size_t(r) * size_t(cols);
  std::vector<uint16_t> host(total); // [sum(rows), cols]
  size_t at = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const host_tensor& t = find(tensors, names[i], {rows[i], cols});
    const size_t n = numel(t.shape);
    if (t.type == dtype::bf16) {
      std::memcpy(host.data() + at, t.data, 2 * n);
    } else {
      for (size_t j = 0; j < n; ++j) host[at + j] = f32_to_bf16(element(t, j));
    }
    at += n;
  }
  device_buffer<bf16> buffer(total);
  KVACTOR_CUDA_CHECK(cudaMemcpy(buffer.get(), host.data(), 2 * total, cudaMemcpyHostToDevice));
  return buffer;
}

// Concatenation of vectors, as fp32.
device_buffer<float> upload_vector(const host_tensor_map& tensors, const std::vector<std::string>& names,
                                   const std::vector<int64_t>& lengths) {
  size_t total = 0;
  for (auto n : lengths) total += size_t(n);
  std::vector<float> host(total);
  size_t at = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const host_tensor& t = find(tensors, names[i], {lengths[i]});
    for (size_t j = 0; j < size_t(lengths[i]); ++j) host[at + j] = element(t, j);
    at += size_t(lengths[i]);
  }
  device_buffer<float> buffer(total);
  KVACTOR_CUDA_CHECK(cudaMemcpy(buffer.get(), host.data(), 4 * total, cudaMemcpyHostToDevice));
  return buffer;
}

} // namespace

host_tensor_map host_tensors(const std::vector<weight_view>& views) {
  host_tensor_map map;
  for (const weight_view& w : views) {
    const auto type = as_weight_dtype(w.view.type);
    if (!type) throw error("cuda_backend: weight " + w.name + " is not a float tensor");
    map[w.name] = host_tensor{*type, w.view.data, w.view.shape};
  }
  return map;
}

host_tensor_map host_tensors(const model_weights& weights, const model_config& config) {
  host_tensor_map map;
  const auto add = [&](const std::string& name, const tensor_f32& t) {
    if (!t.empty()) map[name] = host_tensor{dtype::f32, reinterpret_cast<const std::byte*>(t.data), t.shape};
  };
  add("model.embed_tokens.weight", weights.embed_tokens);
  for (size_t l = 0; l < weights.layers.size(); ++l) {
    const layer_weights& w = weights.layers[l];
    const int32_t i = int32_t(l);
    add(layer_name(i, "input_layernorm.weight"), w.input_norm);
    add(layer_name(i, "self_attn.q_proj.weight"), w.q_proj);
    add(layer_name(i, "self_attn.k_proj.weight"), w.k_proj);
    add(layer_name(i, "self_attn.v_proj.weight"), w.v_proj);
    add(layer_name(i, "self_attn.q_proj.bias"), w.q_bias);
    add(layer_name(i, "self_attn.k_proj.bias"), w.k_bias);
    add(layer_name(i, "self_attn.v_proj.bias"), w.v_bias);
    add(layer_name(i, "self_attn.q_norm.weight"), w.q_norm);
    add(layer_name(i, "self_attn.k_norm.weight"), w.k_norm);
    add(layer_name(i, "self_attn.o_proj.weight"), w.o_proj);
    add(layer_name(i, "post_attention_layernorm.weight"), w.post_attention_norm);
    add(layer_name(i, "mlp.gate_proj.weight"), w.gate_proj);
    add(layer_name(i, "mlp.up_proj.weight"), w.up_proj);
    add(layer_name(i, "mlp.down_proj.weight"), w.down_proj);
  }
  add("model.norm.weight", weights.final_norm);
  if (!config.tie_word_embeddings) add("lm_head.weight", weights.lm_head);
  return map;
}

device_weights upload_weights(const model_config& c, const host_tensor_map& tensors) {
  const int64_t vocab = c.vocab_size, h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), inter = c.intermediate_size;
  device_weights w;
  w.embed_tokens = upload_matrix(tensors, {"model.embed_tokens.weight"}, {vocab}, h);
  for (int32_t l = 0; l < c.num_layers; ++l) {
    device_layer_weights d;
    const auto name = [&](const char* suffix) { return layer_name(l, suffix); };
    d.input_norm = upload_vector(tensors, {name("input_layernorm.weight")}, {h});
    d.qkv = upload_matrix(tensors,
                          {name("self_attn.q_proj.weight"), name("self_attn.k_proj.weight"),
                           name("self_attn.v_proj.weight")},
                          {q, kv, kv}, h);
    if (c.attention_bias)
      d.qkv_bias = upload_vector(
          tensors, {name("self_attn.q_proj.bias"), name("self_attn.k_proj.bias"), name("self_attn.v_proj.bias")},
          {q, kv, kv});
    if (c.qk_norm) {
      d.q_norm = upload_vector(tensors, {name("self_attn.q_norm.weight")}, {c.head_dim});
      d.k_norm = upload_vector(tensors, {name("self_attn.k_norm.weight")}, {c.head_dim});
    }
    d.o_proj = upload_matrix(tensors, {name("self_attn.o_proj.weight")}, {h}, q);
    d.post_attention_norm = upload_vector(tensors, {name("post_attention_layernorm.weight")}, {h});
    d.gate_up = upload_matrix(tensors, {name("mlp.gate_proj.weight"), name("mlp.up_proj.weight")}, {inter, inter}, h);
    d.down = upload_matrix(tensors, {name("mlp.down_proj.weight")}, {h}, inter);
    w.layers.push_back(std::move(d));
  }
  w.final_norm = upload_vector(tensors, {"model.norm.weight"}, {h});
  if (!c.tie_word_embeddings) w.lm_head = upload_matrix(tensors, {"lm_head.weight"}, {vocab}, h);
  return w;
}

device_weights random_weights(const model_config& c, uint64_t seed) {
  const int64_t vocab = c.vocab_size, h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), inter = c.intermediate_size;
  uint64_t tensor = 0; // each tensor draws from its own stream
  const auto matrix = [&](int64_t rows, int64_t cols) {
    device_buffer<bf16> m(size_t(rows * cols));
    fill_random(m.get(), m.size(), 0.0f, 1.0f / std::sqrt(float(cols)), seed + 1000003 * ++tensor, nullptr);
    return m;
  };
  const auto values = [&](int64_t n, float mean) {
    device_buffer<float> v(static_cast<size_t>(n));
    fill_random(v.get(), v.size(), mean, 0.05f, seed + 1000003 * ++tensor, nullptr);
    return v;
  };
  device_weights w;
  w.embed_tokens = matrix(vocab, h);
  for (int32_t l = 0; l < c.num_layers; ++l) {
    device_layer_weights d;
    d.input_norm = values(h, 1.0f);
    d.qkv = matrix(q + 2 * kv, h);
    if (c.attention_bias) d.qkv_bias = values(q + 2 * kv, 0.0f);
    if (c.qk_norm) {
      d.q_norm = values(c.head_dim, 1.0f);
      d.k_norm = values(c.head_dim, 1.0f);
    }
    d.o_proj = matrix(h, q);
    d.post_attention_norm = values(h, 1.0f);
    d.gate_up = matrix(2 * inter, h);
    d.down = matrix(h, inter);
    w.layers.push_back(std::move(d));
  }
  w.final_norm = values(h, 1.0f);
  if (!c.tie_word_embeddings) w.lm_head = matrix(vocab, h);
  KVACTOR_CUDA_CHECK(cudaDeviceSynchronize());
  return w;
}

} // namespace kvactor::gpu
