#include "tools/bench/bench_run.h"

#include <cstdio>
#include <functional>

#include "tools/bench/progress.h"

namespace kvactor::bench {

daemon_stats daemon_view::delta() const {
  daemon_stats d;
  for (const char* key : daemon_counters) {
    const auto b = before.find(key), a = after.find(key);
    if (b != before.end() && a != after.end()) d[key] = a->second - b->second;
  }
  return d;
}

std::optional<double> daemon_view::prefix_hit_rate() const {
  const auto d = delta();
  const auto queried = d.find("prefix_cache_queried_tokens"), hits = d.find("prefix_cache_hit_tokens");
  if (queried == d.end() || hits == d.end() || queried->second <= 0) return std::nullopt;
  return hits->second / queried->second;
}

run_report run_benchmark(const scenario_options& scenario, const load_options& load, const run_settings& settings) {
  run_report report;
  report.load = load;
  control_client control(load.host, load.port);
  report.model = control.models();
  workload work(scenario, report.model, load.seed);
  report.scenario = work.options();
  report.daemon.before = control.stats();

  char mode[48];
  if (load.rate) std::snprintf(mode, sizeof mode, " @%g/s", *load.rate);
  else std::snprintf(mode, sizeof mode, " x%d", int(load.concurrency));
  const std::string label = report.scenario.name + mode;
  progress_display display(stderr, settings.progress_terminal, load.requests, load.duration_s, label);
  const std::function<void(const progress_counts&)> on_progress = [&display](const progress_counts& c) {
    display.update(c);
  };
  report.result = run_load(load, work, on_progress, display.period_s());
  display.finish();

  const idle_wait idle = control.wait_idle(settings.idle_timeout_s);
  report.daemon.after = idle.last;
  report.daemon.idle_after = idle.idle;
  report.daemon.idle_wait_s = idle.waited_s;
  report.daemon.healthy_after = control.healthy();
  report.summary = summarize_run(report.result.records);
  return report;
}

} // namespace kvactor::bench
