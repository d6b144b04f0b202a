// Cutting the byte stream into lines: whole lines however the bytes arrive,
// over-long lines reported once with their first bytes and skipped to their
// end, the last line without a '\n'.
#include "net/line_splitter.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace kvactor::net;

namespace {

// Feeds `chunks` one after the other; what came out, "!" marking a line
// that was too long, followed by its head.
std::vector<std::string> split(size_t max, const std::vector<std::string>& chunks, std::string* rest = nullptr) {
  line_splitter s(max);
  std::vector<std::string> out;
  for (const auto& c : chunks) {
    s.feed(
        c,
        [&](std::string_view line) {
          out.emplace_back(line);
          return true;
        },
        [&](std::string_view head) {
          out.push_back("!" + std::string(head));
          return true;
        });
  }
  if (rest) *rest = s.finish();
  return out;
}

} // namespace

TEST_CASE("lines come out whole, however the bytes are cut") {
  using v = std::vector<std::string>;
  CHECK(split(100, {"a\nbb\n\nccc\n"}) == v{"a", "bb", "", "ccc"});
  CHECK(split(100, {"a", "b", "\nc", "d\n"}) == v{"ab", "cd"});
  CHECK(split(100, {"x\r\n"}) == v{"x\r"}); // the '\r' is the parser's
  std::string rest;
  CHECK(split(100, {"one\ntw", "o"}, &rest) == v{"one"});
  CHECK(rest == "two");
}

TEST_CASE("a line over the limit is reported once and skipped to its end") {
  using v = std::vector<std::string>;
  // Limit 4: 4 bytes and a '\r' fit; 6 bytes do not.
  CHECK(split(4, {"abcd\r\nok\n"}) == v{"abcd\r", "ok"});
  CHECK(split(4, {"abcdef\nok\n"}) == v{"!abcde", "ok"});
  // Across chunks, reported when it first goes over, the rest skipped.
  CHECK(split(4, {"ab", "cdefgh", "ijk", "lm\nnext\n"}) == v{"!abcde", "next"});
  std::string rest;
  CHECK(split(4, {"abcdefgh"}, &rest) == v{"!abcde"});
  CHECK(rest.empty()); // the skipped line is not a last line
}

TEST_CASE("a callback returning false drops the rest of the chunk") {
  line_splitter s(100);
  std::vector<std::string> out;
  s.feed("a\nb\nc\n", [&](std::string_view line) {
    out.emplace_back(line);
    return out.size() < 2;
  }, [](std::string_view) { return true; });
  CHECK(out == std::vector<std::string>{"a", "b"});
}
