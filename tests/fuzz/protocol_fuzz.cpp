// The line protocol on arbitrary bytes: parse_line never throws and refuses
// every defect as bad_request; what it accepts obeys the documented rules
// (docs/protocol.md) and passes or fails request validation by value; every
// reply written about it, and any text put in a JSON string, is valid JSON.
#include <boost/json.hpp>

#include <variant>

#include "net/protocol.h"
#include "runtime/request_check.h"
#include "runtime/unicode.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace kvactor;
using namespace kvactor::net;
namespace json = boost::json;

const parse_limits& limits() {
  static const parse_limits l = [] {
    parse_limits p;
    p.max_line_bytes = 4096;
    p.system_prompts = {"assistant", "pirate"};
    return p;
  }();
  return l;
}

// `line` is one JSON object and a '\n'; the object.
json::object reply_object(const std::string& line) {
  FUZZ_CHECK(!line.empty() && line.back() == '\n');
  FUZZ_CHECK(line.find('\n') == line.size() - 1);
  boost::system::error_code ec;
  const json::value v = json::parse(std::string_view(line).substr(0, line.size() - 1), ec);
  FUZZ_CHECK(!ec);
  FUZZ_CHECK(v.is_object());
  return v.as_object();
}

// The reply echoes `id` exactly as given.
void check_echo(const json::object& o, const std::optional<request_id>& id) {
  if (!id) {
    FUZZ_CHECK(!o.contains("id"));
    return;
  }
  FUZZ_CHECK(o.contains("id"));
  if (const auto* n = std::get_if<int64_t>(&*id)) {
    FUZZ_CHECK(o.at("id").is_int64() && o.at("id").get_int64() == *n);
  } else {
    FUZZ_CHECK(o.at("id").is_string() && o.at("id").get_string() == std::get<std::string>(*id));
  }
}

void check_generate(const generate_op& op) {
  const generate_request& r = op.request;
  FUZZ_CHECK(r.prompt.empty() != r.prompt_tokens.empty());
  FUZZ_CHECK(unicode::find_invalid_utf8(r.prompt) == std::string_view::npos);
  FUZZ_CHECK(r.max_tokens >= 0 && r.max_tokens <= limits().max_tokens_cap);
  for (const int32_t t : r.prompt_tokens) FUZZ_CHECK(t >= 0);
  for (const auto& s : r.stop) {
    FUZZ_CHECK(!s.empty());
    FUZZ_CHECK(unicode::find_invalid_utf8(s) == std::string_view::npos);
  }
  if (op.plain_text) FUZZ_CHECK(!op.id);

  // Validation answers by value, with a reason.
  request_limits rl;
  rl.vocab_size = 2048;
  rl.max_context = 1024;
  rl.system_prompts = limits().system_prompts;
  if (const auto problem = check_request(r, rl)) FUZZ_CHECK(!problem->message.empty());

  // Replies about it are JSON lines that echo its id.
  const int32_t tokens[] = {0, 1, 2047};
  check_echo(reply_object(format_token(op.id, r.prompt, tokens)), op.id);
  generate_result done;
  done.reason = finish_reason::length;
  check_echo(reply_object(format_final(op.id, done, completion{r.prompt, tokens})), op.id);
  done.reason = finish_reason::error;
  done.error = error_code::internal;
  done.message = r.prompt;
  const json::object failed = reply_object(format_final(op.id, done));
  check_echo(failed, op.id);
  FUZZ_CHECK(failed.at("error").at("code") == "internal");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input = kvactor::fuzz::as_text(data, size);
  const parsed_line parsed = parse_line(input, limits());
  if (const auto* op = std::get_if<generate_op>(&parsed)) {
    check_generate(*op);
  } else if (const auto* e = std::get_if<protocol_error>(&parsed)) {
    // Only a failure to allocate may give `internal`; anything else is the client's.
    FUZZ_CHECK(e->code == error_code::bad_request);
    FUZZ_CHECK(!e->message.empty());
    const std::string reply = format_error(*e);
    if (e->plain_text) {
      FUZZ_CHECK(reply.starts_with("error: bad_request: ") && reply.ends_with("\n\n"));
    } else {
      const json::object o = reply_object(reply);
      check_echo(o, e->id);
      FUZZ_CHECK(o.at("error").at("code") == "bad_request");
    }
  } else if (const auto* c = std::get_if<cancel_op>(&parsed)) {
    check_echo(reply_object(format_error(c->id, error_code::cancelled, "cancelled")), c->id);
  } else if (const auto* h = std::get_if<health_op>(&parsed)) {
    check_echo(reply_object(format_health(h->id, "ok", 1.5)), h->id);
  }

  // Any bytes become one JSON string, ill-formed UTF-8 as U+FFFD.
  std::string quoted;
  append_json_string(quoted, input);
  boost::system::error_code ec;
  const json::value v = json::parse(quoted, ec);
  FUZZ_CHECK(!ec && v.is_string());
  FUZZ_CHECK(v.get_string() == unicode::from_utf8_lossy(input));
  return 0;
}
