#pragma once
// One per request: turns the scheduler's tokens into text for the client's
// sink (incremental detokenization, stop strings) and sends the final result
// with usage and timings. A stop string ends the request: the text before it
// is sent, the rest withheld, and the scheduler is told to finish it.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "actors/messages.h"
#include "runtime/stop_matcher.h"
#include "runtime/tokenizer.h"

namespace kvactor {

struct output_state {
  static inline const char* name = "kvactor.output";
  uint64_t id = 0;
  generation_sink sink;
  scheduler_actor scheduler;
  std::shared_ptr<const tokenizer> tok;
  std::unique_ptr<incremental_decoder> decoder;
  std::unique_ptr<stop_matcher> stops;
  std::chrono::steady_clock::time_point submitted, first_token, last_token;
  int32_t num_tokens = 0;
  bool stopped_by_string = false;
};

// The sink gets token_delta messages, then one generation_done. If the
// scheduler goes away first, the request ends with `internal`.
output_actor::behavior_type output(output_actor::stateful_pointer<output_state> self, uint64_t id,
                                   generation_sink sink, scheduler_actor scheduler,
                                   std::shared_ptr<const tokenizer> tok, std::vector<std::string> stops,
                                   std::chrono::steady_clock::time_point submitted);

} // namespace kvactor
