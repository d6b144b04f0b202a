#pragma once
// Unicode text helpers for the tokenizer: UTF-8 validation and lossy
// decoding with Rust's rules (HF tokenizers is written in Rust), NFC through
// utf8proc, the character classes HF's added-token matching uses, and a PCRE2
// regex (UTF + UCP) that finds every non-overlapping match.
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct pcre2_real_code_8;

namespace kvactor::unicode {

// U+FFFD, which stands for bytes that are not valid UTF-8.
inline constexpr std::string_view replacement_character = "\xEF\xBF\xBD";

// Byte offset of the first ill-formed UTF-8 sequence in `bytes`, or npos.
size_t find_invalid_utf8(std::string_view bytes);

// As Rust's String::from_utf8_lossy: each maximal ill-formed subsequence (the
// longest prefix of a well-formed sequence, or one byte) becomes one U+FFFD.
std::string from_utf8_lossy(std::string_view bytes);

// note: `text` must be valid UTF-8 from here on.
// Decodes the character starting at `pos` and moves `pos` past it.
char32_t next_char(std::string_view text, size_t& pos);
// Length in bytes of the character whose first byte is `lead`.
size_t char_length(unsigned char lead);
void append_utf8(std::string& out, char32_t c);

std::string nfc(std::string_view text);

// Unicode White_Space, as Rust's char::is_whitespace and regex \s.
bool is_white_space(char32_t c);
// Rust regex \w: letters, marks, decimal and letter numbers, connector punctuation.
bool is_word_char(char32_t c);

// A compiled PCRE2 pattern (UTF and UCP, JIT when available). Copies share
// the compiled code; matching is thread-safe.
class regex {
 public:
  // `literal` matches the pattern text as is. Throws kvactor::error with
  // PCRE2's message when the pattern does not compile.
  regex(std::string_view pattern, bool literal);

  // [begin, end) byte ranges of the non-overlapping matches in `text`, left
  // to right. An empty match right after the previous match is skipped, as
  // Oniguruma's iterator (used by HF) does.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

 private:
  std::shared_ptr<pcre2_real_code_8> code_;
  bool jit_ = false;
};

} // namespace kvactor::unicode
