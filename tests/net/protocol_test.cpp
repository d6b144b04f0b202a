// The line protocol: every request field and op parsed exactly, every
// validation rule refused with its message and code, ids echoed as given,
// plain-text lines, and reply lines that a JSON parser reads back to the
// values they were made from. Hostile input must come back as an error
// value, never as a crash or an exception.
#include "net/protocol.h"

#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

using namespace kvactor;
using namespace kvactor::net;
namespace json = boost::json;

namespace {

parse_limits test_limits() {
  parse_limits limits;
  limits.max_line_bytes = 4096;
  limits.default_max_tokens = 100;
  limits.max_tokens_cap = 1000;
  limits.system_prompts = {"assistant", "pirate"};
  return limits;
}

parsed_line parse(std::string_view line) { return parse_line(line, test_limits()); }

generate_op generate_of(std::string_view line) {
  auto parsed = parse(line);
  if (const auto* e = std::get_if<protocol_error>(&parsed)) FAIL_CHECK("unexpected error: " << e->message);
  REQUIRE(std::holds_alternative<generate_op>(parsed));
  return std::get<generate_op>(std::move(parsed));
}

protocol_error error_of(std::string_view line) {
  auto parsed = parse(line);
  REQUIRE(std::holds_alternative<protocol_error>(parsed));
  return std::get<protocol_error>(std::move(parsed));
}

// The message of the error a JSON line gets, after checking its code.
std::string bad_request_message(std::string_view line) {
  const auto e = error_of(line);
  CHECK(e.code == error_code::bad_request);
  CHECK_FALSE(e.plain_text);
  return e.message;
}

// A reply line: one JSON object, then exactly one '\n'.
json::object read_reply(const std::string& line) {
  REQUIRE(!line.empty());
  CHECK(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);
  const json::value v = json::parse(line);
  REQUIRE(v.is_object());
  return v.as_object();
}

} // namespace

// ============================================================================
// Requests
// ============================================================================

TEST_CASE("a request with every field sets every field") {
  const auto op = generate_of(
      R"({"id":"r1","prompt":"Hello","system":"pirate","max_tokens":12,"temperature":0.5,"top_p":0.9,)"
      R"("top_k":40,"min_p":0.05,"repetition_penalty":1.1,"seed":42,"stop":["\n\n","END"],)"
      R"("stream":false,"ignore_eos":true,"priority":-3})");
  CHECK(op.id == request_id(std::string("r1")));
  CHECK_FALSE(op.plain_text);
  CHECK_FALSE(op.stream);
  CHECK(op.seeded);
  const auto& r = op.request;
  CHECK(r.prompt == "Hello");
  CHECK(r.prompt_tokens.empty());
  CHECK(r.system == "pirate");
  CHECK(r.max_tokens == 12);
  CHECK(r.sampling.temperature == 0.5f);
  CHECK(r.sampling.top_p == 0.9f);
  CHECK(r.sampling.top_k == 40);
  CHECK(r.sampling.min_p == 0.05f);
  CHECK(r.sampling.repetition_penalty == 1.1f);
  CHECK(r.sampling.seed == 42);
  CHECK(r.stop == std::vector<std::string>{"\n\n", "END"});
  CHECK(r.ignore_eos);
  CHECK(r.priority == -3);
}

TEST_CASE("fields left out take their defaults; null counts as left out") {
  for (const auto* line : {R"({"prompt":"hi"})",
                           R"({"prompt":"hi","id":null,"max_tokens":null,"temperature":null,"stop":null,"stream":null})"}) {
    CAPTURE(line);
    const auto op = generate_of(line);
    CHECK_FALSE(op.id);
    CHECK(op.stream);
    CHECK_FALSE(op.seeded);
    const generate_request defaults;
    const auto& r = op.request;
    CHECK(r.max_tokens == 100); // parse_limits::default_max_tokens
    CHECK(r.system.empty());
    CHECK(r.sampling.temperature == defaults.sampling.temperature);
    CHECK(r.sampling.top_p == defaults.sampling.top_p);
    CHECK(r.sampling.top_k == defaults.sampling.top_k);
    CHECK(r.sampling.min_p == defaults.sampling.min_p);
    CHECK(r.sampling.repetition_penalty == defaults.sampling.repetition_penalty);
    CHECK(r.sampling.seed == 0);
    CHECK(r.stop.empty());
    CHECK_FALSE(r.ignore_eos);
    CHECK(r.priority == 0);
  }
}

TEST_CASE("tokens instead of a prompt, and a single stop string") {
  const auto op = generate_of(R"({"tokens":[1,0,2147483647],"stop":"\n","max_tokens":0,"seed":18446744073709551615})");
  CHECK(op.request.prompt.empty());
  CHECK(op.request.prompt_tokens == std::vector<int32_t>{1, 0, 2147483647});
  CHECK(op.request.stop == std::vector<std::string>{"\n"});
  CHECK(op.request.max_tokens == 0);
  CHECK(op.request.sampling.seed == UINT64_MAX);
}

TEST_CASE("integers are accepted where a number is expected; boundary values pass") {
  const auto op = generate_of(R"({"prompt":"x","temperature":0,"top_p":1,"min_p":1,"repetition_penalty":2,"max_tokens":1000})");
  CHECK(op.request.sampling.temperature == 0.0f);
  CHECK(op.request.sampling.top_p == 1.0f);
  CHECK(op.request.sampling.min_p == 1.0f);
  CHECK(op.request.sampling.repetition_penalty == 2.0f);
  CHECK(op.request.max_tokens == 1000);
}

TEST_CASE("the id is kept as given: string or integer, never converted") {
  CHECK(generate_of(R"({"id":7,"prompt":"x"})").id == request_id(int64_t(7)));
  CHECK(generate_of(R"({"id":"7","prompt":"x"})").id == request_id(std::string("7")));
  CHECK(generate_of(R"({"id":-9223372036854775808,"prompt":"x"})").id == request_id(INT64_MIN));
  CHECK(generate_of(R"({"id":"","prompt":"x"})").id == request_id(std::string()));
  CHECK(generate_of(R"({"id":"\u00e9\n","prompt":"x"})").id == request_id(std::string("\xc3\xa9\n")));

  CHECK(bad_request_message(R"({"id":1.5,"prompt":"x"})") ==
        "'id' must be a string or an integer, got a number with a fraction or exponent");
  CHECK(bad_request_message(R"({"id":[1],"prompt":"x"})") == "'id' must be a string or an integer, got an array");
  CHECK(bad_request_message(R"({"id":9223372036854775808,"prompt":"x"})") ==
        "'id' is out of the signed 64-bit range: 9223372036854775808");
}

TEST_CASE("an error carries the id of its request when that id is valid") {
  auto e = error_of(R"({"id":"abc","prompt":"x","temperature":-1})");
  CHECK(e.id == request_id(std::string("abc")));
  e = error_of(R"({"id":5,"prompt":"x","bogus":1})");
  CHECK(e.id == request_id(int64_t(5)));
  e = error_of(R"({"id":true,"prompt":"x"})");
  CHECK_FALSE(e.id);
}

TEST_CASE("ops") {
  CHECK(std::get<cancel_op>(parse(R"({"op":"cancel","id":"r1"})")).id == request_id(std::string("r1")));
  CHECK(std::get<cancel_op>(parse(R"({"op":"cancel","id":3})")).id == request_id(int64_t(3)));
  CHECK_FALSE(std::get<health_op>(parse(R"({"op":"health"})")).id);
  CHECK(std::get<health_op>(parse(R"({"op":"health","id":1})")).id == request_id(int64_t(1)));
  CHECK(std::holds_alternative<stats_op>(parse(R"({"op":"stats"})")));
  CHECK(std::get<models_op>(parse(R"({"op":"models","id":"m"})")).id == request_id(std::string("m")));
  const auto auth = std::get<auth_op>(parse(R"({"op":"auth","token":"s3cret"})"));
  CHECK(auth.token == "s3cret");
  CHECK_FALSE(auth.id);

  CHECK(bad_request_message(R"({"op":"cancel"})") == "op 'cancel' needs the 'id' of the request to cancel");
  CHECK(bad_request_message(R"({"op":"auth"})") == "op 'auth' needs a 'token'");
  CHECK(bad_request_message(R"({"op":"auth","token":5})") == "'token' must be a string, got an integer");
  CHECK(bad_request_message(R"({"op":"launch"})") ==
        "unknown op 'launch' (known: cancel, health, stats, models, auth)");
  CHECK(bad_request_message(R"({"op":7})") == "'op' must be a string, got an integer");
  CHECK(bad_request_message(R"({"op":"health","prompt":"x"})") == "unknown field 'prompt' for op 'health'");
  CHECK(bad_request_message(R"({"op":"cancel","id":1,"token":"t"})") == "unknown field 'token' for op 'cancel'");
}

TEST_CASE("each validation rule: its message names the field") {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"prompt":"x","tempreature":1})", "unknown field 'tempreature'"},
      {R"({})", "a request needs exactly one of 'prompt' and 'tokens'"},
      {R"({"prompt":"x","tokens":[1]})", "a request needs exactly one of 'prompt' and 'tokens'"},
      {R"({"prompt":""})", "'prompt' must not be empty"},
      {R"({"prompt":5})", "'prompt' must be a string, got an integer"},
      {R"({"tokens":[]})", "'tokens' must not be empty"},
      {R"({"tokens":"1 2"})", "'tokens' must be an array of token ids, got a string"},
      {R"({"tokens":[1,-2]})", "'tokens[1]' must be between 0 and 2147483647, got -2"},
      {R"({"tokens":[1,2,2147483648]})", "'tokens[2]' must be between 0 and 2147483647, got 2147483648"},
      {R"({"tokens":[1,"2"]})", "'tokens[1]' must be an integer, got a string"},
      {R"({"tokens":[1.5]})", "'tokens[0]' must be an integer, got a number with a fraction or exponent"},
      {R"({"prompt":"x","system":"ninja"})",
       "'system' names no configured system prompt: 'ninja' (configured: 'assistant', 'pirate')"},
      {R"({"prompt":"x","system":1})", "'system' must be a string, got an integer"},
      {R"({"prompt":"x","max_tokens":-1})", "'max_tokens' must be between 0 and 1000, got -1"},
      {R"({"prompt":"x","max_tokens":1001})", "'max_tokens' must be between 0 and 1000, got 1001"},
      {R"({"prompt":"x","max_tokens":5.0})", "'max_tokens' must be an integer, got a number with a fraction or exponent"},
      {R"({"prompt":"x","max_tokens":"5"})", "'max_tokens' must be an integer, got a string"},
      {R"({"prompt":"x","temperature":-0.5})", "'temperature' must be >= 0, got -0.5"},
      {R"({"prompt":"x","temperature":"hot"})", "'temperature' must be a number, got a string"},
      {R"({"prompt":"x","top_p":0})", "'top_p' must be > 0 and <= 1, got 0"},
      {R"({"prompt":"x","top_p":1.5})", "'top_p' must be > 0 and <= 1, got 1.5"},
      {R"({"prompt":"x","top_k":-1})", "'top_k' must be between 0 and 2147483647, got -1"},
      {R"({"prompt":"x","min_p":-0.1})", "'min_p' must be >= 0 and <= 1, got -0.1"},
      {R"({"prompt":"x","min_p":2})", "'min_p' must be >= 0 and <= 1, got 2"},
      {R"({"prompt":"x","repetition_penalty":0})", "'repetition_penalty' must be > 0, got 0"},
      {R"({"prompt":"x","repetition_penalty":1e-50})", "'repetition_penalty' must be > 0, got 1e-50"}, // 0 as a float
      {R"({"prompt":"x","seed":-1})", "'seed' must be >= 0, got -1"},
      {R"({"prompt":"x","seed":"42"})", "'seed' must be an integer, got a string"},
      {R"({"prompt":"x","stop":""})", "'stop' must not be empty"},
      {R"({"prompt":"x","stop":["a",""]})", "'stop[1]' must not be empty"},
      {R"({"prompt":"x","stop":["a",1]})", "'stop[1]' must be a string, got an integer"},
      {R"({"prompt":"x","stop":{"a":1}})", "'stop' must be a string or an array of strings, got an object"},
      {R"({"prompt":"x","stream":"yes"})", "'stream' must be true or false, got a string"},
      {R"({"prompt":"x","ignore_eos":1})", "'ignore_eos' must be true or false, got an integer"},
      {R"({"prompt":"x","priority":2147483648})", "'priority' must be between -2147483648 and 2147483647, got 2147483648"},
      {R"({"prompt":"x","priority":0.5})", "'priority' must be an integer, got a number with a fraction or exponent"},
  };
  for (const auto& [line, message] : cases) {
    CAPTURE(line);
    CHECK(bad_request_message(line) == message);
  }
}

TEST_CASE("a system prompt name is refused when none are configured") {
  parse_limits limits = test_limits();
  limits.system_prompts.clear();
  const auto parsed = parse_line(R"({"prompt":"x","system":"pirate"})", limits);
  REQUIRE(std::holds_alternative<protocol_error>(parsed));
  CHECK(std::get<protocol_error>(parsed).message ==
        "'system' names no configured system prompt: 'pirate' (none are configured)");
}

TEST_CASE("a long unknown field name is cut short in the message") {
  const std::string name(100, 'k');
  CHECK(bad_request_message(R"({"prompt":"x",")" + name + R"(":1})") ==
        "unknown field '" + std::string(64, 'k') + "...'");
}

TEST_CASE("numbers beyond every range are refused, not wrapped") {
  CHECK(bad_request_message(R"({"prompt":"x","max_tokens":99999999999999999999999})") ==
        "'max_tokens' must be an integer, got a number with a fraction or exponent");
  CHECK(bad_request_message(R"({"prompt":"x","max_tokens":18446744073709551615})") ==
        "'max_tokens' must be between 0 and 1000, got 18446744073709551615");
  CHECK(bad_request_message(R"({"prompt":"x","max_tokens":4294967396})") ==
        "'max_tokens' must be between 0 and 1000, got 4294967396");
  CHECK(bad_request_message(R"({"prompt":"x","top_k":4294967297})") ==
        "'top_k' must be between 0 and 2147483647, got 4294967297");
  CHECK(bad_request_message(R"({"prompt":"x","temperature":1e999})") == "'temperature' must be a finite number, got inf");
  CHECK(bad_request_message(R"({"prompt":"x","temperature":1e39})") == "'temperature' must be a finite number, got 1e+39");
  CHECK(bad_request_message(R"({"prompt":"x","repetition_penalty":-1e999})") ==
        "'repetition_penalty' must be a finite number, got -inf");
  CHECK(bad_request_message(R"({"prompt":"x","seed":18446744073709551616})") ==
        "'seed' must be an integer, got a number with a fraction or exponent");
  CHECK(bad_request_message(R"({"prompt":"x","temperature":1e400000000000000000000})") ==
        "invalid JSON at byte 39: exponent overflow");
}

TEST_CASE("a repeated field: the last one counts") {
  CHECK(generate_of(R"({"prompt":"a","prompt":"b"})").request.prompt == "b");
}

TEST_CASE("invalid UTF-8 and malformed JSON are bad requests") {
  CHECK(bad_request_message("{\"prompt\":\"ab\xff\"}") == "invalid UTF-8 at byte 13");
  CHECK(bad_request_message("{\"prompt\":\"\xc3\"}") == "invalid UTF-8 at byte 11");
  CHECK(bad_request_message("{\"prompt\":\"\xed\xa0\x80\"}") == "invalid UTF-8 at byte 11"); // a UTF-8 surrogate
  // A lone surrogate escape cannot become UTF-8 either.
  CHECK(bad_request_message(R"({"prompt":"\udc00"})") == "invalid JSON at byte 17: illegal trailing surrogate");
  CHECK(bad_request_message(R"({"prompt":"x",})") == "invalid JSON at byte 14: syntax error");
  CHECK(bad_request_message(R"({"prompt":"x"} {"prompt":"y"})") == "invalid JSON at byte 15: extra data");
  CHECK(bad_request_message(R"({"prompt":"x)") == "invalid JSON at byte 12: incomplete JSON");
  CHECK(bad_request_message("{\"prompt\":\"a\tb\"}") == "invalid JSON at byte 12: syntax error"); // raw control character
}

TEST_CASE("NUL is an ordinary character when escaped") {
  const auto op = generate_of(R"({"prompt":"a\u0000b","stop":["\u0000"]})");
  CHECK(op.request.prompt == std::string("a\0b", 3));
  CHECK(op.request.stop == std::vector<std::string>{std::string(1, '\0')});
}

TEST_CASE("plain text: any line not starting with '{' is a prompt with default settings") {
  auto op = generate_of("Tell me a story");
  CHECK(op.plain_text);
  CHECK(op.stream);
  CHECK_FALSE(op.id);
  CHECK_FALSE(op.seeded);
  CHECK(op.request.prompt == "Tell me a story");
  CHECK(op.request.max_tokens == 100);
  CHECK(op.request.sampling.temperature == sampling_params{}.temperature);

  CHECK(generate_of("  leading spaces stay ").request.prompt == "  leading spaces stay ");
  CHECK(generate_of("[1, 2, 3]").request.prompt == "[1, 2, 3]");
  CHECK(generate_of("\"quoted\"").request.prompt == "\"quoted\"");
  CHECK(generate_of("x {\"prompt\":1}").request.prompt == "x {\"prompt\":1}");
  CHECK(generate_of("caf\xc3\xa9").request.prompt == "caf\xc3\xa9");
}

TEST_CASE("a trailing CR, LF or CRLF is not part of the line") {
  CHECK(generate_of("hello\r").request.prompt == "hello");
  CHECK(generate_of("hello\r\n").request.prompt == "hello");
  CHECK(generate_of("hello\n").request.prompt == "hello");
  CHECK(generate_of("hello\r\r").request.prompt == "hello\r"); // only one is stripped
  CHECK(generate_of("{\"prompt\":\"x\"}\r\n").request.prompt == "x");
  CHECK_FALSE(generate_of("{\"prompt\":\"x\"}\r").plain_text);
}

TEST_CASE("leading spaces before '{' still make a JSON request") {
  const auto op = generate_of(" \t {\"prompt\":\"x\"}");
  CHECK_FALSE(op.plain_text);
  CHECK(op.request.prompt == "x");
}

TEST_CASE("blank lines get no reply") {
  for (const auto* line : {"", "\r", "\n", "\r\n", "   ", " \t \r\n"}) {
    CAPTURE(line);
    CHECK(std::holds_alternative<empty_line>(parse(line)));
  }
}

TEST_CASE("plain-text errors are marked so their reply is plain text") {
  const auto e = error_of("bad \xff byte");
  CHECK(e.code == error_code::bad_request);
  CHECK(e.plain_text);
  CHECK(e.message == "invalid UTF-8 at byte 4");
  CHECK(format_error(e) == "error: bad_request: invalid UTF-8 at byte 4\n\n");
}

TEST_CASE("a line over the limit is refused before it is parsed") {
  parse_limits limits = test_limits();
  limits.max_line_bytes = 20;
  const std::string json_line = R"({"prompt":"0123456789"})"; // 23 bytes
  auto parsed = parse_line(json_line, limits);
  REQUIRE(std::holds_alternative<protocol_error>(parsed));
  CHECK(std::get<protocol_error>(parsed).message == "the line has 23 bytes, more than the limit of 20");
  CHECK_FALSE(std::get<protocol_error>(parsed).plain_text);

  parsed = parse_line(std::string(21, 'a') + "\r\n", limits);
  REQUIRE(std::holds_alternative<protocol_error>(parsed));
  CHECK(std::get<protocol_error>(parsed).plain_text);
  CHECK(std::holds_alternative<generate_op>(parse_line(std::string(20, 'a') + "\r\n", limits)));
}

TEST_CASE("deep nesting and garbage come back as errors") {
  CHECK(bad_request_message(std::string(4000, '{')) == "invalid JSON at byte 1: syntax error");
  std::string nested = R"({"prompt":"x","stop":)" + std::string(3000, '[') + std::string(3000, ']') + "}";
  parse_limits limits = test_limits();
  limits.max_line_bytes = 1 << 20;
  auto parsed = parse_line(nested, limits);
  REQUIRE(std::holds_alternative<protocol_error>(parsed));
  CHECK(std::get<protocol_error>(parsed).message == "invalid JSON at byte 24: too deep");

  CHECK(bad_request_message(R"({"prompt":"x","stop":[["a"]]})") == "'stop[0]' must be a string, got an array");
  CHECK(bad_request_message(R"({"a":{"b":{"c":{"d":{}}}}})") == "invalid JSON at byte 20: too deep");

  // Random bytes, biased towards JSON's punctuation: any outcome but a crash
  // or an exception is fine.
  const std::string alphabet = "{}[]\":,0123456789.eE+-tfnu\\ \xff\xc3\x80\x00promptid";
  uint64_t state = 12345;
  for (int trial = 0; trial < 20000; ++trial) {
    std::string line = trial % 2 ? "{" : "";
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const size_t length = (state >> 33) % 64;
    for (size_t i = 0; i < length; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      line += alphabet[(state >> 33) % alphabet.size()];
    }
    CAPTURE(line);
    const auto result = parse(line);
    CHECK(result.index() != std::variant_npos);
  }
}

// ============================================================================
// Replies
// ============================================================================

TEST_CASE("append_json_string escapes what JSON requires and nothing else") {
  const char raw[] = "q\"b\\s/n\nr\rt\tb\bf\fz\0\x01\x1f\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
  std::string out;
  append_json_string(out, std::string(raw, sizeof(raw) - 1));
  CHECK(out == "\"q\\\"b\\\\s/n\\nr\\rt\\tb\\bf\\fz\\u0000\\u0001\\u001f\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");

  out.clear();
  append_json_string(out, "a\xff" "b\xe2\x82");
  CHECK(out == "\"a\xef\xbf\xbd" "b\xef\xbf\xbd\""); // each ill-formed part becomes U+FFFD
}

TEST_CASE("a token line round-trips through a JSON parser") {
  const char raw[] = "He said \"hi\"\\\n\t\0\x1f \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
  const std::string text(raw, sizeof(raw) - 1);
  const std::vector<int32_t> tokens = {5, 0, 2147483647};
  auto reply = read_reply(format_token(request_id(std::string("a\"b")), text, tokens));
  CHECK(reply.at("id").as_string() == "a\"b");
  CHECK(std::string(reply.at("text").as_string()) == text);
  CHECK(json::value_to<std::vector<int32_t>>(reply.at("tokens")) == tokens);
  CHECK(reply.size() == 3);

  reply = read_reply(format_token(request_id(int64_t(-42)), "", {}));
  CHECK(reply.at("id").as_int64() == -42);
  CHECK(reply.at("tokens").as_array().empty());

  CHECK(format_token(std::nullopt, "x", std::vector<int32_t>{1}) == "{\"text\":\"x\",\"tokens\":[1]}\n");
  CHECK(format_token(request_id(INT64_MIN), "x", {}) == "{\"id\":-9223372036854775808,\"text\":\"x\",\"tokens\":[]}\n");
}

TEST_CASE("the final line: exact text, usage and rounded timings") {
  generate_result result;
  result.reason = finish_reason::length;
  result.usage = {5, 2, 3};
  result.timings = {1.5, 12.3456789, 0.25, 20.0};
  CHECK(format_final(request_id(int64_t(7)), result) ==
        R"({"id":7,"done":true,"finish_reason":"length","usage":{"prompt_tokens":5,"cached_tokens":2,)"
        R"("completion_tokens":3},"timings":{"queue_ms":1.5,"ttft_ms":12.346,"per_token_ms":0.25,"total_ms":20}})"
        "\n");

  result.reason = finish_reason::stop;
  const auto reply = read_reply(format_final(request_id(std::string("x")), result));
  CHECK(reply.at("done").as_bool());
  CHECK(reply.at("finish_reason").as_string() == "stop");
  CHECK_FALSE(reply.contains("text"));
  CHECK_FALSE(reply.contains("tokens"));
  CHECK(reply.at("usage").at("cached_tokens").as_int64() == 2);
  CHECK(reply.at("timings").at("total_ms").to_number<double>() == 20.0);
}

TEST_CASE("with stream=false the final line carries the whole text and tokens") {
  generate_result result;
  result.usage = {3, 0, 2};
  const std::vector<int32_t> tokens = {10, 11};
  const auto reply = read_reply(format_final(request_id(int64_t(1)), result, completion{"line\none", tokens}));
  CHECK(reply.at("text").as_string() == "line\none");
  CHECK(json::value_to<std::vector<int32_t>>(reply.at("tokens")) == tokens);
  CHECK(reply.at("finish_reason").as_string() == "stop");
  CHECK(reply.at("usage").at("completion_tokens").as_int64() == 2);
}

TEST_CASE("timings that are not finite are written as null, keeping the line valid JSON") {
  generate_result result;
  result.timings.per_token_ms = std::numeric_limits<double>::quiet_NaN();
  result.timings.total_ms = std::numeric_limits<double>::infinity();
  const auto reply = read_reply(format_final(std::nullopt, result));
  CHECK(reply.at("timings").at("per_token_ms").is_null());
  CHECK(reply.at("timings").at("total_ms").is_null());
  CHECK_FALSE(reply.contains("id"));
}

TEST_CASE("a cancelled or failed result ends with an error line") {
  generate_result cancelled;
  cancelled.reason = finish_reason::cancelled;
  CHECK(format_final(request_id(int64_t(3)), cancelled) ==
        "{\"id\":3,\"error\":{\"code\":\"cancelled\",\"message\":\"the request was cancelled\"}}\n");

  generate_result too_long;
  too_long.reason = finish_reason::error;
  too_long.error = error_code::context_length_exceeded;
  too_long.message = "prompt (9000 tokens) + max_tokens (256) exceed the context of 8192";
  const auto reply = read_reply(format_final(request_id(std::string("q")), too_long));
  CHECK(reply.at("id").as_string() == "q");
  CHECK(reply.at("error").at("code").as_string() == "context_length_exceeded");
  CHECK(reply.at("error").at("message").as_string() == too_long.message);
  CHECK_FALSE(reply.contains("done"));

  generate_result unexplained;
  unexplained.reason = finish_reason::error;
  CHECK(read_reply(format_final(std::nullopt, unexplained)).at("error").at("code").as_string() == "internal");
}

TEST_CASE("error lines for every code") {
  for (const auto code : {error_code::bad_request, error_code::context_length_exceeded, error_code::overloaded,
                          error_code::cancelled, error_code::internal}) {
    const auto reply = read_reply(format_error(request_id(int64_t(1)), code, "why \"this\"\n"));
    CHECK(reply.at("error").at("code").as_string() == to_string(code));
    CHECK(reply.at("error").at("message").as_string() == "why \"this\"\n");
  }
  const protocol_error e{error_code::bad_request, "'top_p' must be > 0 and <= 1, got 0",
                         request_id(std::string("r")), false};
  CHECK(format_error(e) ==
        "{\"id\":\"r\",\"error\":{\"code\":\"bad_request\",\"message\":\"'top_p' must be > 0 and <= 1, got 0\"}}\n");
}

TEST_CASE("health, stats, models and auth replies") {
  CHECK(format_health(request_id(int64_t(1)), "ok", 12.34567) == "{\"id\":1,\"status\":\"ok\",\"uptime_s\":12.346}\n");

  const std::map<std::string, double> stats = {
      {"requests_total", 5}, {"kv_pages_free", 1024}, {"tokens_per_s", 123.5}, {"big", 1e21}, {"tiny", 1e-7}};
  const std::string line = format_stats(std::nullopt, stats);
  CHECK(line ==
        "{\"stats\":{\"big\":1e+21,\"kv_pages_free\":1024,\"requests_total\":5,\"tiny\":1e-07,\"tokens_per_s\":123.5}}\n");
  const auto reply = read_reply(line);
  for (const auto& [name, value] : stats) CHECK(reply.at("stats").at(name).to_number<double>() == value);

  const std::vector<model_info> models = {{"llama3", "LlamaForCausalLM", 8192, 128256}};
  CHECK(format_models(request_id(std::string("m")), models) ==
        "{\"id\":\"m\",\"models\":[{\"name\":\"llama3\",\"architecture\":\"LlamaForCausalLM\","
        "\"max_context\":8192,\"vocab_size\":128256}]}\n");
  const std::vector<model_info> two = {{"a", "LlamaForCausalLM", 1, 2}, {"b", "Qwen3ForCausalLM", 3, 4}};
  const auto both = read_reply(format_models(std::nullopt, two));
  REQUIRE(both.at("models").as_array().size() == 2);
  CHECK(both.at("models").as_array()[1].at("name").as_string() == "b");
  CHECK(format_models(std::nullopt, {}) == "{\"models\":[]}\n");

  CHECK(format_auth_ok(std::nullopt) == "{\"ok\":true}\n");
  CHECK(format_auth_ok(request_id(int64_t(2))) == "{\"id\":2,\"ok\":true}\n");
}

TEST_CASE("plain-text endings") {
  generate_result ok;
  CHECK(format_plain_final(ok) == "\n\n");
  ok.reason = finish_reason::length;
  CHECK(format_plain_final(ok) == "\n\n");

  generate_result failed;
  failed.reason = finish_reason::error;
  failed.error = error_code::overloaded;
  failed.message = "1024 requests are waiting";
  CHECK(format_plain_final(failed) == "\nerror: overloaded: 1024 requests are waiting\n\n");
  CHECK(format_plain_error(error_code::internal, "boom") == "error: internal: boom\n\n");
}
