#include "net/log.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>

namespace kvactor::net::log {

namespace {

std::atomic<log_level> current_level{log_level::info};

// syslog priorities: err, warning, info, debug (trace is debug as well).
int syslog_priority(log_level level) {
  switch (level) {
    case log_level::error: return 3;
    case log_level::warn: return 4;
    case log_level::info: return 6;
    case log_level::debug:
    case log_level::trace: return 7;
  }
  return 6;
}

bool to_journal() {
  static const bool journal = std::getenv("JOURNAL_STREAM") != nullptr;
  return journal;
}

// "12:34:56.789 " in local time.
std::string clock_prefix() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm local{};
  localtime_r(&t, &local);
  std::array<char, 32> buf{};
  const size_t n = std::strftime(buf.data(), buf.size(), "%H:%M:%S", &local);
  std::string out(buf.data(), n);
  out += '.';
  out += char('0' + ms / 100);
  out += char('0' + ms / 10 % 10);
  out += char('0' + ms % 10);
  out += ' ';
  return out;
}

} // namespace

void set_level(log_level level) { current_level.store(level, std::memory_order_relaxed); }

bool enabled(log_level level) { return level <= current_level.load(std::memory_order_relaxed); }

void write(log_level level, std::string_view message) {
  if (!enabled(level)) return;
  std::string line;
  line.reserve(message.size() + 24);
  if (to_journal()) {
    line += '<';
    line += char('0' + syslog_priority(level));
    line += '>';
  } else {
    line += clock_prefix();
    line += to_string(level);
    line += ' ';
  }
  // One event, one line: a newline inside the message would split it.
  for (const char c : message) line += c == '\n' ? ' ' : c;
  line += '\n';
  for (size_t done = 0; done < line.size();) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n <= 0) return; // nowhere to report a failing stderr
    done += size_t(n);
  }
}

std::string field(std::string_view key, std::string_view value) {
  std::string out;
  out.reserve(key.size() + value.size() + 4);
  out.append(1, ' ').append(key).append(1, '=');
  const bool quote = value.empty() || value.find_first_of(" \"=\t") != std::string_view::npos;
  if (!quote) return out.append(value);
  out += '"';
  for (const char c : value) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

std::string field(std::string_view key, double value) {
  std::array<char, 32> buf{};
  // Three decimals are enough for milliseconds and shorter than the shortest
  // round-trip form; integers print as integers.
  const double rounded = std::round(value * 1000.0) / 1000.0;
  const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), rounded);
  return field(key, std::string_view(buf.data(), size_t(r.ptr - buf.data())));
}

} // namespace kvactor::net::log
