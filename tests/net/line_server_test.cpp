// The line server against a scripted engine (fake_engine.h), over real
// loopback sockets: streaming, plain text, many requests on one connection,
// cancellation, every error code, every limit, authentication, clients that
// vanish or stop reading, and a graceful shutdown. Every wait is bounded.
#include <utility> // before Asio: GCC 12 in C++20 mode needs it first

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <future>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "net/line_server.h"
#include "net/log.h"
#include "net/serving_metrics.h"
#include "tests/net/fake_engine.h"
#include "tests/net/replies.h"
#include "tests/net/test_client.h"

using namespace kvactor;
using namespace kvactor::net;
using namespace kvactor::net::testing;
using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

server_config base_config() {
  server_config c;
  c.port = 0;
  c.max_connections = 8;
  c.max_queued_per_connection = 64;
  c.output_buffer_bytes = 1 << 20;
  c.default_max_tokens = 3;
  return c;
}

// The server on its own io thread, with a fake engine and metrics.
struct server_fixture {
  explicit server_fixture(const server_config& config = base_config(),
                          std::chrono::microseconds interval = 1ms)
      : engine(interval), metrics(registry) {
    log::set_level(log_level::warn);
    parse_limits limits;
    limits.max_line_bytes = size_t(config.max_line_bytes);
    limits.default_max_tokens = config.default_max_tokens;
    limits.max_tokens_cap = config.max_tokens_limit;
    server = std::make_unique<line_server>(io, config, limits, engine, &metrics);
    port = server->port();
    thread = std::thread([this] { io.run(); });
  }
  ~server_fixture() {
    work.reset();
    io.stop();
    thread.join();
    server.reset();
  }

  // Runs `f` on the io thread and returns its result.
  template <class F>
  auto on_io(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    asio::post(io, [&task] { task(); });
    REQUIRE(result.wait_for(10s) == std::future_status::ready);
    return result.get();
  }

  void begin_shutdown() {
    on_io([this] {
      server->shutdown([this] { stopped = true; });
      return 0;
    });
  }

  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  fake_engine engine;
  metrics_registry registry;
  serving_metrics metrics;
  std::unique_ptr<line_server> server;
  std::thread thread;
  uint16_t port = 0;
  std::atomic<bool> stopped = false;
};

// The value of one series in the Prometheus text, e.g.
// kvactor_requests_total{reason="overloaded"}.
double metric(const metrics_registry& registry, const std::string& series) {
  const std::string text = registry.render();
  const size_t at = text.find("\n" + series + " ");
  REQUIRE_MESSAGE(at != std::string::npos, series);
  return std::stod(text.substr(at + series.size() + 2));
}

} // namespace

TEST_CASE("JSON streaming: a token line per step, then one final line") {
  server_fixture f;
  test_client c(f.port);
  c.send_line(R"({"id":"a1","prompt":"Hello","max_tokens":3,"temperature":0})");
  for (int i = 0; i < 3; ++i) {
    const auto o = parse(c.read_line());
    CHECK(o.at("id") == "a1");
    CHECK(o.at("text").as_string() == "t" + std::to_string(i).append(" "));
    CHECK(json::serialize(o.at("tokens")) == "[" + std::to_string(i) + "]");
  }
  const auto done = parse(c.read_line());
  CHECK(done.at("id") == "a1");
  CHECK(done.at("done") == true);
  CHECK(done.at("finish_reason") == "length");
  CHECK(done.at("usage").at("completion_tokens") == 3);
  CHECK(done.at("usage").at("prompt_tokens") == 5);

  SUBCASE("stream false: only the final line, with the whole text and tokens") {
    c.send_line(R"({"id":7,"prompt":"x","max_tokens":3,"stream":false})");
    const auto whole = parse(c.read_line());
    CHECK(whole.at("id") == 7);
    CHECK(whole.at("done") == true);
    CHECK(whole.at("text") == "t0 t1 t2 ");
    CHECK(json::serialize(whole.at("tokens")) == "[0,1,2]");
  }
  SUBCASE("health, stats and models") {
    c.send_line(R"({"op":"health","id":1})");
    const auto health = parse(c.read_line());
    CHECK(health.at("id") == 1);
    CHECK(health.at("status") == "ok");
    CHECK(health.at("uptime_s").as_double() >= 0);
    c.send_line(R"({"op":"stats"})");
    const auto stats = parse(c.read_line()).at("stats").as_object();
    CHECK(stats.at("kv_pages_total").to_number<double>() == 100);
    CHECK(stats.at("connections").to_number<double>() == 1);
    CHECK(stats.at("requests_total").to_number<double>() == 1);
    CHECK(stats.at("requests_in_flight").to_number<double>() == 0);
    c.send_line(R"({"op":"models","id":"m"})");
    const auto models = parse(c.read_line());
    CHECK(models.at("id") == "m");
    CHECK(models.at("models").at(0).at("name") == "fake");
    CHECK(models.at("models").at(0).at("max_context") == 4096);
  }
  SUBCASE("requests without a seed get different random ones; a given seed is kept") {
    c.send_line(R"({"id":1,"prompt":"x","max_tokens":1})");
    c.send_line(R"({"id":2,"prompt":"x","max_tokens":1})");
    c.send_line(R"({"id":3,"prompt":"x","max_tokens":1,"seed":42})");
    collect(c, {"1", "2", "3"});
    const auto seen = f.engine.submitted();
    REQUIRE(seen.size() == 4);
    CHECK(seen[1].sampling.seed != seen[2].sampling.seed);
    CHECK(seen[3].sampling.seed == 42);
  }
}

TEST_CASE("plain-text mode: raw text, then an empty line; prompts of a connection run in turn") {
  server_fixture f;
  test_client c(f.port);
  c.send_line("The capital of France is");
  CHECK(c.read_until("\n\n") == "t0 t1 t2 \n\n");
  CHECK(f.engine.submitted().back().prompt == "The capital of France is");
  CHECK(f.engine.submitted().back().max_tokens == 3); // server.default_max_tokens

  // Two prompts at once: the second starts when the first is done, so the
  // replies do not interleave.
  c.send("first\r\nsecond\n");
  CHECK(c.read_bytes(22) == "t0 t1 t2 \n\nt0 t1 t2 \n\n");
  CHECK(f.engine.submitted().at(2).prompt == "second");

  // An error is plain text too.
  c.send_line("fail:overloaded");
  CHECK(c.read_until("\n\n") == "error: overloaded: scripted failure\n\n");
  // A blank line gets no reply.
  c.send_line("  \t");
  c.send_line(R"({"op":"health"})");
  CHECK(parse(c.read_line()).at("status") == "ok");
}

TEST_CASE("16 concurrent requests on one connection are multiplexed by id") {
  server_fixture f;
  test_client c(f.port);
  std::set<std::string> ids;
  for (int i = 0; i < 16; ++i) {
    c.send_line(R"({"id":)" + std::to_string(i) + R"(,"prompt":"p","max_tokens":)" + std::to_string(3 + i) + "}");
    ids.insert(std::to_string(i));
  }
  const replies r = collect(c, ids);
  check_one_terminal_each(r);
  for (int i = 0; i < 16; ++i) {
    const auto& lines = r.by_id.at(std::to_string(i));
    REQUIRE(lines.size() == size_t(3 + i + 1));
    for (int t = 0; t < 3 + i; ++t) CHECK(lines[t].at("text").as_string() == "t" + std::to_string(t).append(" "));
    CHECK(lines.back().at("finish_reason") == "length");
    CHECK(lines.back().at("usage").at("completion_tokens") == 3 + i);
  }
  // They ran together: request 15's first line came before request 0 ended.
  size_t first_of_15 = 0, end_of_0 = 0;
  for (size_t k = 0; k < r.lines.size(); ++k) {
    if (id_of(r.lines[k]) == "15" && first_of_15 == 0) first_of_15 = k;
    if (id_of(r.lines[k]) == "0" && is_terminal(r.lines[k])) end_of_0 = k;
  }
  CHECK(first_of_15 < end_of_0);
  CHECK(metric(f.registry, R"(kvactor_requests_total{reason="length"})") == 16);
  CHECK(metric(f.registry, "kvactor_generation_tokens_total") == 16 * 3 + 120);
  CHECK(metric(f.registry, "kvactor_time_to_first_token_seconds_count") == 16);
}

TEST_CASE("cancel: the request ends with a cancelled error line; unknown ids do nothing") {
  server_fixture f;
  test_client c(f.port);
  c.send_line(R"({"id":"long","prompt":"endless"})");
  CHECK(parse(c.read_line()).at("text") == "t0 ");
  c.send_line(R"({"op":"cancel","id":"long"})");
  replies r = collect(c, {R"("long")"});
  check_one_terminal_each(r);
  CHECK(error_code_of(r.last(R"("long")")) == "cancelled");
  CHECK(f.engine.cancels() == std::vector<generation_handle>{1});

  c.send_line(R"({"op":"cancel","id":"long"})"); // finished: nothing
  c.send_line(R"({"op":"cancel","id":99})");     // never sent: nothing
  c.send_line(R"({"op":"health"})");
  CHECK(parse(c.read_line()).at("status") == "ok");
  CHECK(f.engine.cancels().size() == 1);
}

TEST_CASE("every error code") {
  server_config config = base_config();
  config.max_queued_per_connection = 2;
  server_fixture f(config);
  test_client c(f.port);

  SUBCASE("bad_request: invalid JSON, an unknown field, an id already in flight") {
    c.send_line(R"({"id":6,"prompt":"Hi",)");
    auto o = parse(c.read_line());
    CHECK(error_code_of(o) == "bad_request");
    CHECK(!o.contains("id"));
    c.send_line(R"({"id":2,"prompt":"Hi","tempreature":0.5})");
    o = parse(c.read_line());
    CHECK(o.at("id") == 2);
    CHECK(o.at("error").at("message") == "unknown field 'tempreature'");

    c.send_line(R"({"id":"d","prompt":"endless"})");
    CHECK(parse(c.read_line()).at("text") == "t0 ");
    c.send_line(R"({"id":"d","prompt":"x"})");
    // The duplicate's error comes between the first one's token lines.
    for (;;) {
      o = parse(c.read_line());
      if (o.contains("error")) break;
    }
    CHECK(error_code_of(o) == "bad_request");
    CHECK(o.at("error").at("message") == "request id 'd' is already in flight on this connection");
    CHECK(f.engine.submitted().size() == 1);
    c.send_line(R"({"op":"cancel","id":"d"})");
    CHECK(error_code_of(collect(c, {R"("d")"}).last(R"("d")")) == "cancelled");
    CHECK(metric(f.registry, "kvactor_protocol_errors_total") == 2);
  }
  SUBCASE("context_length_exceeded and internal, from the engine") {
    c.send_line(R"({"id":1,"prompt":"fail:context_length_exceeded"})");
    CHECK(error_code_of(parse(c.read_line())) == "context_length_exceeded");
    c.send_line(R"({"id":2,"prompt":"fail:internal"})");
    CHECK(error_code_of(parse(c.read_line())) == "internal");
    c.send_line(R"({"id":3,"prompt":"throw"})");
    const auto o = parse(c.read_line());
    CHECK(o.at("id") == 3);
    CHECK(error_code_of(o) == "internal");
    CHECK(o.at("error").at("message") == "the engine cannot take requests: the fake engine is down");
    CHECK(metric(f.registry, R"(kvactor_requests_total{reason="internal"})") == 2);
  }
  SUBCASE("overloaded: over server.max_queued_per_connection, and from the engine") {
    c.send_line(R"({"id":1,"prompt":"endless"})");
    c.send_line(R"({"id":2,"prompt":"endless"})");
    c.send_line(R"({"id":3,"prompt":"x"})");
    json::object o;
    do o = parse(c.read_line());
    while (!o.contains("error"));
    CHECK(o.at("id") == 3);
    CHECK(error_code_of(o) == "overloaded");
    c.send_line(R"({"op":"cancel","id":1})");
    c.send_line(R"({"op":"cancel","id":2})");
    const replies r = collect(c, {"1", "2"});
    CHECK(error_code_of(r.last("1")) == "cancelled");
    CHECK(error_code_of(r.last("2")) == "cancelled");
    // Both slots are free again.
    c.send_line(R"({"id":4,"prompt":"fail:overloaded"})");
    CHECK(error_code_of(parse(c.read_line())) == "overloaded");
    CHECK(metric(f.registry, R"(kvactor_requests_total{reason="overloaded"})") == 2);
    CHECK(metric(f.registry, R"(kvactor_requests_total{reason="cancelled"})") == 2);
  }
}

TEST_CASE("a line over server.max_line_bytes gets bad_request, and the connection stays usable") {
  server_config config = base_config();
  config.max_line_bytes = 64;
  server_fixture f(config);
  test_client c(f.port);

  const std::string long_json = R"({"id":1,"prompt":")" + std::string(200, 'x') + R"("})";
  c.send_line(long_json);
  auto o = parse(c.read_line());
  CHECK(error_code_of(o) == "bad_request");
  CHECK(o.at("error").at("message") == "the line is longer than the limit of 64 bytes");

  // In pieces, across several reads: one error all the same.
  c.send(long_json.substr(0, 100));
  std::this_thread::sleep_for(20ms);
  c.send(long_json.substr(100) + "\n");
  CHECK(error_code_of(parse(c.read_line())) == "bad_request");

  // Plain text is answered in plain text.
  c.send_line(std::string(100, 'p'));
  CHECK(c.read_until("\n\n") == "error: bad_request: the line is longer than the limit of 64 bytes\n\n");

  // 64 bytes and a CRLF are fine.
  c.send(std::string(64, 'q') + "\r\n");
  CHECK(c.read_until("\n\n") == "t0 t1 t2 \n\n");
  c.send_line(R"({"id":2,"prompt":"ok","max_tokens":1})");
  CHECK(collect(c, {"2"}).last("2").at("done") == true);
  CHECK(f.engine.submitted().size() == 2);
}

TEST_CASE("server.max_connections: one more gets overloaded and is closed") {
  server_config config = base_config();
  config.max_connections = 2;
  server_fixture f(config);
  auto health = [](test_client& c) {
    c.send_line(R"({"op":"health"})");
    return parse(c.read_line()).at("status") == "ok";
  };
  auto a = std::make_unique<test_client>(f.port);
  test_client b(f.port);
  CHECK(health(*a));
  CHECK(health(b));

  test_client refused(f.port);
  const auto o = parse(refused.read_line());
  CHECK(error_code_of(o) == "overloaded");
  CHECK(o.at("error").at("message") == "the server has 2 connections, its limit (server.max_connections)");
  CHECK(refused.closed_by_server());
  CHECK(metric(f.registry, "kvactor_connections_refused_total") == 1);

  a.reset(); // a slot frees up
  CHECK(eventually([&] { return f.on_io([&] { return f.server->stats().at("connections"); }) == 1; }));
  test_client later(f.port);
  CHECK(health(later));
}

TEST_CASE("a client that stops reading is disconnected and its requests cancelled; others go on") {
  server_config config = base_config();
  config.output_buffer_bytes = 1 << 20;
  server_fixture f(config);
  test_client stalled(f.port, 4096);
  stalled.send_line(R"({"id":"flood","prompt":"big"})");
  test_client other(f.port);

  // The flood fills the socket buffers, then the server's 1 MiB: cut off.
  REQUIRE(eventually([&] { return f.engine.cancels().size() == 1; }, 20s));
  CHECK(f.engine.cancels().front() == 1);
  CHECK(eventually([&] { return f.engine.running() == 0; }));

  other.send_line(R"({"id":1,"prompt":"x","max_tokens":2})");
  const replies r = collect(other, {"1"});
  CHECK(r.last("1").at("done") == true);
  other.send_line(R"({"op":"stats"})");
  CHECK(parse(other.read_line()).at("stats").at("connections").to_number<double>() == 1);
  CHECK(f.on_io([&] { return f.server->stats().at("requests_in_flight"); }) == 0);
}

TEST_CASE("a client that disconnects mid-stream has each of its requests cancelled") {
  server_fixture f;
  auto c = std::make_unique<test_client>(f.port);
  for (const char* id : {"a", "b", "c"}) c->send_line(std::string(R"({"id":")") + id + R"(","prompt":"endless"})");
  std::set<std::string> seen;
  while (seen.size() < 3) seen.insert(id_of(parse(c->read_line())));

  SUBCASE("closed") { c->close(); }
  SUBCASE("reset") { c->reset(); }

  REQUIRE(eventually([&] { return f.engine.cancels().size() == 3; }));
  auto cancelled = f.engine.cancels();
  std::sort(cancelled.begin(), cancelled.end());
  CHECK(cancelled == std::vector<generation_handle>{1, 2, 3});
  CHECK(eventually([&] { return f.engine.running() == 0; }));
  CHECK(eventually([&] {
    return f.on_io([&] { return f.server->stats().at("connections") + f.server->stats().at("requests_in_flight"); }) == 0;
  }));
}

TEST_CASE("a client that only half-closes still gets its replies") {
  server_fixture f;
  test_client c(f.port);
  c.send(R"({"id":1,"prompt":"x","max_tokens":3})" "\n" R"({"id":2,"prompt":"y","max_tokens":2})");
  c.shutdown_sending(); // the last line has no '\n': the end of input ends it
  const replies r = collect(c, {"1", "2"});
  CHECK(r.by_id.at("1").size() == 4);
  CHECK(r.by_id.at("2").size() == 3);
  CHECK(c.closed_by_server());
}

TEST_CASE("authentication") {
  SUBCASE("on: a connection must authenticate first") {
    server_config config = base_config();
    config.auth_token = "s3cret";
    server_fixture f(config);

    test_client early(f.port);
    early.send_line(R"({"op":"health","id":1})");
    const auto o = parse(early.read_line());
    CHECK(error_code_of(o) == "bad_request");
    CHECK(o.at("error").at("message") == R"(authenticate first: send {"op":"auth","token":"..."})");
    CHECK(early.closed_by_server());

    test_client plain(f.port);
    plain.send_line("hello");
    CHECK(plain.read_until("\n\n") ==
          "error: bad_request: authenticate first: send {\"op\":\"auth\",\"token\":\"...\"}\n\n");
    CHECK(plain.closed_by_server());

    test_client wrong(f.port);
    wrong.send_line(R"({"op":"auth","token":"guess","id":"w"})");
    const auto w = parse(wrong.read_line());
    CHECK(w.at("id") == "w");
    CHECK(w.at("error").at("message") == "wrong auth token");
    CHECK(wrong.closed_by_server());

    test_client right(f.port);
    right.send_line(R"({"op":"auth","token":"s3cret","id":1})");
    CHECK(json::serialize(parse(right.read_line())) == R"({"id":1,"ok":true})");
    right.send_line(R"({"id":2,"prompt":"x","max_tokens":1})");
    CHECK(collect(right, {"2"}).last("2").at("done") == true);
    CHECK(f.engine.submitted().size() == 1);
  }
  SUBCASE("off: any token is accepted") {
    server_fixture f;
    test_client c(f.port);
    c.send_line(R"({"op":"auth","token":"anything"})");
    CHECK(json::serialize(parse(c.read_line())) == R"({"ok":true})");
    c.send_line(R"({"id":1,"prompt":"x","max_tokens":1})");
    CHECK(collect(c, {"1"}).last("1").at("done") == true);
  }
}

TEST_CASE("graceful shutdown: requests that finish in the grace time finish, the rest are cancelled") {
  server_config config = base_config();
  config.shutdown_grace_s = 0.4;
  server_fixture f(config, 20ms); // 20 ms per token
  test_client c(f.port);
  test_client plain(f.port);
  c.send_line(R"({"id":"short1","prompt":"x","max_tokens":5})");
  c.send_line(R"({"id":"short2","prompt":"x","max_tokens":6,"stream":false})");
  c.send_line(R"({"id":"long1","prompt":"endless"})");
  c.send_line(R"({"id":"long2","prompt":"endless"})");
  plain.send_line("endless");
  plain.send_line("queued behind it");
  CHECK(plain.read_bytes(3) == "t0 ");
  CHECK(eventually([&] { return f.engine.running() == 5; }));

  f.begin_shutdown();
  c.send_line(R"({"id":"late","prompt":"x"})");
  c.send_line(R"({"op":"health"})");

  const replies r = collect(c, {R"("short1")", R"("short2")", R"("long1")", R"("long2")", R"("late")"}, 10s);
  check_one_terminal_each(r);
  CHECK(r.last(R"("short1")").at("finish_reason") == "length");
  CHECK(r.last(R"("short2")").at("text") == "t0 t1 t2 t3 t4 t5 ");
  CHECK(error_code_of(r.last(R"("long1")")) == "cancelled");
  CHECK(error_code_of(r.last(R"("long2")")) == "cancelled");
  CHECK(error_code_of(r.last(R"("late")")) == "cancelled");
  CHECK(r.last(R"("late")").at("error").at("message") == "the server is shutting down");
  CHECK(r.by_id.at("-").front().at("status") == "stopping");

  // The plain-text prompt running is cancelled after its text, on a line
  // of its own; the one queued behind it ends at once.
  const auto cut = plain.read_until("\n\n");
  REQUIRE(cut.has_value());
  CHECK(cut->starts_with("t1 "));
  CHECK(cut->ends_with(" \nerror: cancelled: the request was cancelled\n\n"));
  CHECK(plain.read_until("\n\n") == "error: cancelled: the server is shutting down\n\n");

  CHECK(c.closed_by_server());
  CHECK(plain.closed_by_server());
  CHECK(eventually([&] { return f.stopped.load(); }));
  CHECK_THROWS(test_client(f.port)); // no longer listening
  CHECK(f.engine.running() == 0);
}

namespace {

// An engine that answers on its own thread and, like the actor engine,
// destroys the callbacks only later (when its output actor exits), here
// after the server and its io_context are gone.
class late_release_engine : public engine_port {
 public:
  generation_handle submit(const generate_request&, generation_callbacks callbacks) override {
    kept_ = std::move(callbacks);
    answer_ = std::thread([this] {
      kept_.on_token("t0 ", std::span<const int32_t>());
      generate_result r;
      r.reason = finish_reason::length;
      kept_.on_done(r);
    });
    return 1;
  }
  void cancel(generation_handle) override {}
  std::map<std::string, double> stats() override { return {}; }
  std::vector<model_info> models() override { return {model_info{"late", "FakeForCausalLM", 4096, 256}}; }

  void release() {
    answer_.join();
    kept_ = {};
  }

 private:
  generation_callbacks kept_;
  std::thread answer_;
};

} // namespace

TEST_CASE("a connection is destroyed on the io thread, not where the engine drops its callbacks") {
  // Under AddressSanitizer a connection destroyed by the engine's thread
  // after the io_context is a use after free of the context's timer service.
  late_release_engine engine;
  auto io = std::make_unique<asio::io_context>();
  parse_limits limits;
  const server_config config = base_config();
  auto server = std::make_unique<line_server>(*io, config, limits, engine, nullptr);
  std::thread thread([&] { io->run(); });
  {
    test_client c(server->port());
    c.send_line(R"({"id":1,"prompt":"x"})");
    const replies r = collect(c, {"1"});
    CHECK(r.last("1").at("done") == true);
  }
  std::promise<void> stopped;
  asio::post(*io, [&] { server->shutdown([&] { stopped.set_value(); }); });
  REQUIRE(stopped.get_future().wait_for(10s) == std::future_status::ready);
  thread.join(); // nothing left to run
  server.reset();
  io.reset();
  engine.release(); // the last callbacks go on this thread, with no io_context left
}
