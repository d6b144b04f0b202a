#include "runtime/token_decoders.h"

#include <algorithm>
#include <utility>

#include "runtime/byte_level_alphabet.h"
#include "runtime/pre_tokenizers.h"
#include "runtime/tokenizer_text.h"
#include "runtime/unicode.h"

namespace kvactor::tokenization {

namespace {

std::u32string to_chars(std::string_view text) {
  std::u32string chars;
  for (size_t pos = 0; pos < text.size();) chars.push_back(unicode::next_char(text, pos));
  return chars;
}

std::string to_utf8(std::u32string_view chars) {
  std::string out;
  for (char32_t c : chars) unicode::append_utf8(out, c);
  return out;
}

class byte_level_decoder final : public decoder_step {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    const auto& alphabet = byte_level();
    std::string bytes;
    for (const std::string& token : tokens) {
      const size_t mark = bytes.size();
      bool in_alphabet = true;
      for (size_t pos = 0; pos < token.size() && in_alphabet;) {
        const char32_t c = unicode::next_char(token, pos);
        const int b = c < alphabet.byte_of_char.size() ? alphabet.byte_of_char[c] : -1;
        if (b < 0) in_alphabet = false;
        else bytes.push_back(char(b));
      }
      // A token outside the alphabet (an added token with spaces, say) stands for its own bytes.
      if (!in_alphabet) bytes.resize(mark), bytes.append(token);
    }
    tokens.assign(1, unicode::from_utf8_lossy(bytes));
  }
};

class replace_decoder final : public decoder_step {
 public:
  replace_decoder(unicode::regex pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) token = replace_all(pattern_, token, content_);
  }

 private:
  unicode::regex pattern_;
  std::string content_;
};

// Runs of <0xXX> tokens become the text their bytes spell; a run that is not
// valid UTF-8 becomes one U+FFFD per byte (not from_utf8_lossy), as HF does.
class byte_fallback_decoder final : public decoder_step {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string run;
    const auto flush = [&] {
      if (run.empty()) return;
      if (unicode::find_invalid_utf8(run) == std::string_view::npos) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run.size(); ++i) out.emplace_back(unicode::replacement_character);
      }
      run.clear();
    };
    for (std::string& token : tokens) {
      if (const auto byte = fallback_byte(token)) {
        run.push_back(char(*byte));
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class fuse_decoder final : public decoder_step {
 public:
  void apply(std::vector<std::string>& tokens) const override { tokens.assign(1, join(tokens, "")); }
};

// Removes up to `start` leading and `stop` trailing `content` characters of each token.
class strip_decoder final : public decoder_step {
 public:
  strip_decoder(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      const std::u32string chars = to_chars(token);
      size_t begin = 0;
      while (begin < std::min(start_, chars.size()) && chars[begin] == content_) ++begin;
      size_t end = chars.size();
      while (chars.size() - end < stop_ && end > begin && chars[end - 1] == content_) --end;
      token = to_utf8(std::u32string_view(chars).substr(begin, end - begin));
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

// The replacement character becomes a space, except in the first token,
// where HF drops it (the space the pre-tokenizer prepended).
class metaspace_decoder final : public decoder_step {
 public:
  metaspace_decoder(char32_t replacement, bool drop_in_first) : replacement_(replacement), drop_in_first_(drop_in_first) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      for (size_t pos = 0; pos < tokens[i].size();) {
        const char32_t c = unicode::next_char(tokens[i], pos);
        if (c != replacement_) unicode::append_utf8(out, c);
        else if (!(i == 0 && drop_in_first_)) out.push_back(' ');
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  char32_t replacement_;
  bool drop_in_first_;
};

size_t as_count(const json::value& v, std::string_view what) {
  const int64_t n = as_integer(v, what);
  if (n < 0) throw bad_content(std::string(what) + " is negative");
  return size_t(n);
}

} // namespace

void parse_decoder(const json::value& v, decoder_chain& chain) {
  if (v.is_null()) return;
  const json::object& o = as_object(v, "decoder");
  const std::string type = type_of(o, "decoder");
  if (type == "Sequence") {
    for (const json::value& item : as_array(require(o, "decoders", "Sequence decoder"), "decoders"))
      parse_decoder(item, chain);
  } else if (type == "ByteLevel") {
    chain.push_back(std::make_unique<byte_level_decoder>());
  } else if (type == "Replace") {
    chain.push_back(std::make_unique<replace_decoder>(
        parse_pattern(require(o, "pattern", "Replace decoder"), "Replace decoder pattern"),
        get_string(o, "content", "Replace decoder")));
  } else if (type == "ByteFallback") {
    chain.push_back(std::make_unique<byte_fallback_decoder>());
  } else if (type == "Fuse") {
    chain.push_back(std::make_unique<fuse_decoder>());
  } else if (type == "Strip") {
    chain.push_back(std::make_unique<strip_decoder>(
        as_char(get_string(o, "content", "Strip decoder"), "Strip decoder content"),
        as_count(require(o, "start", "Strip decoder"), "Strip decoder start"),
        as_count(require(o, "stop", "Strip decoder"), "Strip decoder stop")));
  } else if (type == "Metaspace") {
    chain.push_back(std::make_unique<metaspace_decoder>(
        as_char(get_string(o, "replacement", "Metaspace decoder"), "Metaspace decoder replacement"),
        parse_prepend_scheme(o, "Metaspace decoder") != prepend_scheme::never));
  } else {
    throw bad_content("unsupported decoder type '" + type + "'");
  }
}

bool has_byte_fallback(const decoder_chain& chain) {
  return std::any_of(chain.begin(), chain.end(),
                     [](const auto& d) { return dynamic_cast<const byte_fallback_decoder*>(d.get()) != nullptr; });
}

std::optional<uint8_t> fallback_byte(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || !token.ends_with('>')) return std::nullopt;
  std::string_view digits = token.substr(3, 2);
  if (digits.front() == '+') digits.remove_prefix(1);
  unsigned value = 0;
  for (char c : digits) {
    unsigned d = 0;
    if (c >= '0' && c <= '9') d = unsigned(c - '0');
    else if (c >= 'a' && c <= 'f') d = unsigned(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') d = unsigned(c - 'A' + 10);
    else return std::nullopt;
    value = value * 16 + d;
  }
  return uint8_t(value);
}

} // namespace kvactor::tokenization
