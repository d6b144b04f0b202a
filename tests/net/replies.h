#pragma once
// Reading the daemon's JSON replies in tests: lines grouped by request id,
// and checks that each request got exactly one terminal line.
#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tests/net/test_client.h"

namespace kvactor::net::testing {

namespace json = boost::json;
using namespace std::chrono_literals;

inline json::object parse(const std::optional<std::string>& line) {
  REQUIRE(line.has_value());
  const json::value v = json::parse(*line);
  REQUIRE(v.is_object());
  return v.as_object();
}

inline std::string id_of(const json::object& o) { return o.contains("id") ? json::serialize(o.at("id")) : "-"; }
// A string id as id_of gives it back.
inline std::string quoted(const std::string& id) { return "\"" + id + "\""; }
inline bool is_terminal(const json::object& o) { return o.contains("done") || o.contains("error"); }
inline std::string error_code_of(const json::object& o) {
  return o.contains("error") ? std::string(o.at("error").at("code").as_string()) : "";
}

// The token ids of a request's token lines, in order.
inline std::vector<int64_t> tokens_of(const std::vector<json::object>& lines) {
  std::vector<int64_t> out;
  for (const auto& o : lines)
    if (o.contains("tokens") && !o.contains("done"))
      for (const auto& t : o.at("tokens").as_array()) out.push_back(t.as_int64());
  return out;
}

// The replies to several requests of one connection, in arrival order.
struct replies {
  std::vector<json::object> lines;
  std::map<std::string, std::vector<json::object>> by_id;
  std::map<std::string, int> terminals;

  const json::object& last(const std::string& id) const { return by_id.at(id).back(); }
};

// Adds one line.
inline void add(replies& r, const json::object& o) {
  const std::string id = id_of(o);
  r.lines.push_back(o);
  r.by_id[id].push_back(o);
  if (is_terminal(o)) ++r.terminals[id];
}

// Reads until each of `ids` (JSON-serialized ids) has its terminal line;
// `r` may hold lines read before.
inline replies collect(test_client& c, const std::set<std::string>& ids, std::chrono::milliseconds limit = 10s,
                       replies r = {}) {
  const auto end = std::chrono::steady_clock::now() + limit;
  auto finished = [&] {
    return std::all_of(ids.begin(), ids.end(), [&](const std::string& id) { return r.terminals[id] > 0; });
  };
  while (!finished()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    const auto line = c.read_line(std::max(left, 1ms));
    REQUIRE_MESSAGE(line.has_value(), "timed out waiting for terminal lines");
    add(r, parse(line));
  }
  return r;
}

// Every request got exactly one terminal line, and nothing after it.
inline void check_one_terminal_each(const replies& r) {
  for (const auto& [id, lines] : r.by_id) {
    if (id == "-") continue; // replies to ops without an id
    CHECK_MESSAGE(r.terminals.at(id) == 1, "request " << id);
    CHECK_MESSAGE(is_terminal(lines.back()), "request " << id);
  }
}

} // namespace kvactor::net::testing
