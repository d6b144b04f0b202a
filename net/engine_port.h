#pragma once
// What the line server needs from an engine, without naming CAF: start a
// generation with two callbacks, cancel it, read its counters. The daemon
// plugs in the actor engine (actors/engine_port_caf.h); the server's tests
// plug in a scripted fake.
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "net/protocol.h"
#include "runtime/request.h"

namespace kvactor::net {

struct generation_callbacks {
  // Text produced since the previous call (whole UTF-8 characters; it may be
  // empty while a character or a possible stop string is held back) and the
  // ids of the tokens produced since then.
  std::function<void(std::string_view text, std::span<const int32_t> tokens)> on_token;
  // The end of the request, whatever it was: finished, refused, cancelled,
  // failed.
  std::function<void(const generate_result& result)> on_done;
};

using generation_handle = uint64_t;

// Every method may be called from any thread.
class engine_port {
 public:
  virtual ~engine_port() = default;

  // Starts a generation. The callbacks may run on any thread, even before
  // submit returns; for one request they run one at a time and in order:
  // on_token any number of times, then on_done exactly once. A request the
  // engine refuses (bad_request, context_length_exceeded, overloaded) ends
  // through on_done as well; submit itself throws only when the engine
  // cannot take requests at all.
  virtual generation_handle submit(const generate_request& request, generation_callbacks callbacks) = 0;

  // Asks a generation to end early: it ends with finish_reason::cancelled,
  // or normally if it finished meanwhile. Unknown handles: nothing.
  virtual void cancel(generation_handle handle) = 0;

  // Counters and gauges by name (the stat_* keys below, and any others the
  // engine has). Answers within about a second; throws kvactor::error when
  // the engine does not answer.
  virtual std::map<std::string, double> stats() = 0;

  // The models served; fixed once the engine is started.
  virtual std::vector<model_info> models() = 0;
};

// -- stats keys the daemon reads --------------------------------------------------
// Gauges:
inline constexpr std::string_view stat_requests_running = "requests_running"; // sequences holding KV pages
inline constexpr std::string_view stat_requests_waiting = "requests_waiting";
inline constexpr std::string_view stat_kv_pages_total = "kv_pages_total";
inline constexpr std::string_view stat_kv_pages_used = "kv_pages_used";
// Counters (totals since start):
inline constexpr std::string_view stat_preemptions = "preemptions";
inline constexpr std::string_view stat_prefix_queried_tokens = "prefix_cache_queried_tokens";
inline constexpr std::string_view stat_prefix_hit_tokens = "prefix_cache_hit_tokens";
inline constexpr std::string_view stat_steps = "steps";

} // namespace kvactor::net
