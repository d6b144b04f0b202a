#pragma once
// Stop strings over streamed text. Text is released as soon as no stop
// string can still begin in it; the tail that could be the start of one is
// held back. Once a stop string appears, the text before it is released and
// the rest (the stop string included) never is.
#include <string>
#include <string_view>
#include <vector>

namespace kvactor {

class stop_matcher {
 public:
  explicit stop_matcher(std::vector<std::string> stops); // empty strings are ignored

  // Adds streamed text; returns the text that is now final.
  std::string push(std::string_view text);
  // The held-back tail, at the end of the stream when no stop string came.
  std::string finish();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

} // namespace kvactor
