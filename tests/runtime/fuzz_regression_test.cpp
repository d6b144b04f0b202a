// Inputs that broke a property of a fuzz target (tests/fuzz/): each is
// refused now with a load_error naming the file and the problem. The same
// inputs are in the fuzz corpora, so every fuzz run tries them again.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "runtime/error.h"
#include "runtime/model_config.h"
#include "runtime/model_loader.h"
#include "runtime/safetensors.h"

using namespace kvactor;

namespace {

template <typename F>
std::string load_error_of(F&& f) {
  try {
    f();
  } catch (const load_error& e) {
    return e.what();
  }
  return "no load_error";
}

} // namespace

TEST_CASE("config.json: an integer beyond the signed 64-bit range is out of range, not an escaped exception") {
  // model_config_fuzz: boost::json's to_number<int64_t> threw system_error.
  const std::string text = "{\n  \"architectures\": [\n    \"MistralForCausalLM\"]\n  , \"vocab_size\": 12666666666666666668}";
  CHECK(load_error_of([&] { parse_model_config(text, "m/config.json"); }) ==
        "m/config.json: 'vocab_size' is out of range: 12666666666666666668");
}

TEST_CASE("config.json: attention widths that overflow int32 are refused") {
  // model_config_fuzz's property: q_dim() = num_heads * head_dim fits in int32.
  const std::string text = R"({"architectures":["LlamaForCausalLM"],"vocab_size":1,"hidden_size":2,)"
                           R"("intermediate_size":1,"num_hidden_layers":1,"num_attention_heads":65536,)"
                           R"("head_dim":65536,"max_position_embeddings":1})";
  CHECK(load_error_of([&] { parse_model_config(text, "m/config.json"); }) ==
        "m/config.json: 'head_dim' (65536) times num_attention_heads (65536) is over 2^31 - 1");
}

TEST_CASE("safetensors: a zero-size tensor whose other dimensions overflow is refused") {
  // safetensors_fuzz: the shape passed because of its 0, and numel() then
  // overflowed int64 multiplying the dimensions before it.
  const std::string header = R"({"z":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})";
  const auto path = std::filesystem::temp_directory_path() / ("fuzz_regression_" + std::to_string(::getpid()));
  {
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8) << header;
  }
  CHECK(load_error_of([&] { safetensors_file::open(path.string()); }) ==
        path.string() + ": tensor 'z': data_offsets span 0 bytes but shape [4294967296, 4294967296, 0] of F32 needs "
                        "more than 2^63 - 1");
  std::filesystem::remove(path);
}

TEST_CASE("model.safetensors.index.json: a shard outside the model directory is refused") {
  // safetensors_index_fuzz's property: every shard opened is in the directory.
  const auto dir = std::filesystem::temp_directory_path() / ("fuzz_regression_index_" + std::to_string(::getpid()));
  const std::string source = std::string(KVACTOR_TEST_DATA) + "/models/llama2";
  const model_config config = load_model_dir_config(source);
  for (const std::string shard : {"../llama2/model-00001-of-00005.safetensors", "/etc/passwd",
                                  "./model-00001-of-00005.safetensors", ".."}) {
    CAPTURE(shard);
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "model.safetensors.index.json")
        << R"({"weight_map":{"model.embed_tokens.weight":")" << shard << R"("}})";
    CHECK(load_error_of([&] { load_weight_views(dir.string(), config); }) ==
          (dir / "model.safetensors.index.json").string() +
              ": weight_map entry for 'model.embed_tokens.weight' is not the name of a file in the model directory");
    std::filesystem::remove_all(dir);
  }
}
