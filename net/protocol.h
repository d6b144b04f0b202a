#pragma once
// The daemon's line protocol, without any I/O: one request per line in, one
// reply per line out (docs/protocol.md is the user's reference).
//
// A line whose first character other than spaces and tabs is '{' is a JSON
// request; any other non-blank line is a plain-text prompt whose reply is the
// raw generated text followed by an empty line, so that `nc` is a usable
// client. parse_line() never throws: every defect becomes a protocol_error
// whose message names the field and the rule it breaks. The format_*
// functions write one reply line each, '\n' included.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "runtime/request.h"

namespace kvactor::net {

// -- requests --------------------------------------------------------------

// A client's request id, a string or a signed 64-bit integer, echoed back in
// every reply to that request exactly as given ("7" and 7 are different ids).
using request_id = std::variant<int64_t, std::string>;

// What a line may ask for, besides the daemon's own settings.
struct parse_limits {
  size_t max_line_bytes = 1 << 20;        // '\n' and a trailing '\r' not counted
  int32_t default_max_tokens = 256;       // when a request gives none, and for plain text
  int32_t max_tokens_cap = 4096;          // largest max_tokens a request may ask for
  std::vector<std::string> system_prompts; // configured system prompt names
};

// A generation: a JSON request without "op", or a plain-text line.
struct generate_op {
  std::optional<request_id> id;
  generate_request request;
  bool stream = true;      // false: one final line with the whole text
  bool plain_text = false; // reply with raw text, not JSON
  // False when the request gave no seed: the daemon then draws one, so that
  // repeated requests do not all sample the same continuation.
  bool seeded = false;
};

// Stops the generation `id` of this connection. It ends with a `cancelled`
// error reply; cancelling an id that is not running does nothing.
struct cancel_op {
  request_id id;
};

// The remaining ops carry the optional id only to echo it in their reply.
struct health_op {
  std::optional<request_id> id;
};
struct stats_op {
  std::optional<request_id> id;
};
struct models_op {
  std::optional<request_id> id;
};
struct auth_op {
  std::optional<request_id> id;
  std::string token;
};

// A blank line (nothing but spaces and tabs): no reply.
struct empty_line {};

struct protocol_error {
  error_code code = error_code::bad_request;
  std::string message;
  std::optional<request_id> id; // when the line had a valid one
  bool plain_text = false;      // the line was a plain-text prompt
};

using parsed_line = std::variant<empty_line, generate_op, cancel_op, health_op, stats_op, models_op,
                                 auth_op, protocol_error>;

// One line of input, without its '\n' (a trailing "\n", "\r\n" or "\r" is
// ignored anyway). Never throws.
parsed_line parse_line(std::string_view line, const parse_limits& limits);

// -- replies ---------------------------------------------------------------

// The whole output of a request with stream=false.
struct completion {
  std::string_view text;
  std::span<const int32_t> tokens;
};

struct model_info {
  std::string name;          // the model directory's name, or "default"
  std::string architecture;  // as in config.json, e.g. "LlamaForCausalLM"
  int32_t max_context = 0;   // prompt + output tokens
  int32_t vocab_size = 0;
};

// {"id":..,"text":"<delta>","tokens":[...]}
std::string format_token(const std::optional<request_id>& id, std::string_view text,
                         std::span<const int32_t> tokens);

// The last line of a generation. A result with reason stop or length gives
// {"id":..,"done":true,"finish_reason":..,"usage":{..},"timings":{..}}, with
// "text" and "tokens" as well when `whole` is given (stream=false). Reason
// cancelled gives a `cancelled` error line; reason error the error line of
// result.error (`internal` when it names none).
std::string format_final(const std::optional<request_id>& id, const generate_result& result,
                         const std::optional<completion>& whole = std::nullopt);

// {"id":..,"error":{"code":..,"message":..}}
std::string format_error(const std::optional<request_id>& id, error_code code, std::string_view message);
// As parse_line's error asks: JSON, or plain text for a plain-text line.
std::string format_error(const protocol_error& e);

// {"id":..,"status":"ok","uptime_s":..}
std::string format_health(const std::optional<request_id>& id, std::string_view status, double uptime_s);
// {"id":..,"stats":{"<name>":<number>,...}}
std::string format_stats(const std::optional<request_id>& id, const std::map<std::string, double>& stats);
// {"id":..,"models":[{"name":..,"architecture":..,"max_context":..,"vocab_size":..}]}
std::string format_models(const std::optional<request_id>& id, std::span<const model_info> models);
// {"id":..,"ok":true}: the token was accepted.
std::string format_auth_ok(const std::optional<request_id>& id);

// Plain-text mode: the deltas go out raw; this ends the reply. "\n\n" after a
// normal finish; "\nerror: <code>: <message>\n\n" after a failure.
std::string format_plain_final(const generate_result& result);
// "error: <code>: <message>\n\n"
std::string format_plain_error(error_code code, std::string_view message);

// `text` as a JSON string literal, quotes included. Ill-formed UTF-8 becomes
// U+FFFD, so the result is always valid JSON.
void append_json_string(std::string& out, std::string_view text);

} // namespace kvactor::net
