#pragma once
// One blocking connection for the ops around a run: models, stats, health,
// and waiting until the daemon is idle again. Every call has a time limit
// and throws kvactor::error naming the daemon when it is not met.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "tools/bench/scenario.h"

namespace kvactor::bench {

using daemon_stats = std::map<std::string, double>;

// The daemon at rest: nothing running or waiting, and no KV pages held
// beyond the pinned system prompts'.
bool is_idle(const daemon_stats& stats);

struct idle_wait {
  bool idle = false;
  double waited_s = 0;
  daemon_stats last; // the last stats read
};

class control_client {
 public:
  // Throws kvactor::error when it cannot connect.
  control_client(const std::string& host, uint16_t port,
                 std::chrono::milliseconds limit = std::chrono::seconds(10));
  ~control_client();
  control_client(const control_client&) = delete;
  control_client& operator=(const control_client&) = delete;

  model_facts models();      // the first model listed
  daemon_stats stats();
  bool healthy();            // {"op":"health"} answers "status": "ok"
  // Reads stats every 50 ms until is_idle() or `timeout_s` passed.
  idle_wait wait_idle(double timeout_s);

 private:
  struct io;
  std::string ask(const std::string& line); // one request line, one reply line

  std::unique_ptr<io> io_;
  std::string where_;
  std::chrono::milliseconds limit_;
};

} // namespace kvactor::bench
