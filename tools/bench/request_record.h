#pragma once
// What the load driver saw of one request, from its arrival to its end.
// Times are seconds since the run started (steady clock).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvactor::bench {

// One token line: when it arrived and how many tokens it carried.
struct token_arrival {
  double t = 0;
  int32_t tokens = 0;
};

enum class outcome : uint8_t {
  pending,      // still running
  finished,     // a final line ("done": true)
  error,        // an error line, or the connection failed under it
  disconnected, // the client hung up on purpose (cancel-storm)
  unanswered,   // no terminal line before the drain timeout
};

inline const char* to_string(outcome o) {
  switch (o) {
    case outcome::pending: return "pending";
    case outcome::finished: return "finished";
    case outcome::error: return "error";
    case outcome::disconnected: return "disconnected";
    case outcome::unanswered: return "unanswered";
  }
  return "?";
}

struct request_record {
  int64_t id = 0;                          // the protocol id, unique in the run
  std::string group;                       // the scenario's class of request ("short", "long"), or ""
  int32_t prompt_tokens = 0;               // tokens sent, a system prompt's not included
  int32_t max_tokens = 0;
  std::optional<int32_t> disconnect_after; // tokens to read before hanging up

  double start = 0; // open loop: the planned arrival; closed loop: when it was issued
  double end = 0;   // the terminal line, the hang-up or the give-up
  std::vector<token_arrival> arrivals;

  outcome result = outcome::pending;
  std::string finish_reason; // outcome::finished: "stop" or "length"
  std::string error_code;    // outcome::error: the protocol's code, or connection_failed / connection_lost

  int32_t terminal_lines = 0;       // final and error lines: exactly one is right
  int32_t lines_after_terminal = 0; // any line after the first terminal one: none is right

  // From the final line.
  std::optional<int32_t> usage_prompt, usage_cached, usage_completion;
  std::optional<double> server_queue_ms;

  int64_t tokens_received() const {
    int64_t n = 0;
    for (const auto& a : arrivals) n += a.tokens;
    return n;
  }
};

} // namespace kvactor::bench
