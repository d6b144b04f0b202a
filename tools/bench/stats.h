#pragma once
// From request records to the numbers a run reports: counts by outcome,
// protocol anomalies, throughput, latency percentiles and a timeline.
//
// Definitions (docs/bench.md repeats them):
// - TTFT: from a request's start to its first token line;
// - ITL: the gaps between a request's later token lines; a line carrying n
//   tokens that came g after the previous one counts as n gaps of g / n, as
//   the daemon's own inter-token histogram does;
// - end-to-end: from the start to the final line;
// latencies are taken over finished requests only. Percentiles interpolate
// linearly between order statistics (numpy's default).
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "tools/bench/request_record.h"

namespace kvactor::bench {

struct latency_summary {
  size_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0; // all 0 when count is 0
};

// The p-th percentile (0 <= p <= 100) of sorted values; 0 for none.
double percentile(std::span<const double> sorted, double p);
latency_summary summarize(std::vector<double> values);

// Milliseconds.
struct latency_set {
  latency_summary ttft, itl, e2e, queue;
};

// The latency samples of finished requests (ms), kept for the plot's
// distributions.
struct latency_samples {
  std::vector<double> ttft, itl, e2e, queue;
};
latency_samples collect_latencies(std::span<const request_record> records, const std::string* group = nullptr);
latency_set summarize(const latency_samples& samples);

struct run_summary {
  size_t sent = 0, finished = 0, disconnected = 0, unanswered = 0;
  std::map<std::string, size_t> by_finish_reason; // finished requests
  std::map<std::string, size_t> errors;           // error requests by code

  // Protocol anomalies; a correct daemon has none.
  size_t missing_terminal = 0;     // requests that ended without a terminal line, hang-ups aside
                                   // (unanswered, or their connection failed)
  size_t duplicate_terminal = 0;   // requests with more than one terminal line
  size_t lines_after_terminal = 0; // lines, summed over requests
  size_t usage_mismatches = 0;     // finished: tokens seen != usage.completion_tokens, or a `length`
                                   // finish with completion_tokens != max_tokens

  int64_t prompt_tokens = 0; // usage.prompt_tokens of finished requests (system prompts included)
  int64_t cached_tokens = 0; // usage.cached_tokens of finished requests
  int64_t output_tokens = 0; // tokens received, by every request

  double duration_s = 0; // first start to last end
  double requests_per_s = 0, output_tokens_per_s = 0, total_tokens_per_s = 0;

  latency_set latency;                      // every finished request
  std::map<std::string, latency_set> groups; // by request group, when the scenario has groups

  double bin_s = 1;                          // timeline resolution, seconds
  std::vector<double> output_tokens_per_bin; // tokens that arrived in [i, i+1) * bin_s
  std::vector<double> finished_per_bin;      // final lines in each bin
};

// The timeline's resolution for a run of `duration_s`: 1 s from 30 s on;
// for shorter runs a 1-2-5 step giving about 30 bins, 10 ms at least.
double timeline_bin_s(double duration_s);

// `bin_s` 0: timeline_bin_s of the run's duration.
run_summary summarize_run(std::span<const request_record> records, double bin_s = 0);

} // namespace kvactor::bench
