#pragma once
// What makes a generate_request acceptable, checked before any work is done
// for it, so that a client learns of a bad parameter at once and by name.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/request.h"

namespace kvactor {

struct request_limits {
  int32_t vocab_size = 0;
  int32_t max_context = 0;                 // prompt + output tokens
  std::vector<std::string> system_prompts; // configured names
};

struct request_problem {
  error_code code = error_code::bad_request;
  std::string message;
};

// Parameter ranges, a prompt or token ids, token ids in the vocabulary, a
// known system prompt name.
std::optional<request_problem> check_request(const generate_request& r, const request_limits& limits);

// Once tokenized: the prompt must leave room for at least one output token.
std::optional<request_problem> check_prompt_length(size_t prompt_tokens, const request_limits& limits);

} // namespace kvactor
