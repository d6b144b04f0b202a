#pragma once
// kvactord's log: one line per event on stderr, filtered by [log] level.
// Under systemd (JOURNAL_STREAM set) each line starts with its syslog
// priority ("<3>"), which journald turns into the entry's priority; on a
// terminal it starts with the local time and the level instead.
//
// Messages are logfmt-style ("request finished id=a1 tokens=3 ttft_ms=9.8")
// so they can be grepped and parsed. Thread-safe: each line is one write(2).
#include <string>
#include <string_view>

#include "net/daemon_config.h"

namespace kvactor::net::log {

// Lines above `level` are dropped. The default is info.
void set_level(log_level level);
bool enabled(log_level level);

void write(log_level level, std::string_view message);

inline void error(std::string_view message) { write(log_level::error, message); }
inline void warn(std::string_view message) { write(log_level::warn, message); }
inline void info(std::string_view message) { write(log_level::info, message); }
inline void debug(std::string_view message) { write(log_level::debug, message); }

// ` key=value`, the value quoted when it holds spaces, quotes or '='.
std::string field(std::string_view key, std::string_view value);
std::string field(std::string_view key, double value);

} // namespace kvactor::net::log
