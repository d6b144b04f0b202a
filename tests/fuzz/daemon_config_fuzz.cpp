// kvactord's TOML configuration of arbitrary bytes, and command-line
// overrides: reading either throws a load_error naming the source or gives a
// configuration within the documented ranges; a refused override leaves the
// configuration as it was.
//
// Input: the TOML text; when it holds a NUL byte, what follows the first one
// is an override "section.key=value" applied to the defaults.
#include <set>

#include "net/daemon_config.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace kvactor;
using namespace kvactor::net;

void check_config(const daemon_config& c) {
  FUZZ_CHECK(c.server.port >= 0 && c.server.port <= 65535);
  FUZZ_CHECK(c.server.metrics_port >= 0 && c.server.metrics_port <= 65535);
  FUZZ_CHECK(c.server.max_line_bytes > 0 && c.server.max_connections > 0);
  FUZZ_CHECK(c.server.default_max_tokens >= 0 && c.server.default_max_tokens <= c.server.max_tokens_limit);
  FUZZ_CHECK(c.engine.max_seqs > 0 && c.engine.max_batch_tokens > 0 && c.engine.page_size > 0);
  // The line server turns the grace into nanoseconds in an int64.
  FUZZ_CHECK(c.server.shutdown_grace_s >= 0 && c.server.shutdown_grace_s * 1e9 < 9.2e18);
  std::set<std::string> names;
  for (const auto& p : c.engine.system_prompts) {
    FUZZ_CHECK(!p.name.empty());
    FUZZ_CHECK(names.insert(p.name).second);
  }
  const parse_limits limits = protocol_limits(c);
  FUZZ_CHECK(limits.system_prompts.size() == c.engine.system_prompts.size());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input = kvactor::fuzz::as_text(data, size);
  const size_t nul = input.find('\0');
  const std::string_view toml_text = input.substr(0, nul);
  try {
    check_config(parse_daemon_config(toml_text, "fuzz.toml"));
  } catch (const load_error& e) {
    FUZZ_CHECK(std::string(e.what()).starts_with("fuzz.toml: "));
  }
  if (nul == std::string_view::npos) return 0;

  const std::string_view setting = input.substr(nul + 1);
  const size_t eq = setting.find('=');
  const std::string_view key = setting.substr(0, eq);
  const std::string_view value = eq == std::string_view::npos ? std::string_view() : setting.substr(eq + 1);
  daemon_config config;
  try {
    apply_override(config, key, value);
  } catch (const load_error& e) {
    FUZZ_CHECK(std::string(e.what()).starts_with("command line: "));
    FUZZ_CHECK(config == daemon_config{});
    return 0;
  }
  check_config(config);
  return 0;
}
