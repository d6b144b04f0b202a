// Model loading: config.json in both spellings, weights from single and
// sharded safetensors, exact values after conversion, and load_errors that
// name the damaged file. The reference models under tests/data/models were
// written by transformers' save_pretrained.
#include "runtime/model_loader.h"

#include <doctest/doctest.h>
#include <stdlib.h>

#include <boost/json.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/error.h"

using namespace kvactor;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

const std::string models_dir = std::string(KVACTOR_TEST_DATA) + "/models";

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "kvactor_model_XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~temp_dir() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// -- writing safetensors -----------------------------------------------------

struct blob {
  std::string name;
  std::string dtype; // "F32", "BF16", ...
  std::vector<int64_t> shape;
  std::string bytes;
};

// Tensors in the given order, back to back (so an odd-sized one misaligns
// those after it).
void write_safetensors(const std::string& path, const std::vector<blob>& blobs) {
  json::object header;
  size_t offset = 0;
  for (const auto& b : blobs) {
    json::array shape(b.shape.begin(), b.shape.end());
    header[b.name] = {{"dtype", b.dtype}, {"shape", shape}, {"data_offsets", {offset, offset + b.bytes.size()}}};
    offset += b.bytes.size();
  }
  std::string text = json::serialize(header);
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 8; ++i) out.put(char((uint64_t(text.size()) >> (8 * i)) & 0xff));
  out << text;
  for (const auto& b : blobs) out << b.bytes;
}

std::vector<blob> read_blobs(const std::string& path) {
  const auto file = safetensors_file::open(path);
  std::vector<blob> out;
  for (const auto& name : file->names()) {
    const auto v = *file->find(name);
    out.push_back({name, std::string(safetensors_dtype_name(v.type)), v.shape,
                   std::string(reinterpret_cast<const char*>(v.data), v.nbytes)});
  }
  return out;
}

// -- configs -----------------------------------------------------------------

json::object llama3_legacy_config() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5, "hidden_act": "silu", "attention_bias": false, "mlp_bias": false,
    "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    "tie_word_embeddings": true, "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": [2, 3]
  })").as_object();
}

json::object llama3_new_config() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5, "hidden_act": "silu", "attention_bias": false, "mlp_bias": false,
    "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    "tie_word_embeddings": true, "dtype": "float32", "bos_token_id": 1, "eos_token_id": [2, 3]
  })").as_object();
}

const std::string fake_config_path = "/models/x/config.json";

model_config parse(const json::object& o) { return parse_model_config(json::serialize(o), fake_config_path); }

std::string parse_error(const json::object& o) {
  try {
    parse(o);
  } catch (const load_error& e) {
    return e.what();
  }
  FAIL("no load_error");
  return "";
}

std::vector<bool> sliding_layers(const model_config& c) {
  std::vector<bool> out;
  for (int32_t l = 0; l < c.num_layers; ++l) out.push_back(c.uses_sliding(l));
  return out;
}

void check_same_config(const model_config& a, const model_config& b) {
  CHECK(a.architecture == b.architecture);
  CHECK(a.arch == b.arch);
  CHECK(a.vocab_size == b.vocab_size);
  CHECK(a.hidden_size == b.hidden_size);
  CHECK(a.intermediate_size == b.intermediate_size);
  CHECK(a.num_layers == b.num_layers);
  CHECK(a.num_heads == b.num_heads);
  CHECK(a.num_kv_heads == b.num_kv_heads);
  CHECK(a.head_dim == b.head_dim);
  CHECK(a.max_position_embeddings == b.max_position_embeddings);
  CHECK(a.rms_norm_eps == b.rms_norm_eps);
  CHECK(a.rope.theta == b.rope.theta);
  CHECK(a.rope.type == b.rope.type);
  CHECK(a.rope.factor == b.rope.factor);
  CHECK(a.rope.low_freq_factor == b.rope.low_freq_factor);
  CHECK(a.rope.high_freq_factor == b.rope.high_freq_factor);
  CHECK(a.rope.original_max_position_embeddings == b.rope.original_max_position_embeddings);
  CHECK(a.tie_word_embeddings == b.tie_word_embeddings);
  CHECK(a.attention_bias == b.attention_bias);
  CHECK(a.qk_norm == b.qk_norm);
  CHECK(a.sliding_window == b.sliding_window);
  CHECK(sliding_layers(a) == sliding_layers(b));
  CHECK(a.weight_dtype == b.weight_dtype);
  CHECK(a.bos_token_id == b.bos_token_id);
  CHECK(a.eos_token_ids == b.eos_token_ids);
}

// -- a synthetic checkpoint --------------------------------------------------

// Llama, GQA, untied: vocab 16, hidden 8, 2 heads of 4, 1 KV head, MLP 12.
json::object tiny_llama_config() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "vocab_size": 16, "hidden_size": 8, "intermediate_size": 12,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2
  })").as_object();
}

struct tiny_tensor {
  std::string name;
  std::vector<int64_t> shape;
};

std::vector<tiny_tensor> tiny_llama_tensors() {
  std::vector<tiny_tensor> t{{"model.embed_tokens.weight", {16, 8}}};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {8}});
    t.push_back({p + "self_attn.q_proj.weight", {8, 8}});
    t.push_back({p + "self_attn.k_proj.weight", {4, 8}});
    t.push_back({p + "self_attn.v_proj.weight", {4, 8}});
    t.push_back({p + "self_attn.o_proj.weight", {8, 8}});
    t.push_back({p + "post_attention_layernorm.weight", {8}});
    t.push_back({p + "mlp.gate_proj.weight", {12, 8}});
    t.push_back({p + "mlp.up_proj.weight", {12, 8}});
    t.push_back({p + "mlp.down_proj.weight", {8, 12}});
  }
  t.push_back({"model.norm.weight", {8}});
  t.push_back({"lm_head.weight", {16, 8}});
  return t;
}

// Element i of tensor k: a multiple of 1/4 in [-2, 2], exact in bf16 and f16.
float tiny_value(size_t k, size_t i) { return float(int((k * 31 + i * 7) % 17) - 8) * 0.25f; }

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

blob encode(const std::string& name, const std::vector<int64_t>& shape, const std::string& type, size_t k) {
  blob b{name, type, shape, ""};
  for (int64_t i = 0; i < numel(shape); ++i) {
    const float v = tiny_value(k, size_t(i));
    uint32_t f32_bits;
    std::memcpy(&f32_bits, &v, 4);
    if (type == "F32") b.bytes.append(reinterpret_cast<const char*>(&v), 4);
    else {
      // The values need at most 4 significant bits: truncating to bf16 is exact.
      const uint16_t h = type == "BF16" ? uint16_t(f32_bits >> 16) : f32_to_f16(v);
      b.bytes.append(reinterpret_cast<const char*>(&h), 2);
    }
  }
  return b;
}

// The tensor of `w` that the HF name `name` loads into.
const tensor_f32& slot_of(const model_weights& w, const std::string& name) {
  if (name == "model.embed_tokens.weight") return w.embed_tokens;
  if (name == "model.norm.weight") return w.final_norm;
  if (name == "lm_head.weight") return w.lm_head;
  const std::string prefix = "model.layers.";
  REQUIRE(name.starts_with(prefix));
  const size_t dot = name.find('.', prefix.size());
  const auto& l = w.layers.at(std::stoul(name.substr(prefix.size(), dot - prefix.size())));
  const std::string rest = name.substr(dot + 1);
  const std::pair<const char*, const tensor_f32*> slots[] = {
      {"input_layernorm.weight", &l.input_norm},
      {"self_attn.q_proj.weight", &l.q_proj},
      {"self_attn.k_proj.weight", &l.k_proj},
      {"self_attn.v_proj.weight", &l.v_proj},
      {"self_attn.q_proj.bias", &l.q_bias},
      {"self_attn.k_proj.bias", &l.k_bias},
      {"self_attn.v_proj.bias", &l.v_bias},
      {"self_attn.q_norm.weight", &l.q_norm},
      {"self_attn.k_norm.weight", &l.k_norm},
      {"self_attn.o_proj.weight", &l.o_proj},
      {"post_attention_layernorm.weight", &l.post_attention_norm},
      {"mlp.gate_proj.weight", &l.gate_proj},
      {"mlp.up_proj.weight", &l.up_proj},
      {"mlp.down_proj.weight", &l.down_proj},
  };
  for (const auto& [suffix, slot] : slots)
    if (rest == suffix) return *slot;
  FAIL("no slot for " << name);
  return w.embed_tokens;
}

void check_tiny_values(const model_weights& w) {
  const auto tensors = tiny_llama_tensors();
  for (size_t k = 0; k < tensors.size(); ++k) {
    INFO(tensors[k].name);
    const auto& t = slot_of(w, tensors[k].name);
    REQUIRE_FALSE(t.empty());
    CHECK(t.shape == tensors[k].shape);
    size_t wrong = 0;
    for (int64_t i = 0; i < t.numel(); ++i) wrong += t.data[i] != tiny_value(k, size_t(i));
    CHECK(wrong == 0);
  }
}

std::string load_error_of(const std::string& dir) {
  try {
    load_model(dir);
  } catch (const load_error& e) {
    return e.what();
  }
  FAIL("no load_error for " << dir);
  return "";
}

// -- reference models --------------------------------------------------------

std::string reference_dir(const std::string& name) {
  const auto dir = models_dir + "/" + name;
  INFO("reference model directory " << dir);
  REQUIRE(fs::is_directory(dir));
  return dir;
}

json::object read_json(const std::string& path) { return json::parse(read_text(path)).as_object(); }

// A copy of a reference model that a test may damage.
struct model_copy : temp_dir {
  explicit model_copy(const std::string& name) {
    fs::copy(reference_dir(name), path, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  }
};

} // namespace

// -- config.json -------------------------------------------------------------

TEST_CASE("config: both spellings of a Llama 3 config give the same fields") {
  const auto legacy = parse(llama3_legacy_config());
  const auto modern = parse(llama3_new_config());
  check_same_config(legacy, modern);
  CHECK(legacy.arch == model_arch::llama);
  CHECK(legacy.architecture == "LlamaForCausalLM");
  CHECK(legacy.vocab_size == 256);
  CHECK(legacy.num_layers == 3);
  CHECK(legacy.num_heads == 4);
  CHECK(legacy.num_kv_heads == 2);
  CHECK(legacy.head_dim == 16);
  CHECK(legacy.q_dim() == 64);
  CHECK(legacy.kv_dim() == 32);
  CHECK(legacy.rms_norm_eps == 1e-5f);
  CHECK(legacy.rope.theta == 500000.0f);
  CHECK(legacy.rope.type == "llama3");
  CHECK(legacy.rope.factor == 8.0f);
  CHECK(legacy.rope.low_freq_factor == 1.0f);
  CHECK(legacy.rope.high_freq_factor == 4.0f);
  CHECK(legacy.rope.original_max_position_embeddings == 64);
  CHECK(legacy.tie_word_embeddings);
  CHECK_FALSE(legacy.attention_bias);
  CHECK_FALSE(legacy.qk_norm);
  CHECK(legacy.weight_dtype == dtype::f32);
  CHECK(legacy.bos_token_id == 1);
  CHECK(legacy.eos_token_ids == std::vector<int32_t>{2, 3});
  CHECK(sliding_layers(legacy) == std::vector<bool>{false, false, false});
}

TEST_CASE("config: defaults where keys are absent") {
  auto o = llama3_legacy_config();
  for (const char* key : {"num_key_value_heads", "rms_norm_eps", "rope_theta", "rope_scaling", "tie_word_embeddings",
                          "torch_dtype", "bos_token_id", "eos_token_id"})
    o.erase(key);
  const auto c = parse(o);
  CHECK(c.num_kv_heads == 4);
  CHECK(c.head_dim == 16);
  CHECK(c.rms_norm_eps == 1e-6f);
  CHECK(c.rope.theta == 10000.0f);
  CHECK(c.rope.type == "default");
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK(c.bos_token_id == -1);
  CHECK(c.eos_token_ids.empty());

  o["eos_token_id"] = 7;
  o["rope_scaling"] = nullptr;
  CHECK(parse(o).eos_token_ids == std::vector<int32_t>{7});
  CHECK(parse(o).rope.type == "default");
}

TEST_CASE("config: architecture-specific fields") {
  auto o = llama3_legacy_config();
  o.erase("rope_scaling");

  SUBCASE("Mistral: the window covers every layer; null means none; absent means 4096") {
    o["architectures"] = {"MistralForCausalLM"};
    o["sliding_window"] = 8;
    o["attention_bias"] = true; // not used by Mistral
    auto c = parse(o);
    CHECK(c.arch == model_arch::mistral);
    CHECK(c.sliding_window == 8);
    CHECK(sliding_layers(c) == std::vector<bool>{true, true, true});
    CHECK_FALSE(c.attention_bias);
    o["layer_types"] = {"full_attention", "full_attention", "full_attention"}; // ignored, as transformers does
    CHECK(sliding_layers(parse(o)) == std::vector<bool>{true, true, true});
    o["sliding_window"] = nullptr;
    c = parse(o);
    CHECK(c.sliding_window == 0);
    CHECK(sliding_layers(c) == std::vector<bool>{false, false, false});
    o.erase("sliding_window");
    CHECK(parse(o).sliding_window == 4096);
  }
  SUBCASE("Qwen2: biases; a window only with use_sliding_window, from max_window_layers on") {
    o["architectures"] = {"Qwen2ForCausalLM"};
    o["sliding_window"] = 8;
    o["max_window_layers"] = 1;
    o["use_sliding_window"] = false;
    auto c = parse(o);
    CHECK(c.arch == model_arch::qwen2);
    CHECK(c.attention_bias);
    CHECK_FALSE(c.qk_norm);
    CHECK(c.sliding_window == 0);
    CHECK(sliding_layers(c) == std::vector<bool>{false, false, false});
    o["use_sliding_window"] = true;
    c = parse(o);
    CHECK(c.sliding_window == 8);
    CHECK(sliding_layers(c) == std::vector<bool>{false, true, true});
    o["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention"};
    CHECK(sliding_layers(parse(o)) == std::vector<bool>{true, false, true});
  }
  SUBCASE("Qwen3: q/k norms; head_dim as given, else 128") {
    o["architectures"] = {"Qwen3ForCausalLM"};
    o["head_dim"] = 32;
    auto c = parse(o);
    CHECK(c.arch == model_arch::qwen3);
    CHECK(c.qk_norm);
    CHECK_FALSE(c.attention_bias);
    CHECK(c.head_dim == 32);
    CHECK(c.q_dim() == 128);
    CHECK(c.kv_dim() == 64);
    o.erase("head_dim");
    CHECK(parse(o).head_dim == 128);
  }
}

TEST_CASE("config: invalid configs are refused naming the file and the key") {
  auto o = llama3_legacy_config();
  const auto check = [&](const std::string& phrase) {
    const auto message = parse_error(o);
    INFO(message);
    CHECK(message.rfind(fake_config_path + ": ", 0) == 0);
    CHECK(message.find(phrase) != std::string::npos);
  };
  SUBCASE("unknown architecture") {
    o["architectures"] = {"GPT2LMHeadModel"};
    check("unsupported architecture 'GPT2LMHeadModel' (supported: LlamaForCausalLM, MistralForCausalLM, "
          "Qwen2ForCausalLM, Qwen3ForCausalLM)");
  }
  SUBCASE("no architectures") {
    o.erase("architectures");
    check("'architectures' must be a list naming the model class");
  }
  SUBCASE("missing key") {
    o.erase("hidden_size");
    check("'hidden_size' is missing");
  }
  SUBCASE("non-positive dimension") {
    o["vocab_size"] = 0;
    check("'vocab_size' must be positive, got 0");
  }
  SUBCASE("dimension not an integer") {
    o["num_hidden_layers"] = "three";
    check("'num_hidden_layers' must be an integer");
  }
  SUBCASE("heads not a multiple of KV heads") {
    o["num_key_value_heads"] = 3;
    check("'num_attention_heads' (4) must be a multiple of num_key_value_heads (3)");
  }
  SUBCASE("hidden size not a multiple of heads") {
    o["num_attention_heads"] = 5;
    o.erase("num_key_value_heads");
    check("'hidden_size' (64) must be a multiple of num_attention_heads (5)");
  }
  SUBCASE("odd head_dim") {
    o["head_dim"] = 15;
    check("'head_dim' must be even");
  }
  SUBCASE("unsupported rope type, older spelling") {
    o["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
    check("'rope_scaling.type' 'yarn' is not supported (supported: default, llama3)");
  }
  SUBCASE("unsupported rope type, transformers 5 spelling") {
    o["rope_parameters"] = {{"rope_type", "linear"}, {"rope_theta", 10000.0}, {"factor", 2.0}};
    check("'rope_parameters.rope_type' 'linear' is not supported");
  }
  SUBCASE("llama3 rope without factor") {
    o["rope_scaling"].as_object().erase("factor");
    check("'rope_scaling.factor' is missing");
  }
  SUBCASE("malformed JSON") {
    const std::string text = json::serialize(o);
    try {
      parse_model_config(text.substr(0, text.size() / 2), fake_config_path);
      FAIL("no load_error");
    } catch (const load_error& e) {
      CHECK(std::string(e.what()).rfind(fake_config_path + ": not valid JSON", 0) == 0);
    }
  }
  SUBCASE("layer_types of the wrong length") {
    o["architectures"] = {"Qwen2ForCausalLM"};
    o["layer_types"] = {"full_attention"};
    check("'layer_types' must list one type per layer (3)");
  }
  SUBCASE("unknown layer type") {
    o["architectures"] = {"Qwen3ForCausalLM"};
    o["layer_types"] = {"full_attention", "chunked_attention", "full_attention"};
    check("'layer_types' entry 1 must be");
  }
  SUBCASE("unsupported weight type") {
    o["torch_dtype"] = "float8_e4m3fn";
    check("'torch_dtype' names an unsupported weight type 'float8_e4m3fn'");
  }
  SUBCASE("unsupported activation") {
    o["hidden_act"] = "gelu";
    check("'hidden_act' 'gelu' is not supported");
  }
  SUBCASE("Llama with attention biases") {
    o["attention_bias"] = true;
    check("'attention_bias' true is not supported for LlamaForCausalLM");
  }
  SUBCASE("eos token id of the wrong type") {
    o["eos_token_id"] = "</s>";
    check("'eos_token_id' must be a token id or a list of token ids");
  }
}

// -- a synthetic checkpoint --------------------------------------------------

TEST_CASE("a checkpoint of mixed element types loads with exact values") {
  temp_dir dir;
  write_text(dir.file("config.json"), json::serialize(tiny_llama_config()));
  write_text(dir.file("generation_config.json"), R"({"bos_token_id": 5, "eos_token_id": [6, 7], "do_sample": true})");
  // Embeddings bf16, layer 0 f16, the rest f32; an odd-sized extra tensor
  // before lm_head leaves lm_head unaligned in the file.
  const auto tensors = tiny_llama_tensors();
  std::vector<blob> blobs;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const auto& name = tensors[k].name;
    const std::string type = k == 0 ? "BF16" : name.starts_with("model.layers.0.") ? "F16" : "F32";
    if (name == "lm_head.weight") blobs.push_back({"model.rotary_emb.inv_freq", "BF16", {3}, std::string(6, '\0')});
    blobs.push_back(encode(name, tensors[k].shape, type, k));
  }
  write_safetensors(dir.file("model.safetensors"), blobs);

  const auto m = load_model(dir.str());
  CHECK(m.dir == dir.str());
  CHECK(m.config.weight_dtype == dtype::bf16);
  CHECK(m.config.bos_token_id == 5); // generation_config.json wins
  CHECK(m.config.eos_token_ids == std::vector<int32_t>{6, 7});
  REQUIRE(m.weights->layers.size() == 2);
  check_tiny_values(*m.weights);
  CHECK(m.weights->lm_head.data != m.weights->embed_tokens.data);
  CHECK(m.weights->layers[0].q_bias.empty());
  CHECK(m.weights->layers[0].q_norm.empty());
  // The mapped file, plus one converted buffer each for the bf16 embeddings,
  // the 9 f16 tensors of layer 0 and the unaligned lm_head; the aligned f32
  // tensors are used in place.
  CHECK(m.weights->storage.size() == 1 + 1 + 9 + 1);

  const auto views = load_weight_views(dir.str(), m.config);
  REQUIRE(views.size() == tensors.size());
  for (size_t k = 0; k < tensors.size(); ++k) {
    CHECK(views[k].name == tensors[k].name);
    CHECK(views[k].view.shape == tensors[k].shape);
    CHECK(views[k].file->path() == dir.file("model.safetensors"));
  }
  CHECK(views[0].view.type == safetensors_dtype::bf16);
  CHECK(views[1].view.type == safetensors_dtype::f16);
  CHECK(views.back().view.type == safetensors_dtype::f32);
}

TEST_CASE("a sharded checkpoint maps each shard once") {
  temp_dir dir;
  write_text(dir.file("config.json"), json::serialize(tiny_llama_config()));
  const auto tensors = tiny_llama_tensors();
  std::vector<blob> first, second;
  json::object weight_map;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const bool in_first = k < tensors.size() / 2;
    (in_first ? first : second).push_back(encode(tensors[k].name, tensors[k].shape, "F32", k));
    weight_map[tensors[k].name] = in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write_safetensors(dir.file("model-00001-of-00002.safetensors"), first);
  write_safetensors(dir.file("model-00002-of-00002.safetensors"), second);
  const json::object index{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  write_text(dir.file("model.safetensors.index.json"), json::serialize(index));

  const auto m = load_model(dir.str());
  check_tiny_values(*m.weights);
  CHECK(m.config.bos_token_id == 1);
  CHECK(m.config.eos_token_ids == std::vector<int32_t>{2});
  CHECK(m.weights->storage.size() == 2); // the two shards, nothing converted

  SUBCASE("a tensor missing from weight_map") {
    auto damaged = index;
    damaged["weight_map"].as_object().erase("model.layers.1.mlp.up_proj.weight");
    write_text(dir.file("model.safetensors.index.json"), json::serialize(damaged));
    CHECK(load_error_of(dir.str()) == dir.file("model.safetensors.index.json") +
                                          ": missing tensor 'model.layers.1.mlp.up_proj.weight' in weight_map");
  }
  SUBCASE("weight_map names the wrong shard") {
    auto damaged = index;
    damaged["weight_map"].as_object()["model.norm.weight"] = "model-00001-of-00002.safetensors";
    write_text(dir.file("model.safetensors.index.json"), json::serialize(damaged));
    CHECK(load_error_of(dir.str()) ==
          dir.file("model-00001-of-00002.safetensors") + ": missing tensor 'model.norm.weight'");
  }
  SUBCASE("a shard is missing") {
    fs::remove(dir.file("model-00002-of-00002.safetensors"));
    CHECK(load_error_of(dir.str()).starts_with(dir.file("model-00002-of-00002.safetensors") + ": cannot open"));
  }
  SUBCASE("no weights at all") {
    fs::remove(dir.file("model.safetensors.index.json"));
    CHECK(load_error_of(dir.str()) == dir.str() + ": no model.safetensors or model.safetensors.index.json");
  }
}

TEST_CASE("a non-float tensor where a weight belongs is refused") {
  temp_dir dir;
  write_text(dir.file("config.json"), json::serialize(tiny_llama_config()));
  const auto tensors = tiny_llama_tensors();
  std::vector<blob> blobs;
  for (size_t k = 0; k < tensors.size(); ++k) {
    auto b = encode(tensors[k].name, tensors[k].shape, "F32", k);
    if (tensors[k].name == "model.norm.weight") b.dtype = "I32";
    blobs.push_back(b);
  }
  write_safetensors(dir.file("model.safetensors"), blobs);
  CHECK(load_error_of(dir.str()) == dir.file("model.safetensors") +
                                        ": tensor 'model.norm.weight': element type I32 is not a weight type "
                                        "(F32, F16, BF16)");
}

// -- dummy models ------------------------------------------------------------

TEST_CASE("make_dummy_model: deterministic in the seed, scaled by fan-in") {
  auto o = llama3_legacy_config();
  o["architectures"] = {"Qwen2ForCausalLM"}; // with biases
  o["tie_word_embeddings"] = false;
  o["intermediate_size"] = 4096;
  const auto config = parse(o);
  const auto a = make_dummy_model(config, 7);
  const auto b = make_dummy_model(config, 7);
  const auto c = make_dummy_model(config, 8);
  CHECK(a.dir.empty());
  REQUIRE(a.weights->layers.size() == 3);

  const auto& down = a.weights->layers[2].down_proj; // [hidden, intermediate]
  CHECK(down.shape == std::vector<int64_t>{64, 4096});
  CHECK(std::memcmp(down.data, b.weights->layers[2].down_proj.data, size_t(down.numel()) * 4) == 0);
  CHECK(std::memcmp(down.data, c.weights->layers[2].down_proj.data, size_t(down.numel()) * 4) != 0);
  double sum = 0, sum_sq = 0;
  for (int64_t i = 0; i < down.numel(); ++i) sum += down.data[i], sum_sq += double(down.data[i]) * down.data[i];
  const double n = double(down.numel());
  CHECK(std::abs(sum / n) < 0.001);
  CHECK(sum_sq / n == doctest::Approx(1.0 / 4096).epsilon(0.02)); // variance 1 / fan_in

  const auto& norm = a.weights->layers[0].input_norm;
  CHECK(norm.shape == std::vector<int64_t>{64});
  for (int64_t i = 0; i < norm.numel(); ++i) CHECK(std::abs(norm.data[i] - 1.0f) < 0.2f);
  CHECK(a.weights->layers[1].k_bias.shape == std::vector<int64_t>{32});
  CHECK(a.weights->lm_head.shape == std::vector<int64_t>{256, 64});
  CHECK(a.weights->lm_head.data != a.weights->embed_tokens.data);
  // Different tensors get different values.
  CHECK(std::memcmp(a.weights->layers[0].q_proj.data, a.weights->layers[1].q_proj.data, 64 * 4) != 0);
}

// -- reference models --------------------------------------------------------

// What each reference model was built to exercise.
struct reference_expectation {
  std::string name;
  model_arch arch;
  int32_t num_layers, num_kv_heads, head_dim;
  float rope_theta;
  bool tied, attention_bias, qk_norm;
  int32_t sliding_window;
  std::vector<bool> sliding;
  dtype weight_dtype;
  size_t storage; // mapped files plus converted tensors
};

const std::vector<reference_expectation> reference_expectations = {
    // MHA, five fp32 shards used in place.
    {"llama2", model_arch::llama, 2, 4, 16, 10000.0f, false, false, false, 0, {false, false}, dtype::f32, 5},
    // GQA, llama3 rope scaling, tied.
    {"llama3", model_arch::llama, 2, 2, 16, 500000.0f, true, false, false, 0, {false, false}, dtype::f32, 1},
    // GQA, a window of 8 on every layer; bf16, so all 21 tensors are converted.
    {"mistral", model_arch::mistral, 2, 2, 16, 1e6f, false, false, false, 8, {true, true}, dtype::bf16, 1 + 21},
    // q/k/v biases; sliding from max_window_layers = 1 on.
    {"qwen2", model_arch::qwen2, 3, 2, 16, 1e6f, false, true, false, 8, {false, true, true}, dtype::f32, 1},
    // q/k norms, head_dim 32 != 64 / 4, tied, no sliding.
    {"qwen3", model_arch::qwen3, 2, 2, 32, 1e6f, true, false, true, 0, {false, false}, dtype::f32, 1},
};

TEST_CASE("reference models load with the fields transformers saved") {
  for (const auto& e : reference_expectations) {
    INFO(e.name);
    const auto dir = reference_dir(e.name);
    const auto m = load_model(dir);
    const auto& c = m.config;
    CHECK(m.dir == dir);
    CHECK(c.arch == e.arch);
    CHECK(c.vocab_size == 256);
    CHECK(c.hidden_size == 64);
    CHECK(c.intermediate_size == 128);
    CHECK(c.num_layers == e.num_layers);
    CHECK(c.num_heads == 4);
    CHECK(c.num_kv_heads == e.num_kv_heads);
    CHECK(c.head_dim == e.head_dim);
    CHECK(c.max_position_embeddings == 512);
    CHECK(c.rms_norm_eps == 1e-5f);
    CHECK(c.rope.theta == e.rope_theta);
    CHECK(c.tie_word_embeddings == e.tied);
    CHECK(c.attention_bias == e.attention_bias);
    CHECK(c.qk_norm == e.qk_norm);
    CHECK(c.sliding_window == e.sliding_window);
    CHECK(sliding_layers(c) == e.sliding);
    CHECK(c.weight_dtype == e.weight_dtype);
    CHECK(c.bos_token_id == 1);
    CHECK(c.eos_token_ids == std::vector<int32_t>{2});
    if (e.name == "llama3") {
      CHECK(c.rope.type == "llama3");
      CHECK(c.rope.factor == 8.0f);
      CHECK(c.rope.low_freq_factor == 1.0f);
      CHECK(c.rope.high_freq_factor == 4.0f);
      CHECK(c.rope.original_max_position_embeddings == 8192);
    } else {
      CHECK(c.rope.type == "default");
    }

    const auto& w = *m.weights;
    CHECK(w.storage.size() == e.storage);
    REQUIRE(w.layers.size() == size_t(c.num_layers));
    CHECK(w.embed_tokens.shape == std::vector<int64_t>{256, 64});
    CHECK(w.lm_head.shape == std::vector<int64_t>{256, 64});
    CHECK((w.lm_head.data == w.embed_tokens.data) == e.tied);
    CHECK(w.final_norm.shape == std::vector<int64_t>{64});
    for (const auto& l : w.layers) {
      CHECK(l.input_norm.shape == std::vector<int64_t>{64});
      CHECK(l.q_proj.shape == std::vector<int64_t>{4 * e.head_dim, 64});
      CHECK(l.k_proj.shape == std::vector<int64_t>{e.num_kv_heads * e.head_dim, 64});
      CHECK(l.v_proj.shape == std::vector<int64_t>{e.num_kv_heads * e.head_dim, 64});
      CHECK(l.o_proj.shape == std::vector<int64_t>{64, 4 * e.head_dim});
      CHECK(l.post_attention_norm.shape == std::vector<int64_t>{64});
      CHECK(l.gate_proj.shape == std::vector<int64_t>{128, 64});
      CHECK(l.up_proj.shape == std::vector<int64_t>{128, 64});
      CHECK(l.down_proj.shape == std::vector<int64_t>{64, 128});
      CHECK(l.q_bias.shape == (e.attention_bias ? std::vector<int64_t>{4 * e.head_dim} : std::vector<int64_t>{}));
      CHECK(l.v_bias.shape == (e.attention_bias ? std::vector<int64_t>{e.num_kv_heads * e.head_dim}
                                                : std::vector<int64_t>{}));
      CHECK(l.k_norm.shape == (e.qk_norm ? std::vector<int64_t>{e.head_dim} : std::vector<int64_t>{}));
    }

    // Every loaded value equals the stored one, widened exactly.
    const auto views = load_weight_views(dir, c);
    size_t wrong = 0, checked = 0;
    for (const auto& v : views) {
      const auto& t = slot_of(w, v.name);
      REQUIRE(t.numel() == v.view.numel());
      for (int64_t i = 0; i < t.numel(); ++i, ++checked) {
        float stored;
        if (v.view.type == safetensors_dtype::f32) {
          std::memcpy(&stored, v.view.data + 4 * i, 4);
        } else {
          REQUIRE(v.view.type == safetensors_dtype::bf16);
          uint32_t bits = 0;
          std::memcpy(reinterpret_cast<char*>(&bits) + 2, v.view.data + 2 * i, 2);
          std::memcpy(&stored, &bits, 4);
        }
        wrong += std::memcmp(&stored, t.data + i, 4) != 0;
      }
    }
    const size_t per_layer = 9 + (e.attention_bias ? 3 : 0) + (e.qk_norm ? 2 : 0);
    CHECK(views.size() == 1 + size_t(e.num_layers) * per_layer + 1 + (e.tied ? 0 : 1));
    CHECK(checked > 0);
    CHECK(wrong == 0);
  }
}

TEST_CASE("reference configs: config.json and config.legacy.json agree field by field") {
  for (const auto& e : reference_expectations) {
    INFO(e.name);
    const auto dir = reference_dir(e.name);
    const auto modern = load_model_config(dir + "/config.json");
    const auto legacy = load_model_config(dir + "/config.legacy.json");
    CHECK(read_json(dir + "/config.json").contains("rope_parameters"));
    CHECK_FALSE(read_json(dir + "/config.legacy.json").contains("rope_parameters"));
    check_same_config(modern, legacy);
  }
}

TEST_CASE("damaged copies of a reference model are refused naming the file") {
  model_copy copy("llama3");
  const auto weights = copy.file("model.safetensors");
  const auto config = copy.file("config.json");

  SUBCASE("missing tensor") {
    auto blobs = read_blobs(weights);
    std::erase_if(blobs, [](const blob& b) { return b.name == "model.layers.1.mlp.up_proj.weight"; });
    write_safetensors(weights, blobs);
    CHECK(load_error_of(copy.str()) == weights + ": missing tensor 'model.layers.1.mlp.up_proj.weight'");
  }
  SUBCASE("wrong shape") {
    auto blobs = read_blobs(weights);
    for (auto& b : blobs)
      if (b.name == "model.norm.weight") b.shape = {63}, b.bytes.resize(63 * 4);
    write_safetensors(weights, blobs);
    CHECK(load_error_of(copy.str()) == weights + ": tensor 'model.norm.weight': expected shape [64], found [63]");
  }
  SUBCASE("truncated weights file") {
    fs::resize_file(weights, fs::file_size(weights) - 100);
    const auto message = load_error_of(copy.str());
    CHECK(message.starts_with(weights + ": tensor '"));
    CHECK(message.find("reach past the end of the data section") != std::string::npos);
  }
  SUBCASE("unknown architecture") {
    auto o = read_json(config);
    o["architectures"] = {"PhiForCausalLM"};
    write_text(config, json::serialize(o));
    CHECK(load_error_of(copy.str()).starts_with(config + ": unsupported architecture 'PhiForCausalLM'"));
  }
  SUBCASE("malformed config.json") {
    const auto text = read_text(config);
    write_text(config, text.substr(0, text.size() / 2));
    CHECK(load_error_of(copy.str()).starts_with(config + ": not valid JSON"));
  }
  SUBCASE("missing config.json") {
    fs::remove(config);
    CHECK(load_error_of(copy.str()) == config + ": cannot open");
  }
  SUBCASE("malformed generation_config.json") {
    write_text(copy.file("generation_config.json"), "{\"eos_token_id\": ");
    CHECK(load_error_of(copy.str()).starts_with(copy.file("generation_config.json") + ": not valid JSON"));
  }
}

TEST_CASE("a sharded reference model missing a tensor in one shard names that shard") {
  model_copy copy("llama2");
  const auto index = read_json(copy.file("model.safetensors.index.json"));
  const std::string tensor = "model.layers.0.self_attn.q_proj.weight";
  const std::string shard = copy.file(std::string(index.at("weight_map").at(tensor).as_string()));
  auto blobs = read_blobs(shard);
  std::erase_if(blobs, [&](const blob& b) { return b.name == tensor; });
  write_safetensors(shard, blobs);
  CHECK(load_error_of(copy.str()) == shard + ": missing tensor '" + tensor + "'");
}
