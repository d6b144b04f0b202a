#pragma once
// A generation request and its outcome, as plain data: what clients send
// (through the line protocol or an embedding application) and what they get
// back at the end.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/sampler.h"

namespace kvactor {

struct generate_request {
  std::string prompt;                 // text, tokenized by the engine...
  std::vector<int32_t> prompt_tokens; // ...or token ids given directly (used when non-empty)
  std::string system;                 // name of a configured system prompt, "" for none
  sampling_params sampling;
  int32_t max_tokens = 256;
  std::vector<std::string> stop;      // stop strings, not included in the output
  bool ignore_eos = false;
  int32_t priority = 0;               // higher is scheduled first
};

enum class finish_reason : uint8_t { stop, length, cancelled, error };

// Stable codes clients can branch on.
enum class error_code : uint8_t { none, bad_request, context_length_exceeded, overloaded, cancelled, internal };

std::string_view to_string(finish_reason r);
std::string_view to_string(error_code c);

struct usage_counts {
  int32_t prompt_tokens = 0;
  int32_t cached_tokens = 0;     // prompt tokens whose KV came from the prefix cache
  int32_t completion_tokens = 0;
};

struct request_timings {
  double queue_ms = 0;       // submit -> first scheduled
  double ttft_ms = 0;        // submit -> first token
  double per_token_ms = 0;   // mean inter-token time after the first
  double total_ms = 0;
};

struct generate_result {
  finish_reason reason = finish_reason::stop;
  error_code error = error_code::none;
  std::string message;       // for errors
  usage_counts usage;
  request_timings timings;
};

} // namespace kvactor
