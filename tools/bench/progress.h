#pragma once
// The run's progress on stderr: a bar redrawn in place when stderr is a
// terminal, a plain line every few seconds otherwise (logs, CI).
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include "tools/bench/load_driver.h"

namespace kvactor::bench {

class progress_display {
 public:
  // The bar fills by requests when their number is known, else by time.
  progress_display(std::FILE* out, bool terminal, std::optional<int64_t> total_requests,
                   std::optional<double> duration_s, std::string label);

  // How often update() should be called.
  double period_s() const { return terminal_ ? 0.2 : 5.0; }

  void update(const progress_counts& counts);
  // After the last update: ends the bar's line.
  void finish();

 private:
  // One line of text for `counts`, without the bar (also the plain form).
  std::string describe(const progress_counts& counts) const;
  double fraction(const progress_counts& counts) const;

  std::FILE* out_;
  bool terminal_;
  std::optional<int64_t> total_requests_;
  std::optional<double> duration_s_;
  std::string label_;
};

} // namespace kvactor::bench
