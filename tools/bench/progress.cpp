#include "tools/bench/progress.h"

#include <algorithm>
#include <cstdio>

namespace kvactor::bench {

namespace {

constexpr int bar_width = 30;

std::string format(const char* fmt, auto... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

} // namespace

progress_display::progress_display(std::FILE* out, bool terminal, std::optional<int64_t> total_requests,
                                   std::optional<double> duration_s, std::string label)
    : out_(out), terminal_(terminal), total_requests_(total_requests), duration_s_(duration_s),
      label_(std::move(label)) {}

double progress_display::fraction(const progress_counts& c) const {
  double f = 0;
  if (total_requests_ && *total_requests_ > 0) f = double(c.ended) / double(*total_requests_);
  if (duration_s_ && *duration_s_ > 0) f = std::max(f, c.elapsed_s / *duration_s_);
  return std::clamp(f, 0.0, 1.0);
}

std::string progress_display::describe(const progress_counts& c) const {
  const double t = std::max(c.elapsed_s, 1e-9);
  std::string s = label_ + format(" %6.1fs  sent %lld  done %lld", c.elapsed_s, (long long)c.sent, (long long)c.ended);
  if (total_requests_) s += format("/%lld", (long long)*total_requests_);
  s += format("  %.1f req/s  %.0f tok/s  errors %lld", double(c.ended) / t, double(c.output_tokens) / t,
              (long long)c.errors);
  return s;
}

void progress_display::update(const progress_counts& c) {
  if (!terminal_) {
    std::fprintf(out_, "%s\n", describe(c).c_str());
    return;
  }
  const int filled = int(fraction(c) * bar_width + 0.5);
  const std::string bar = std::string(size_t(filled), '#') + std::string(size_t(bar_width - filled), '.');
  // \r and erase-to-end-of-line redraw the bar in place.
  std::fprintf(out_, "\r[%s] %s\x1b[K", bar.c_str(), describe(c).c_str());
  std::fflush(out_);
}

void progress_display::finish() {
  if (!terminal_) return;
  std::fputc('\n', out_);
  std::fflush(out_);
}

} // namespace kvactor::bench
