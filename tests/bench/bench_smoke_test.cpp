// kvactor-bench end to end: the real kvactord on the embedded default model,
// each scenario for a moment with small lengths. Every request must end with
// exactly one terminal line (a hang-up with none), the report must add up,
// and its counts must match what the daemon itself counted: generated tokens
// in {"op":"stats"}, requests by finish reason in its metrics.
#include <doctest/doctest.h>

#include <cstdio>
#include <memory>
#include <numeric>
#include <set>

#include "daemon_process.h"

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace kvactor::bench::testing;

namespace {

const fs::path work_dir = fs::temp_directory_path() / ("kvactor_bench_smoke_" + std::to_string(getpid()));

// System prompts can only come from a configuration file.
constexpr const char* daemon_config = R"(
[backend]
cpu_threads = 1

[[system_prompt]]
name = "assistant"
text = "You are a helpful assistant. You answer briefly, precisely and politely."
)";

// One daemon for every test case, stopped and cleaned up at exit.
struct shared_daemon {
  shared_daemon() {
    fs::create_directories(work_dir);
    std::ofstream(work_dir / "kvactord.toml") << daemon_config;
    process = std::make_unique<daemon_process>(
        KVACTORD, std::vector<std::string>{"--config", (work_dir / "kvactord.toml").string()}, work_dir / "kvactord.log");
  }
  ~shared_daemon() {
    process.reset();
    std::error_code ignored;
    fs::remove_all(work_dir, ignored);
  }
  std::unique_ptr<daemon_process> process;
};

daemon_process& daemon() {
  static shared_daemon d;
  return *d.process;
}

struct bench_run {
  int exit_code = -1;
  std::string out, err;
  json::object report;
  std::map<std::string, double> stats_before, stats_after, metrics_before, metrics_after;

  double stats_delta(const std::string& key) const { return stats_after.at(key) - stats_before.at(key); }
  double requests_delta(const std::string& reason) const {
    const std::string key = "kvactor_requests_total{reason=\"" + reason + "\"}";
    return metrics_after.at(key) - metrics_before.at(key);
  }
};

bench_run run_bench(const std::string& args, const std::string& name) {
  static int n = 0;
  const auto out = work_dir / (name + std::to_string(n) + ".json");
  const auto err = work_dir / (name + std::to_string(n++) + ".err");
  bench_run r;
  r.stats_before = daemon().stats();
  r.metrics_before = daemon().metrics();
  // `args` first: a sweep's "sweep" must lead.
  const std::string cmd = std::string(KVACTOR_BENCH) + " " + args + " --port " + std::to_string(daemon().port()) +
                          " --out " + out.string() + " 2>" + err.string();
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  for (size_t k; (k = fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, k);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = slurp(err);
  r.stats_after = daemon().stats();
  r.metrics_after = daemon().metrics();
  MESSAGE(name << ":\n" << r.out);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  r.report = json::parse(slurp(out)).as_object();
  return r;
}

int64_t int_at(const json::value& v, std::initializer_list<const char*> path) {
  const json::value* at = &v;
  for (const char* key : path) at = &at->as_object().at(key);
  return at->to_number<int64_t>();
}

// What every run must satisfy; returns the number of requests that hung up.
int64_t check_consistent(const bench_run& r, int64_t requests) {
  const json::object& rep = r.report;
  const json::array& per = rep.at("per_request").as_array();
  REQUIRE(int64_t(per.size()) == requests);
  CHECK(int_at(rep, {"requests", "sent"}) == requests);

  int64_t finished = 0, hung_up = 0, tokens = 0, prompt = 0, cached = 0;
  for (const auto& v : per) {
    const json::object& q = v.as_object();
    const std::string outcome(q.at("outcome").as_string());
    CHECK(q.at("lines_after_terminal").as_int64() == 0);
    tokens += q.at("tokens").as_int64();
    if (outcome == "disconnected") {
      ++hung_up;
      CHECK(q.at("terminal_lines").as_int64() == 0);
      CHECK(q.at("tokens").as_int64() >= q.at("disconnect_after").as_int64());
      continue;
    }
    CHECK(q.at("terminal_lines").as_int64() == 1);
    REQUIRE_MESSAGE(outcome == "finished", json::serialize(q));
    ++finished;
    // ignore_eos and an exact max_tokens: every length is known.
    CHECK(q.at("finish_reason").as_string() == "length");
    CHECK(q.at("tokens").as_int64() == q.at("max_tokens").as_int64());
    CHECK(int_at(q, {"usage", "completion_tokens"}) == q.at("max_tokens").as_int64());
    CHECK(int_at(q, {"usage", "prompt_tokens"}) >= q.at("prompt_tokens").as_int64());
    prompt += int_at(q, {"usage", "prompt_tokens"});
    cached += int_at(q, {"usage", "cached_tokens"});
  }
  // The report's totals are the sums of its requests.
  CHECK(int_at(rep, {"requests", "finished"}) == finished);
  CHECK(int_at(rep, {"requests", "by_finish_reason", "length"}) == finished);
  CHECK(int_at(rep, {"requests", "disconnected"}) == hung_up);
  CHECK(int_at(rep, {"requests", "unanswered"}) == 0);
  CHECK(rep.at("requests").at("errors").as_object().empty());
  CHECK(int_at(rep, {"tokens", "output"}) == tokens);
  CHECK(int_at(rep, {"tokens", "prompt"}) == prompt);
  CHECK(int_at(rep, {"tokens", "cached"}) == cached);
  for (const char* anomaly : {"missing_terminal", "duplicate_terminal", "lines_after_terminal", "usage_mismatches",
                              "unattributed_lines"})
    CHECK_MESSAGE(int_at(rep, {"protocol", anomaly}) == 0, anomaly);
  CHECK(int_at(rep, {"latency_ms", "ttft", "count"}) == finished);
  CHECK(int_at(rep, {"latency_ms", "e2e", "count"}) == finished);
  const auto& timeline = rep.at("timeline").as_object().at("output_tokens").as_array();
  CHECK(std::accumulate(timeline.begin(), timeline.end(), 0.0,
                        [](double s, const json::value& v) { return s + v.to_number<double>(); }) == double(tokens));

  // The daemon's own counts: requests by finish reason, generated tokens.
  CHECK(r.requests_delta("length") + r.requests_delta("cancelled") == double(requests));
  CHECK(r.requests_delta("length") >= double(finished));
  for (const char* reason : {"stop", "bad_request", "context_length_exceeded", "overloaded", "internal"})
    CHECK_MESSAGE(r.requests_delta(reason) == 0, reason);
  if (hung_up == 0) {
    CHECK(r.requests_delta("cancelled") == 0);
    CHECK(r.stats_delta("generated_tokens") == double(tokens));
    CHECK(r.metrics_after.at("kvactor_generation_tokens_total") -
              r.metrics_before.at("kvactor_generation_tokens_total") ==
          double(tokens));
  } else {
    // Tokens generated after a hang-up reach nobody.
    CHECK(r.stats_delta("generated_tokens") >= double(tokens));
    CHECK(r.requests_delta("cancelled") <= double(hung_up));
  }
  // The report read the same daemon counters.
  CHECK(int_at(rep, {"daemon", "delta", "generated_tokens"}) == int64_t(r.stats_delta("generated_tokens")));
  CHECK(rep.at("daemon").at("idle_after").as_bool());
  CHECK(rep.at("daemon").at("healthy_after").as_bool());
  CHECK(r.stats_after.at("requests_running") == 0);
  CHECK(r.stats_after.at("kv_pages_used") == r.stats_after.at("kv_pages_pinned"));

  // Progress went to stderr as plain lines (it is not a terminal here), the table to stdout.
  CHECK(r.err.find("done") != std::string::npos);
  CHECK(r.err.find('\r') == std::string::npos);
  CHECK(r.out.find("TTFT") != std::string::npos);
  return hung_up;
}

} // namespace

TEST_CASE("fixed, closed loop") {
  const auto r = run_bench("--scenario fixed --prompt-len 16 --output-len 16 --requests 40 --concurrency 4", "fixed");
  CHECK(check_consistent(r, 40) == 0);
  for (const auto& q : r.report.at("per_request").as_array()) CHECK(int_at(q, {"usage", "prompt_tokens"}) == 16);
  CHECK(r.report.at("load").at("mode").as_string() == "closed-loop");
}

TEST_CASE("chat, open loop, with a plot") {
  const auto png = work_dir / "chat.png";
  const auto r = run_bench("--scenario chat --prompt-len 40 --output-len 24 --requests 40 --rate 20 --seed 3 --plot " +
                               png.string(),
                           "chat");
  CHECK(check_consistent(r, 40) == 0);
  CHECK(r.report.at("load").at("mode").as_string() == "open-loop");
  const std::string head = slurp(png).substr(0, 8);
  CHECK(head == std::string("\x89PNG\r\n\x1a\n", 8));
  // Drawn lengths: not all the same.
  std::set<int64_t> lengths;
  for (const auto& q : r.report.at("per_request").as_array()) lengths.insert(q.at("max_tokens").as_int64());
  CHECK(lengths.size() > 5);
}

TEST_CASE("shared-prefix: later requests reuse the prefixes' KV") {
  const auto r = run_bench(
      "--scenario shared-prefix --prefixes 2 --prefix-len 64 --prompt-len 8 --output-len 8 --requests 40 "
      "--concurrency 2",
      "shared_prefix");
  CHECK(check_consistent(r, 40) == 0);
  const int64_t cached = int_at(r.report, {"tokens", "cached"});
  // At most 64 of each 72-token prompt can hit; all but the first few do.
  CHECK(cached <= 40 * 64);
  CHECK(cached >= 30 * 64);
  if (r.stats_delta("preemptions") == 0) CHECK(r.stats_delta("prefix_cache_hit_tokens") == double(cached));
  CHECK(r.report.at("prefix_cache").at("hit_rate").as_double() > 0.5);
}

TEST_CASE("system-prompt: every request carries the same pinned prefix") {
  const auto r = run_bench(
      "--scenario system-prompt --system assistant --prompt-len 8 --output-len 8 --requests 30 --concurrency 3",
      "system_prompt");
  CHECK(check_consistent(r, 30) == 0);
  std::set<int64_t> system_lengths;
  for (const auto& q : r.report.at("per_request").as_array()) {
    const int64_t system = int_at(q, {"usage", "prompt_tokens"}) - q.at("prompt_tokens").as_int64();
    system_lengths.insert(system);
    // The system prompt's whole pages come from the cache, every time.
    CHECK(int_at(q, {"usage", "cached_tokens"}) >= system / 16 * 16);
  }
  REQUIRE(system_lengths.size() == 1);
  CHECK(*system_lengths.begin() > 0);
  CHECK(r.stats_after.at("kv_pages_pinned") > 0);
}

TEST_CASE("system-prompt naming no configured prompt: each request is one bad_request error") {
  const auto r = run_bench("--scenario system-prompt --system pirate --requests 5", "unknown_system");
  const json::array& per = r.report.at("per_request").as_array();
  REQUIRE(per.size() == 5);
  for (const auto& q : per) {
    CHECK(q.at("outcome").as_string() == "error");
    CHECK(q.at("error").as_string() == "bad_request");
    CHECK(q.at("terminal_lines").as_int64() == 1);
  }
  CHECK(int_at(r.report, {"requests", "errors", "bad_request"}) == 5);
  CHECK(r.stats_delta("generated_tokens") == 0);
  CHECK(r.out.find("bad_request 5") != std::string::npos);
}

TEST_CASE("long-prompt: long and short requests reported apart") {
  const auto r = run_bench(
      "--scenario long-prompt --prompt-len 16 --output-len 32 --long-prompt-len 600 --long-output-len 4 "
      "--long-every 8 --requests 32 --rate 30",
      "long_prompt");
  CHECK(check_consistent(r, 32) == 0);
  int64_t long_count = 0;
  for (const auto& q : r.report.at("per_request").as_array())
    if (q.at("group").as_string() == "long") {
      ++long_count;
      CHECK(q.at("prompt_tokens").as_int64() == 600);
    }
  CHECK(long_count == 4);
  CHECK(int_at(r.report, {"groups", "long", "e2e", "count"}) == 4);
  CHECK(int_at(r.report, {"groups", "short", "e2e", "count"}) == 28);
  CHECK(int_at(r.report, {"groups", "short", "itl", "count"}) > 0);
}

TEST_CASE("cancel-storm: hang-ups mid-stream, then the daemon is idle and healthy") {
  const auto r = run_bench(
      "--scenario cancel-storm --prompt-len 16 --output-len 64 --disconnect-fraction 0.5 --requests 40 "
      "--concurrency 8",
      "cancel_storm");
  const int64_t hung_up = check_consistent(r, 40);
  CHECK(hung_up > 5);
  CHECK(hung_up < 35);
  CHECK(r.requests_delta("cancelled") > 0);
  CHECK(r.stats_after.at("requests_waiting") == 0);
}

TEST_CASE("sweep over concurrencies: one point each, and the curve") {
  const auto png = work_dir / "sweep.png";
  const auto r = run_bench("sweep --scenario fixed --prompt-len 8 --output-len 8 --requests 12 --concurrencies 1,4 "
                           "--plot " + png.string(),
                           "sweep");
  const json::array& points = r.report.at("points").as_array();
  REQUIRE(points.size() == 2);
  CHECK(int_at(points[0], {"load", "concurrency"}) == 1);
  CHECK(int_at(points[1], {"load", "concurrency"}) == 4);
  for (const auto& p : points) CHECK(int_at(p, {"requests", "finished"}) == 12);
  CHECK(r.requests_delta("length") == 24);
  CHECK(r.stats_delta("generated_tokens") == 24 * 8);
  CHECK(fs::file_size(png) > 0);
}

TEST_CASE("a daemon that is not there: a clear error and exit code 1") {
  const std::string cmd = std::string(KVACTOR_BENCH) + " --scenario fixed --port " + std::to_string(free_port()) +
                          " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[1024];
  for (size_t k; (k = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, k);
  const int status = pclose(p);
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(out.find("cannot connect to 127.0.0.1:") != std::string::npos);
}
