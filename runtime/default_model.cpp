#include "runtime/default_model.h"

#include <cstdlib>
#include <filesystem>

#include "runtime/error.h"

namespace kvactor {

namespace fs = std::filesystem;

std::string default_model_dir() {
  auto has_model = [](const fs::path& d) { return fs::exists(d / "config.json"); };
  if (const char* env = std::getenv("KVACTOR_DEFAULT_MODEL"); env && *env) {
    if (!has_model(env)) throw error(std::string("KVACTOR_DEFAULT_MODEL=") + env + ": no config.json there");
    return env;
  }
  std::error_code ec;
  auto exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto installed = exe.parent_path().parent_path() / "share" / "kvactor" / "models" / "default";
    if (has_model(installed)) return installed.string();
  }
  fs::path source = KVACTOR_SOURCE_MODELS_DIR "/default";
  if (has_model(source)) return source.string();
  throw error("the embedded default model was not found (set KVACTOR_DEFAULT_MODEL or pass --model DIR)");
}

} // namespace kvactor
