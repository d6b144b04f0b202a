#pragma once
// kvactord's metrics (kvactor_*), in a metrics_registry. The server reports
// what it sees of each request (first token, gaps between tokens, the
// result); gauges and totals kept by the engine are copied from
// engine_port::stats() at every scrape; step times come from whoever times
// the engine's steps.
#include <map>
#include <string>

#include "net/metrics.h"
#include "runtime/request.h"

namespace kvactor::net {

class serving_metrics {
 public:
  explicit serving_metrics(metrics_registry& registry);

  // -- from the server ------------------------------------------------------------
  void connection_opened() { connections_.add(1); }
  void connection_closed() { connections_.add(-1); }
  void connection_refused() { connections_refused_.add(); }
  void protocol_error() { protocol_errors_.add(); }
  void request_started() { in_flight_.add(1); }
  // A generation the server refused before the engine saw it.
  void request_refused(error_code code);
  void first_token(double seconds) { ttft_.observe(seconds); }
  // `tokens` arrived `seconds` after the previous ones: each counts as one gap
  // of seconds / tokens.
  void tokens_after(double seconds, int tokens);
  void request_finished(const generate_result& result);

  // -- from the engine ------------------------------------------------------------
  void update_from_engine(const std::map<std::string, double>& stats);
  void step_finished(double seconds) { step_time_.observe(seconds); }

 private:
  counter& requests_for(const generate_result& result);

  // kvactor_requests_total by reason: stop, length, cancelled, or the error code.
  std::map<std::string, counter*> requests_;
  counter& prompt_tokens_;
  counter& generation_tokens_;
  counter& protocol_errors_;
  counter& connections_refused_;
  gauge& connections_;
  gauge& in_flight_;
  histogram& ttft_;
  histogram& itl_;
  histogram& step_time_;
  gauge& running_;
  gauge& waiting_;
  gauge& pages_used_;
  gauge& pages_total_;
  counter& prefix_queried_;
  counter& prefix_hits_;
  counter& preemptions_;
  counter& steps_;
};

} // namespace kvactor::net
