#pragma once
// The added tokens of a tokenizer.json and how they are found in text, as
// HF's AddedVocabulary: they are cut out before the rest is encoded.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer_json.h"

namespace kvactor::tokenization {

struct added_token {
  int32_t id;
  std::string content;
  bool single_word, lstrip, rstrip, normalized, special;
};

// The "added_tokens" section, in file order.
std::vector<added_token> parse_added_tokens(const json::value& v);

struct text_span {
  size_t begin, end;
  int32_t token_id; // -1: ordinary text
};

// Finds added tokens in text, leftmost-longest, with the lstrip / rstrip /
// single_word rules of HF's AddedVocabulary::find_matches.
class added_token_matcher {
 public:
  // note: `token` must outlive the matcher.
  void add(std::string pattern, const added_token* token);
  void finish_adding();

  // Appends spans covering `text`; empty spans are left out.
  void split(std::string_view text, std::vector<text_span>& out) const;

 private:
  struct entry {
    std::string pattern;
    const added_token* token;
  };
  const entry* longest_at(std::string_view text, size_t at) const;
  std::array<std::vector<entry>, 256> by_first_byte_;
};

} // namespace kvactor::tokenization
