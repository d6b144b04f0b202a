#pragma once
// The stages a request passes through inside the engine, reported to an
// observer (tests, metrics): submitted -> queued -> prefill chunk(s) ->
// decoding -> finished, with preempted -> queued again when pages run out.
#include <chrono>
#include <cstdint>
#include <functional>
#include <string_view>

#include "runtime/page_pool.h"
#include "runtime/request.h"

namespace kvactor {

enum class life_stage : uint8_t { submitted, queued, prefill_chunk, decoding, preempted, finished };

struct life_event {
  seq_id id = 0;
  life_stage stage = life_stage::submitted;
  int32_t start_pos = 0;  // prefill_chunk: positions [start_pos, start_pos + num_tokens)
  int32_t num_tokens = 0;
  finish_reason reason = finish_reason::stop; // finished only
  error_code error = error_code::none;        // finished only
  std::chrono::steady_clock::time_point time;
};

// Called for every transition, from whichever engine thread makes it: it
// must be thread-safe and quick.
using lifecycle_observer = std::function<void(const life_event&)>;

constexpr std::string_view to_string(life_stage s) {
  switch (s) {
    case life_stage::submitted: return "submitted";
    case life_stage::queued: return "queued";
    case life_stage::prefill_chunk: return "prefill_chunk";
    case life_stage::decoding: return "decoding";
    case life_stage::preempted: return "preempted";
    case life_stage::finished: return "finished";
  }
  return "unknown";
}

} // namespace kvactor
