#pragma once
// The real kvactord for the daemon and hardening tests: started on free
// ports with one CPU thread (CI has two cores), asked for its stats, its
// resident memory read from /proc, waited on until idle, and stopped with
// SIGTERM.
#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "tests/net/daemon_process.h"
#include "tests/net/replies.h"
#include "tests/net/test_client.h"

namespace kvactor::net::testing {

// Whether this build (and so the kvactord it starts) runs under a sanitizer.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool sanitized = true;
#else
inline constexpr bool sanitized = false;
#endif

namespace json = boost::json;
using namespace std::chrono_literals;

// A daemon on free ports, serving; metrics on `metrics_port` when given.
struct running_daemon {
  explicit running_daemon(std::vector<std::string> extra = {}, const std::map<std::string, std::string>& env = {},
                          uint16_t metrics_port = 0)
      : process(with_defaults(std::move(extra), metrics_port), env) {
    const auto p = process.wait_serving();
    REQUIRE_MESSAGE(p.has_value(), "kvactord did not start:\n" << process.log());
    port = *p;
  }
  // Stopped with SIGTERM, so that it exits as in production (and, in a
  // sanitized build, LeakSanitizer looks at what it left).
  ~running_daemon() {
    if (process.wait_exit(0s)) return; // a test stopped it
    process.signal(SIGTERM);
    process.wait_exit(60s);
  }
  running_daemon(const running_daemon&) = delete;
  running_daemon& operator=(const running_daemon&) = delete;

  static std::vector<std::string> with_defaults(std::vector<std::string> extra, uint16_t metrics_port) {
    std::vector<std::string> args = {"--port", "0", "--metrics-port", std::to_string(metrics_port),
                                     "backend.cpu_threads=1"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // One {"op":"stats"} answer.
  json::object stats() const {
    test_client c(port);
    c.send_line(R"({"op":"stats"})");
    return parse(c.read_line(30s)).at("stats").as_object();
  }
  double stat(const std::string& name) const { return stats().at(name).to_number<double>(); }

  // VmRSS of the daemon, in KiB.
  int64_t rss_kb() const {
    std::ifstream status("/proc/" + std::to_string(process.pid()) + "/status");
    for (std::string key; status >> key;) {
      int64_t value = 0;
      if (key == "VmRSS:" && status >> value) return value;
    }
    FAIL("no VmRSS in /proc/" << process.pid() << "/status");
    return 0;
  }

  // Nothing running or waiting, and `pages_used` KV pages held.
  bool idle_with(double pages_used, std::chrono::milliseconds limit = 30s) const {
    return eventually(
        [&] {
          const auto s = stats();
          return s.at("requests_running").to_number<double>() == 0 &&
                 s.at("requests_waiting").to_number<double>() == 0 &&
                 s.at("requests_in_flight").to_number<double>() == 0 &&
                 s.at("kv_pages_used").to_number<double>() == pages_used;
        },
        limit);
  }

  daemon_process process;
  uint16_t port = 0;
};

// A JSON generation request line; `extra` is spliced in before the '}'.
inline std::string request_line(const std::string& id, const std::string& prompt, int max_tokens,
                                 const std::string& extra = "") {
  return R"({"id":")" + id + R"(","prompt":")" + prompt + R"(","max_tokens":)" + std::to_string(max_tokens) +
         R"(,"ignore_eos":true)" + extra + "}";
}

} // namespace kvactor::net::testing
