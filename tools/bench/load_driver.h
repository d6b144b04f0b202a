#pragma once
// Sends a workload to a daemon and records what comes back, on one Asio
// thread over many connections.
//
// Open loop (`rate`): requests arrive as a Poisson process, whatever the
// daemon's pace; a request's latency counts from its planned arrival, so a
// late sender never hides queueing. Closed loop (`concurrency`): that many
// requests are in flight, each finished one replaced at once.
//
// Connections: a request takes an idle connection, else a new one while
// fewer than max_connections are open, else shares the least busy one (ids
// are unique in the run, so replies sort themselves out). A request that
// will hang up (cancel-storm) gets a connection of its own, since closing a
// connection cancels everything on it.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tools/bench/request_record.h"
#include "tools/bench/scenario.h"

namespace kvactor::bench {

struct load_options {
  std::string host = "127.0.0.1";
  uint16_t port = 7070;
  std::optional<double> rate;         // requests a second: open loop
  int32_t concurrency = 1;            // without a rate: closed loop
  std::optional<int64_t> requests;    // stop sending after this many...
  std::optional<double> duration_s;   // ...or after this long, whichever comes first
  uint64_t seed = 1;                  // arrivals, and each request's sampling seed
  int32_t max_connections = 64;
  double drain_timeout_s = 120;       // after the last send: wait this long for replies at most
};

// What the progress display needs, sent every progress period.
struct progress_counts {
  double elapsed_s = 0;
  int64_t sent = 0, ended = 0, errors = 0, output_tokens = 0;
};

struct load_result {
  std::vector<request_record> records; // by id
  // Lines that named no request of the run (a connection refused at the
  // daemon's max_connections gets one), and their error codes.
  size_t unattributed_lines = 0;
  std::map<std::string, size_t> unattributed_errors;
};

// Runs until every request sent has ended or the drain timeout passed.
// Throws kvactor::error when the host cannot be resolved.
load_result run_load(const load_options& options, workload& work,
                     const std::function<void(const progress_counts&)>& on_progress, double progress_period_s);

} // namespace kvactor::bench
