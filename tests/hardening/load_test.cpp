// kvactord under load, on the embedded default model over loopback: 500
// connections at once, thousands of short requests. Every request gets
// exactly one terminal line; with limits high enough none fails, with low
// limits the only error is `overloaded`; afterwards the KV pages are back to
// their idle count, and resident memory comes back to within a few MiB of
// its level after the first round (docs/reliability.md).
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/net/daemon_fixture.h"
#include "tests/hardening/load_client.h"

using namespace kvactor::hardening;
using namespace kvactor::net::testing;

namespace {

constexpr size_t connections = 500;
constexpr int requests_per_connection = 4;

const char* const prompts[] = {"The for statement", "A class definition", "Lambda expressions", "The global statement",
                               "The with statement", "Coroutines", "The import system", "Assignment expressions"};

// Queues `per_connection` requests on each connection in `which`; request k
// of connection c asks for 2 + (c + k) % 3 tokens.
void queue_requests(load_client& load, const std::vector<size_t>& which, int per_connection, int round) {
  for (const size_t c : which) {
    for (int k = 0; k < per_connection; ++k) {
      const std::string id = "r" + std::to_string(round) + "-" + std::to_string(c) + "-" + std::to_string(k);
      const int max_tokens = 2 + int(c + size_t(k)) % 3;
      load.send(c, id, request_line(id, prompts[(c + size_t(k)) % 8], max_tokens,
                                    ",\"temperature\":0.8,\"seed\":" + std::to_string(c * 31 + size_t(k))));
    }
  }
}

std::vector<size_t> all_of(const load_client& load) {
  std::vector<size_t> out(load.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = i;
  return out;
}

struct tally {
  size_t requests = 0, finished = 0, overloaded = 0, other_errors = 0, not_one_terminal = 0, wrong_length = 0;
};

tally count(const load_client& load) {
  tally t;
  for (const auto* outcomes : load.outcomes()) {
    for (const auto& [id, r] : *outcomes) {
      ++t.requests;
      if (r.terminals != 1 || r.after_terminal != 0) ++t.not_one_terminal;
      if (r.finish_reason == "length") {
        ++t.finished;
        if (r.completion_tokens != r.tokens_streamed) ++t.wrong_length;
      } else if (r.error_code == "overloaded") {
        ++t.overloaded;
      } else {
        ++t.other_errors;
      }
    }
  }
  return t;
}

} // namespace

TEST_CASE("load: 500 connections, 2000 requests a round; one terminal line each; memory and pages come back") {
  // 512 pages of 16 tokens: the first round touches every one of them, so
  // what later rounds add to resident memory is what the daemon keeps.
  running_daemon d({"server.max_connections=600", "scheduler.max_queued=4096", "kv.num_pages=512"});
  const double idle_pages = d.stat("kv_pages_used");
  const int64_t rss_start = d.rss_kb();
  // Under a sanitizer two rounds (each takes ~30 s there); else sixteen.
  const int rounds = sanitized ? 2 : 16;
  std::vector<int64_t> rss_after;
  for (int round = 0; round < rounds; ++round) {
    CAPTURE(round);
    load_client load(d.port, connections);
    queue_requests(load, all_of(load), requests_per_connection, round);
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE_MESSAGE(load.run(120s), "not every request got its terminal line in time");
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const tally t = count(load);
    CHECK(t.requests == connections * requests_per_connection);
    CHECK(t.finished == t.requests);
    CHECK(t.not_one_terminal == 0);
    CHECK(t.wrong_length == 0);
    CHECK(load.unattributed().empty());
    CHECK(d.idle_with(idle_pages));
    // The server returns freed memory to the system a second after the
    // connections closed, once idle.
    std::this_thread::sleep_for(1500ms);
    rss_after.push_back(d.rss_kb());
    MESSAGE("round " << round << ": " << t.requests << " requests on " << connections << " connections in " << seconds
                     << " s; VmRSS " << rss_after.back() << " KiB (" << rss_start << " KiB at start)");
  }
  // Round 0 touches the KV pool (512 pages of 32 KiB: 16 MiB of the growth
  // from the start); later rounds are the same load again, so what they add
  // is what the daemon keeps. The server hands freed memory back to the
  // system once idle (malloc_trim): before it did, about 20 MiB stayed
  // resident after the load. While each connection had its own 64 KiB read
  // buffer, 5 to 10 MiB still stayed; with one buffer for all connections,
  // 0.3 to 2.6 MiB (docs/reliability.md). A leak fixed here (every
  // request's output actor kept alive by its monitor on the scheduler)
  // added 1,200 bytes a request, every round: 35 MiB here. Under a
  // sanitizer freed memory is held back on purpose (ASan's quarantine):
  // LeakSanitizer checks there, at exit.
  if (!sanitized) {
    constexpr int settled = 10; // rounds 0 to 10 let the allocator settle
    const double bytes_per_request = double(rss_after.back() - rss_after[settled]) * 1024 /
                                     double((rounds - 1 - settled) * connections * requests_per_connection);
    const double kept_mib = double(rss_after.back() - rss_after[0]) / 1024;
    MESSAGE("VmRSS after the load: " << kept_mib << " MiB above its level after round 0 (" << rss_after.back()
                                     << " KiB); grew " << bytes_per_request << " bytes a request after round "
                                     << settled);
    CHECK(kept_mib < 4);
    CHECK(bytes_per_request < 600);
  }
  CHECK(d.stat("connections") == 1); // the stats connection itself
}

TEST_CASE("load: with low limits the only error is overloaded, and each request still gets one terminal line") {
  running_daemon d({"server.max_connections=450", "server.max_queued_per_connection=2", "scheduler.max_queued=32",
                    "kv.num_pages=512"});
  const double idle_pages = d.stat("kv_pages_used");
  auto load_ptr = std::make_unique<load_client>(d.port, connections);
  load_client& load = *load_ptr;
  // Connections over the limit get one `overloaded` line and are closed.
  REQUIRE(load.run_until([&] { return load.closed_by_server() == connections - 450; }, 30s));
  REQUIRE(load.unattributed().size() == connections - 450);
  for (const auto& line : load.unattributed()) CHECK(line.find(R"("code":"overloaded")") != std::string::npos);
  std::vector<size_t> accepted;
  for (size_t c = 0; c < load.size(); ++c)
    if (!load.closed_by_server(c)) accepted.push_back(c);
  REQUIRE(accepted.size() == 450);

  queue_requests(load, accepted, 6, 0);
  REQUIRE_MESSAGE(load.run(120s), "not every request got its terminal line in time");
  const tally t = count(load);
  MESSAGE(t.requests << " requests: " << t.finished << " finished, " << t.overloaded << " overloaded");
  CHECK(t.requests == 450 * 6);
  CHECK(t.not_one_terminal == 0);
  CHECK(t.other_errors == 0);
  CHECK(t.wrong_length == 0);
  CHECK(t.overloaded >= 450 * 4); // at most 2 in flight per connection
  CHECK(t.finished > 0);
  CHECK(t.finished + t.overloaded == t.requests);
  load_ptr.reset(); // frees connections for the stats
  CHECK(d.idle_with(idle_pages));
}
