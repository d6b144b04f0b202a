#include "runtime/added_tokens.h"

#include <algorithm>

#include "runtime/unicode.h"

namespace kvactor::tokenization {

namespace {

// Where the whitespace at the end of `text` begins.
size_t trailing_space_begin(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t begin = end - 1;
    while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xc0) == 0x80) --begin;
    size_t pos = begin;
    if (!unicode::is_white_space(unicode::next_char(text, pos))) break;
    end = begin;
  }
  return end;
}

size_t leading_space_length(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t next = pos;
    if (!unicode::is_white_space(unicode::next_char(text, next))) break;
    pos = next;
  }
  return pos;
}

bool starts_with_word(std::string_view text) {
  size_t pos = 0;
  return !text.empty() && unicode::is_word_char(unicode::next_char(text, pos));
}

bool ends_with_word(std::string_view text) {
  if (text.empty()) return false;
  size_t begin = text.size() - 1;
  while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xc0) == 0x80) --begin;
  return unicode::is_word_char(unicode::next_char(text, begin));
}

} // namespace

std::vector<added_token> parse_added_tokens(const json::value& v) {
  std::vector<added_token> tokens;
  for (const json::value& item : as_array(v, "added_tokens")) {
    const json::object& a = as_object(item, "added token");
    added_token token{as_token_id(require(a, "id", "added token"), "added token id"),
                      get_string(a, "content", "added token"),
                      get_bool(a, "single_word", false, "added token"),
                      get_bool(a, "lstrip", false, "added token"),
                      get_bool(a, "rstrip", false, "added token"),
                      get_bool(a, "normalized", true, "added token"),
                      get_bool(a, "special", false, "added token")};
    if (token.content.empty()) throw bad_content("added token " + std::to_string(token.id) + " is empty");
    tokens.push_back(std::move(token));
  }
  return tokens;
}

void added_token_matcher::add(std::string pattern, const added_token* token) {
  if (pattern.empty()) return;
  by_first_byte_[static_cast<unsigned char>(pattern[0])].push_back({std::move(pattern), token});
}

void added_token_matcher::finish_adding() {
  for (auto& bucket : by_first_byte_)
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const entry& a, const entry& b) { return a.pattern.size() > b.pattern.size(); });
}

void added_token_matcher::split(std::string_view text, std::vector<text_span>& out) const {
  size_t start_offset = 0;
  for (size_t i = 0; i < text.size();) {
    const entry* match = longest_at(text, i);
    if (!match) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + match->pattern.size();
    i = stop; // a discarded match is not searched again, as with Aho-Corasick
    const added_token& token = *match->token;
    if (token.single_word) {
      const bool space_before = start == 0 || !ends_with_word(text.substr(0, start));
      const bool space_after = stop == text.size() || !starts_with_word(text.substr(stop));
      if (!space_before || !space_after) continue;
    }
    if (token.lstrip) start = std::max(trailing_space_begin(text.substr(0, start)), start_offset);
    if (token.rstrip) i = stop += leading_space_length(text.substr(stop));
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, token.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

const added_token_matcher::entry* added_token_matcher::longest_at(std::string_view text, size_t at) const {
  for (const entry& e : by_first_byte_[static_cast<unsigned char>(text[at])])
    if (text.compare(at, e.pattern.size(), e.pattern) == 0) return &e;
  return nullptr;
}

} // namespace kvactor::tokenization
