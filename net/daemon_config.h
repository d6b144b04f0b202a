#pragma once
// kvactord's configuration: the engine's settings plus the server's and the
// log's, read from a TOML file (config/kvactord.toml documents every key and
// its default). Reading is strict: an unknown section or key, a value of the
// wrong type or out of range, a repeated system prompt name all throw
// kvactor::load_error naming the file, the dotted key and its line:column.
#include <cstdint>
#include <string>
#include <string_view>

#include "net/protocol.h"
#include "runtime/engine_config.h"

namespace kvactor::net {

struct server_config {
  std::string host = "127.0.0.1";
  int32_t port = 7070;                 // 0 = a free port chosen by the system
  int32_t metrics_port = 9090;         // metrics in Prometheus text format; 0 = off
  int64_t max_line_bytes = 1 << 20;    // longest request line
  int32_t max_connections = 256;       // more are refused
  int32_t max_queued_per_connection = 64; // a connection's requests in flight; more get `overloaded`
  int64_t output_buffer_bytes = 4 << 20;  // unsent reply bytes; a client slower than that is disconnected
  std::string auth_token;              // "" = no authentication
  double shutdown_grace_s = 10;        // on shutdown, time running requests get before they are cancelled
  int32_t default_max_tokens = 256;    // when a request gives none, and for plain text
  int32_t max_tokens_limit = 4096;     // largest max_tokens a request may ask for

  bool operator==(const server_config&) const = default;
};

enum class log_level : uint8_t { error, warn, info, debug, trace };

std::string_view to_string(log_level level);

struct log_config {
  log_level level = log_level::info;

  bool operator==(const log_config&) const = default;
};

struct daemon_config {
  engine_config engine;
  server_config server;
  log_config log;

  bool operator==(const daemon_config&) const = default;
};

// Reads the TOML file at `path`. Throws load_error when it cannot be read or
// is not a valid configuration.
daemon_config load_daemon_config(const std::string& path);

// The same for TOML text; `path` only names the source in error messages.
daemon_config parse_daemon_config(std::string_view text, const std::string& path);

// Sets one key as the file would ("scheduler.max_seqs", "64"). The value is
// read as a TOML value (64, true, 0.5, "quoted") when it is one that the key
// accepts, and as a bare string otherwise, so `model.dir=/models/x` needs no
// quotes. The same checks apply; errors name the key and "command line", and
// leave `config` unchanged. [[system_prompt]] entries cannot be set this way.
void apply_override(daemon_config& config, std::string_view key, std::string_view value);

// What parse_line needs to know of the configuration.
parse_limits protocol_limits(const daemon_config& config);

} // namespace kvactor::net
