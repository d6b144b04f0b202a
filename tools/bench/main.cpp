// kvactor-bench: a load generator for kvactord. One run, or a sweep of runs
// over request rates or concurrencies; a table on stdout, JSON and PNG on
// request (docs/bench.md).
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "tools/bench/bench_run.h"
#include "tools/bench/options.h"
#include "tools/bench/plot.h"
#include "tools/bench/report.h"

namespace {

using namespace kvactor::bench;

run_settings settings_for(const bench_options& o) {
  run_settings s;
  s.idle_timeout_s = o.idle_timeout_s;
  s.progress_terminal = isatty(fileno(stderr)) != 0;
  return s;
}

void note_clipping(const bench_options& o, const run_report& r) {
  if (o.scenario.name == "long-prompt" && r.scenario.long_prompt_len < o.scenario.long_prompt_len)
    std::fprintf(stderr, "kvactor-bench: long prompts cut to %d tokens to fit the model's context of %d\n",
                 int(r.scenario.long_prompt_len), int(r.model.max_context));
}

int run_once(const bench_options& o) {
  const run_report report = run_benchmark(o.scenario, o.load, settings_for(o));
  note_clipping(o, report);
  std::fputs(report_table(report).c_str(), stdout);
  if (!o.out.empty()) write_json(o.out, report_json(report));
  if (!o.plot.empty()) plot_run(report, o.plot);
  return 0;
}

int run_sweep(const bench_options& o) {
  const std::string axis = o.sweep_rates.empty() ? "concurrency" : "rate";
  const size_t n = o.sweep_rates.empty() ? o.sweep_concurrencies.size() : o.sweep_rates.size();
  std::vector<run_report> points;
  for (size_t i = 0; i < n; ++i) {
    load_options load = o.load;
    // Fresh prompts for each point: the daemon's prefix cache still holds the
    // previous point's.
    load.seed = o.load.seed + i;
    if (o.sweep_rates.empty()) load.concurrency = o.sweep_concurrencies[i];
    else load.rate = o.sweep_rates[i];
    points.push_back(run_benchmark(o.scenario, load, settings_for(o)));
    if (i == 0) note_clipping(o, points.back());
  }
  std::fputs(sweep_table(points, axis).c_str(), stdout);
  if (!o.out.empty()) write_json(o.out, sweep_json(points, axis));
  if (!o.plot.empty()) plot_sweep(points, axis, o.plot);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  // A daemon that goes away mid-write must give an error, not kill us.
  std::signal(SIGPIPE, SIG_IGN);
  bench_options options;
  try {
    options = parse_options(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const usage_error& e) {
    std::fprintf(stderr, "kvactor-bench: %s\n%s", e.what(), usage_text);
    return 2;
  }
  if (options.help) {
    std::fputs(usage_text, stdout);
    return 0;
  }
  try {
    return options.sweep ? run_sweep(options) : run_once(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvactor-bench: %s\n", e.what());
    return 1;
  }
}
