#include "runtime/model_config.h"

#include <boost/json.hpp>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include "runtime/error.h"

namespace kvactor {

namespace json = boost::json;

namespace {

// Typed access to one JSON object of a config file. A key set to null counts
// as absent, as it does for transformers. Every error names the file and the
// key (with its parent, e.g. "rope_parameters.factor").
class config_reader {
 public:
  config_reader(const json::object& object, const std::string& path, std::string prefix = "")
      : object_(object), path_(path), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(std::string_view key, const std::string& problem) const {
    throw load_error(path_, "'" + prefix_ + std::string(key) + "' " + problem);
  }

  bool is_null(std::string_view key) const {
    const auto* v = object_.if_contains(key);
    return v && v->is_null();
  }

  const json::value* get(std::string_view key) const {
    const auto* v = object_.if_contains(key);
    return v && !v->is_null() ? v : nullptr;
  }

  std::optional<int32_t> optional_int(std::string_view key) const {
    const auto* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_int64() && !v->is_uint64()) fail(key, "must be an integer");
    // Only integers beyond int64 parse as uint64.
    if (v->is_uint64()) fail(key, "is out of range: " + std::to_string(v->get_uint64()));
    const auto n = v->get_int64();
    if (n < std::numeric_limits<int32_t>::min() || n > std::numeric_limits<int32_t>::max())
      fail(key, "is out of range: " + std::to_string(n));
    return int32_t(n);
  }

  std::optional<int32_t> optional_positive_int(std::string_view key) const {
    const auto n = optional_int(key);
    if (n && *n <= 0) fail(key, "must be positive, got " + std::to_string(*n));
    return n;
  }

  int32_t positive_int(std::string_view key) const {
    const auto n = optional_positive_int(key);
    if (!n) fail(key, "is missing");
    return *n;
  }

  std::optional<double> optional_number(std::string_view key) const {
    const auto* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) fail(key, "must be a number");
    return v->to_number<double>();
  }

  float positive_float(std::string_view key, std::optional<float> fallback = std::nullopt) const {
    const auto x = optional_number(key);
    if (!x && !fallback) fail(key, "is missing");
    const float value = x ? float(*x) : *fallback;
    if (!(value > 0.0f)) fail(key, "must be positive, got " + std::to_string(value));
    return value;
  }

  std::optional<bool> optional_bool(std::string_view key) const {
    const auto* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_bool()) fail(key, "must be true or false");
    return v->get_bool();
  }

  std::optional<std::string> optional_string(std::string_view key) const {
    const auto* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) fail(key, "must be a string");
    return std::string(v->get_string());
  }

  const json::object* optional_object(std::string_view key) const {
    const auto* v = get(key);
    if (!v) return nullptr;
    if (!v->is_object()) fail(key, "must be an object");
    return &v->get_object();
  }

  // A token id, or a list of them (eos_token_id may be either).
  std::optional<std::vector<int32_t>> optional_token_ids(std::string_view key) const {
    const auto* v = get(key);
    if (!v) return std::nullopt;
    std::vector<int32_t> ids;
    const auto push = [&](const json::value& id) {
      if (!id.is_int64() || id.get_int64() < 0 || id.get_int64() > std::numeric_limits<int32_t>::max())
        fail(key, "must be a token id or a list of token ids");
      ids.push_back(int32_t(id.get_int64()));
    };
    if (v->is_array()) {
      for (const auto& id : v->get_array()) push(id);
    } else {
      push(*v);
    }
    return ids;
  }

  const std::string& path() const { return path_; }

 private:
  const json::object& object_;
  const std::string& path_;
  std::string prefix_;
};

json::object parse_object(const std::string& json_text, const std::string& path) {
  boost::system::error_code ec;
  json::value root = json::parse(json_text, ec);
  if (ec) throw load_error(path, "not valid JSON: " + ec.message());
  if (!root.is_object()) throw load_error(path, "not a JSON object");
  return std::move(root.get_object());
}

constexpr const char* supported_architectures =
    "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM";

model_arch parse_architecture(const config_reader& r, std::string& name) {
  const auto* archs = r.get("architectures");
  if (!archs || !archs->is_array() || archs->get_array().empty() || !archs->get_array()[0].is_string())
    r.fail("architectures", "must be a list naming the model class, e.g. [\"LlamaForCausalLM\"]");
  name = std::string(archs->get_array()[0].get_string());
  if (name == "LlamaForCausalLM") return model_arch::llama;
  if (name == "MistralForCausalLM") return model_arch::mistral;
  if (name == "Qwen2ForCausalLM") return model_arch::qwen2;
  if (name == "Qwen3ForCausalLM") return model_arch::qwen3;
  throw load_error(r.path(), "unsupported architecture '" + name + "' (supported: " + supported_architectures + ")");
}

dtype parse_weight_dtype(const config_reader& r) {
  // transformers 5 writes "dtype", older versions "torch_dtype".
  const char* key = r.get("dtype") ? "dtype" : "torch_dtype";
  const auto name = r.optional_string(key);
  if (!name) return dtype::bf16;
  if (*name == "float32") return dtype::f32;
  if (*name == "float16") return dtype::f16;
  if (*name == "bfloat16") return dtype::bf16;
  r.fail(key, "names an unsupported weight type '" + *name + "' (supported: float32, float16, bfloat16)");
}

// transformers 5: rope_parameters {rope_theta, rope_type, factor, ...}.
// Older: rope_theta at the top level and rope_scaling {type|rope_type, ...}.
rope_config parse_rope(const config_reader& r) {
  rope_config rope;
  const char* scaling_key = r.get("rope_parameters") ? "rope_parameters" : "rope_scaling";
  const json::object* scaling = r.optional_object(scaling_key);
  const std::optional<config_reader> s =
      scaling ? std::optional<config_reader>(std::in_place, *scaling, r.path(), std::string(scaling_key) + ".")
              : std::nullopt;

  if (s && s->get("rope_theta")) rope.theta = s->positive_float("rope_theta");
  else rope.theta = r.positive_float("rope_theta", rope.theta);
  if (!s) return rope;

  const char* type_key = s->get("rope_type") ? "rope_type" : "type";
  rope.type = s->optional_string(type_key).value_or("default");
  if (rope.type == "default") return rope;
  if (rope.type != "llama3")
    s->fail(type_key, "'" + rope.type + "' is not supported (supported: default, llama3)");
  rope.factor = s->positive_float("factor");
  rope.low_freq_factor = s->positive_float("low_freq_factor");
  rope.high_freq_factor = s->positive_float("high_freq_factor");
  if (rope.high_freq_factor <= rope.low_freq_factor)
    s->fail("high_freq_factor", "must be greater than low_freq_factor");
  rope.original_max_position_embeddings = s->positive_int("original_max_position_embeddings");
  return rope;
}

// Marks the layers that attend through a sliding window, as transformers does
// for each architecture.
void parse_sliding_window(const config_reader& r, model_config& c) {
  c.layer_sliding.assign(size_t(c.num_layers), false);
  // Both Mistral and Qwen default to 4096 when the key is absent; null means none.
  const auto window = [&]() -> int32_t {
    if (r.is_null("sliding_window")) return 0;
    const auto w = r.optional_int("sliding_window").value_or(4096);
    if (w < 0) r.fail("sliding_window", "must not be negative");
    return w;
  };
  switch (c.arch) {
    case model_arch::llama: return;
    case model_arch::mistral:
      // NOTE: Mistral applies its window to every layer; transformers ignores
      // layer_types for it.
      c.sliding_window = window();
      c.layer_sliding.assign(size_t(c.num_layers), c.sliding_window > 0);
      return;
    case model_arch::qwen2:
    case model_arch::qwen3: break;
  }
  // Qwen: the window exists only with use_sliding_window; layer_types then
  // picks the layers, or failing that every layer from max_window_layers on.
  if (r.optional_bool("use_sliding_window").value_or(false)) c.sliding_window = window();
  if (const auto* types = r.get("layer_types")) {
    if (!types->is_array() || types->get_array().size() != size_t(c.num_layers))
      r.fail("layer_types", "must list one type per layer (" + std::to_string(c.num_layers) + ")");
    for (size_t i = 0; i < types->get_array().size(); ++i) {
      const auto& t = types->get_array()[i];
      const std::string_view type = t.is_string() ? std::string_view(t.get_string()) : "";
      if (type == "sliding_attention") c.layer_sliding[i] = true;
      else if (type != "full_attention")
        r.fail("layer_types", "entry " + std::to_string(i) + " must be \"full_attention\" or \"sliding_attention\"");
    }
    return;
  }
  const auto max_window_layers = r.optional_int("max_window_layers").value_or(28);
  if (max_window_layers < 0) r.fail("max_window_layers", "must not be negative");
  for (int32_t i = max_window_layers; i < c.num_layers; ++i) c.layer_sliding[size_t(i)] = true;
}

} // namespace

model_config parse_model_config(const std::string& json_text, const std::string& path) {
  const json::object root = parse_object(json_text, path);
  const config_reader r(root, path);
  model_config c;
  c.arch = parse_architecture(r, c.architecture);

  c.vocab_size = r.positive_int("vocab_size");
  c.hidden_size = r.positive_int("hidden_size");
  c.intermediate_size = r.positive_int("intermediate_size");
  c.num_layers = r.positive_int("num_hidden_layers");
  c.num_heads = r.positive_int("num_attention_heads");
  c.num_kv_heads = r.optional_positive_int("num_key_value_heads").value_or(c.num_heads);
  if (c.num_heads % c.num_kv_heads != 0)
    r.fail("num_attention_heads", "(" + std::to_string(c.num_heads) + ") must be a multiple of num_key_value_heads (" +
                                      std::to_string(c.num_kv_heads) + ")");
  if (const auto head_dim = r.optional_positive_int("head_dim")) {
    c.head_dim = *head_dim;
  } else if (c.arch == model_arch::qwen3) {
    c.head_dim = 128; // NOTE: Qwen3's default, not hidden_size / num_attention_heads
  } else {
    if (c.hidden_size % c.num_heads != 0)
      r.fail("hidden_size", "(" + std::to_string(c.hidden_size) + ") must be a multiple of num_attention_heads (" +
                                std::to_string(c.num_heads) + ") when head_dim is not given");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim % 2 != 0) r.fail("head_dim", "must be even for rotary embeddings, got " + std::to_string(c.head_dim));
  // q_dim() and kv_dim() are int32, as are the sizes derived from them.
  if (int64_t(c.num_heads) * c.head_dim > std::numeric_limits<int32_t>::max())
    r.fail("head_dim", "(" + std::to_string(c.head_dim) + ") times num_attention_heads (" +
                           std::to_string(c.num_heads) + ") is over 2^31 - 1");
  c.max_position_embeddings = r.positive_int("max_position_embeddings");
  c.rms_norm_eps = r.positive_float("rms_norm_eps", 1e-6f);
  c.rope = parse_rope(r);

  if (const auto act = r.optional_string("hidden_act"); act && *act != "silu")
    r.fail("hidden_act", "'" + *act + "' is not supported (supported: silu)");
  if (r.optional_bool("mlp_bias").value_or(false)) r.fail("mlp_bias", "true is not supported");
  c.tie_word_embeddings = r.optional_bool("tie_word_embeddings").value_or(false);
  switch (c.arch) {
    case model_arch::qwen2: c.attention_bias = true; break; // q/k/v only, by design of the model
    case model_arch::mistral: c.attention_bias = false; break;
    case model_arch::llama:
    case model_arch::qwen3:
      // There the flag also adds an o_proj bias, which model_weights does not hold.
      if (r.optional_bool("attention_bias").value_or(false))
        r.fail("attention_bias", "true is not supported for " + c.architecture + " (it adds an o_proj bias)");
      break;
  }
  c.qk_norm = c.arch == model_arch::qwen3;
  parse_sliding_window(r, c);
  c.weight_dtype = parse_weight_dtype(r);

  if (const auto bos = r.optional_token_ids("bos_token_id")) {
    if (bos->size() != 1) r.fail("bos_token_id", "must be a single token id");
    c.bos_token_id = bos->front();
  }
  c.eos_token_ids = r.optional_token_ids("eos_token_id").value_or(std::vector<int32_t>{});
  return c;
}

model_config load_model_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw load_error(path, "cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_model_config(text.str(), path);
}

void apply_generation_config(model_config& config, const std::string& json_text, const std::string& path) {
  const json::object root = parse_object(json_text, path);
  const config_reader r(root, path);
  if (const auto bos = r.optional_token_ids("bos_token_id")) {
    if (bos->size() != 1) r.fail("bos_token_id", "must be a single token id");
    config.bos_token_id = bos->front();
  }
  if (auto eos = r.optional_token_ids("eos_token_id")) config.eos_token_ids = std::move(*eos);
}

} // namespace kvactor
