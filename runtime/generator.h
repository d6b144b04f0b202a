#pragma once
// Runs one request to completion on a backend: prefill in chunks, then one
// decode step per token. For the CLI and tests; the engine schedules many
// requests itself.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/sampler.h"

namespace kvactor {

struct generation_options {
  sampling_params sampling;
  int32_t max_tokens = 16;
  int32_t prefill_chunk = 0; // tokens per prefill step; 0 = the whole prompt
  std::vector<int32_t> stop_token_ids; // stop after producing one of these
  bool ignore_eos = false;   // else the config's eos_token_ids stop too
};

struct generation_result {
  std::vector<int32_t> tokens; // produced tokens, the stop token included
  std::string finish_reason;   // "stop" or "length"
};

// Called with each produced token as soon as it is sampled.
using token_callback = std::function<void(int32_t token)>;

// note: uses the backend's pages from 0 upwards (page i holds positions
// [i * page_size, (i + 1) * page_size)), so no other request may share it.
// Throws kvactor::error for an empty prompt or when the request outgrows the
// backend's pages.
generation_result generate(backend& b, const std::vector<int32_t>& prompt,
                           const generation_options& options, const token_callback& on_token = {});

} // namespace kvactor
