#include "runtime/request_check.h"

#include <algorithm>
#include <cmath>

namespace kvactor {

namespace {

std::optional<request_problem> bad(std::string message) {
  return request_problem{error_code::bad_request, std::move(message)};
}

} // namespace

std::optional<request_problem> check_request(const generate_request& r, const request_limits& limits) {
  if (r.prompt.empty() && r.prompt_tokens.empty()) return bad("a prompt or prompt tokens are required");
  for (size_t i = 0; i < r.prompt_tokens.size(); ++i)
    if (r.prompt_tokens[i] < 0 || r.prompt_tokens[i] >= limits.vocab_size)
      return bad("prompt_tokens[" + std::to_string(i) + "] = " + std::to_string(r.prompt_tokens[i]) +
                 " is outside the vocabulary of " + std::to_string(limits.vocab_size) + " tokens");
  if (r.max_tokens < 0) return bad("max_tokens must be >= 0, got " + std::to_string(r.max_tokens));
  const sampling_params& s = r.sampling;
  if (!std::isfinite(s.temperature) || s.temperature < 0)
    return bad("temperature must be finite and >= 0, got " + std::to_string(s.temperature));
  if (!(s.top_p > 0 && s.top_p <= 1)) return bad("top_p must be in (0, 1], got " + std::to_string(s.top_p));
  if (s.top_k < 0) return bad("top_k must be >= 0, got " + std::to_string(s.top_k));
  if (!(s.min_p >= 0 && s.min_p <= 1)) return bad("min_p must be in [0, 1], got " + std::to_string(s.min_p));
  if (!std::isfinite(s.repetition_penalty) || s.repetition_penalty <= 0)
    return bad("repetition_penalty must be finite and > 0, got " + std::to_string(s.repetition_penalty));
  for (const auto& stop : r.stop)
    if (stop.empty()) return bad("stop strings must not be empty");
  const auto& names = limits.system_prompts;
  if (!r.system.empty() && std::find(names.begin(), names.end(), r.system) == names.end())
    return bad("unknown system prompt \"" + r.system + "\"");
  return std::nullopt;
}

std::optional<request_problem> check_prompt_length(size_t prompt_tokens, const request_limits& limits) {
  if (prompt_tokens >= size_t(limits.max_context))
    return request_problem{error_code::context_length_exceeded,
                           "the prompt has " + std::to_string(prompt_tokens) +
                               " tokens; the context holds " + std::to_string(limits.max_context) +
                               " with room for at least one output token"};
  return std::nullopt;
}

} // namespace kvactor
