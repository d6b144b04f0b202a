// The daemon's TOML configuration: the documented default file equals the
// built-in defaults and mentions every key; a full file sets every field;
// every kind of mistake is refused with the file, the dotted key and its
// line:column; command-line overrides go through the same checks.
#include "net/daemon_config.h"

#include <doctest/doctest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "runtime/error.h"

using namespace kvactor;
using namespace kvactor::net;

namespace {

const std::string default_file = std::string(KVACTOR_SOURCE_DIR) + "/config/kvactord.toml";

// The what() of the load_error that parsing `text` as "test.toml" throws.
std::string parse_error(const std::string& text) {
  try {
    parse_daemon_config(text, "test.toml");
  } catch (const load_error& e) {
    return e.what();
  }
  FAIL("no load_error for:\n" << text);
  return "";
}

std::string override_error(daemon_config& config, const std::string& key, const std::string& value) {
  try {
    apply_override(config, key, value);
  } catch (const load_error& e) {
    return e.what();
  }
  FAIL("no load_error for " << key << "=" << value);
  return "";
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every key the configuration has, with a value other than its default and
// the check that the value arrived.
struct key_case {
  const char* key;
  const char* value;
  std::function<bool(const daemon_config&)> applied;
};

const std::vector<key_case>& every_key() {
  static const std::vector<key_case> cases = {
      {"model.dir", "/models/llama", [](const auto& c) { return c.engine.model_dir == "/models/llama"; }},
      {"model.dummy", "true", [](const auto& c) { return c.engine.dummy_weights; }},
      {"model.dummy_seed", "9", [](const auto& c) { return c.engine.dummy_seed == 9; }},
      {"backend.device", "cuda", [](const auto& c) { return c.engine.device == "cuda"; }},
      {"backend.cpu_threads", "3", [](const auto& c) { return c.engine.cpu_threads == 3; }},
      {"backend.tokenizer_workers", "5", [](const auto& c) { return c.engine.tokenizer_workers == 5; }},
      {"gpu.streams", "2", [](const auto& c) { return c.engine.streams == 2; }},
      {"gpu.memory_fraction", "0.5", [](const auto& c) { return c.engine.gpu_memory_fraction == 0.5; }},
      {"scheduler.max_batch_tokens", "8192", [](const auto& c) { return c.engine.max_batch_tokens == 8192; }},
      {"scheduler.max_seqs", "64", [](const auto& c) { return c.engine.max_seqs == 64; }},
      {"scheduler.prefill_chunk", "0", [](const auto& c) { return c.engine.prefill_chunk == 0; }},
      {"scheduler.max_queued", "10", [](const auto& c) { return c.engine.max_queued == 10; }},
      {"scheduler.max_context", "4096", [](const auto& c) { return c.engine.max_context == 4096; }},
      {"kv.page_size", "32", [](const auto& c) { return c.engine.page_size == 32; }},
      {"kv.num_pages", "1000", [](const auto& c) { return c.engine.num_pages == 1000; }},
      {"kv.memory_mb", "1024", [](const auto& c) { return c.engine.kv_memory_mb == 1024; }},
      {"kv.watermark_pages", "4", [](const auto& c) { return c.engine.watermark_pages == 4; }},
      {"kv.dtype", "fp8", [](const auto& c) { return c.engine.kv_dtype == "fp8"; }},
      {"kv.window_release", "false", [](const auto& c) { return !c.engine.window_release; }},
      {"prefix_cache.enabled", "false", [](const auto& c) { return !c.engine.prefix_cache; }},
      {"prefix_cache.max_pinned_fraction", "0.25", [](const auto& c) { return c.engine.max_pinned_fraction == 0.25; }},
      {"server.host", "0.0.0.0", [](const auto& c) { return c.server.host == "0.0.0.0"; }},
      {"server.port", "7071", [](const auto& c) { return c.server.port == 7071; }},
      {"server.metrics_port", "0", [](const auto& c) { return c.server.metrics_port == 0; }},
      {"server.max_line_bytes", "65536", [](const auto& c) { return c.server.max_line_bytes == 65536; }},
      {"server.max_connections", "8", [](const auto& c) { return c.server.max_connections == 8; }},
      {"server.max_queued_per_connection", "2", [](const auto& c) { return c.server.max_queued_per_connection == 2; }},
      {"server.output_buffer_bytes", "1000", [](const auto& c) { return c.server.output_buffer_bytes == 1000; }},
      {"server.auth_token", "\"s3cret\"", [](const auto& c) { return c.server.auth_token == "s3cret"; }},
      {"server.shutdown_grace_s", "2.5", [](const auto& c) { return c.server.shutdown_grace_s == 2.5; }},
      {"server.default_max_tokens", "64", [](const auto& c) { return c.server.default_max_tokens == 64; }},
      {"server.max_tokens_limit", "8192", [](const auto& c) { return c.server.max_tokens_limit == 8192; }},
      {"log.level", "debug", [](const auto& c) { return c.log.level == log_level::debug; }},
  };
  return cases;
}

} // namespace

// ============================================================================
// Good files
// ============================================================================

TEST_CASE("the documented default file equals the built-in defaults") {
  const daemon_config config = load_daemon_config(default_file);
  CHECK(config == daemon_config{});
}

TEST_CASE("the documented default file names every key, each with a comment") {
  const std::string text = read_text(default_file);
  REQUIRE(!text.empty());
  for (const auto& k : every_key()) {
    const std::string key = k.key;
    const std::string section = std::string(1, '[').append(key, 0, key.find('.')).append(1, ']');
    const std::string name = key.substr(key.find('.') + 1);
    CAPTURE(key);
    const size_t at = text.find(section);
    REQUIRE(at != std::string::npos);
    const size_t next = text.find("\n[", at + 1);
    const std::string body = text.substr(at, next == std::string::npos ? std::string::npos : next - at);
    CHECK(body.find("\n" + name + " ") != std::string::npos);
  }
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    CAPTURE(line);
    if (line.empty() || line[0] == '#' || line[0] == '[') continue;
    CHECK(line.find(" # ") != std::string::npos);
  }
}

TEST_CASE("the documented [[system_prompt]] example parses once uncommented") {
  std::string text = read_text(default_file);
  for (const char* line : {"# [[system_prompt]]", "# name = ", "# text = "}) {
    const size_t at = text.find(line);
    REQUIRE(at != std::string::npos);
    text.erase(at, 2);
  }
  const auto config = parse_daemon_config(text, default_file);
  REQUIRE(config.engine.system_prompts.size() == 1);
  CHECK(config.engine.system_prompts[0].name == "assistant");
}

TEST_CASE("an empty file is the defaults") {
  CHECK(parse_daemon_config("", "empty.toml") == daemon_config{});
  CHECK(parse_daemon_config("# nothing\n\n[server]\n", "comments.toml") == daemon_config{});
}

TEST_CASE("a file that sets every key") {
  const std::string text = R"(
[model]
dir = "/models/qwen3"
dummy = true
dummy_seed = 77

[backend]
device = "cuda"
cpu_threads = 4
tokenizer_workers = 3

[gpu]
streams = 2
memory_fraction = 1 # an integer is a number too

[scheduler]
max_batch_tokens = 4096
max_seqs = 32
prefill_chunk = 0
max_queued = 100
max_context = 2048

[kv]
page_size = 32
num_pages = 500
memory_mb = 64
watermark_pages = 500

[prefix_cache]
enabled = false
max_pinned_fraction = 0.0

[[system_prompt]]
name = "assistant"
text = "You are a helpful assistant."

[[system_prompt]]
name = "pirate"
text = """
Answer like a pirate.
"""

[server]
host = "0.0.0.0"
port = 0
metrics_port = 9100
max_line_bytes = 100
max_connections = 1
max_queued_per_connection = 1
output_buffer_bytes = 1
auth_token = "tok"
shutdown_grace_s = 0
default_max_tokens = 0
max_tokens_limit = 1

[log]
level = "trace"
)";
  const daemon_config c = parse_daemon_config(text, "full.toml");
  const auto& e = c.engine;
  CHECK(e.model_dir == "/models/qwen3");
  CHECK(e.dummy_weights);
  CHECK(e.dummy_seed == 77);
  CHECK(e.device == "cuda");
  CHECK(e.cpu_threads == 4);
  CHECK(e.tokenizer_workers == 3);
  CHECK(e.streams == 2);
  CHECK(e.gpu_memory_fraction == 1.0);
  CHECK(e.max_batch_tokens == 4096);
  CHECK(e.max_seqs == 32);
  CHECK(e.prefill_chunk == 0);
  CHECK(e.max_queued == 100);
  CHECK(e.max_context == 2048);
  CHECK(e.page_size == 32);
  CHECK(e.num_pages == 500);
  CHECK(e.kv_memory_mb == 64);
  CHECK(e.watermark_pages == 500);
  CHECK_FALSE(e.prefix_cache);
  CHECK(e.max_pinned_fraction == 0.0);
  REQUIRE(e.system_prompts.size() == 2);
  CHECK(e.system_prompts[0] == system_prompt_config{"assistant", "You are a helpful assistant."});
  CHECK(e.system_prompts[1] == system_prompt_config{"pirate", "Answer like a pirate.\n"});
  const auto& s = c.server;
  CHECK(s.host == "0.0.0.0");
  CHECK(s.port == 0);
  CHECK(s.metrics_port == 9100);
  CHECK(s.max_line_bytes == 100);
  CHECK(s.max_connections == 1);
  CHECK(s.max_queued_per_connection == 1);
  CHECK(s.output_buffer_bytes == 1);
  CHECK(s.auth_token == "tok");
  CHECK(s.shutdown_grace_s == 0.0);
  CHECK(s.default_max_tokens == 0);
  CHECK(s.max_tokens_limit == 1);
  CHECK(c.log.level == log_level::trace);

  const parse_limits limits = protocol_limits(c);
  CHECK(limits.max_line_bytes == 100);
  CHECK(limits.default_max_tokens == 0);
  CHECK(limits.max_tokens_cap == 1);
  CHECK(limits.system_prompts == std::vector<std::string>{"assistant", "pirate"});
}

TEST_CASE("keys may be written dotted or inline") {
  const auto c = parse_daemon_config("server.port = 8000\nkv = { page_size = 8 }\n", "dotted.toml");
  CHECK(c.server.port == 8000);
  CHECK(c.engine.page_size == 8);
}

// ============================================================================
// Mistakes
// ============================================================================

TEST_CASE("each mistake names the file, the key and its line:column") {
  const std::pair<const char*, const char*> cases[] = {
      // unknown keys and sections
      {"[server]\nprot = 1\n", "test.toml: line 2, column 1: 'server.prot' is not a known key"},
      {"[srever]\nport = 1\n",
       "test.toml: line 1, column 2: 'srever' is not a known section (model, backend, gpu, scheduler, kv, "
       "prefix_cache, server, log, system_prompt)"},
      {"port = 1\n",
       "test.toml: line 1, column 1: 'port' is not a known section (model, backend, gpu, scheduler, kv, "
       "prefix_cache, server, log, system_prompt)"},
      {"[scheduler.extra]\nx = 1\n", "test.toml: line 1, column 12: 'scheduler.extra' is not a known key"},
      {"server = 5\n", "test.toml: line 1, column 10: 'server' must be a table, written [server], got an integer"},
      // wrong types
      {"[server]\nport = \"7070\"\n", "test.toml: line 2, column 8: 'server.port' must be an integer, got a string"},
      {"[server]\nport = 70.5\n",
       "test.toml: line 2, column 8: 'server.port' must be an integer, got a floating-point number"},
      {"[model]\ndummy = 1\n", "test.toml: line 2, column 9: 'model.dummy' must be true or false, got an integer"},
      {"[model]\ndir = [\"a\"]\n", "test.toml: line 2, column 7: 'model.dir' must be a string, got an array"},
      {"[gpu]\nmemory_fraction = \"half\"\n",
       "test.toml: line 2, column 19: 'gpu.memory_fraction' must be a number, got a string"},
      {"[log]\nlevel = 3\n", "test.toml: line 2, column 9: 'log.level' must be a string, got an integer"},
      // out of range
      {"[scheduler]\nprefill_chunk = -1\n",
       "test.toml: line 2, column 17: 'scheduler.prefill_chunk' must be >= 0, got -1"},
      {"[scheduler]\nmax_seqs = 0\n", "test.toml: line 2, column 12: 'scheduler.max_seqs' must be >= 1, got 0"},
      {"[scheduler]\nmax_seqs = 2147483648\n",
       "test.toml: line 2, column 12: 'scheduler.max_seqs' must be >= 1, got 2147483648"},
      {"[server]\nport = 65536\n", "test.toml: line 2, column 8: 'server.port' must be between 0 and 65535, got 65536"},
      {"[model]\ndummy_seed = -1\n", "test.toml: line 2, column 14: 'model.dummy_seed' must be >= 0, got -1"},
      {"[gpu]\nmemory_fraction = 0\n",
       "test.toml: line 2, column 19: 'gpu.memory_fraction' must be > 0 and <= 1, got 0"},
      {"[gpu]\nmemory_fraction = 1.5\n",
       "test.toml: line 2, column 19: 'gpu.memory_fraction' must be > 0 and <= 1, got 1.5"},
      {"[gpu]\nmemory_fraction = nan\n",
       "test.toml: line 2, column 19: 'gpu.memory_fraction' must be > 0 and <= 1, got nan"},
      {"[server]\nshutdown_grace_s = inf\n",
       "test.toml: line 2, column 20: 'server.shutdown_grace_s' must be between 0 and 86400 (a day), got inf"},
      {"[prefix_cache]\nmax_pinned_fraction = -0.1\n",
       "test.toml: line 2, column 23: 'prefix_cache.max_pinned_fraction' must be >= 0 and <= 1, got -0.1"},
      {"[backend]\ndevice = \"tpu\"\n",
       "test.toml: line 2, column 10: 'backend.device' must be one of 'cpu', 'cuda', got 'tpu'"},
      {"[log]\nlevel = \"verbose\"\n",
       "test.toml: line 2, column 9: 'log.level' must be one of 'error', 'warn', 'info', 'debug', 'trace', got "
       "'verbose'"},
      {"[server]\nhost = \"\"\n", "test.toml: line 2, column 8: 'server.host' must not be empty"},
      // values that contradict each other
      {"[kv]\nnum_pages = 10\nwatermark_pages = 11\n",
       "test.toml: line 3, column 19: 'kv.watermark_pages' leaves no usable page: kv.watermark_pages (11) exceeds "
       "kv.num_pages (10)"},
      {"[kv]\nnum_pages = 10\n\n[server]\ndefault_max_tokens = 300\nmax_tokens_limit = 200\n",
       "test.toml: line 5, column 22: 'server.default_max_tokens' makes server.default_max_tokens (300) exceed "
       "server.max_tokens_limit (200)"},
      {"[server]\nmax_tokens_limit = 100\n",
       "test.toml: line 2, column 20: 'server.max_tokens_limit' makes server.default_max_tokens (256) exceed "
       "server.max_tokens_limit (100)"},
      {"[server]\nport = 9090\n",
       "test.toml: line 2, column 8: 'server.port' is 9090 for both server.port and server.metrics_port"},
      // system prompts
      {"[[system_prompt]]\nname = \"a\"\ntext = \"x\"\n\n[[system_prompt]]\nname = \"a\"\ntext = \"y\"\n",
       "test.toml: line 6, column 8: 'system_prompt[1].name' repeats the name 'a' of system_prompt[0] at line 2"},
      {"[[system_prompt]]\ntext = \"x\"\n", "test.toml: line 1, column 1: 'system_prompt[0].name' is missing"},
      {"[[system_prompt]]\nname = \"a\"\n", "test.toml: line 1, column 1: 'system_prompt[0].text' is missing"},
      {"[[system_prompt]]\nname = \"\"\ntext = \"x\"\n",
       "test.toml: line 2, column 8: 'system_prompt[0].name' must not be empty"},
      {"[[system_prompt]]\nname = \"a\"\ntext = \"x\"\npinned = true\n",
       "test.toml: line 4, column 1: 'system_prompt[0].pinned' is not a known key"},
      {"[system_prompt]\nname = \"a\"\n",
       "test.toml: line 1, column 1: 'system_prompt' must be an array of tables, written [[system_prompt]]"},
      // malformed TOML
      {"[server\nport = 1\n", "test.toml: line 1, column 8: invalid TOML: Error while parsing table header: expected ']', saw '\\n'"},
      {"[server]\nport = 1\nport = 2\n",
       "test.toml: line 3, column 8: invalid TOML: Error while parsing key-value pair: cannot redefine existing "
       "integer 'port'"},
      {"[server]\nport = \n", "test.toml: line 2, column 8: invalid TOML: Error while parsing key-value pair: "
                              "expected value, saw '\\n'"},
  };
  for (const auto& [text, message] : cases) {
    CAPTURE(text);
    CHECK(parse_error(text) == message);
  }
}

TEST_CASE("an empty [[system_prompt]] list is allowed") {
  CHECK(parse_daemon_config("system_prompt = []\n", "t.toml").engine.system_prompts.empty());
}

TEST_CASE("a file that cannot be read names itself") {
  const std::string path = "/nonexistent/kvactord.toml";
  try {
    load_daemon_config(path);
    FAIL("no load_error");
  } catch (const load_error& e) {
    CHECK(std::string(e.what()) == path + ": cannot open: No such file or directory");
  }
}

TEST_CASE("a file on disk is read and its errors carry its path") {
  std::string pattern = (std::filesystem::temp_directory_path() / "kvactor_cfg_XXXXXX").string();
  REQUIRE(mkdtemp(pattern.data()) != nullptr);
  const std::filesystem::path dir = pattern;
  const std::string path = (dir / "bad.toml").string();
  {
    std::ofstream out(path);
    out << "[server]\nport = 7071\n\n[kv]\npage_size = 0\n";
  }
  std::string message;
  try {
    load_daemon_config(path);
  } catch (const load_error& e) {
    message = e.what();
  }
  std::filesystem::remove_all(dir);
  CHECK(message == path + ": line 5, column 13: 'kv.page_size' must be >= 1, got 0");
}

// ============================================================================
// Command-line overrides
// ============================================================================

TEST_CASE("every key can be overridden") {
  for (const auto& k : every_key()) {
    CAPTURE(k.key);
    daemon_config config;
    apply_override(config, k.key, k.value);
    CHECK(k.applied(config));
    CHECK_FALSE(k.applied(daemon_config{}));
  }
}

TEST_CASE("override values: TOML when the key takes it, a bare string otherwise") {
  daemon_config config;
  apply_override(config, "model.dir", "2024");                 // reads as an integer, but dir is a string
  CHECK(config.engine.model_dir == "2024");
  apply_override(config, "server.auth_token", "a b = c");      // not TOML at all
  CHECK(config.server.auth_token == "a b = c");
  apply_override(config, "server.auth_token", "1\nx = 2");     // not one value
  CHECK(config.server.auth_token == "1\nx = 2");
  apply_override(config, "server.host", "\"::1\"");            // quoted
  CHECK(config.server.host == "::1");
  apply_override(config, "server.shutdown_grace_s", "3");      // an integer for a number
  CHECK(config.server.shutdown_grace_s == 3.0);
}

TEST_CASE("a refused override says why and changes nothing") {
  daemon_config config;
  CHECK(override_error(config, "scheduler.max_seqs", "0") == "command line: 'scheduler.max_seqs' must be >= 1, got 0");
  CHECK(override_error(config, "server.port", "abc") == "command line: 'server.port' must be an integer, got a string");
  CHECK(override_error(config, "server.port", "70000") ==
        "command line: 'server.port' must be between 0 and 65535, got 70000");
  CHECK(override_error(config, "server.prot", "1") == "command line: 'server.prot' is not a known key");
  CHECK(override_error(config, "sever.port", "1") ==
        "command line: 'sever' is not a known section (model, backend, gpu, scheduler, kv, prefix_cache, server, "
        "log, system_prompt)");
  CHECK(override_error(config, "port", "1") ==
        "command line: 'port' is not a key: write section.key=value, e.g. server.port=7071");
  CHECK(override_error(config, "server.", "1") ==
        "command line: 'server.' is not a key: write section.key=value, e.g. server.port=7071");
  CHECK(override_error(config, "system_prompt.name", "x") ==
        "command line: 'system_prompt.name': system prompts can only be set in the configuration file");
  CHECK(override_error(config, "server.max_tokens_limit", "10") ==
        "command line: 'server.max_tokens_limit' makes server.default_max_tokens (256) exceed "
        "server.max_tokens_limit (10)");
  CHECK(config == daemon_config{});
}
