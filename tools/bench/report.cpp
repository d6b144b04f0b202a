#include "tools/bench/report.h"

#include <cstdio>
#include <fstream>

#include <boost/json.hpp>

#include "runtime/error.h"

namespace kvactor::bench {

namespace json = boost::json;

namespace {

std::string format(const char* fmt, auto... args) {
  char buf[512];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

json::object latency_json(const latency_summary& s) {
  return {{"count", s.count}, {"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90}, {"p99", s.p99}, {"max", s.max}};
}

json::object latency_set_json(const latency_set& l) {
  return {{"ttft", latency_json(l.ttft)},
          {"itl", latency_json(l.itl)},
          {"e2e", latency_json(l.e2e)},
          {"queue", latency_json(l.queue)}};
}

template <class Map>
json::object map_json(const Map& m) {
  json::object o;
  for (const auto& [k, v] : m) o[k] = v;
  return o;
}

json::object scenario_json(const scenario_options& s) {
  json::object o = {{"name", s.name}, {"prompt_len", s.prompt_len.value_or(0)}, {"output_len", s.output_len.value_or(0)}};
  if (s.name == "shared-prefix") {
    o["prefixes"] = s.prefixes;
    o["prefix_len"] = s.prefix_len;
  } else if (s.name == "system-prompt") {
    o["system"] = s.system;
  } else if (s.name == "long-prompt") {
    o["long_prompt_len"] = s.long_prompt_len;
    o["long_output_len"] = s.long_output_len;
    o["long_every"] = s.long_every;
  } else if (s.name == "cancel-storm") {
    o["disconnect_fraction"] = s.disconnect_fraction;
  }
  return o;
}

json::object load_json(const load_options& l) {
  json::object o;
  if (l.rate) {
    o["mode"] = "open-loop";
    o["rate"] = *l.rate;
  } else {
    o["mode"] = "closed-loop";
    o["concurrency"] = l.concurrency;
  }
  o["requests_limit"] = l.requests ? json::value(*l.requests) : json::value(nullptr);
  o["duration_limit_s"] = l.duration_s ? json::value(*l.duration_s) : json::value(nullptr);
  o["seed"] = l.seed;
  o["max_connections"] = l.max_connections;
  return o;
}

json::object request_json(const request_record& r) {
  json::object o = {{"id", r.id},
                    {"group", r.group},
                    {"prompt_tokens", r.prompt_tokens},
                    {"max_tokens", r.max_tokens},
                    {"outcome", to_string(r.result)},
                    {"terminal_lines", r.terminal_lines},
                    {"lines_after_terminal", r.lines_after_terminal},
                    {"tokens", r.tokens_received()},
                    {"start_s", r.start},
                    {"end_s", r.end}};
  if (r.disconnect_after) o["disconnect_after"] = *r.disconnect_after;
  if (r.result == outcome::finished) o["finish_reason"] = r.finish_reason;
  if (r.result == outcome::error) o["error"] = r.error_code;
  if (r.usage_completion)
    o["usage"] = {{"prompt_tokens", r.usage_prompt.value_or(0)},
                  {"cached_tokens", r.usage_cached.value_or(0)},
                  {"completion_tokens", *r.usage_completion}};
  if (!r.arrivals.empty()) o["ttft_ms"] = (r.arrivals.front().t - r.start) * 1e3;
  return o;
}

json::object daemon_json(const daemon_view& d) {
  json::object o = {{"before", map_json(d.before)},
                    {"after", map_json(d.after)},
                    {"delta", map_json(d.delta())},
                    {"idle_after", d.idle_after},
                    {"idle_wait_s", d.idle_wait_s},
                    {"healthy_after", d.healthy_after}};
  return o;
}

// The summary numbers of a run, shared by the run report and each sweep point.
json::object summary_json(const run_report& report) {
  const run_summary& s = report.summary;
  json::object o;
  o["duration_s"] = s.duration_s;
  o["requests"] = {{"sent", s.sent},
                   {"finished", s.finished},
                   {"by_finish_reason", map_json(s.by_finish_reason)},
                   {"errors", map_json(s.errors)},
                   {"disconnected", s.disconnected},
                   {"unanswered", s.unanswered}};
  o["protocol"] = {{"missing_terminal", s.missing_terminal},
                   {"duplicate_terminal", s.duplicate_terminal},
                   {"lines_after_terminal", s.lines_after_terminal},
                   {"usage_mismatches", s.usage_mismatches},
                   {"unattributed_lines", report.result.unattributed_lines},
                   {"unattributed_errors", map_json(report.result.unattributed_errors)}};
  o["tokens"] = {{"prompt", s.prompt_tokens}, {"cached", s.cached_tokens}, {"output", s.output_tokens}};
  o["throughput"] = {{"requests_per_s", s.requests_per_s},
                     {"output_tokens_per_s", s.output_tokens_per_s},
                     {"total_tokens_per_s", s.total_tokens_per_s}};
  o["latency_ms"] = latency_set_json(s.latency);
  if (!s.groups.empty()) {
    json::object groups;
    for (const auto& [name, set] : s.groups) groups[name] = latency_set_json(set);
    o["groups"] = std::move(groups);
  }
  const auto hit_rate = report.daemon.prefix_hit_rate();
  const auto delta = report.daemon.delta();
  o["prefix_cache"] = {{"hit_rate", hit_rate ? json::value(*hit_rate) : json::value(nullptr)},
                       {"cached_fraction",
                        s.prompt_tokens > 0 ? json::value(double(s.cached_tokens) / double(s.prompt_tokens))
                                            : json::value(nullptr)}};
  o["preemptions"] = delta.contains("preemptions") ? json::value(delta.at("preemptions")) : json::value(nullptr);
  return o;
}

std::string latency_row(const char* name, const latency_summary& l) {
  return format("  %-18s %9.2f %9.2f %9.2f %9.2f %9.2f %9zu\n", name, l.mean, l.p50, l.p90, l.p99, l.max, l.count);
}

std::string latency_rows(const latency_set& l, const std::string& prefix) {
  return latency_row((prefix + "TTFT").c_str(), l.ttft) + latency_row((prefix + "ITL").c_str(), l.itl) +
         latency_row((prefix + "end-to-end").c_str(), l.e2e) + latency_row((prefix + "queue").c_str(), l.queue);
}

std::string counts_text(const std::map<std::string, size_t>& m) {
  std::string s;
  for (const auto& [k, v] : m) s += (s.empty() ? "" : ", ") + k + " " + std::to_string(v);
  return s;
}

std::string load_text(const load_options& l) {
  return l.rate ? format("open loop at %g req/s", *l.rate) : format("closed loop, concurrency %d", int(l.concurrency));
}

} // namespace

json::object report_json(const run_report& report, bool per_request) {
  json::object o = {{"tool", "kvactor-bench"},
                    {"format", 1},
                    {"target",
                     {{"host", report.load.host},
                      {"port", report.load.port},
                      {"model",
                       {{"name", report.model.name},
                        {"architecture", report.model.architecture},
                        {"vocab_size", report.model.vocab_size},
                        {"max_context", report.model.max_context}}}}},
                    {"scenario", scenario_json(report.scenario)},
                    {"load", load_json(report.load)}};
  for (auto& [k, v] : summary_json(report)) o[k] = v;
  o["daemon"] = daemon_json(report.daemon);
  json::array tokens(report.summary.output_tokens_per_bin.begin(), report.summary.output_tokens_per_bin.end());
  json::array finished(report.summary.finished_per_bin.begin(), report.summary.finished_per_bin.end());
  o["timeline"] = {{"bin_s", report.summary.bin_s}, {"output_tokens", tokens}, {"finished_requests", finished}};
  if (per_request) {
    json::array requests;
    for (const auto& r : report.result.records) requests.push_back(request_json(r));
    o["per_request"] = std::move(requests);
  }
  return o;
}

std::string report_table(const run_report& report) {
  const run_summary& s = report.summary;
  const daemon_view& d = report.daemon;
  std::string t = format("kvactor-bench: %s, %s, seed %llu, against %s:%u (%s, %s)\n", report.scenario.name.c_str(),
                         load_text(report.load).c_str(), (unsigned long long)report.load.seed,
                         report.load.host.c_str(), unsigned(report.load.port), report.model.name.c_str(),
                         report.model.architecture.c_str());
  t += format("  requests           %zu sent, %zu finished", s.sent, s.finished);
  if (!s.by_finish_reason.empty()) t += " (" + counts_text(s.by_finish_reason) + ")";
  t += format(", %zu disconnected, %zu unanswered\n", s.disconnected, s.unanswered);
  t += "  errors             " + (s.errors.empty() ? std::string("none") : counts_text(s.errors)) + "\n";
  const size_t anomalies = s.missing_terminal + s.duplicate_terminal + s.lines_after_terminal + s.usage_mismatches +
                           report.result.unattributed_lines;
  if (anomalies > 0)
    t += format("  PROTOCOL           %zu without a terminal line, %zu with several, %zu lines after the end, "
                "%zu usage mismatches, %zu unattributed lines\n",
                s.missing_terminal, s.duplicate_terminal, s.lines_after_terminal, s.usage_mismatches,
                report.result.unattributed_lines);
  t += format("  duration           %.2f s\n", s.duration_s);
  t += format("  tokens             %lld prompt (%lld cached), %lld output\n", (long long)s.prompt_tokens,
              (long long)s.cached_tokens, (long long)s.output_tokens);
  t += format("  throughput         %.2f req/s, %.1f output tok/s, %.1f total tok/s\n", s.requests_per_s,
              s.output_tokens_per_s, s.total_tokens_per_s);
  t += format("  %-18s %9s %9s %9s %9s %9s %9s\n", "latency (ms)", "mean", "p50", "p90", "p99", "max", "count");
  t += latency_rows(s.latency, "");
  for (const auto& [group, set] : s.groups) t += latency_rows(set, group + " ");
  const auto delta = d.delta();
  const auto hit_rate = d.prefix_hit_rate();
  t += "  prefix cache       " + (hit_rate ? format("%.1f%% of queried prompt tokens hit", *hit_rate * 100) : "not queried");
  t += format(", preemptions %.0f\n", delta.contains("preemptions") ? delta.at("preemptions") : 0.0);
  t += format("  daemon             %s after %.2f s, %s, %.0f tokens generated during the run\n",
              d.idle_after ? "idle" : "NOT IDLE", d.idle_wait_s, d.healthy_after ? "healthy" : "NOT HEALTHY",
              delta.contains("generated_tokens") ? delta.at("generated_tokens") : 0.0);
  return t;
}

json::object sweep_json(const std::vector<run_report>& points, const std::string& axis) {
  json::object o = {{"tool", "kvactor-bench"}, {"format", 1}, {"mode", "sweep"}, {"axis", axis}};
  if (!points.empty()) {
    o["scenario"] = scenario_json(points.front().scenario);
    o["model"] = {{"name", points.front().model.name}, {"architecture", points.front().model.architecture}};
  }
  json::array list;
  for (const auto& p : points) {
    json::object point = summary_json(p);
    point["load"] = load_json(p.load);
    point["daemon"] = daemon_json(p.daemon);
    list.push_back(std::move(point));
  }
  o["points"] = std::move(list);
  return o;
}

std::string sweep_table(const std::vector<run_report>& points, const std::string& axis) {
  std::string t = format("kvactor-bench sweep over %s%s\n", axis.c_str(),
                         points.empty() ? "" : (": " + points.front().scenario.name).c_str());
  t += format("  %11s %8s %10s %9s %9s %9s %9s %9s %7s\n", axis.c_str(), "req/s", "out tok/s", "TTFT p50",
              "TTFT p99", "ITL p50", "ITL p99", "e2e p50", "errors");
  for (const auto& p : points) {
    const auto& s = p.summary;
    size_t errors = 0;
    for (const auto& [code, n] : s.errors) errors += n;
    const double x = p.load.rate ? *p.load.rate : double(p.load.concurrency);
    t += format("  %11g %8.2f %10.1f %9.2f %9.2f %9.2f %9.2f %9.2f %7zu\n", x, s.requests_per_s,
                s.output_tokens_per_s, s.latency.ttft.p50, s.latency.ttft.p99, s.latency.itl.p50, s.latency.itl.p99,
                s.latency.e2e.p50, errors);
  }
  t += "  (latencies in ms)\n";
  return t;
}

void write_json(const std::string& path, const json::object& doc) {
  std::ofstream f(path, std::ios::trunc);
  f << json::serialize(doc) << '\n';
  f.close();
  if (!f) throw load_error(path, "cannot write the JSON report");
}

} // namespace kvactor::bench
