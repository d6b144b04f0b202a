// The kvactord binary end to end, on the embedded default model, over real
// sockets: streaming, plain text, 16 requests on one connection (each the
// same as when run alone), cancellation, a client vanishing mid-stream (its
// KV pages come back), the metrics endpoint against what was sent, systemd
// notifications, SIGTERM under load, configuration errors, and the systemd
// unit. Every wait is bounded.
#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "tests/net/daemon_fixture.h"
#include "tests/net/notify_socket.h"
#include "tests/net/replies.h"
#include "tests/net/test_client.h"

using namespace kvactor::net::testing;
using namespace std::chrono_literals;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

std::string text_of(const std::vector<json::object>& lines) {
  std::string out;
  for (const auto& o : lines)
    if (o.contains("text")) out += std::string(o.at("text").as_string());
  return out;
}

// GET `path` over HTTP/1.1; the whole response.
std::string http_get(uint16_t port, const std::string& path) {
  test_client c(port);
  c.send("GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  std::string out;
  while (auto line = c.read_line(10s)) out += *line + "\n";
  return out;
}

// The value of one series in a Prometheus text body.
double metric(const std::string& body, const std::string& series) {
  const size_t at = body.find("\n" + series + " ");
  REQUIRE_MESSAGE(at != std::string::npos, series << " not in:\n" << body);
  return std::stod(body.substr(at + series.size() + 2));
}

} // namespace

TEST_CASE("kvactord: streaming, stream false and plain text on the default model") {
  running_daemon d;
  test_client c(d.port);
  const std::string prompt = R"(The \"with\" statement)";
  c.send_line(request_line("s", prompt, 24, R"(,"temperature":0)"));
  const replies streamed = collect(c, {quoted("s")}, 60s);
  check_one_terminal_each(streamed);
  const auto& done = streamed.last(quoted("s"));
  CHECK(done.at("finish_reason") == "length");
  CHECK(done.at("usage").at("completion_tokens") == 24);
  CHECK(done.at("usage").at("prompt_tokens").as_int64() > 0);
  CHECK(tokens_of(streamed.by_id.at(quoted("s"))).size() == 24);

  // The same request, whole: the same tokens and text.
  c.send_line(request_line("w", prompt, 24, R"(,"temperature":0,"stream":false)"));
  const replies whole = collect(c, {quoted("w")}, 60s);
  REQUIRE(whole.by_id.at(quoted("w")).size() == 1);
  const auto& w = whole.last(quoted("w"));
  std::vector<int64_t> whole_tokens;
  for (const auto& t : w.at("tokens").as_array()) whole_tokens.push_back(t.as_int64());
  CHECK(whole_tokens == tokens_of(streamed.by_id.at(quoted("s"))));
  CHECK(std::string(w.at("text").as_string()) == text_of(streamed.by_id.at(quoted("s"))));

  // Plain text: the raw continuation and an empty line.
  test_client plain(d.port);
  plain.send_line("The \"for\" statement is used");
  const auto reply = plain.read_until("\n\n", 60s);
  REQUIRE(reply.has_value());
  CHECK(reply->size() > 2);

  c.send_line(R"({"op":"models","id":1})");
  const auto models = parse(c.read_line());
  CHECK(models.at("models").at(0).at("name") == "default");
  CHECK(models.at("models").at(0).at("architecture") == "LlamaForCausalLM");
}

TEST_CASE("kvactord: 16 concurrent requests on one connection, each as when run alone") {
  running_daemon d;
  test_client c(d.port);
  const std::vector<std::string> prompts = {"The for statement", "A class definition", "Lambda expressions",
                                            "The global statement"};
  std::set<std::string> ids;
  std::map<std::string, std::string> lines;
  for (int i = 0; i < 16; ++i) {
    const std::string id = "r" + std::to_string(i);
    lines[id] = request_line(id, prompts[i % 4], 8 + i,
                        ",\"seed\":" + std::to_string(100 + i) + (i % 3 == 0 ? ",\"temperature\":0" : ""));
    ids.insert(quoted(id));
  }
  for (const auto& [id, line] : lines) c.send_line(line);
  const replies together = collect(c, ids, 120s);
  check_one_terminal_each(together);

  for (int i = 0; i < 16; ++i) {
    const std::string id = "r" + std::to_string(i);
    const auto& mine = together.by_id.at(quoted(id));
    CHECK(mine.back().at("finish_reason") == "length");
    CHECK(tokens_of(mine).size() == size_t(8 + i));
    // Alone, with the same seed: the same output.
    test_client alone(d.port);
    alone.send_line(lines[id]);
    const replies single = collect(alone, {quoted(id)}, 60s);
    CHECK_MESSAGE(tokens_of(single.by_id.at(quoted(id))) == tokens_of(mine), id);
  }
}

TEST_CASE("kvactord: cancel, and a client vanishing mid-stream gives its KV pages back") {
  running_daemon d;
  const double idle_pages = d.stat("kv_pages_used");

  test_client c(d.port);
  c.send_line(request_line("long", "Python is", 1000));
  CHECK(parse(c.read_line(60s)).at("id") == "long");
  c.send_line(R"({"op":"cancel","id":"long"})");
  const replies r = collect(c, {quoted("long")}, 60s);
  CHECK(error_code_of(r.last(quoted("long"))) == "cancelled");

  auto vanishing = std::make_unique<test_client>(d.port);
  for (int i = 0; i < 4; ++i) vanishing->send_line(request_line("v" + std::to_string(i), "The while statement", 1000));
  std::set<std::string> started;
  while (started.size() < 4) started.insert(id_of(parse(vanishing->read_line(60s))));
  CHECK(d.stat("kv_pages_used") > idle_pages);
  vanishing->reset();

  // Nothing running, the pages back, and every request's end handled by the
  // server (it arrives there after the scheduler freed the pages).
  CHECK(d.idle_with(idle_pages));
}

TEST_CASE("kvactord: the metrics endpoint agrees with what was sent") {
  const uint16_t metrics_port = free_port();
  running_daemon d({}, {}, metrics_port);
  test_client c(d.port);
  std::set<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    c.send_line(request_line("m" + std::to_string(i), "The if statement", 10 + i));
    ids.insert(quoted("m" + std::to_string(i)));
  }
  c.send_line(R"({"id":"bad","prompt":"x","max_tokens":-1})"); // refused by the parser
  c.send_line(request_line("c", "The try statement", 1000));
  CHECK(parse(c.read_line(60s)).contains("error")); // the bad line's error comes first
  ids.insert(quoted("c"));
  // Cancelled once it has produced a token.
  replies before;
  while (before.by_id[quoted("c")].empty()) add(before, parse(c.read_line(60s)));
  c.send_line(R"({"op":"cancel","id":"c"})");
  const replies r = collect(c, ids, 120s, before);
  check_one_terminal_each(r);
  CHECK(error_code_of(r.last(quoted("c"))) == "cancelled");
  int prompt_tokens = 0, generated = 0;
  for (const auto& id : ids) {
    const auto& end = r.last(id);
    if (end.contains("usage")) {
      prompt_tokens += int(end.at("usage").at("prompt_tokens").as_int64());
      generated += int(end.at("usage").at("completion_tokens").as_int64());
    }
  }
  CHECK(generated == 10 + 11 + 12 + 13 + 14);

  const std::string response = http_get(metrics_port, "/metrics");
  REQUIRE(response.starts_with("HTTP/1.1 200 OK"));
  CHECK(response.find("Content-Type: text/plain; version=0.0.4") != std::string::npos);
  const std::string body = response.substr(response.find("\n\n") + 1);
  CHECK(metric(body, R"(kvactor_requests_total{reason="length"})") == 5);
  CHECK(metric(body, R"(kvactor_requests_total{reason="cancelled"})") == 1);
  CHECK(metric(body, R"(kvactor_requests_total{reason="bad_request"})") == 0);
  CHECK(metric(body, "kvactor_protocol_errors_total") == 1);
  CHECK(metric(body, "kvactor_prompt_tokens_total") >= prompt_tokens); // the cancelled one's too
  CHECK(metric(body, "kvactor_generation_tokens_total") >= generated);
  CHECK(metric(body, "kvactor_time_to_first_token_seconds_count") == 6);
  CHECK(metric(body, "kvactor_inter_token_latency_seconds_count") >= generated - 5);
  CHECK(metric(body, "kvactor_kv_pages_total") == d.stat("kv_pages_total"));
  CHECK(metric(body, "kvactor_kv_pages_used") == d.stat("kv_pages_used"));
  CHECK(metric(body, "kvactor_running_sequences") == 0);
  CHECK(metric(body, "kvactor_steps_total") > 0);
  CHECK(metric(body, "kvactor_step_seconds_count") > 0);
  CHECK(metric(body, "kvactor_connections") == 1);
  CHECK(http_get(metrics_port, "/").starts_with("HTTP/1.1 404"));
}

TEST_CASE("kvactord: READY=1 once the port accepts, watchdog pings, STOPPING=1 on SIGTERM") {
  notify_socket systemd;
  daemon_process d({"--port", "0", "--metrics-port", "0"},
                   {{"NOTIFY_SOCKET", systemd.path.string()}, {"WATCHDOG_USEC", "200000"}});
  CHECK(systemd.receive() == "STATUS=loading the model");
  CHECK(systemd.receive() == "STATUS=warming up");
  const auto ready = systemd.receive();
  REQUIRE(ready.has_value());
  REQUIRE(ready->starts_with("READY=1\nSTATUS=serving on 127.0.0.1:"));
  const uint16_t port = uint16_t(std::stoi(ready->substr(ready->rfind(':') + 1)));
  {
    test_client c(port); // accepts at once
    c.send_line(R"({"op":"health"})");
    CHECK(parse(c.read_line()).at("status") == "ok");
  }
  // Every 100 ms, half of WatchdogSec.
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(systemd.receive(2s) == "WATCHDOG=1");
  CHECK(systemd.receive(2s) == "WATCHDOG=1");
  CHECK(systemd.receive(2s) == "WATCHDOG=1");
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);

  d.signal(SIGTERM);
  std::optional<std::string> m;
  do m = systemd.receive(10s);
  while (m == "WATCHDOG=1");
  CHECK(m == "STOPPING=1\nSTATUS=stopping");
  CHECK(d.wait_exit() == 0);
}

TEST_CASE("kvactord: configured system prompts are pinned before it serves, and shared") {
  const fs::path config = fs::temp_directory_path() / ("kvactord_system_" + std::to_string(::getpid()) + ".toml");
  std::ofstream(config) << "[[system_prompt]]\n"
                           "name = \"reference\"\n"
                           "text = \"The Python Language Reference describes the syntax and core semantics of the "
                           "language. It is terse, but attempts to be exact and complete.\"\n";
  running_daemon d({"--config", config.string()});
  fs::remove(config);
  CHECK(d.stat("system_prompts_pinned") == 1);
  CHECK(d.stat("kv_pages_pinned") >= 1);

  test_client c(d.port);
  c.send_line(R"({"id":1,"system":"reference","prompt":"The with statement","max_tokens":4})");
  const auto done = collect(c, {"1"}, 60s).last("1");
  CHECK(done.at("finish_reason").as_string().size() > 0);
  CHECK(done.at("usage").at("cached_tokens").as_int64() >= 16);
  c.send_line(R"({"id":2,"system":"pirate","prompt":"Ahoy"})");
  const auto refused = parse(c.read_line());
  CHECK(error_code_of(refused) == "bad_request");
  CHECK(refused.at("error").at("message") ==
        "'system' names no configured system prompt: 'pirate' (configured: 'reference')");
}

TEST_CASE("kvactord: SIGTERM under load ends every request with exactly one terminal line, exit 0") {
  // A sanitized daemon is several times slower: its short requests need more
  // of a grace to finish in (the long ones are cancelled either way).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  running_daemon d({"server.shutdown_grace_s=3"});
#else
  running_daemon d({"server.shutdown_grace_s=0.3"});
#endif
  test_client a(d.port), b(d.port);
  std::set<std::string> ids_a, ids_b;
  for (int i = 0; i < 6; ++i) {
    // Short ones finish within the grace time; long ones are cancelled.
    const bool longer = i % 2 == 1;
    const std::string id = (longer ? "long" : "short") + std::to_string(i);
    a.send_line(request_line(id, "The assert statement", longer ? 1000 : 4));
    ids_a.insert(quoted(id));
    b.send_line(request_line(id, "The pass statement", longer ? 1000 : 4));
    ids_b.insert(quoted(id));
  }
  REQUIRE(a.read_line(60s).has_value());
  REQUIRE(b.read_line(60s).has_value());
  d.process.signal(SIGTERM);

  for (auto* c : {&a, &b}) {
    const replies r = collect(*c, c == &a ? ids_a : ids_b, 60s);
    check_one_terminal_each(r);
    for (const auto& [id, lines] : r.by_id) {
      if (id.starts_with("\"long")) {
        CHECK_MESSAGE(error_code_of(lines.back()) == "cancelled", id);
      } else if (id.starts_with("\"short")) {
        CHECK_MESSAGE(lines.back().at("finish_reason") == "length", id);
      }
    }
    CHECK(c->closed_by_server(10s));
  }
  CHECK(d.process.wait_exit() == 0);
  CHECK(d.process.log().find("stopped: every request ended") != std::string::npos);
}

TEST_CASE("kvactord: a bad configuration or command line is refused before anything starts") {
  const fs::path config = fs::temp_directory_path() / ("kvactord_bad_" + std::to_string(::getpid()) + ".toml");
  std::ofstream(config) << "[server]\nhost = \"127.0.0.1\"\nport = \"seventy\"\n";
  {
    daemon_process d({"--config", config.string()});
    CHECK(d.wait_exit() == 2);
    CHECK(d.log() == "kvactord: " + config.string() +
                         ": line 3, column 8: 'server.port' must be an integer, got a string\n");
  }
  fs::remove(config);
  {
    daemon_process d({"--port", "0", "scheduler.max_seqs=0"});
    CHECK(d.wait_exit() == 2);
    CHECK(d.log().find("'scheduler.max_seqs'") != std::string::npos);
  }
  {
    daemon_process d({"--prot", "7070"});
    CHECK(d.wait_exit() == 2);
    CHECK(d.log().starts_with("kvactord: unknown option --prot\nusage: kvactord"));
  }
  {
    daemon_process d({"--port", "0", "--model", "/nonexistent/model"});
    CHECK(d.wait_exit() == 1);
    CHECK(d.log().find("/nonexistent/model/config.json") != std::string::npos);
    CHECK(d.log().find(" serving ") == std::string::npos);
  }
}

TEST_CASE("config/kvactord.service passes systemd-analyze verify") {
  const fs::path unit_dir = fs::temp_directory_path() / ("kvactord_unit_" + std::to_string(::getpid()));
  fs::create_directories(unit_dir);
  std::ifstream in(std::string(KVACTOR_SOURCE_DIR) + "/config/kvactord.service");
  std::stringstream text;
  text << in.rdbuf();
  std::string unit = text.str();
  // The binary it names must exist: point it at the one built here.
  const std::string installed = "/usr/local/bin/kvactord";
  const size_t at = unit.find("ExecStart=" + installed);
  REQUIRE(at != std::string::npos);
  unit.replace(at + 10, installed.size(), KVACTORD);
  std::ofstream(unit_dir / "kvactord.service") << unit;

  const std::string command = "systemd-analyze verify " + (unit_dir / "kvactord.service").string() + " 2>&1";
  FILE* p = popen(command.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = pclose(p);
  INFO(out);
  REQUIRE_MESSAGE(WEXITSTATUS(status) != 127, "systemd-analyze is missing: apt-get install systemd");
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(out.find("kvactord.service") == std::string::npos);
  fs::remove_all(unit_dir);
}
