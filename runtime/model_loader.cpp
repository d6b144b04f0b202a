#include "runtime/model_loader.h"

#include <algorithm>
#include <bit>
#include <boost/json.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "runtime/error.h"

namespace kvactor {

namespace json = boost::json;

// safetensors data is little-endian; f32 tensors are used in place.
static_assert(std::endian::native == std::endian::little, "kvactor assumes a little-endian host");

namespace {

std::string join(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw load_error(path, "cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// -- the tensors a config calls for ------------------------------------------

enum class weight_kind : uint8_t { matrix, norm, bias }; // how a dummy model fills it

struct weight_spec {
  std::string name;
  std::vector<int64_t> shape;
  weight_kind kind = weight_kind::matrix;
  int32_t layer = -1; // -1 for a model-level tensor
  tensor_f32 model_weights::*model_slot = nullptr;
  tensor_f32 layer_weights::*layer_slot = nullptr;

  tensor_f32& slot(model_weights& w) const {
    return layer < 0 ? w.*model_slot : w.layers[size_t(layer)].*layer_slot;
  }
};

std::vector<weight_spec> weight_specs(const model_config& c) {
  const int64_t vocab = c.vocab_size, hidden = c.hidden_size, inter = c.intermediate_size;
  const int64_t q_dim = c.q_dim(), kv_dim = c.kv_dim(), head_dim = c.head_dim;
  using enum weight_kind;
  std::vector<weight_spec> specs;
  specs.push_back({"model.embed_tokens.weight", {vocab, hidden}, matrix, -1, &model_weights::embed_tokens});
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    const auto add = [&](const char* name, std::vector<int64_t> shape, weight_kind kind,
                         tensor_f32 layer_weights::*slot) {
      specs.push_back({prefix + name, std::move(shape), kind, l, nullptr, slot});
    };
    add("input_layernorm.weight", {hidden}, norm, &layer_weights::input_norm);
    add("self_attn.q_proj.weight", {q_dim, hidden}, matrix, &layer_weights::q_proj);
    add("self_attn.k_proj.weight", {kv_dim, hidden}, matrix, &layer_weights::k_proj);
    add("self_attn.v_proj.weight", {kv_dim, hidden}, matrix, &layer_weights::v_proj);
    if (c.attention_bias) {
      add("self_attn.q_proj.bias", {q_dim}, bias, &layer_weights::q_bias);
      add("self_attn.k_proj.bias", {kv_dim}, bias, &layer_weights::k_bias);
      add("self_attn.v_proj.bias", {kv_dim}, bias, &layer_weights::v_bias);
    }
    if (c.qk_norm) {
      add("self_attn.q_norm.weight", {head_dim}, norm, &layer_weights::q_norm);
      add("self_attn.k_norm.weight", {head_dim}, norm, &layer_weights::k_norm);
    }
    add("self_attn.o_proj.weight", {hidden, q_dim}, matrix, &layer_weights::o_proj);
    add("post_attention_layernorm.weight", {hidden}, norm, &layer_weights::post_attention_norm);
    add("mlp.gate_proj.weight", {inter, hidden}, matrix, &layer_weights::gate_proj);
    add("mlp.up_proj.weight", {inter, hidden}, matrix, &layer_weights::up_proj);
    add("mlp.down_proj.weight", {hidden, inter}, matrix, &layer_weights::down_proj);
  }
  specs.push_back({"model.norm.weight", {hidden}, norm, -1, &model_weights::final_norm});
  if (!c.tie_word_embeddings)
    specs.push_back({"lm_head.weight", {vocab, hidden}, matrix, -1, &model_weights::lm_head});
  return specs;
}

// -- where the tensors are ---------------------------------------------------

// The safetensors files of a model directory, each mapped on first use, and
// which of them holds each tensor.
class checkpoint {
 public:
  explicit checkpoint(const std::string& dir) : dir_(dir) {
    const auto single = join(dir, "model.safetensors");
    if (std::filesystem::exists(single)) {
      single_ = safetensors_file::open(single);
      return;
    }
    index_path_ = join(dir, "model.safetensors.index.json");
    if (!std::filesystem::exists(index_path_))
      throw load_error(dir, "no model.safetensors or model.safetensors.index.json");
    boost::system::error_code ec;
    const json::value index = json::parse(read_text(index_path_), ec);
    if (ec) throw load_error(index_path_, "not valid JSON: " + ec.message());
    const auto* weight_map = index.is_object() ? index.get_object().if_contains("weight_map") : nullptr;
    if (!weight_map || !weight_map->is_object()) throw load_error(index_path_, "'weight_map' is missing or not an object");
    for (const auto& [tensor, file] : weight_map->get_object()) {
      // A shard is a file of this directory: an index must not reach elsewhere.
      const std::string_view name = file.is_string() ? std::string_view(file.get_string()) : std::string_view();
      if (name.empty() || name == "." || name == ".." || name.find_first_of(std::string_view("/\0", 2)) != std::string_view::npos)
        throw load_error(index_path_, "weight_map entry for '" + std::string(tensor) +
                                          "' is not the name of a file in the model directory");
      shard_of_.emplace(std::string(tensor), std::string(name));
    }
  }

  // Throws load_error naming the file that should hold `name`.
  weight_view find(const std::string& name) {
    std::shared_ptr<const safetensors_file> file = single_;
    if (!file) {
      const auto it = shard_of_.find(name);
      if (it == shard_of_.end()) throw load_error(index_path_, "missing tensor '" + name + "' in weight_map");
      file = shard(it->second);
    }
    const auto view = file->find(name);
    if (!view) throw load_error(file->path(), "missing tensor '" + name + "'");
    return {name, *view, file};
  }

 private:
  std::shared_ptr<const safetensors_file> shard(const std::string& file_name) {
    auto& file = shards_[file_name];
    if (!file) file = safetensors_file::open(join(dir_, file_name));
    return file;
  }

  std::string dir_;
  std::shared_ptr<const safetensors_file> single_; // model.safetensors, when there is one
  std::string index_path_;
  std::map<std::string, std::string> shard_of_; // tensor name -> shard file name
  std::map<std::string, std::shared_ptr<const safetensors_file>> shards_;
};

// -- conversion --------------------------------------------------------------

template <typename Convert>
void convert_u16(const std::byte* src, float* dst, size_t n, Convert convert) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t bits;
    std::memcpy(&bits, src + 2 * i, 2); // the data may be unaligned
    dst[i] = convert(bits);
  }
}

// Aligned f32 stays in the mapping; anything else is converted into a buffer
// that `storage` keeps.
tensor_f32 to_f32(const weight_view& w, std::vector<std::shared_ptr<const void>>& storage) {
  tensor_f32 t;
  t.shape = w.view.shape;
  const auto type = *as_weight_dtype(w.view.type);
  const std::byte* src = w.view.data;
  if (type == dtype::f32 && reinterpret_cast<uintptr_t>(src) % alignof(float) == 0) {
    t.data = reinterpret_cast<const float*>(src);
    return t;
  }
  const auto n = size_t(w.view.numel());
  std::shared_ptr<float[]> buffer(new float[n]); // [numel]
  switch (type) {
    case dtype::f32: std::memcpy(buffer.get(), src, n * sizeof(float)); break;
    case dtype::bf16: convert_u16(src, buffer.get(), n, bf16_to_f32); break;
    case dtype::f16: convert_u16(src, buffer.get(), n, f16_to_f32); break;
  }
  t.data = buffer.get();
  storage.push_back(std::move(buffer));
  return t;
}

// -- dummy weights -----------------------------------------------------------

uint64_t mix64(uint64_t z) { // splitmix64's finalizer
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Unit-variance, roughly normal: the sum of four 16-bit uniforms of one hash
// (Irwin-Hall), centred and scaled. Depends only on (key, index).
float dummy_normal(uint64_t key, uint64_t index) {
  const uint64_t h = mix64(key + index * 0x9e3779b97f4a7c15ull);
  const auto sum = int32_t((h & 0xffff) + ((h >> 16) & 0xffff) + ((h >> 32) & 0xffff) + (h >> 48));
  // Each uniform is (bits + 0.5) / 65536: mean 2 and variance 4/12 for the sum.
  return float(sum - 131070) * (1.7320508f / 65536.0f);
}

// Fills elements [begin, end) of the concatenation of all tensors.
void fill_dummy(const std::vector<weight_spec>& specs, const std::vector<size_t>& offsets, float* buffer,
                uint64_t seed, size_t begin, size_t end) {
  for (size_t k = 0; k < specs.size(); ++k) {
    const size_t lo = std::max(begin, offsets[k]), hi = std::min(end, offsets[k + 1]);
    if (lo >= hi) continue;
    const auto& spec = specs[k];
    const uint64_t key = mix64(seed ^ mix64(k));
    const float scale = spec.kind == weight_kind::matrix ? 1.0f / std::sqrt(float(spec.shape[1])) : 0.05f;
    const float shift = spec.kind == weight_kind::norm ? 1.0f : 0.0f;
    for (size_t i = lo; i < hi; ++i) buffer[i] = shift + scale * dummy_normal(key, i - offsets[k]);
  }
}

} // namespace

model_config load_model_dir_config(const std::string& dir) {
  auto config = load_model_config(join(dir, "config.json"));
  const auto generation = join(dir, "generation_config.json");
  if (std::filesystem::exists(generation)) apply_generation_config(config, read_text(generation), generation);
  return config;
}

std::vector<weight_view> load_weight_views(const std::string& dir, const model_config& config) {
  checkpoint files(dir);
  std::vector<weight_view> views;
  for (const auto& spec : weight_specs(config)) {
    auto w = files.find(spec.name);
    if (!as_weight_dtype(w.view.type))
      throw load_error(w.file->path(), "tensor '" + spec.name + "': element type " +
                                           std::string(safetensors_dtype_name(w.view.type)) +
                                           " is not a weight type (F32, F16, BF16)");
    if (w.view.shape != spec.shape)
      throw load_error(w.file->path(), "tensor '" + spec.name + "': expected shape " + shape_string(spec.shape) +
                                           ", found " + shape_string(w.view.shape));
    views.push_back(std::move(w));
  }
  return views;
}

loaded_model load_model(const std::string& dir) {
  loaded_model m;
  m.dir = dir;
  m.config = load_model_dir_config(dir);
  const auto specs = weight_specs(m.config);
  const auto views = load_weight_views(dir, m.config);
  auto weights = std::make_shared<model_weights>();
  weights->layers.resize(size_t(m.config.num_layers));
  std::set<const safetensors_file*> kept;
  for (size_t i = 0; i < specs.size(); ++i) {
    specs[i].slot(*weights) = to_f32(views[i], weights->storage);
    if (kept.insert(views[i].file.get()).second) weights->storage.push_back(views[i].file);
  }
  if (m.config.tie_word_embeddings) weights->lm_head = weights->embed_tokens;
  m.weights = std::move(weights);
  return m;
}

loaded_model make_dummy_model(const model_config& config, uint64_t seed) {
  const auto& c = config;
  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.intermediate_size <= 0 || c.num_layers <= 0 ||
      c.num_heads <= 0 || c.num_kv_heads <= 0 || c.head_dim <= 0 || c.layer_sliding.size() != size_t(c.num_layers))
    throw error("make_dummy_model: the config needs positive dimensions and one layer_sliding entry per layer");
  const auto specs = weight_specs(config);
  std::vector<size_t> offsets{0}; // tensor k is elements [offsets[k], offsets[k + 1]) of the buffer
  for (const auto& spec : specs) {
    size_t n = 1;
    for (auto d : spec.shape) n *= size_t(d);
    offsets.push_back(offsets.back() + n);
  }
  const size_t total = offsets.back();
  std::shared_ptr<float[]> buffer(new float[total]); // [all tensors, concatenated]

  // NOTE: every element depends only on (seed, tensor, index), so the split
  // across threads does not change the result.
  const size_t num_threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 64);
  const size_t chunk = (total + num_threads - 1) / num_threads;
  {
    std::vector<std::jthread> workers;
    for (size_t t = 0; t < num_threads; ++t)
      workers.emplace_back(fill_dummy, std::cref(specs), std::cref(offsets), buffer.get(), seed,
                           std::min(total, t * chunk), std::min(total, (t + 1) * chunk));
  }

  auto weights = std::make_shared<model_weights>();
  weights->layers.resize(size_t(c.num_layers));
  for (size_t k = 0; k < specs.size(); ++k) {
    auto& t = specs[k].slot(*weights);
    t.data = buffer.get() + offsets[k];
    t.shape = specs[k].shape;
  }
  if (c.tie_word_embeddings) weights->lm_head = weights->embed_tokens;
  weights->storage.push_back(std::move(buffer));
  return {config, std::move(weights), ""};
}

} // namespace kvactor
