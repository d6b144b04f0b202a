// kvactord against faults, on the embedded default model over loopback:
// clients that vanish, stall mid-line or never read; a KV cache too small
// for the load; prompts and max_tokens at and past their limits; bytes that
// are not UTF-8 and NULs; a forward pass that fails (the KVACTOR_FAULT_STEP
// test hook); SIGTERM under load; SIGHUP with a broken and then a good
// configuration. Each test asserts that every request ends with exactly one
// terminal line, that requests not hit by the fault get the output they get
// alone, and that the KV pages come back. docs/reliability.md lists them.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "tests/net/daemon_fixture.h"
#include "tests/hardening/load_client.h"

using namespace kvactor::hardening;
using namespace kvactor::net::testing;
namespace fs = std::filesystem;

namespace {

std::string message_of(const json::object& reply) { return std::string(reply.at("error").at("message").as_string()); }

// The greedy output of each request run alone, one after the other.
std::map<std::string, std::vector<int64_t>> solo_outputs(const running_daemon& d,
                                                         const std::map<std::string, std::string>& lines) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& [id, line] : lines) {
    test_client c(d.port);
    c.send_line(line);
    const replies r = collect(c, {quoted(id)}, 60s);
    REQUIRE(r.last(quoted(id)).at("finish_reason") == "length");
    out[id] = tokens_of(r.by_id.at(quoted(id)));
  }
  return out;
}

// Greedy requests over several prompts, keyed by id.
std::map<std::string, std::string> greedy_requests(const std::string& prefix, int n, int max_tokens) {
  const std::vector<std::string> prompts = {"The for statement", "A class definition", "Lambda expressions",
                                            "The global statement", "The with statement", "Coroutines",
                                            "The import system", "Assignment expressions"};
  std::map<std::string, std::string> out;
  for (int i = 0; i < n; ++i) {
    const std::string id = prefix + std::to_string(i);
    out[id] = request_line(id, prompts[size_t(i) % prompts.size()], max_tokens, R"(,"temperature":0)");
  }
  return out;
}

std::set<std::string> quoted_ids(const std::map<std::string, std::string>& lines) {
  std::set<std::string> ids;
  for (const auto& [id, line] : lines) ids.insert(quoted(id));
  return ids;
}

fs::path temp_file(const std::string& name) {
  return fs::temp_directory_path() / ("kvactord_" + name + "_" + std::to_string(::getpid()) + ".toml");
}

} // namespace

TEST_CASE("fault: clients vanishing mid-stream lose their requests; their pages return; others are unaffected") {
  running_daemon d;
  const double idle_pages = d.stat("kv_pages_used");
  const auto steady_lines = greedy_requests("s", 3, 24);
  const auto alone = solo_outputs(d, steady_lines);

  test_client steady(d.port);
  for (const auto& [id, line] : steady_lines) steady.send_line(line);
  // One client resets its connection, one closes it normally, each with
  // requests streaming.
  auto resetting = std::make_unique<test_client>(d.port);
  auto closing = std::make_unique<test_client>(d.port);
  for (int i = 0; i < 3; ++i) {
    resetting->send_line(request_line("v" + std::to_string(i), "The while statement", 1000));
    closing->send_line(request_line("w" + std::to_string(i), "The try statement", 1000));
  }
  REQUIRE(resetting->read_line(60s).has_value());
  REQUIRE(closing->read_line(60s).has_value());
  CHECK(d.stat("kv_pages_used") > idle_pages);
  resetting->reset();
  closing->close();

  const replies r = collect(steady, quoted_ids(steady_lines), 120s);
  check_one_terminal_each(r);
  for (const auto& [id, tokens] : alone) CHECK_MESSAGE(tokens_of(r.by_id.at(quoted(id))) == tokens, id);
  CHECK(d.idle_with(idle_pages));
  CHECK(d.stat("connections") == 2); // `steady` and the stats connection
}

TEST_CASE("fault: a half-written line, then silence, never becomes a request; the server keeps serving others") {
  running_daemon d;
  const double idle_pages = d.stat("kv_pages_used");
  test_client half(d.port);
  half.send(R"({"id":"half","prompt":"The with statement","max_tokens":4)");

  test_client other(d.port);
  other.send_line(request_line("o", "The if statement", 8));
  const replies r = collect(other, {quoted("o")}, 60s);
  CHECK(r.last(quoted("o")).at("finish_reason") == "length");
  CHECK(half.nothing_within(500ms));
  CHECK(d.stat("requests_total") == 1); // `other`'s alone

  // Reset: the half line is dropped with the connection.
  half.reset();
  CHECK(eventually([&] { return d.stat("connections") == 2; })); // `other` and the stats connection
  CHECK(d.stat("requests_total") == 1);
  CHECK(d.idle_with(idle_pages));

  // Closed for sending: the last line counts (docs/protocol.md), and this
  // one is not complete JSON.
  test_client cut(d.port);
  const std::string unfinished = R"({"id":"cut","prompt":"The with statement")";
  cut.send(unfinished);
  cut.shutdown_sending();
  const auto line = cut.read_line(10s);
  REQUIRE(line.has_value());
  const auto refused = parse(line);
  CHECK(error_code_of(refused) == "bad_request");
  CHECK(std::string(refused.at("error").at("message").as_string())
            .starts_with("invalid JSON at byte " + std::to_string(unfinished.size())));
  CHECK(cut.closed_by_server(10s));
  CHECK(d.stat("requests_total") == 1);
}

TEST_CASE("fault: a client that never reads is disconnected and its requests cancelled; others are unaffected") {
  running_daemon d({"server.output_buffer_bytes=1048576"});
  const double idle_pages = d.stat("kv_pages_used");
  const auto steady_lines = greedy_requests("s", 2, 32);
  const auto alone = solo_outputs(d, steady_lines);

  // Ids of 4000 bytes, echoed in every token line: 16 requests of 1000
  // tokens make 64 MB of replies, more than any socket buffer holds.
  test_client stalled(d.port, 4096);
  for (int i = 0; i < 16; ++i)
    stalled.send_line(request_line(std::string(4000, 'n') + std::to_string(i), "The while statement", 1000));
  test_client steady(d.port);
  for (const auto& [id, line] : steady_lines) steady.send_line(line);
  const replies r = collect(steady, quoted_ids(steady_lines), 120s);
  check_one_terminal_each(r);
  for (const auto& [id, tokens] : alone) CHECK_MESSAGE(tokens_of(r.by_id.at(quoted(id))) == tokens, id);

  CHECK(eventually([&] { return d.process.log().find("client is not reading its replies; disconnecting") !=
                                std::string::npos; },
                   60s));
  CHECK(d.idle_with(idle_pages, 60s));
  CHECK(d.stat("connections") == 2);
}

TEST_CASE("fault: KV exhaustion under load preempts, and every request still gets exactly its solo output") {
  // 16 pages of 16 tokens; eight requests of about 46 tokens need 24.
  running_daemon d({"kv.num_pages=16"});
  const double idle_pages = d.stat("kv_pages_used");
  const auto lines = greedy_requests("k", 8, 40);
  const auto alone = solo_outputs(d, lines);
  const double preemptions_before = d.stat("preemptions");

  test_client c(d.port);
  for (const auto& [id, line] : lines) c.send_line(line);
  const replies r = collect(c, quoted_ids(lines), 120s);
  check_one_terminal_each(r);
  for (const auto& [id, tokens] : alone) {
    CHECK_MESSAGE(r.last(quoted(id)).at("finish_reason") == "length", id);
    CHECK_MESSAGE(tokens_of(r.by_id.at(quoted(id))) == tokens, id);
  }
  const double preemptions = d.stat("preemptions") - preemptions_before;
  MESSAGE("preemptions: " << preemptions);
  CHECK(preemptions > 0);
  CHECK(d.idle_with(idle_pages));
}

TEST_CASE("fault: prompts at and past the context") {
  running_daemon d;
  test_client c(d.port);
  c.send_line(R"({"op":"models"})");
  const int64_t context = parse(c.read_line()).at("models").at(0).at("max_context").as_int64();
  REQUIRE(context == 1024);
  const auto tokens = [](int64_t n) {
    std::string s = "[";
    for (int64_t i = 0; i < n; ++i) s += (i ? ",5" : "5");
    return s + "]";
  };

  // Longer than the context, or leaving no room for one token: refused.
  for (const int64_t n : {context + 76, context}) {
    c.send_line(R"({"id":"long","tokens":)" + tokens(n) + R"(,"max_tokens":4})");
    const auto refused = parse(c.read_line(30s));
    CHECK(error_code_of(refused) == "context_length_exceeded");
    CHECK(message_of(refused) == "the prompt has " + std::to_string(n) + " tokens; the context holds " +
                                                   std::to_string(context) +
                                                   " with room for at least one output token");
  }
  // A text prompt that tokenizes past the context.
  std::string text;
  for (int i = 0; i < 600; ++i) text += "if else ";
  c.send_line(R"({"id":"text","prompt":")" + text + R"(","max_tokens":4})");
  CHECK(error_code_of(parse(c.read_line(30s))) == "context_length_exceeded");

  // Room for fewer tokens than asked: the output stops at the context's end.
  c.send_line(R"({"id":"edge","tokens":)" + tokens(context - 3) + R"(,"max_tokens":50,"ignore_eos":true})");
  const replies edge = collect(c, {quoted("edge")}, 60s);
  CHECK(edge.last(quoted("edge")).at("finish_reason") == "length");
  CHECK(edge.last(quoted("edge")).at("usage").at("completion_tokens") == 3);

  c.send_line(R"({"op":"health"})");
  CHECK(parse(c.read_line()).at("status") == "ok");
}

TEST_CASE("fault: max_tokens 0, at the limit, and past it") {
  running_daemon d;
  test_client c(d.port);
  // 0: the prompt is counted, nothing is generated.
  c.send_line(request_line("zero", "The with statement", 0));
  const replies zero = collect(c, {quoted("zero")}, 30s);
  REQUIRE(zero.by_id.at(quoted("zero")).size() == 1);
  const auto& z = zero.last(quoted("zero"));
  CHECK(z.at("finish_reason") == "length");
  CHECK(z.at("usage").at("completion_tokens") == 0);
  CHECK(z.at("usage").at("prompt_tokens").as_int64() > 0);
  c.send_line(request_line("zero-whole", "The with statement", 0, R"(,"stream":false)"));
  const auto w = collect(c, {quoted("zero-whole")}, 30s).last(quoted("zero-whole"));
  CHECK(w.at("text") == "");
  CHECK(w.at("tokens").as_array().empty());

  // The limit (4096) is accepted, and cut to what the context holds.
  c.send_line(request_line("limit", "The with statement", 4096));
  // About 1,000 tokens: minutes under ThreadSanitizer on two cores.
  const auto limit = collect(c, {quoted("limit")}, sanitized ? 600s : 120s).last(quoted("limit"));
  CHECK(limit.at("finish_reason") == "length");
  CHECK(limit.at("usage").at("prompt_tokens").as_int64() + limit.at("usage").at("completion_tokens").as_int64() ==
        1024);

  // Past it: refused by name, never clamped.
  const std::map<std::string, std::string> refused = {
      {"4097", "'max_tokens' must be between 0 and 4096, got 4097"},
      {"1000000000000", "'max_tokens' must be between 0 and 4096, got 1000000000000"},
      {"18446744073709551615", "'max_tokens' must be between 0 and 4096, got 18446744073709551615"},
      {"-1", "'max_tokens' must be between 0 and 4096, got -1"},
      {"1e3", "'max_tokens' must be an integer, got a number with a fraction or exponent"},
  };
  for (const auto& [value, message] : refused) {
    CAPTURE(value);
    c.send_line(R"({"id":"big","prompt":"x","max_tokens":)" + value + "}");
    const auto reply = parse(c.read_line());
    CHECK(reply.at("id") == "big");
    CHECK(error_code_of(reply) == "bad_request");
    CHECK(message_of(reply) == message);
  }
}

TEST_CASE("fault: bytes that are not UTF-8 are refused by offset; NUL is an ordinary character") {
  running_daemon d;
  test_client c(d.port);
  // Raw bytes that are not UTF-8, in a JSON line and in a plain-text line.
  const std::string head = R"({"id":"u","prompt":"caf)";
  c.send_line(head + "\xC3" + R"(("})");
  auto reply = parse(c.read_line());
  CHECK(error_code_of(reply) == "bad_request");
  CHECK(message_of(reply) == "invalid UTF-8 at byte " + std::to_string(head.size()));
  CHECK_FALSE(reply.contains("id")); // the line was not read as JSON
  test_client plain(d.port);
  plain.send_line("hello \xFF world");
  CHECK(plain.read_until("\n\n") == "error: bad_request: invalid UTF-8 at byte 6\n\n");
  // An escape that is no character.
  c.send_line(R"({"id":"s","prompt":"\udc00"})");
  CHECK(error_code_of(parse(c.read_line())) == "bad_request");
  // A raw NUL is a control character JSON strings may not hold.
  c.send_line(std::string(R"({"id":"n","prompt":"a)") + '\0' + R"(b"})");
  reply = parse(c.read_line());
  CHECK(error_code_of(reply) == "bad_request");
  CHECK(std::string(reply.at("error").at("message").as_string()).starts_with("invalid JSON"));

  // Escaped NUL in a prompt and a stop string: generated as any text.
  c.send_line(R"({"id":"nul","prompt":"a\u0000b","max_tokens":4,"stop":"\u0000","temperature":0,"ignore_eos":true})");
  const replies r = collect(c, {quoted("nul")}, 60s);
  CHECK(r.last(quoted("nul")).at("done") == true);
  // A raw NUL in a plain-text prompt is part of the prompt.
  plain.send_line(std::string("before") + '\0' + "after");
  const auto text = plain.read_until("\n\n", 60s);
  REQUIRE(text.has_value());
  CHECK(text->find("error:") == std::string::npos);

  c.send_line(R"({"op":"health"})");
  CHECK(parse(c.read_line()).at("status") == "ok");
}

TEST_CASE("fault: a failing forward pass ends its requests with internal; the daemon keeps serving") {
  // Pass 1 is the warm-up; pass 4 is a step of the requests below.
  running_daemon d({}, {{"KVACTOR_FAULT_STEP", "4"}});
  CHECK(d.process.log().find("test hook: forward pass 4 will fail (KVACTOR_FAULT_STEP)") != std::string::npos);
  const double idle_pages = d.stat("kv_pages_used");
  const auto lines = greedy_requests("f", 4, 12);
  test_client c(d.port);
  for (const auto& [id, line] : lines) c.send_line(line);
  const replies r = collect(c, quoted_ids(lines), 120s);
  check_one_terminal_each(r);

  const auto alone = solo_outputs(d, lines); // the fault has passed: these run normally
  int failed = 0;
  for (const auto& [id, tokens] : alone) {
    const auto& end = r.last(quoted(id));
    if (error_code_of(end) == "internal") {
      ++failed;
      CHECK(end.at("error").at("message") == "forward pass 4 failed on purpose (KVACTOR_FAULT_STEP)");
    } else {
      CHECK_MESSAGE(end.at("finish_reason") == "length", id);
      CHECK_MESSAGE(tokens_of(r.by_id.at(quoted(id))) == tokens, id);
    }
  }
  CHECK(failed >= 1);
  CHECK(d.idle_with(idle_pages));
  CHECK(d.process.log().find("reason=internal") != std::string::npos);
}

TEST_CASE("fault: the fault hook on the warm-up, or malformed, stops the daemon before it serves") {
  {
    daemon_process d({"--port", "0", "--metrics-port", "0", "backend.cpu_threads=1"}, {{"KVACTOR_FAULT_STEP", "1"}});
    CHECK(d.wait_exit(60s) == 1);
    CHECK(d.log().find("the warm-up generation failed: internal: forward pass 1 failed on purpose "
                       "(KVACTOR_FAULT_STEP)") != std::string::npos);
    CHECK(d.log().find(" serving ") == std::string::npos);
  }
  {
    daemon_process d({"--port", "0", "--metrics-port", "0"}, {{"KVACTOR_FAULT_STEP", "soon"}});
    CHECK(d.wait_exit(60s) == 1);
    CHECK(d.log().find("KVACTOR_FAULT_STEP must be a step number >= 1, got 'soon'") != std::string::npos);
  }
}

TEST_CASE("fault: SIGTERM under load from 100 connections (20 sanitized) ends each request with one terminal line, exit 0") {
  running_daemon d({"server.shutdown_grace_s=0.5"});
  // A sanitized daemon is several times slower: fewer connections there.
  const size_t connections = sanitized ? 20 : 100;
  load_client load(d.port, connections);
  for (size_t conn = 0; conn < load.size(); ++conn) {
    for (int k = 0; k < 4; ++k) {
      const std::string id = "q" + std::to_string(conn) + "-" + std::to_string(k);
      load.send(conn, id, request_line(id, "The raise statement", k % 2 ? 1000 : 3));
    }
  }
  // Under way: some requests have finished.
  REQUIRE(load.run_until(
      [&] {
        for (const auto* outcomes : load.outcomes())
          for (const auto& [id, r] : *outcomes)
            if (r.terminals > 0) return true;
        return false;
      },
      60s));
  d.process.signal(SIGTERM);
  REQUIRE(load.run_until([&] { return load.closed_by_server() == load.size(); }, 60s));
  size_t finished = 0, cancelled = 0;
  for (const auto* outcomes : load.outcomes()) {
    for (const auto& [id, r] : *outcomes) {
      CHECK_MESSAGE(r.terminals == 1, id);
      CHECK_MESSAGE(r.after_terminal == 0, id);
      if (r.finish_reason == "length") ++finished;
      else if (r.error_code == "cancelled") ++cancelled;
      else FAIL_CHECK(id << " ended with '" << r.error_code << "'");
    }
  }
  MESSAGE(finished << " finished, " << cancelled << " cancelled");
  CHECK(finished + cancelled == connections * 4);
  CHECK(d.process.wait_exit(60s) == 0);
  CHECK(d.process.log().find("stopped: every request ended") != std::string::npos);
}

TEST_CASE("fault: SIGHUP with a broken configuration keeps the running one; a good one applies live") {
  const fs::path config = temp_file("reload");
  const std::string reference = "The Python Language Reference describes the syntax and core semantics of the "
                                "language. It is terse, but attempts to be exact and complete.";
  std::ofstream(config) << "[log]\nlevel = \"info\"\n\n[[system_prompt]]\nname = \"reference\"\ntext = \"" << reference
                        << "\"\n";
  running_daemon d({"--config", config.string()});
  CHECK(d.stat("system_prompts_pinned") == 1);
  const auto log_has = [&](const std::string& text) {
    return eventually([&] { return d.process.log().find(text) != std::string::npos; }, 30s);
  };
  const auto ask = [&](const std::string& system) {
    test_client c(d.port);
    c.send_line(R"({"id":1,"system":")" + system + R"(","prompt":"The with statement","max_tokens":2})");
    return collect(c, {"1"}, 60s).last("1");
  };

  // A mistake: logged by key and line; the old configuration stays.
  std::ofstream(config) << "[server]\nhost = \"127.0.0.1\"\nport = \"seventy\"\n";
  d.process.signal(SIGHUP);
  CHECK(log_has("reload failed; the running configuration stays: " + config.string() +
                ": line 3, column 8: 'server.port' must be an integer, got a string"));
  CHECK(ask("reference").at("usage").at("cached_tokens").as_int64() >= 16);
  CHECK(d.stat("system_prompts_pinned") == 1);

  // System prompts the engine refuses (longer than the context): nothing changes.
  std::string huge;
  for (int i = 0; i < 1200; ++i) huge += " word";
  std::ofstream(config) << "[[system_prompt]]\nname = \"huge\"\ntext = \"" << huge << "\"\n";
  d.process.signal(SIGHUP);
  CHECK(log_has("the engine refused the system prompts: system prompt \"huge\" is"));
  CHECK(ask("reference").at("usage").at("cached_tokens").as_int64() >= 16);

  // A good file: prompts swapped, log level raised, a restart-only change noted.
  std::ofstream(config) << "[log]\nlevel = \"debug\"\n\n[scheduler]\nmax_seqs = 8\n\n"
                        << "[[system_prompt]]\nname = \"pirate\"\ntext = \"" << reference << " Arr.\"\n\n"
                        << "[[system_prompt]]\nname = \"assistant\"\ntext = \"You are a helpful assistant. You answer "
                        << "questions about the Python language, its statements, expressions and data model.\"\n";
  d.process.signal(SIGHUP);
  CHECK(log_has("reload: [scheduler] changed; that needs a restart, the running values stay"));
  CHECK(log_has("reloaded system_prompts=2 added=pirate,assistant removed=reference"));
  CHECK(d.stat("system_prompts_pinned") == 2);
  CHECK(ask("pirate").at("usage").at("cached_tokens").as_int64() >= 16);
  const auto gone = ask("reference");
  CHECK(error_code_of(gone) == "bad_request");
  CHECK(gone.at("error").at("message") ==
        "'system' names no configured system prompt: 'reference' (configured: 'pirate', 'assistant')");
  CHECK(log_has("connection opened")); // a debug line
  fs::remove(config);
}
