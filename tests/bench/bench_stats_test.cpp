// Run statistics on hand-built request records, with expectations worked
// out by hand (percentiles as numpy.percentile computes them).
#include <doctest/doctest.h>

#include <vector>

#include "tools/bench/stats.h"

using namespace kvactor::bench;

namespace {

request_record finished(int64_t id, double start, std::vector<token_arrival> arrivals, double end,
                        int32_t max_tokens) {
  request_record r;
  r.id = id;
  r.start = start;
  r.arrivals = std::move(arrivals);
  r.end = end;
  r.max_tokens = max_tokens;
  r.result = outcome::finished;
  r.finish_reason = "length";
  r.terminal_lines = 1;
  r.usage_prompt = 10;
  r.usage_cached = 4;
  r.usage_completion = int32_t(r.tokens_received());
  r.server_queue_ms = 0.5;
  return r;
}

} // namespace

TEST_CASE("percentile interpolates linearly between order statistics") {
  const std::vector<double> four = {1, 2, 3, 4};
  CHECK(percentile(four, 50) == doctest::Approx(2.5));
  CHECK(percentile(four, 0) == 1);
  CHECK(percentile(four, 100) == 4);
  std::vector<double> ten;
  for (int i = 1; i <= 10; ++i) ten.push_back(i);
  CHECK(percentile(ten, 90) == doctest::Approx(9.1));
  CHECK(percentile(ten, 99) == doctest::Approx(9.91));
  const std::vector<double> one = {7};
  CHECK(percentile(one, 99) == 7);
  CHECK(percentile(std::vector<double>{}, 50) == 0);

  const auto s = summarize({4, 1, 3, 2});
  CHECK(s.count == 4);
  CHECK(s.mean == doctest::Approx(2.5));
  CHECK(s.p50 == doctest::Approx(2.5));
  CHECK(s.max == 4);
  CHECK(summarize(std::vector<double>{}).count == 0);
}

TEST_CASE("latencies: TTFT from the start, a line of n tokens counts n gaps of gap / n") {
  // Starts at 1.0 s; lines at 1.1 (1 token), 1.3 (2 tokens), 1.4 (1 token); final at 1.5.
  const std::vector<request_record> records = {finished(0, 1.0, {{1.1, 1}, {1.3, 2}, {1.4, 1}}, 1.5, 4)};
  const auto samples = collect_latencies(records);
  REQUIRE(samples.ttft.size() == 1);
  CHECK(samples.ttft[0] == doctest::Approx(100));
  REQUIRE(samples.itl.size() == 3);
  CHECK(samples.itl[0] == doctest::Approx(100)); // 200 ms over 2 tokens
  CHECK(samples.itl[1] == doctest::Approx(100));
  CHECK(samples.itl[2] == doctest::Approx(100));
  REQUIRE(samples.e2e.size() == 1);
  CHECK(samples.e2e[0] == doctest::Approx(500));
  CHECK(samples.queue == std::vector<double>{0.5});
}

TEST_CASE("summarize_run counts outcomes, anomalies, tokens and throughput") {
  std::vector<request_record> records;
  records.push_back(finished(0, 0.0, {{0.1, 1}, {0.2, 1}}, 0.3, 2));
  records.push_back(finished(1, 0.5, {{0.7, 1}, {0.9, 1}}, 1.0, 2));
  records.back().group = "long";
  // A length finish short of max_tokens: a usage mismatch.
  records.push_back(finished(2, 1.0, {{1.5, 1}}, 1.6, 3));
  records.back().group = "short";
  // An error line.
  request_record err;
  err.id = 3, err.start = 1.0, err.end = 1.1, err.result = outcome::error, err.error_code = "overloaded";
  err.terminal_lines = 1;
  records.push_back(err);
  // A hang-up after 1 token: no terminal line, and none expected.
  request_record gone;
  gone.id = 4, gone.start = 1.0, gone.end = 1.2, gone.result = outcome::disconnected, gone.disconnect_after = 1;
  gone.arrivals = {{1.2, 1}};
  records.push_back(gone);
  // Unanswered, and a request that got two terminal lines and one more line.
  request_record lost;
  lost.id = 5, lost.start = 1.0, lost.end = 2.0, lost.result = outcome::unanswered;
  records.push_back(lost);
  records.push_back(finished(6, 1.0, {{1.1, 1}}, 1.2, 1));
  records.back().terminal_lines = 2;
  records.back().lines_after_terminal = 1;

  const run_summary s = summarize_run(records, 0.5);
  CHECK(s.sent == 7);
  CHECK(s.finished == 4);
  CHECK(s.by_finish_reason == std::map<std::string, size_t>{{"length", 4}});
  CHECK(s.errors == std::map<std::string, size_t>{{"overloaded", 1}});
  CHECK(s.disconnected == 1);
  CHECK(s.unanswered == 1);
  CHECK(s.missing_terminal == 1); // the unanswered one
  CHECK(s.duplicate_terminal == 1);
  CHECK(s.lines_after_terminal == 1);
  CHECK(s.usage_mismatches == 1);
  CHECK(s.prompt_tokens == 40);
  CHECK(s.cached_tokens == 16);
  CHECK(s.output_tokens == 2 + 2 + 1 + 1 + 1);
  CHECK(s.duration_s == doctest::Approx(2.0));
  CHECK(s.requests_per_s == doctest::Approx(2.0));
  CHECK(s.output_tokens_per_s == doctest::Approx(3.5));
  CHECK(s.total_tokens_per_s == doctest::Approx(23.5));
  CHECK(s.latency.ttft.count == 4);
  CHECK(s.latency.e2e.count == 4);
  CHECK(s.latency.itl.count == 2); // the two 2-line requests contribute one gap each
  REQUIRE(s.groups.size() == 2);
  CHECK(s.groups.at("long").e2e.count == 1);
  CHECK(s.groups.at("long").e2e.p50 == doctest::Approx(500));
  CHECK(s.groups.at("short").ttft.p50 == doctest::Approx(500));

  // Bins of 0.5 s over [0, 2): tokens at 0.1, 0.2 | 0.7, 0.9 | 1.2, 1.1 | 1.5;
  // final lines at 0.3 | - | 1.0, 1.2 | 1.6.
  CHECK(s.bin_s == 0.5);
  CHECK(s.output_tokens_per_bin == std::vector<double>{2, 2, 2, 1});
  CHECK(s.finished_per_bin == std::vector<double>{1, 0, 2, 1});
}

TEST_CASE("timeline bins: 1 s from 30 s on, about 30 bins of a 1-2-5 step below") {
  CHECK(timeline_bin_s(120) == 1);
  CHECK(timeline_bin_s(30) == 1);
  CHECK(timeline_bin_s(6) == doctest::Approx(0.2));
  CHECK(timeline_bin_s(3) == doctest::Approx(0.1));
  CHECK(timeline_bin_s(10) == doctest::Approx(0.5));
  CHECK(timeline_bin_s(0.01) == doctest::Approx(0.01));
  CHECK(timeline_bin_s(0) == doctest::Approx(0.01));
}
