#pragma once
// One benchmark run from start to end: ask the daemon for its model and
// stats, drive the workload, wait until the daemon is idle again, read its
// stats and health, and summarize.
#include <optional>
#include <string>
#include <vector>

#include "tools/bench/control_client.h"
#include "tools/bench/load_driver.h"
#include "tools/bench/scenario.h"
#include "tools/bench/stats.h"

namespace kvactor::bench {

// The daemon's counters a run reads the change of.
inline constexpr const char* daemon_counters[] = {
    "generated_tokens",        "forwarded_tokens",           "preemptions", "prefix_cache_queried_tokens",
    "prefix_cache_hit_tokens", "prefix_cache_evictions",     "steps",       "requests_total"};

struct daemon_view {
  daemon_stats before, after; // after: once idle, or when the idle wait gave up
  bool idle_after = false;
  double idle_wait_s = 0;
  bool healthy_after = false;

  // after - before for each of daemon_counters both have.
  daemon_stats delta() const;
  // hit tokens / queried tokens over the run; nothing when none was queried.
  std::optional<double> prefix_hit_rate() const;
};

struct run_report {
  model_facts model;
  scenario_options scenario; // defaults resolved
  load_options load;
  load_result result;
  run_summary summary;
  daemon_view daemon;
};

struct run_settings {
  double idle_timeout_s = 30;     // after the run, how long the daemon may take to release everything
  bool progress_terminal = false; // stderr is a terminal: progress as a bar
};

// Throws kvactor::error when the daemon cannot be reached or the scenario
// does not fit its model.
run_report run_benchmark(const scenario_options& scenario, const load_options& load, const run_settings& settings);

} // namespace kvactor::bench
