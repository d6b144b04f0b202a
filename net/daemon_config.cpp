#include "net/daemon_config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <sstream>
#include <vector>

#include "runtime/error.h"

namespace kvactor::net {

namespace {

constexpr int64_t int32_max = std::numeric_limits<int32_t>::max();
constexpr int64_t int64_max = std::numeric_limits<int64_t>::max();

std::string quoted(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.append(1, '\'').append(s).append(1, '\'');
  return out;
}

std::string type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::none: break;
  }
  return "nothing";
}

std::string number_text(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

// Where the values come from: a file (errors carry line:column) or the
// command line (they do not).
class config_source {
 public:
  config_source(std::string origin, bool has_locations)
      : origin_(std::move(origin)), has_locations_(has_locations) {}

  [[noreturn]] void fail(const toml::source_region& where, std::string_view key, const std::string& problem) const {
    throw load_error(origin_, location(where) + quoted(key) + " " + problem);
  }

  std::string location(const toml::source_region& where) const {
    if (!has_locations_ || !where.begin) return "";
    return "line " + std::to_string(where.begin.line) + ", column " + std::to_string(where.begin.column) + ": ";
  }

 private:
  std::string origin_;
  bool has_locations_;
};

// Typed access to the keys of one table. A key that is absent leaves its
// target untouched (the default, or the value read before an override).
// finish() refuses every key no reader asked for.
class section_reader {
 public:
  section_reader(const config_source& source, const toml::table& table, std::string name)
      : source_(source), table_(table), name_(std::move(name)) {}

  std::string dotted(std::string_view key) const { return name_ + "." + std::string(key); }

  const toml::node* node(std::string_view key) {
    known_.emplace_back(key);
    return table_.get(key);
  }

  [[noreturn]] void fail(std::string_view key, const std::string& problem) const {
    const toml::node* n = table_.get(key);
    source_.fail(n ? n->source() : table_.source(), dotted(key), problem);
  }

  template <typename Int>
  void integer(std::string_view key, Int& out, int64_t min, int64_t max) {
    const toml::node* n = node(key);
    if (!n) return;
    const auto* v = n->as_integer();
    if (!v) fail(key, "must be an integer, got " + type_name(*n));
    const int64_t x = v->get();
    if (x < min || x > max) {
      const std::string rule = max == int64_max || max == int32_max
                                   ? "must be >= " + std::to_string(min)
                                   : "must be between " + std::to_string(min) + " and " + std::to_string(max);
      fail(key, rule + ", got " + std::to_string(x));
    }
    out = Int(x);
  }

  // An integer is accepted where a number is asked for (1 for 1.0).
  template <typename Predicate>
  void number(std::string_view key, double& out, Predicate in_range, std::string_view rule) {
    const toml::node* n = node(key);
    if (!n) return;
    double x = 0;
    if (const auto* f = n->as_floating_point()) {
      x = f->get();
    } else if (const auto* i = n->as_integer()) {
      x = double(i->get());
    } else {
      fail(key, "must be a number, got " + type_name(*n));
    }
    if (!std::isfinite(x) || !in_range(x)) fail(key, std::string(rule) + ", got " + number_text(x));
    out = x;
  }

  void boolean(std::string_view key, bool& out) {
    const toml::node* n = node(key);
    if (!n) return;
    const auto* v = n->as_boolean();
    if (!v) fail(key, "must be true or false, got " + type_name(*n));
    out = v->get();
  }

  void string(std::string_view key, std::string& out) {
    const toml::node* n = node(key);
    if (!n) return;
    const auto* v = n->as_string();
    if (!v) fail(key, "must be a string, got " + type_name(*n));
    out = v->get();
  }

  void choice(std::string_view key, std::string& out, std::initializer_list<std::string_view> allowed) {
    std::string value = out;
    string(key, value);
    if (std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
      std::string list;
      for (const auto a : allowed) list += (list.empty() ? "" : ", ") + quoted(a);
      fail(key, "must be one of " + list + ", got " + quoted(value));
    }
    out = std::move(value);
  }

  void finish() const {
    for (const auto& [key, value] : table_) {
      if (std::find(known_.begin(), known_.end(), key.str()) == known_.end())
        source_.fail(key.source(), dotted(key.str()), "is not a known key");
    }
  }

 private:
  const config_source& source_;
  const toml::table& table_;
  std::string name_;
  std::vector<std::string> known_;
};

// -- sections ----------------------------------------------------------------

void read_model(section_reader s, engine_config& e) {
  s.string("dir", e.model_dir);
  s.boolean("dummy", e.dummy_weights);
  s.integer("dummy_seed", e.dummy_seed, 0, int64_max);
  s.finish();
}

void read_backend(section_reader s, engine_config& e) {
  s.choice("device", e.device, {"cpu", "cuda"});
  s.integer("cpu_threads", e.cpu_threads, 0, int32_max);
  s.integer("tokenizer_workers", e.tokenizer_workers, 1, int32_max);
  s.finish();
}

void read_gpu(section_reader s, engine_config& e) {
  s.integer("streams", e.streams, 1, int32_max);
  s.number("memory_fraction", e.gpu_memory_fraction, [](double x) { return x > 0 && x <= 1; },
           "must be > 0 and <= 1");
  s.finish();
}

void read_scheduler(section_reader s, engine_config& e) {
  s.integer("max_batch_tokens", e.max_batch_tokens, 1, int32_max);
  s.integer("max_seqs", e.max_seqs, 1, int32_max);
  s.integer("prefill_chunk", e.prefill_chunk, 0, int32_max);
  s.integer("max_queued", e.max_queued, 1, int32_max);
  s.integer("max_context", e.max_context, 0, int32_max);
  s.finish();
}

void read_kv(section_reader s, engine_config& e) {
  s.integer("page_size", e.page_size, 1, int32_max);
  s.integer("num_pages", e.num_pages, 0, int32_max);
  s.integer("memory_mb", e.kv_memory_mb, 1, int64_max);
  s.integer("watermark_pages", e.watermark_pages, 0, int32_max);
  s.choice("dtype", e.kv_dtype, {"auto", "f32", "bf16", "fp8", "int8"});
  s.boolean("window_release", e.window_release);
  if (e.num_pages > 0 && e.watermark_pages > e.num_pages)
    s.fail(s.node("watermark_pages") ? "watermark_pages" : "num_pages",
           "leaves no usable page: kv.watermark_pages (" + std::to_string(e.watermark_pages) +
               ") exceeds kv.num_pages (" + std::to_string(e.num_pages) + ")");
  s.finish();
}

void read_prefix_cache(section_reader s, engine_config& e) {
  s.boolean("enabled", e.prefix_cache);
  s.number("max_pinned_fraction", e.max_pinned_fraction, [](double x) { return x >= 0 && x <= 1; },
           "must be >= 0 and <= 1");
  s.finish();
}

void read_server(section_reader s, server_config& c) {
  s.string("host", c.host);
  if (c.host.empty()) s.fail("host", "must not be empty");
  s.integer("port", c.port, 0, 65535);
  s.integer("metrics_port", c.metrics_port, 0, 65535);
  if (c.metrics_port != 0 && c.metrics_port == c.port)
    s.fail(s.node("metrics_port") ? "metrics_port" : "port",
           "is " + std::to_string(c.port) + " for both server.port and server.metrics_port");
  s.integer("max_line_bytes", c.max_line_bytes, 1, int64_max);
  s.integer("max_connections", c.max_connections, 1, int32_max);
  s.integer("max_queued_per_connection", c.max_queued_per_connection, 1, int32_max);
  s.integer("output_buffer_bytes", c.output_buffer_bytes, 1, int64_max);
  s.string("auth_token", c.auth_token);
  // NOTE: capped, so the grace is a representable std::chrono duration.
  s.number("shutdown_grace_s", c.shutdown_grace_s, [](double x) { return x >= 0 && x <= 86400; },
           "must be between 0 and 86400 (a day)");
  s.integer("max_tokens_limit", c.max_tokens_limit, 1, int32_max);
  s.integer("default_max_tokens", c.default_max_tokens, 0, int32_max);
  if (c.default_max_tokens > c.max_tokens_limit)
    s.fail(s.node("default_max_tokens") ? "default_max_tokens" : "max_tokens_limit",
           "makes server.default_max_tokens (" + std::to_string(c.default_max_tokens) +
               ") exceed server.max_tokens_limit (" + std::to_string(c.max_tokens_limit) + ")");
  s.finish();
}

void read_log(section_reader s, log_config& c) {
  std::string level(to_string(c.level));
  s.choice("level", level, {"error", "warn", "info", "debug", "trace"});
  for (const auto l : {log_level::error, log_level::warn, log_level::info, log_level::debug, log_level::trace})
    if (to_string(l) == level) c.level = l;
  s.finish();
}

// [[system_prompt]] entries replace the configured list as a whole.
void read_system_prompts(const config_source& source, const toml::node& node, engine_config& e) {
  const auto* array = node.as_array();
  if (!array || (!array->empty() && !array->is_array_of_tables()))
    source.fail(node.source(), "system_prompt", "must be an array of tables, written [[system_prompt]]");
  std::vector<system_prompt_config> prompts;
  std::vector<const toml::node*> name_nodes;
  for (size_t i = 0; i < array->size(); ++i) {
    const auto& table = *array->get(i)->as_table();
    section_reader s(source, table, "system_prompt[" + std::to_string(i) + "]");
    system_prompt_config p;
    s.string("name", p.name);
    s.string("text", p.text);
    s.finish();
    if (!table.get("name")) source.fail(table.source(), s.dotted("name"), "is missing");
    if (!table.get("text")) source.fail(table.source(), s.dotted("text"), "is missing");
    if (p.name.empty()) s.fail("name", "must not be empty");
    if (p.text.empty()) s.fail("text", "must not be empty");
    for (size_t j = 0; j < prompts.size(); ++j) {
      if (prompts[j].name == p.name) {
        const auto& first = name_nodes[j]->source();
        s.fail("name", "repeats the name " + quoted(p.name) + " of system_prompt[" + std::to_string(j) + "]" +
                           (first.begin ? " at line " + std::to_string(first.begin.line) : ""));
      }
    }
    prompts.push_back(std::move(p));
    name_nodes.push_back(table.get("name"));
  }
  e.system_prompts = std::move(prompts);
}

void read_config(const config_source& source, const toml::table& root, daemon_config& c) {
  static constexpr std::string_view sections[] = {"model", "backend", "gpu",    "scheduler",    "kv",
                                                  "prefix_cache", "server", "log", "system_prompt"};
  for (const auto& [key, node] : root) {
    const std::string name(key.str());
    if (std::find(std::begin(sections), std::end(sections), name) == std::end(sections))
      source.fail(key.source(), name,
                  "is not a known section (model, backend, gpu, scheduler, kv, prefix_cache, server, log, "
                  "system_prompt)");
    if (name == "system_prompt") {
      read_system_prompts(source, node, c.engine);
      continue;
    }
    const auto* table = node.as_table();
    if (!table) source.fail(node.source(), name, "must be a table, written [" + name + "], got " + type_name(node));
    const section_reader s(source, *table, name);
    if (name == "model") read_model(s, c.engine);
    if (name == "backend") read_backend(s, c.engine);
    if (name == "gpu") read_gpu(s, c.engine);
    if (name == "scheduler") read_scheduler(s, c.engine);
    if (name == "kv") read_kv(s, c.engine);
    if (name == "prefix_cache") read_prefix_cache(s, c.engine);
    if (name == "server") read_server(s, c.server);
    if (name == "log") read_log(s, c.log);
  }
}

} // namespace

std::string_view to_string(log_level level) {
  switch (level) {
    case log_level::error: return "error";
    case log_level::warn: return "warn";
    case log_level::info: return "info";
    case log_level::debug: return "debug";
    case log_level::trace: return "trace";
  }
  return "info";
}

daemon_config parse_daemon_config(std::string_view text, const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    const auto& at = e.source().begin;
    throw load_error(path, "line " + std::to_string(at.line) + ", column " + std::to_string(at.column) +
                               ": invalid TOML: " + std::string(e.description()));
  }
  daemon_config config;
  read_config(config_source(path, true), root, config);
  return config;
}

daemon_config load_daemon_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw load_error(path, std::string("cannot open: ") + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw load_error(path, std::string("cannot read: ") + std::strerror(errno));
  return parse_daemon_config(text.str(), path);
}

void apply_override(daemon_config& config, std::string_view key, std::string_view value) {
  const std::string origin = "command line";
  const size_t dot = key.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == key.size())
    throw load_error(origin, quoted(key) + " is not a key: write section.key=value, e.g. server.port=7071");
  const std::string section(key.substr(0, dot));
  const std::string name(key.substr(dot + 1));
  if (section == "system_prompt")
    throw load_error(origin, quoted(key) + ": system prompts can only be set in the configuration file");

  const config_source source(origin, false);
  // On a copy, so that a refused value leaves `config` as it was.
  const auto read = [&](const toml::table& root) {
    daemon_config candidate = config;
    read_config(source, root, candidate);
    config = std::move(candidate);
  };
  const toml::table as_string{{section, toml::table{{name, std::string(value)}}}};

  toml::table as_toml;
  try {
    as_toml = toml::parse("[" + section + "]\n" + name + " = " + std::string(value) + "\n");
  } catch (const toml::parse_error&) {
    return read(as_string);
  }
  // Anything but exactly one non-string value (say "1\nx = 2") is a string.
  const auto* parsed = as_toml.get_as<toml::table>(section);
  const toml::node* node = parsed && as_toml.size() == 1 && parsed->size() == 1 ? parsed->get(name) : nullptr;
  if (!node || node->is_string()) return read(node ? as_toml : as_string);
  try {
    read(as_toml);
  } catch (const load_error&) {
    // A string key given something that reads as a number (model.dir=2024).
    const auto first = std::current_exception();
    try {
      read(as_string);
    } catch (const load_error&) {
      std::rethrow_exception(first);
    }
  }
}

parse_limits protocol_limits(const daemon_config& config) {
  parse_limits limits;
  limits.max_line_bytes = size_t(config.server.max_line_bytes);
  limits.default_max_tokens = config.server.default_max_tokens;
  limits.max_tokens_cap = config.server.max_tokens_limit;
  for (const auto& p : config.engine.system_prompts) limits.system_prompts.push_back(p.name);
  return limits;
}

} // namespace kvactor::net
