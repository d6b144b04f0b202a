#pragma once
// kvactor-bench's command line.
#include <string>
#include <vector>

#include "runtime/error.h"
#include "tools/bench/load_driver.h"
#include "tools/bench/scenario.h"

namespace kvactor::bench {

extern const char* const usage_text;

// A command line that cannot be run; the message says why.
struct usage_error : error {
  using error::error;
};

struct bench_options {
  bool help = false;
  scenario_options scenario;
  load_options load;
  // sweep: one run for each value of one of these
  bool sweep = false;
  std::vector<double> sweep_rates;
  std::vector<int32_t> sweep_concurrencies;
  std::string out;  // JSON report; "" = none
  std::string plot; // PNG; "" = none
  double idle_timeout_s = 30;
};

// Throws usage_error.
bench_options parse_options(const std::vector<std::string>& args);

} // namespace kvactor::bench
