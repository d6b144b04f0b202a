#pragma once
// Reading the reference data that tools/reference/ writes as JSON
// (transformers' logits, tokens and margins, generated on the GPU machine).
#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace kvactor::test {

inline boost::json::value read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in, "cannot open " << path.string());
  std::stringstream text;
  text << in.rdbuf();
  return boost::json::parse(text.str());
}

// A JSON array of numbers; throws where one does not fit in T.
template <class T>
std::vector<T> numbers(const boost::json::value& v) {
  std::vector<T> out;
  for (const auto& x : v.as_array()) out.push_back(x.to_number<T>());
  return out;
}

} // namespace kvactor::test
