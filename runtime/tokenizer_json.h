#pragma once
// Typed access to the sections of a tokenizer.json. Each check throws
// bad_content saying which field is wrong; from_json adds the file name.
#include <boost/json.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "runtime/unicode.h"

namespace kvactor::tokenization {

namespace json = boost::json;

// A problem with the file's content; from_json prefixes the file name.
class bad_content : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

const json::object& as_object(const json::value& v, std::string_view what);
const json::array& as_array(const json::value& v, std::string_view what);
std::string as_string(const json::value& v, std::string_view what);
int64_t as_integer(const json::value& v, std::string_view what);
int32_t as_token_id(const json::value& v, std::string_view what);

// The value at `key`, or nullptr when it is missing or null.
const json::value* find(const json::object& o, std::string_view key);
const json::value& require(const json::object& o, std::string_view key, std::string_view what);
bool get_bool(const json::object& o, std::string_view key, bool fallback, std::string_view what);
std::string get_string(const json::object& o, std::string_view key, std::string_view what);
std::string type_of(const json::object& o, std::string_view what);

char32_t as_char(const std::string& s, std::string_view what);
// {"String": s} matches s literally; {"Regex": r} is a regular expression.
unicode::regex parse_pattern(const json::value& v, std::string_view what);

} // namespace kvactor::tokenization
