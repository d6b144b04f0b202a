#pragma once
// The line protocol over TCP (docs/protocol.md), on one Asio io_context
// thread. Per connection: a read loop that splits lines itself, parse_line,
// and a write queue; engine callbacks are posted onto the io thread, so all
// of a connection's state is touched by that thread alone.
//
// Limits, each refusing only what is over it:
// - server.max_connections: one more gets an `overloaded` line and is closed;
// - server.max_line_bytes: an over-long line gets `bad_request`, the rest of
//   it is skipped, the connection stays usable;
// - server.max_queued_per_connection: a request beyond it gets `overloaded`;
// - server.output_buffer_bytes: a client that stops reading while its
//   replies pile up is disconnected and its requests are cancelled, so it
//   can neither stall others nor grow the daemon's memory.
//
// Every request ends with exactly one terminal line (final or error), except
// on a connection that is gone; a connection that goes away has its requests
// cancelled, so the engine releases their KV pages. A client that only
// half-closes (EOF after its requests, e.g. `nc -N`) still gets its replies.
//
// Plain-text prompts of one connection run one after the other, so their raw
// replies never interleave; they count against the in-flight limit.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "net/daemon_config.h"
#include "net/engine_port.h"
#include "net/protocol.h"

namespace boost::asio {
class io_context;
}

namespace kvactor::net {

class serving_metrics;

class line_server {
 public:
  // Binds config.host:config.port (port 0: a free one) and starts accepting
  // on `io`. Throws kvactor::error when it cannot listen. `engine` and
  // `metrics` (optional) must outlive the server, and `io` must outlive
  // every generation the server started: shutdown() waits for them all.
  line_server(boost::asio::io_context& io, const server_config& config, const parse_limits& limits,
              engine_port& engine, serving_metrics* metrics = nullptr);
  // Closes every connection and cancels its requests.
  ~line_server();
  line_server(const line_server&) = delete;
  line_server& operator=(const line_server&) = delete;

  // The port it listens on.
  uint16_t port() const;

  // Graceful stop: stops accepting; new generations get `cancelled`; those
  // in flight get server.shutdown_grace_s to finish, then are cancelled.
  // Once every one has ended, connections are flushed (a few seconds at
  // most) and closed, and `on_stopped` runs on the io thread. Call on the
  // io thread. Calling it again cancels what is still running at once.
  void shutdown(std::function<void()> on_stopped);

  // The server's own counters: connections, requests_in_flight,
  // requests_total. Call on the io thread.
  std::map<std::string, double> stats() const;

  // The system prompt names requests may give from now on (a configuration
  // reload). Call on the io thread.
  void set_system_prompts(std::vector<std::string> names);

  struct state;

 private:
  std::shared_ptr<state> state_;
};

} // namespace kvactor::net
