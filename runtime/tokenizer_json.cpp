#include "runtime/tokenizer_json.h"

namespace kvactor::tokenization {

namespace {

// Ids index a table; a bound keeps a corrupt file from asking for gigabytes.
constexpr int64_t max_token_id = (int64_t{1} << 22) - 1;

} // namespace

const json::object& as_object(const json::value& v, std::string_view what) {
  if (!v.is_object()) throw bad_content(std::string(what) + " is not an object");
  return v.get_object();
}

const json::array& as_array(const json::value& v, std::string_view what) {
  if (!v.is_array()) throw bad_content(std::string(what) + " is not an array");
  return v.get_array();
}

std::string as_string(const json::value& v, std::string_view what) {
  if (!v.is_string()) throw bad_content(std::string(what) + " is not a string");
  return std::string(v.get_string());
}

int64_t as_integer(const json::value& v, std::string_view what) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64() && v.get_uint64() <= uint64_t(INT64_MAX)) return int64_t(v.get_uint64());
  throw bad_content(std::string(what) + " is not an integer");
}

int32_t as_token_id(const json::value& v, std::string_view what) {
  const int64_t id = as_integer(v, what);
  if (id < 0 || id > max_token_id) throw bad_content(std::string(what) + " " + std::to_string(id) + " is out of range");
  return int32_t(id);
}

const json::value* find(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && !v->is_null() ? v : nullptr;
}

const json::value& require(const json::object& o, std::string_view key, std::string_view what) {
  const json::value* v = find(o, key);
  if (!v) throw bad_content(std::string(what) + " has no \"" + std::string(key) + "\"");
  return *v;
}

bool get_bool(const json::object& o, std::string_view key, bool fallback, std::string_view what) {
  const json::value* v = find(o, key);
  if (!v) return fallback;
  if (!v->is_bool()) throw bad_content(std::string(what) + " \"" + std::string(key) + "\" is not a boolean");
  return v->get_bool();
}

std::string get_string(const json::object& o, std::string_view key, std::string_view what) {
  return as_string(require(o, key, what), std::string(what) + " \"" + std::string(key) + "\"");
}

std::string type_of(const json::object& o, std::string_view what) { return get_string(o, "type", what); }

char32_t as_char(const std::string& s, std::string_view what) {
  if (s.empty() || unicode::char_length(static_cast<unsigned char>(s[0])) != s.size())
    throw bad_content(std::string(what) + " is not a single character");
  size_t pos = 0;
  return unicode::next_char(s, pos);
}

unicode::regex parse_pattern(const json::value& v, std::string_view what) {
  const json::object& o = as_object(v, what);
  if (const json::value* s = find(o, "String")) return unicode::regex(as_string(*s, what), true);
  if (const json::value* r = find(o, "Regex")) return unicode::regex(as_string(*r, what), false);
  throw bad_content(std::string(what) + " is neither a String nor a Regex pattern");
}

} // namespace kvactor::tokenization
