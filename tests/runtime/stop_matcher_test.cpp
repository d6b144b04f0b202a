#include "runtime/stop_matcher.h"

#include <doctest/doctest.h>

using namespace kvactor;

TEST_CASE("text is released until a stop string and never after") {
  stop_matcher m({"END", "\n\n"});
  CHECK(m.push("Hello") == "Hello");
  CHECK(m.push(" wor") == " wor");
  CHECK(m.push("ld E") == "ld ");  // "E" may begin END
  CHECK(m.push("N") == "");        // "EN" still may
  CHECK(m.push("Dless") == "");    // END: stop; "less" is withheld
  CHECK(m.stopped());
  CHECK(m.push("more") == "");
  CHECK(m.finish() == "");
}

TEST_CASE("a held-back tail that turns out not to stop is released") {
  stop_matcher m({"END"});
  CHECK(m.push("the EN") == "the ");
  CHECK(m.push("ding") == "ENding");
  CHECK(m.push("E") == "");
  CHECK(m.finish() == "E");
  CHECK_FALSE(m.stopped());
}

TEST_CASE("the earliest stop string wins, inside one piece or across pieces") {
  stop_matcher m({"cd", "b"});
  CHECK(m.push("abcd") == "a");
  stop_matcher n({"xyz"});
  CHECK(n.push("ax") == "a");
  CHECK(n.push("y") == "");
  CHECK(n.push("zzz") == "");
  CHECK(n.stopped());
}

TEST_CASE("overlapping prefixes hold back the longest possible start") {
  stop_matcher m({"aab"});
  CHECK(m.push("xaa") == "x");
  CHECK(m.push("a") == "a"); // "aaa": only the last "aa" may still begin "aab"
  CHECK(m.push("b") == "");
  CHECK(m.stopped());
}

TEST_CASE("without stop strings everything passes at once") {
  stop_matcher m({"", ""});
  CHECK(m.push("abc") == "abc");
  CHECK(m.finish() == "");
}
