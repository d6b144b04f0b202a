// model.safetensors.index.json of arbitrary bytes, beside the real shards of
// the Llama 2 reference model: loading the weights either throws a
// load_error or gives every tensor the config calls for, each with its
// shape. The directory lives for the whole run; each input rewrites the
// index.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "runtime/error.h"
#include "runtime/model_loader.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace kvactor;
namespace fs = std::filesystem;

struct checkpoint_dir {
  checkpoint_dir() {
    const fs::path source = fs::path(KVACTOR_TEST_DATA) / "models" / "llama2";
    std::string pattern = (fs::temp_directory_path() / "safetensors_index_fuzz.XXXXXX").string();
    FUZZ_CHECK(::mkdtemp(pattern.data()) != nullptr);
    dir = pattern;
    for (const auto& entry : fs::directory_iterator(source))
      if (entry.path().extension() == ".safetensors") fs::create_symlink(entry.path(), dir / entry.path().filename());
    config = load_model_dir_config(source.string());
  }
  ~checkpoint_dir() { fs::remove_all(dir); }

  fs::path dir;
  model_config config;
};

const checkpoint_dir& checkpoint() {
  static const checkpoint_dir d;
  return d;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const checkpoint_dir& d = checkpoint();
  const fs::path index = d.dir / "model.safetensors.index.json";
  std::ofstream(index, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), std::streamsize(size));
  try {
    const auto views = load_weight_views(d.dir.string(), d.config);
    FUZZ_CHECK(views.size() == size_t(2 + 9 * d.config.num_layers + (d.config.tie_word_embeddings ? 0 : 1)));
    for (const auto& w : views) {
      FUZZ_CHECK(w.file != nullptr);
      // Every shard opened is one of ours: the index cannot lead elsewhere.
      FUZZ_CHECK(fs::path(w.file->path()).parent_path() == d.dir);
      FUZZ_CHECK(w.view.nbytes == size_t(w.view.numel()) * safetensors_dtype_size(w.view.type));
    }
  } catch (const load_error&) {
  }
  return 0;
}
