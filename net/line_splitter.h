#pragma once
// Cuts a byte stream into lines for the line protocol, holding at most one
// line's worth of bytes. A line longer than the limit is reported once, with
// its first bytes, and the rest of it is skipped up to its '\n', so that the
// connection stays usable.
#include <cstddef>
#include <string>
#include <string_view>

namespace kvactor::net {

class line_splitter {
 public:
  // `max_line_bytes` does not count the '\n' nor a '\r' before it.
  explicit line_splitter(size_t max_line_bytes) : max_bytes_(max_line_bytes + 1) {}

  // Calls on_line(std::string_view) for each complete line, without its
  // '\n' (a '\r' before it is left to the parser), and on_too_long(
  // std::string_view head) for each line over the limit, `head` being its
  // first bytes. Either callback returns false to stop: the rest of `data`
  // is then dropped.
  template <class OnLine, class OnTooLong>
  void feed(std::string_view data, OnLine&& on_line, OnTooLong&& on_too_long) {
    while (!data.empty()) {
      const size_t nl = data.find('\n');
      const std::string_view piece = data.substr(0, nl);
      data = nl == std::string_view::npos ? std::string_view() : data.substr(nl + 1);
      if (skipping_) {
        skipping_ = nl == std::string_view::npos;
        continue;
      }
      if (partial_.size() + piece.size() > max_bytes_) {
        partial_.append(piece.substr(0, max_bytes_ - partial_.size()));
        const bool go_on = on_too_long(std::string_view(partial_));
        partial_.clear();
        skipping_ = nl == std::string_view::npos;
        if (!go_on) return;
        continue;
      }
      if (nl == std::string_view::npos) {
        partial_.append(piece);
        return;
      }
      bool go_on;
      if (partial_.empty()) {
        go_on = on_line(piece);
      } else {
        partial_.append(piece);
        go_on = on_line(std::string_view(partial_));
        partial_.clear();
      }
      if (!go_on) return;
    }
  }

  // The end of the stream: the last line if it had no '\n' ("" if none).
  std::string finish() {
    std::string rest = skipping_ ? std::string() : std::move(partial_);
    partial_.clear();
    skipping_ = false;
    return rest;
  }

 private:
  size_t max_bytes_;
  std::string partial_; // the current line so far
  bool skipping_ = false; // inside a line that was too long
};

} // namespace kvactor::net
