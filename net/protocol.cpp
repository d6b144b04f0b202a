#include "net/protocol.h"

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <exception>
#include <limits>

#include "runtime/unicode.h"

namespace kvactor::net {

namespace json = boost::json;

namespace {

// ============================================================================
// Parsing
// ============================================================================

// Thrown by the readers below and caught in parse_json, which turns it into
// a protocol_error; it never leaves this file.
struct bad_request {
  std::string message;
};

// A request is at most an object holding arrays; anything deeper is refused
// by the parser before it can cost memory or stack.
constexpr size_t max_json_depth = 4;

constexpr std::array generate_fields = {
    "id",    "prompt", "tokens",  "system", "max_tokens",         "temperature",
    "top_p", "top_k",  "min_p",   "seed",   "repetition_penalty", "stop",
    "stream", "ignore_eos", "priority",
};

// A client's name in quotes, cut short so an error message stays readable.
std::string quoted(std::string_view name) {
  constexpr size_t max_shown = 64;
  size_t cut = name.size();
  if (cut > max_shown) {
    cut = max_shown;
    while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xc0) == 0x80) --cut; // keep whole characters
  }
  std::string out;
  out.reserve(cut + 5);
  out.append(1, '\'').append(name.substr(0, cut)).append(cut < name.size() ? "...'" : "'");
  return out;
}

std::string number_text(double x) {
  std::array<char, 32> buf;
  const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), x);
  return std::string(buf.data(), r.ptr);
}

std::string kind_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "a boolean";
    case json::kind::int64:
    case json::kind::uint64: return "an integer";
    case json::kind::double_: return "a number with a fraction or exponent";
    case json::kind::string: return "a string";
    case json::kind::array: return "an array";
    case json::kind::object: return "an object";
  }
  return "a value";
}

std::string value_text(const json::value& v) {
  if (v.is_int64()) return std::to_string(v.get_int64());
  if (v.is_uint64()) return std::to_string(v.get_uint64());
  if (v.is_double()) return number_text(v.get_double());
  return kind_name(v);
}

// The id, when the object has one of the right type; bad_request when it has
// one of the wrong type. null counts as absent.
std::optional<request_id> read_id(const json::object& object) {
  const auto* v = object.if_contains("id");
  if (!v || v->is_null()) return std::nullopt;
  if (v->is_string()) return request_id(std::string(v->get_string()));
  if (v->is_int64()) return request_id(v->get_int64());
  if (v->is_uint64()) throw bad_request{"'id' is out of the signed 64-bit range: " + value_text(*v)};
  throw bad_request{"'id' must be a string or an integer, got " + kind_name(*v)};
}

// Typed access to the fields of one request object. A field set to null
// counts as absent. Every failure names the field.
class field_reader {
 public:
  explicit field_reader(const json::object& object) : object_(object) {}

  [[noreturn]] static void fail(std::string_view name, const std::string& problem) {
    throw bad_request{quoted(name) + " " + problem};
  }

  // Refuses any field not in `allowed`; `context` ends the message.
  template <size_t N>
  void only(const std::array<const char*, N>& allowed, std::string_view context) const {
    for (const auto& [key, value] : object_) {
      if (std::find(allowed.begin(), allowed.end(), std::string_view(key)) == allowed.end())
        throw bad_request{"unknown field " + quoted(key) + std::string(context)};
    }
  }

  const json::value* get(std::string_view name) const {
    const auto* v = object_.if_contains(name);
    return v && !v->is_null() ? v : nullptr;
  }

  std::optional<int64_t> integer(std::string_view name, int64_t min, int64_t max) const {
    const auto* v = get(name);
    if (!v) return std::nullopt;
    return integer_value(*v, name, min, max);
  }

  static int64_t integer_value(const json::value& v, std::string_view name, int64_t min, int64_t max) {
    if (v.is_int64() && v.get_int64() >= min && v.get_int64() <= max) return v.get_int64();
    if (!v.is_int64() && !v.is_uint64()) fail(name, "must be an integer, got " + kind_name(v));
    fail(name, range_text(min, max) + ", got " + value_text(v));
  }

  std::optional<uint64_t> unsigned_integer(std::string_view name) const {
    const auto* v = get(name);
    if (!v) return std::nullopt;
    if (v->is_uint64()) return v->get_uint64();
    if (v->is_int64() && v->get_int64() >= 0) return uint64_t(v->get_int64());
    if (v->is_int64()) fail(name, "must be >= 0, got " + value_text(*v));
    fail(name, "must be an integer, got " + kind_name(*v));
  }

  // A finite number (integer or not) in the range that `in_range` accepts,
  // which `rule` describes.
  template <typename Predicate>
  std::optional<float> number(std::string_view name, Predicate in_range, std::string_view rule) const {
    const auto* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_number()) fail(name, "must be a number, got " + kind_name(*v));
    const double x = v->to_number<double>();
    // NOTE: the parser reads 1e999 as infinity; a float field would round
    // anything beyond float's range to infinity too.
    if (!std::isfinite(x) || std::abs(x) > std::numeric_limits<float>::max())
      fail(name, "must be a finite number, got " + value_text(*v));
    // The rule holds for the float the engine gets: 1e-50 is 0 as a float.
    const float f = float(x);
    if (!in_range(double(f))) fail(name, std::string(rule) + ", got " + value_text(*v));
    return f;
  }

  std::optional<bool> boolean(std::string_view name) const {
    const auto* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_bool()) fail(name, "must be true or false, got " + kind_name(*v));
    return v->get_bool();
  }

  std::optional<std::string> string(std::string_view name) const {
    const auto* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_string()) fail(name, "must be a string, got " + kind_name(*v));
    return std::string(v->get_string());
  }

 private:
  static std::string range_text(int64_t min, int64_t max) {
    if (max == std::numeric_limits<int64_t>::max()) return "must be >= " + std::to_string(min);
    if (min == std::numeric_limits<int64_t>::min()) return "must be <= " + std::to_string(max);
    return "must be between " + std::to_string(min) + " and " + std::to_string(max);
  }

  const json::object& object_;
};

std::string element_name(std::string_view array, size_t index) {
  return std::string(array) + "[" + std::to_string(index) + "]";
}

std::vector<int32_t> read_tokens(const json::value& v) {
  if (!v.is_array()) field_reader::fail("tokens", "must be an array of token ids, got " + kind_name(v));
  const auto& array = v.get_array();
  if (array.empty()) field_reader::fail("tokens", "must not be empty");
  std::vector<int32_t> tokens;
  tokens.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i)
    tokens.push_back(int32_t(field_reader::integer_value(array[i], element_name("tokens", i), 0,
                                                         std::numeric_limits<int32_t>::max())));
  return tokens;
}

std::vector<std::string> read_stop(const json::value& v) {
  if (v.is_string()) {
    if (v.get_string().empty()) field_reader::fail("stop", "must not be empty");
    return {std::string(v.get_string())};
  }
  if (!v.is_array()) field_reader::fail("stop", "must be a string or an array of strings, got " + kind_name(v));
  std::vector<std::string> stop;
  const auto& array = v.get_array();
  for (size_t i = 0; i < array.size(); ++i) {
    const auto& s = array[i];
    if (!s.is_string()) field_reader::fail(element_name("stop", i), "must be a string, got " + kind_name(s));
    if (s.get_string().empty()) field_reader::fail(element_name("stop", i), "must not be empty");
    stop.emplace_back(s.get_string());
  }
  return stop;
}

void check_system_prompt(const std::string& name, const parse_limits& limits) {
  const auto& names = limits.system_prompts;
  if (std::find(names.begin(), names.end(), name) != names.end()) return;
  std::string known;
  for (const auto& n : names) known += (known.empty() ? "" : ", ") + quoted(n);
  field_reader::fail("system", "names no configured system prompt: " + quoted(name) +
                                   (known.empty() ? " (none are configured)" : " (configured: " + known + ")"));
}

generate_op read_generate(const json::object& object, const std::optional<request_id>& id,
                          const parse_limits& limits) {
  const field_reader r(object);
  r.only(generate_fields, "");

  generate_op op;
  op.id = id;
  auto& req = op.request;
  const auto* prompt = r.get("prompt");
  const auto* tokens = r.get("tokens");
  if (!prompt == !tokens) throw bad_request{"a request needs exactly one of 'prompt' and 'tokens'"};
  if (prompt) {
    req.prompt = *r.string("prompt");
    if (req.prompt.empty()) field_reader::fail("prompt", "must not be empty");
  } else {
    req.prompt_tokens = read_tokens(*tokens);
  }
  if (auto system = r.string("system")) {
    check_system_prompt(*system, limits);
    req.system = std::move(*system);
  }

  req.max_tokens = int32_t(r.integer("max_tokens", 0, limits.max_tokens_cap).value_or(limits.default_max_tokens));
  auto& s = req.sampling;
  s.temperature = r.number("temperature", [](double x) { return x >= 0; }, "must be >= 0").value_or(s.temperature);
  s.top_p = r.number("top_p", [](double x) { return x > 0 && x <= 1; }, "must be > 0 and <= 1").value_or(s.top_p);
  s.top_k = int32_t(r.integer("top_k", 0, std::numeric_limits<int32_t>::max()).value_or(s.top_k));
  s.min_p = r.number("min_p", [](double x) { return x >= 0 && x <= 1; }, "must be >= 0 and <= 1").value_or(s.min_p);
  s.repetition_penalty =
      r.number("repetition_penalty", [](double x) { return x > 0; }, "must be > 0").value_or(s.repetition_penalty);
  if (const auto seed = r.unsigned_integer("seed")) {
    s.seed = *seed;
    op.seeded = true;
  }
  if (const auto* stop = r.get("stop")) req.stop = read_stop(*stop);
  op.stream = r.boolean("stream").value_or(true);
  req.ignore_eos = r.boolean("ignore_eos").value_or(false);
  req.priority = int32_t(r.integer("priority", std::numeric_limits<int32_t>::min(),
                                   std::numeric_limits<int32_t>::max())
                             .value_or(0));
  return op;
}

parsed_line read_op(const json::object& object, const std::string& name, const std::optional<request_id>& id) {
  const field_reader r(object);
  const std::string context = " for op " + quoted(name);
  if (name == "cancel") {
    r.only(std::array{"op", "id"}, context);
    if (!id) throw bad_request{"op 'cancel' needs the 'id' of the request to cancel"};
    return cancel_op{*id};
  }
  if (name == "auth") {
    r.only(std::array{"op", "id", "token"}, context);
    auto token = r.string("token");
    if (!token) throw bad_request{"op 'auth' needs a 'token'"};
    return auth_op{id, std::move(*token)};
  }
  r.only(std::array{"op", "id"}, context);
  if (name == "health") return health_op{id};
  if (name == "stats") return stats_op{id};
  if (name == "models") return models_op{id};
  throw bad_request{"unknown op " + quoted(name) + " (known: cancel, health, stats, models, auth)"};
}

parsed_line parse_json(std::string_view line, const parse_limits& limits) {
  json::parse_options options;
  options.max_depth = max_json_depth;
  json::stream_parser parser({}, options);
  json::error_code ec;
  const size_t consumed = parser.write(line.data(), line.size(), ec);
  if (!ec) parser.finish(ec);
  if (ec)
    return protocol_error{error_code::bad_request,
                          "invalid JSON at byte " + std::to_string(consumed) + ": " + ec.message(), {}, false};
  const json::value root = parser.release();
  if (!root.is_object()) return protocol_error{error_code::bad_request, "a request must be a JSON object", {}, false};
  const auto& object = root.get_object();

  std::optional<request_id> id;
  try {
    id = read_id(object);
    const auto* op = object.if_contains("op");
    if (!op || op->is_null()) return read_generate(object, id, limits);
    if (!op->is_string()) field_reader::fail("op", "must be a string, got " + kind_name(*op));
    return read_op(object, std::string(op->get_string()), id);
  } catch (bad_request& e) {
    return protocol_error{error_code::bad_request, std::move(e.message), std::move(id), false};
  }
}

parsed_line parse_checked(std::string_view line, const parse_limits& limits) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const size_t first = line.find_first_not_of(" \t");
  if (first == std::string_view::npos) return empty_line{};
  const bool plain = line[first] != '{';

  if (line.size() > limits.max_line_bytes)
    return protocol_error{error_code::bad_request,
                          "the line has " + std::to_string(line.size()) + " bytes, more than the limit of " +
                              std::to_string(limits.max_line_bytes),
                          {}, plain};
  if (const size_t at = unicode::find_invalid_utf8(line); at != std::string_view::npos)
    return protocol_error{error_code::bad_request, "invalid UTF-8 at byte " + std::to_string(at), {}, plain};
  if (!plain) return parse_json(line, limits);

  generate_op op;
  op.plain_text = true;
  op.request.prompt = std::string(line);
  op.request.max_tokens = limits.default_max_tokens;
  return op;
}

// ============================================================================
// Formatting
// ============================================================================

void append_number(std::string& out, double x) {
  if (!std::isfinite(x)) {
    out += "null";
    return;
  }
  out += number_text(x);
}

// Three decimals (milliseconds to the microsecond, seconds to the
// millisecond): more digits would be noise.
double round3(double x) { return std::round(x * 1000.0) / 1000.0; }

// Builds one JSON object line. Nested objects are opened and closed in order.
class object_writer {
 public:
  explicit object_writer(const std::optional<request_id>& id) {
    out_.push_back('{');
    if (!id) return;
    key("id");
    if (const auto* n = std::get_if<int64_t>(&*id)) {
      out_ += std::to_string(*n);
    } else {
      append_json_string(out_, std::get<std::string>(*id));
    }
  }

  object_writer& string(std::string_view name, std::string_view value) {
    key(name);
    append_json_string(out_, value);
    return *this;
  }
  object_writer& integer(std::string_view name, int64_t value) {
    key(name);
    out_ += std::to_string(value);
    return *this;
  }
  object_writer& number(std::string_view name, double value) {
    key(name);
    append_number(out_, value);
    return *this;
  }
  object_writer& boolean(std::string_view name, bool value) {
    key(name);
    out_ += value ? "true" : "false";
    return *this;
  }
  object_writer& tokens(std::string_view name, std::span<const int32_t> tokens) {
    key(name);
    out_ += '[';
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out_ += ',';
      out_ += std::to_string(tokens[i]);
    }
    out_ += ']';
    return *this;
  }
  object_writer& begin_object(std::string_view name) {
    key(name);
    out_ += '{';
    first_ = true;
    return *this;
  }
  object_writer& end_object() {
    out_ += '}';
    first_ = false;
    return *this;
  }
  // For arrays of objects: `name` opens the array, then each element.
  object_writer& begin_array(std::string_view name) {
    key(name);
    out_ += '[';
    first_ = true;
    return *this;
  }
  object_writer& begin_element() {
    if (!first_) out_ += ',';
    out_ += '{';
    first_ = true;
    return *this;
  }
  object_writer& end_array() {
    out_ += ']';
    first_ = false;
    return *this;
  }

  std::string line() {
    out_ += "}\n";
    return std::move(out_);
  }

 private:
  void key(std::string_view name) {
    if (!first_) out_ += ',';
    first_ = false;
    append_json_string(out_, name);
    out_ += ':';
  }

  std::string out_;
  bool first_ = true;
};

// The error code a finished-but-unsuccessful result reports.
error_code failure_code(const generate_result& result) {
  if (result.reason == finish_reason::cancelled) return error_code::cancelled;
  return result.error == error_code::none ? error_code::internal : result.error;
}

std::string failure_message(const generate_result& result) {
  if (!result.message.empty()) return result.message;
  return result.reason == finish_reason::cancelled ? "the request was cancelled" : "the request failed";
}

bool succeeded(const generate_result& result) {
  return result.reason == finish_reason::stop || result.reason == finish_reason::length;
}

} // namespace

parsed_line parse_line(std::string_view line, const parse_limits& limits) {
  try {
    return parse_checked(line, limits);
  } catch (const std::exception& e) { // out of memory, in practice
    return protocol_error{error_code::internal, std::string("cannot parse the line: ") + e.what(), {}, false};
  }
}

void append_json_string(std::string& out, std::string_view text) {
  std::string repaired;
  if (unicode::find_invalid_utf8(text) != std::string_view::npos) {
    repaired = unicode::from_utf8_lossy(text);
    text = repaired;
  }
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

std::string format_token(const std::optional<request_id>& id, std::string_view text,
                         std::span<const int32_t> tokens) {
  return object_writer(id).string("text", text).tokens("tokens", tokens).line();
}

std::string format_final(const std::optional<request_id>& id, const generate_result& result,
                         const std::optional<completion>& whole) {
  if (!succeeded(result)) return format_error(id, failure_code(result), failure_message(result));
  object_writer w(id);
  w.boolean("done", true).string("finish_reason", to_string(result.reason));
  if (whole) w.string("text", whole->text).tokens("tokens", whole->tokens);
  w.begin_object("usage")
      .integer("prompt_tokens", result.usage.prompt_tokens)
      .integer("cached_tokens", result.usage.cached_tokens)
      .integer("completion_tokens", result.usage.completion_tokens)
      .end_object();
  const auto& t = result.timings;
  w.begin_object("timings")
      .number("queue_ms", round3(t.queue_ms))
      .number("ttft_ms", round3(t.ttft_ms))
      .number("per_token_ms", round3(t.per_token_ms))
      .number("total_ms", round3(t.total_ms))
      .end_object();
  return w.line();
}

std::string format_error(const std::optional<request_id>& id, error_code code, std::string_view message) {
  return object_writer(id)
      .begin_object("error")
      .string("code", to_string(code))
      .string("message", message)
      .end_object()
      .line();
}

std::string format_error(const protocol_error& e) {
  if (e.plain_text) return format_plain_error(e.code, e.message);
  return format_error(e.id, e.code, e.message);
}

std::string format_health(const std::optional<request_id>& id, std::string_view status, double uptime_s) {
  return object_writer(id).string("status", status).number("uptime_s", round3(uptime_s)).line();
}

std::string format_stats(const std::optional<request_id>& id, const std::map<std::string, double>& stats) {
  object_writer w(id);
  w.begin_object("stats");
  for (const auto& [name, value] : stats) w.number(name, value);
  w.end_object();
  return w.line();
}

std::string format_models(const std::optional<request_id>& id, std::span<const model_info> models) {
  object_writer w(id);
  w.begin_array("models");
  for (const auto& m : models) {
    w.begin_element()
        .string("name", m.name)
        .string("architecture", m.architecture)
        .integer("max_context", m.max_context)
        .integer("vocab_size", m.vocab_size)
        .end_object();
  }
  w.end_array();
  return w.line();
}

std::string format_auth_ok(const std::optional<request_id>& id) { return object_writer(id).boolean("ok", true).line(); }

std::string format_plain_final(const generate_result& result) {
  if (succeeded(result)) return "\n\n";
  return "\n" + format_plain_error(failure_code(result), failure_message(result));
}

std::string format_plain_error(error_code code, std::string_view message) {
  return "error: " + std::string(to_string(code)) + ": " + std::string(message) + "\n\n";
}

} // namespace kvactor::net
