#include "tools/bench/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace kvactor::bench {

double percentile(std::span<const double> sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = p / 100.0 * double(sorted.size() - 1);
  const auto below = size_t(std::floor(rank));
  const size_t above = std::min(below + 1, sorted.size() - 1);
  const double frac = rank - double(below);
  return sorted[below] + (sorted[above] - sorted[below]) * frac;
}

latency_summary summarize(std::vector<double> values) {
  latency_summary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.count = values.size();
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / double(values.size());
  s.p50 = percentile(values, 50);
  s.p90 = percentile(values, 90);
  s.p99 = percentile(values, 99);
  s.max = values.back();
  return s;
}

latency_samples collect_latencies(std::span<const request_record> records, const std::string* group) {
  latency_samples out;
  for (const auto& r : records) {
    if (r.result != outcome::finished || (group && r.group != *group)) continue;
    out.e2e.push_back((r.end - r.start) * 1e3);
    if (r.server_queue_ms) out.queue.push_back(*r.server_queue_ms);
    if (r.arrivals.empty()) continue; // max_tokens 0
    out.ttft.push_back((r.arrivals.front().t - r.start) * 1e3);
    for (size_t i = 1; i < r.arrivals.size(); ++i) {
      const auto& a = r.arrivals[i];
      const double gap_ms = (a.t - r.arrivals[i - 1].t) * 1e3 / a.tokens;
      out.itl.insert(out.itl.end(), size_t(a.tokens), gap_ms);
    }
  }
  return out;
}

latency_set summarize(const latency_samples& samples) {
  return {summarize(samples.ttft), summarize(samples.itl), summarize(samples.e2e), summarize(samples.queue)};
}

double timeline_bin_s(double duration_s) {
  if (duration_s >= 30) return 1;
  const double raw = std::max(duration_s / 30, 0.01);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * magnitude >= raw * (1 - 1e-9)) return m * magnitude;
  return 10 * magnitude;
}

run_summary summarize_run(std::span<const request_record> records, double bin_s) {
  run_summary s;
  s.sent = records.size();
  double first = 0, last = 0;
  bool any = false;
  for (const auto& r : records) {
    first = any ? std::min(first, r.start) : r.start;
    last = any ? std::max(last, r.end) : r.end;
    any = true;
    const int64_t received = r.tokens_received();
    s.output_tokens += received;
    switch (r.result) {
      case outcome::finished:
        ++s.finished;
        ++s.by_finish_reason[r.finish_reason];
        s.prompt_tokens += r.usage_prompt.value_or(0);
        s.cached_tokens += r.usage_cached.value_or(0);
        if (r.usage_completion != received ||
            (r.finish_reason == "length" && r.usage_completion != r.max_tokens))
          ++s.usage_mismatches;
        break;
      case outcome::error: ++s.errors[r.error_code]; break;
      case outcome::disconnected: ++s.disconnected; break;
      case outcome::unanswered: ++s.unanswered; break;
      case outcome::pending: break;
    }
    if (r.result != outcome::disconnected && r.terminal_lines == 0) ++s.missing_terminal;
    if (r.terminal_lines > 1) ++s.duplicate_terminal;
    s.lines_after_terminal += size_t(r.lines_after_terminal);
    if (!r.group.empty()) s.groups[r.group];
  }
  s.duration_s = any ? last - first : 0;
  s.bin_s = bin_s > 0 ? bin_s : timeline_bin_s(s.duration_s);
  bin_s = s.bin_s;
  if (s.duration_s > 0) {
    s.requests_per_s = double(s.finished) / s.duration_s;
    s.output_tokens_per_s = double(s.output_tokens) / s.duration_s;
    s.total_tokens_per_s = double(s.output_tokens + s.prompt_tokens) / s.duration_s;
  }

  s.latency = summarize(collect_latencies(records));
  for (auto& [group, set] : s.groups) set = summarize(collect_latencies(records, &group));

  const auto bins = std::max<size_t>(1, size_t(std::ceil(s.duration_s / bin_s)));
  s.output_tokens_per_bin.assign(bins, 0);
  s.finished_per_bin.assign(bins, 0);
  for (const auto& r : records) {
    for (const auto& a : r.arrivals)
      s.output_tokens_per_bin[std::min(bins - 1, size_t((a.t - first) / bin_s))] += a.tokens;
    if (r.result == outcome::finished) s.finished_per_bin[std::min(bins - 1, size_t((r.end - first) / bin_s))] += 1;
  }
  return s;
}

} // namespace kvactor::bench
