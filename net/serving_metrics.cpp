#include "net/serving_metrics.h"

#include "net/engine_port.h"

namespace kvactor::net {

namespace {

// Seconds: from a millisecond (a decode step of a small model) to a minute
// (a long queue).
const std::vector<double> latency_buckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                             0.5,   1,      2.5,   5,    10,    30,   60};
const std::vector<double> gap_buckets = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                                         0.1,    0.2,   0.5,   1,     2.5};

std::string reason_label(const generate_result& r) {
  switch (r.reason) {
    case finish_reason::stop:
    case finish_reason::length:
    case finish_reason::cancelled: return std::string(to_string(r.reason));
    case finish_reason::error: break;
  }
  return std::string(to_string(r.error == error_code::none ? error_code::internal : r.error));
}

} // namespace

serving_metrics::serving_metrics(metrics_registry& registry)
    : prompt_tokens_(registry.add_counter("kvactor_prompt_tokens_total", "Prompt tokens of finished requests")),
      generation_tokens_(registry.add_counter("kvactor_generation_tokens_total", "Tokens generated")),
      protocol_errors_(registry.add_counter("kvactor_protocol_errors_total",
                                            "Request lines refused before reaching the engine")),
      connections_refused_(registry.add_counter("kvactor_connections_refused_total",
                                                "Connections refused at server.max_connections")),
      connections_(registry.add_gauge("kvactor_connections", "Open client connections")),
      in_flight_(registry.add_gauge("kvactor_requests_in_flight", "Generations started and not finished")),
      ttft_(registry.add_histogram("kvactor_time_to_first_token_seconds",
                                   "From a request's arrival to its first token", latency_buckets)),
      itl_(registry.add_histogram("kvactor_inter_token_latency_seconds", "Time between a request's tokens",
                                  gap_buckets)),
      step_time_(registry.add_histogram("kvactor_step_seconds", "Duration of one engine step's forward pass",
                                        latency_buckets)),
      running_(registry.add_gauge("kvactor_running_sequences", "Sequences holding KV pages")),
      waiting_(registry.add_gauge("kvactor_waiting_sequences", "Sequences waiting to be scheduled")),
      pages_used_(registry.add_gauge("kvactor_kv_pages_used", "KV cache pages in use")),
      pages_total_(registry.add_gauge("kvactor_kv_pages_total", "KV cache pages")),
      prefix_queried_(registry.add_counter("kvactor_prefix_cache_queried_tokens_total",
                                           "Prompt tokens looked up in the prefix cache")),
      prefix_hits_(registry.add_counter("kvactor_prefix_cache_hit_tokens_total",
                                        "Prompt tokens whose KV came from the prefix cache")),
      preemptions_(registry.add_counter("kvactor_preemptions_total", "Sequences preempted for lack of KV pages")),
      steps_(registry.add_counter("kvactor_steps_total", "Engine steps run")) {
  // Every reason exists from the start, so a rate over it is never missing.
  for (const char* reason : {"stop", "length", "cancelled", "bad_request", "context_length_exceeded",
                             "overloaded", "internal"}) {
    requests_[reason] = &registry.add_counter("kvactor_requests_total", "Generations finished, by reason",
                                              {{"reason", reason}});
  }
}

counter& serving_metrics::requests_for(const generate_result& result) {
  // reason_label only yields the labels registered above.
  return *requests_.at(reason_label(result));
}

void serving_metrics::request_refused(error_code code) {
  generate_result r;
  r.reason = code == error_code::cancelled ? finish_reason::cancelled : finish_reason::error;
  r.error = code;
  requests_for(r).add();
}

void serving_metrics::tokens_after(double seconds, int tokens) {
  for (int i = 0; i < tokens; ++i) itl_.observe(seconds / tokens);
}

void serving_metrics::request_finished(const generate_result& result) {
  in_flight_.add(-1);
  requests_for(result).add();
  prompt_tokens_.add(result.usage.prompt_tokens);
  generation_tokens_.add(result.usage.completion_tokens);
}

void serving_metrics::update_from_engine(const std::map<std::string, double>& stats) {
  auto copy = [&](std::string_view key, auto& instrument) {
    if (auto it = stats.find(std::string(key)); it != stats.end()) instrument.set(it->second);
  };
  copy(stat_requests_running, running_);
  copy(stat_requests_waiting, waiting_);
  copy(stat_kv_pages_used, pages_used_);
  copy(stat_kv_pages_total, pages_total_);
  copy(stat_prefix_queried_tokens, prefix_queried_);
  copy(stat_prefix_hit_tokens, prefix_hits_);
  copy(stat_preemptions, preemptions_);
  copy(stat_steps, steps_);
}

} // namespace kvactor::net
