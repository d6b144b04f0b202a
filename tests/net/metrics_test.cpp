// The metrics registry's Prometheus text, byte for byte; kvactor's metric
// set fed from a request's life and from engine stats; the HTTP endpoint.
#include "net/metrics.h"

#include <doctest/doctest.h>

#include <thread>

#include "net/engine_port.h"
#include "net/metrics_server.h"
#include "net/serving_metrics.h"
#include "runtime/error.h"
#include "tests/net/test_client.h"

using namespace kvactor;
using namespace kvactor::net;
using namespace kvactor::net::testing;

TEST_CASE("counters, gauges and histograms in the Prometheus text format") {
  metrics_registry r;
  counter& stop = r.add_counter("x_requests_total", "Requests, by reason", {{"reason", "stop"}});
  counter& odd = r.add_counter("x_requests_total", "Requests, by reason", {{"reason", "a\"b\\c\nd"}});
  gauge& g = r.add_gauge("x_pages", "Pages\nin use");
  histogram& h = r.add_histogram("x_seconds", "Latency", {0.1, 0.5, 2});
  stop.add();
  stop.add(2);
  odd.add(0.5);
  g.set(7);
  g.add(-2);
  for (double v : {0.05, 0.1, 0.3, 3.0}) h.observe(v);
  CHECK(r.render() ==
        "# HELP x_requests_total Requests, by reason\n"
        "# TYPE x_requests_total counter\n"
        "x_requests_total{reason=\"stop\"} 3\n"
        "x_requests_total{reason=\"a\\\"b\\\\c\\nd\"} 0.5\n"
        "# HELP x_pages Pages\\nin use\n"
        "# TYPE x_pages gauge\n"
        "x_pages 5\n"
        "# HELP x_seconds Latency\n"
        "# TYPE x_seconds histogram\n"
        "x_seconds_bucket{le=\"0.1\"} 2\n"
        "x_seconds_bucket{le=\"0.5\"} 3\n"
        "x_seconds_bucket{le=\"2\"} 3\n"
        "x_seconds_bucket{le=\"+Inf\"} 4\n"
        "x_seconds_sum 3.45\n"
        "x_seconds_count 4\n");
}

TEST_CASE("registration mistakes are refused") {
  metrics_registry r;
  r.add_counter("a_total", "a", {{"k", "v"}});
  CHECK_THROWS_AS(r.add_counter("a_total", "a", {{"k", "v"}}), error); // the same series
  CHECK_THROWS_AS(r.add_gauge("a_total", "a"), error);                  // another type
  CHECK_THROWS_AS(r.add_counter("9lives", "x"), error);
  CHECK_THROWS_AS(r.add_counter("b", "x", {{"__reserved", "v"}}), error);
  CHECK_THROWS_AS(r.add_histogram("h", "x", {1, 1}), error);
  CHECK_THROWS_AS(r.add_histogram("h", "x", {1}, {{"le", "2"}}), error);
}

TEST_CASE("updates from many threads all count") {
  metrics_registry r;
  counter& c = r.add_counter("c_total", "c");
  histogram& h = r.add_histogram("h", "h", {1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.add();
        h.observe(0.5);
      }
    });
  for (auto& t : threads) t.join();
  CHECK(c.value() == 40000);
  CHECK(h.read().cumulative == std::vector<uint64_t>{40000, 40000});
}

TEST_CASE("kvactor's metrics: finish reasons, tokens, latencies and engine stats") {
  metrics_registry r;
  serving_metrics m(r);
  auto value = [&](const std::string& series) {
    const std::string text = r.render();
    const size_t at = text.find("\n" + series + " ");
    REQUIRE_MESSAGE(at != std::string::npos, series);
    return std::stod(text.substr(at + series.size() + 2));
  };
  generate_result done;
  done.reason = finish_reason::length;
  done.usage = {7, 2, 5};
  m.request_started();
  m.first_token(0.02);
  m.tokens_after(0.003, 1);
  m.tokens_after(0.01, 2); // two tokens in one delta: two gaps of 5 ms
  CHECK(value("kvactor_requests_in_flight") == 1);
  m.request_finished(done);
  generate_result failed;
  failed.reason = finish_reason::error; // no code: internal
  m.request_started();
  m.request_finished(failed);
  m.request_refused(error_code::overloaded);
  m.update_from_engine({{std::string(stat_kv_pages_used), 12}, {std::string(stat_kv_pages_total), 64},
                        {std::string(stat_preemptions), 3}, {std::string(stat_prefix_hit_tokens), 32},
                        {std::string(stat_steps), 9}, {"unknown_key", 1}});
  m.step_finished(0.004);

  CHECK(value(R"(kvactor_requests_total{reason="length"})") == 1);
  CHECK(value(R"(kvactor_requests_total{reason="internal"})") == 1);
  CHECK(value(R"(kvactor_requests_total{reason="overloaded"})") == 1);
  CHECK(value(R"(kvactor_requests_total{reason="stop"})") == 0);
  CHECK(value("kvactor_requests_in_flight") == 0);
  CHECK(value("kvactor_prompt_tokens_total") == 7);
  CHECK(value("kvactor_generation_tokens_total") == 5);
  CHECK(value("kvactor_time_to_first_token_seconds_count") == 1);
  CHECK(value(R"(kvactor_time_to_first_token_seconds_bucket{le="0.025"})") == 1);
  CHECK(value(R"(kvactor_time_to_first_token_seconds_bucket{le="0.01"})") == 0);
  CHECK(value("kvactor_inter_token_latency_seconds_count") == 3);
  CHECK(value(R"(kvactor_inter_token_latency_seconds_bucket{le="0.005"})") == 3);
  CHECK(value("kvactor_kv_pages_used") == 12);
  CHECK(value("kvactor_kv_pages_total") == 64);
  CHECK(value("kvactor_preemptions_total") == 3);
  CHECK(value("kvactor_prefix_cache_hit_tokens_total") == 32);
  CHECK(value("kvactor_steps_total") == 9);
  CHECK(value("kvactor_step_seconds_count") == 1);
}

namespace {

// The whole HTTP response to one request.
std::string http(uint16_t port, const std::string& request) {
  test_client c(port);
  c.send(request);
  std::string out;
  while (auto line = c.read_line(std::chrono::seconds(5))) out += *line + "\n";
  return out;
}

} // namespace

TEST_CASE("the metrics endpoint: GET /metrics, 404 elsewhere, 405 for other methods, 500 on failure") {
  metrics_registry r;
  counter& c = r.add_counter("scrapes_total", "Scrapes");
  bool fail = false;
  r.on_collect([&] {
    if (fail) throw error("engine gone");
    c.add();
  });
  metrics_server server("127.0.0.1", 0, [&] { return r.render(); });
  REQUIRE(server.port() != 0);

  const std::string ok = http(server.port(), "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(ok.starts_with("HTTP/1.1 200 OK\r\n"));
  CHECK(ok.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n") != std::string::npos);
  CHECK(ok.ends_with("scrapes_total 1\n"));

  // Two scrapes on one kept-alive connection.
  {
    test_client keep(server.port());
    for (int i = 2; i <= 3; ++i) {
      keep.send("GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
      const auto body = keep.read_until("scrapes_total " + std::to_string(i) + "\n");
      CHECK(body.has_value());
    }
  }
  CHECK(http(server.port(), "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").starts_with("HTTP/1.1 404"));
  CHECK(http(server.port(), "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .starts_with("HTTP/1.1 405"));
  fail = true;
  const std::string broken = http(server.port(), "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(broken.starts_with("HTTP/1.1 500"));
  CHECK(broken.ends_with("cannot collect the metrics: engine gone\n"));
}

TEST_CASE("the metrics endpoint refuses an address it cannot use") {
  CHECK_THROWS_WITH_AS(metrics_server("not-an-ip", 0, [] { return std::string(); }),
                       "server.host: 'not-an-ip' is not an IP address", error);
  metrics_server first("127.0.0.1", 0, [] { return std::string(); });
  CHECK_THROWS_AS(metrics_server("127.0.0.1", first.port(), [] { return std::string(); }), error);
}
