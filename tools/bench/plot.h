#pragma once
// The PNG figures: a run's latency distributions and throughput over time,
// and a sweep's throughput-latency curves.
#include <string>
#include <vector>

#include "tools/bench/bench_run.h"

namespace kvactor::bench {

// Four panels: TTFT, inter-token and end-to-end latency as cumulative
// distributions (one curve per request group), and output tokens/s per
// second of the run.
void plot_run(const run_report& report, const std::string& path);

// Two panels, x = output tokens/s of each point: p50 and p99 TTFT, and p50
// and p99 inter-token latency. `axis` ("rate" or "concurrency") labels the
// points.
void plot_sweep(const std::vector<run_report>& points, const std::string& axis, const std::string& path);

} // namespace kvactor::bench
