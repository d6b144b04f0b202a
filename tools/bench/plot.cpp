#include "tools/bench/plot.h"

#include <algorithm>
#include <cstdio>

#include "tools/plot/chart.h"

namespace kvactor::bench {

using namespace kvactor::plot;

namespace {

constexpr int max_cdf_points = 800;

std::string format(const char* fmt, auto... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

// The empirical CDF as a step series of at most max_cdf_points steps.
series cdf(std::string label, std::vector<double> values) {
  series s{std::move(label), {}, false, {}, true};
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  if (n == 0) return s;
  s.points.emplace_back(0.0, 0.0);
  const size_t stride = std::max<size_t>(1, n / max_cdf_points);
  for (size_t k = 0; k < n; k += stride) s.points.emplace_back(values[k], double(k) / double(n));
  s.points.emplace_back(values.back(), 1.0);
  return s;
}

// A CDF panel of one kind of latency; the x axis stops at twice the largest
// p99 so that a far tail does not squash the body.
chart latency_chart(const std::string& title, const std::vector<std::pair<std::string, std::vector<double>>>& groups) {
  chart ch{title, "ms", "fraction of samples", {}, std::nullopt, 1.0, ""};
  double p99 = 0, max = 0;
  for (const auto& [name, values] : groups) {
    const latency_summary s = summarize(values);
    p99 = std::max(p99, s.p99);
    max = std::max(max, s.max);
    ch.lines.push_back(cdf(format("%s: p50 %.2f, p99 %.2f ms", name.c_str(), s.p50, s.p99), values));
  }
  if (max > 2 * p99 && p99 > 0) {
    ch.x_max = 2 * p99;
    ch.note = format("x axis cut at 2 x p99; max %.2f ms", max);
  }
  return ch;
}

} // namespace

void plot_run(const run_report& report, const std::string& path) {
  constexpr int width = 1200, height = 840, header = 44;
  canvas c(width, height);
  const run_summary& s = report.summary;
  const std::string load = report.load.rate ? format("open loop at %g req/s", *report.load.rate)
                                            : format("closed loop, concurrency %d", int(report.load.concurrency));
  c.text(16, 10, "kvactor-bench: " + report.scenario.name + ", " + load + ", model " + report.model.name,
         colour::black, 2);
  c.text(16, 30,
         format("%zu requests finished in %.1f s: %.2f req/s, %.1f output tok/s, %.1f total tok/s", s.finished,
                s.duration_s, s.requests_per_s, s.output_tokens_per_s, s.total_tokens_per_s),
         colour::text);

  // One curve per group when the scenario has groups, else one for all.
  std::vector<std::string> names;
  for (const auto& [name, set] : s.groups) names.push_back(name);
  std::vector<latency_samples> samples;
  if (names.empty()) {
    names.push_back("all");
    samples.push_back(collect_latencies(report.result.records));
  } else {
    for (const auto& name : names) samples.push_back(collect_latencies(report.result.records, &name));
  }
  auto pick = [&](std::vector<double> latency_samples::*field) {
    std::vector<std::pair<std::string, std::vector<double>>> out;
    for (size_t i = 0; i < names.size(); ++i) out.emplace_back(names[i], samples[i].*field);
    return out;
  };

  const int mid_x = width / 2, mid_y = header + (height - header) / 2;
  draw_chart(c, {0, header + 8, mid_x - 8, mid_y - 8},
             latency_chart("Time to first token", pick(&latency_samples::ttft)));
  draw_chart(c, {mid_x + 8, header + 8, width - 8, mid_y - 8},
             latency_chart("Inter-token latency", pick(&latency_samples::itl)));
  draw_chart(c, {0, mid_y + 8, mid_x - 8, height - 8},
             latency_chart("End-to-end latency", pick(&latency_samples::e2e)));

  series throughput{"output tokens/s", {}, false, {}, true};
  for (size_t i = 0; i < s.output_tokens_per_bin.size(); ++i)
    throughput.points.emplace_back(double(i) * s.bin_s, s.output_tokens_per_bin[i] / s.bin_s);
  if (!throughput.points.empty()) throughput.points.emplace_back(double(throughput.points.size()) * s.bin_s,
                                                                 throughput.points.back().second);
  chart over_time{"Throughput over time", "seconds since the first request", "output tokens/s", {throughput},
                  std::nullopt, std::nullopt, ""};
  draw_chart(c, {mid_x + 8, mid_y + 8, width - 8, height - 8}, over_time);
  c.save_png(path);
}

void plot_sweep(const std::vector<run_report>& points, const std::string& axis, const std::string& path) {
  constexpr int width = 1200, height = 560, header = 44;
  canvas c(width, height);
  const std::string scenario = points.empty() ? "" : points.front().scenario.name;
  const std::string model = points.empty() ? "" : points.front().model.name;
  c.text(16, 10, "kvactor-bench sweep: " + scenario + " over " + axis + ", model " + model, colour::black, 2);
  c.text(16, 30, "each point is one run; labels give its " + axis, colour::text);

  series ttft50{"p50", {}, true, {}, false}, ttft99{"p99", {}, true, {}, false};
  series itl50{"p50", {}, true, {}, false}, itl99{"p99", {}, true, {}, false};
  for (const auto& p : points) {
    const double x = p.summary.output_tokens_per_s;
    const auto& l = p.summary.latency;
    ttft50.points.emplace_back(x, l.ttft.p50);
    ttft99.points.emplace_back(x, l.ttft.p99);
    itl50.points.emplace_back(x, l.itl.p50);
    itl99.points.emplace_back(x, l.itl.p99);
    const std::string label = p.load.rate ? format("%g/s", *p.load.rate) : format("x%d", int(p.load.concurrency));
    ttft99.dot_labels.push_back(label);
    itl99.dot_labels.push_back(label);
  }
  const int mid_x = width / 2;
  draw_chart(c, {0, header + 8, mid_x - 8, height - 8},
             {"TTFT vs throughput", "output tokens/s", "TTFT (ms)", {ttft50, ttft99}, std::nullopt, std::nullopt, ""});
  draw_chart(c, {mid_x + 8, header + 8, width - 8, height - 8},
             {"Inter-token latency vs throughput", "output tokens/s", "ITL (ms)", {itl50, itl99}, std::nullopt,
              std::nullopt, ""});
  c.save_png(path);
}

} // namespace kvactor::bench
