#include "runtime/tokenizer.h"

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <queue>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "runtime/error.h"
#include "runtime/unicode.h"

// The pipeline follows HF tokenizers (tokenizer/mod.rs, added_vocabulary.rs,
// models/bpe): added tokens are cut out of the raw text first; every other
// span is normalized, pre-tokenized into pieces and each piece is BPE-encoded.
// Decoding maps ids to token strings and runs them through the decoder chain.

namespace kvactor {

namespace {

namespace json = boost::json;

// A problem with the file's content; from_json prefixes the file name.
class bad_content : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// NOTE: not noexcept on purpose: libstdc++ then stores each key's hash in
// its node, so lookups and rehashes do not hash or compare strings again.
struct string_hash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using string_to_id = std::unordered_map<std::string, int32_t, string_hash, std::equal_to<>>;

constexpr std::string_view replacement_character = "\xEF\xBF\xBD";
// Ids index a table; a bound keeps a corrupt file from asking for gigabytes.
constexpr int64_t max_token_id = (int64_t{1} << 22) - 1;

// ----------------------------------------------------------------------------
// JSON access

const json::object& as_object(const json::value& v, std::string_view what) {
  if (!v.is_object()) throw bad_content(std::string(what) + " is not an object");
  return v.get_object();
}

const json::array& as_array(const json::value& v, std::string_view what) {
  if (!v.is_array()) throw bad_content(std::string(what) + " is not an array");
  return v.get_array();
}

std::string as_string(const json::value& v, std::string_view what) {
  if (!v.is_string()) throw bad_content(std::string(what) + " is not a string");
  return std::string(v.get_string());
}

int64_t as_integer(const json::value& v, std::string_view what) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64() && v.get_uint64() <= uint64_t(INT64_MAX)) return int64_t(v.get_uint64());
  throw bad_content(std::string(what) + " is not an integer");
}

int32_t as_token_id(const json::value& v, std::string_view what) {
  const int64_t id = as_integer(v, what);
  if (id < 0 || id > max_token_id) throw bad_content(std::string(what) + " " + std::to_string(id) + " is out of range");
  return int32_t(id);
}

// The value at `key`, or nullptr when it is missing or null.
const json::value* find(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && !v->is_null() ? v : nullptr;
}

const json::value& require(const json::object& o, std::string_view key, std::string_view what) {
  const json::value* v = find(o, key);
  if (!v) throw bad_content(std::string(what) + " has no \"" + std::string(key) + "\"");
  return *v;
}

bool get_bool(const json::object& o, std::string_view key, bool fallback, std::string_view what) {
  const json::value* v = find(o, key);
  if (!v) return fallback;
  if (!v->is_bool()) throw bad_content(std::string(what) + " \"" + std::string(key) + "\" is not a boolean");
  return v->get_bool();
}

std::string get_string(const json::object& o, std::string_view key, std::string_view what) {
  return as_string(require(o, key, what), std::string(what) + " \"" + std::string(key) + "\"");
}

std::string type_of(const json::object& o, std::string_view what) { return get_string(o, "type", what); }

char32_t as_char(const std::string& s, std::string_view what) {
  if (s.empty() || unicode::char_length(static_cast<unsigned char>(s[0])) != s.size())
    throw bad_content(std::string(what) + " is not a single character");
  size_t pos = 0;
  return unicode::next_char(s, pos);
}

// {"String": s} matches s literally; {"Regex": r} is a regular expression.
unicode::regex parse_pattern(const json::value& v, std::string_view what) {
  const json::object& o = as_object(v, what);
  if (const json::value* s = find(o, "String")) return unicode::regex(as_string(*s, what), true);
  if (const json::value* r = find(o, "Regex")) return unicode::regex(as_string(*r, what), false);
  throw bad_content(std::string(what) + " is neither a String nor a Regex pattern");
}

// ----------------------------------------------------------------------------
// Text helpers

std::string replace_all(const unicode::regex& pattern, std::string_view text, std::string_view content) {
  const auto matches = pattern.find_all(text);
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size() + matches.size() * content.size());
  size_t copied = 0;
  for (const auto& [begin, end] : matches) {
    out.append(text.substr(copied, begin - copied));
    out.append(content);
    copied = end;
  }
  out.append(text.substr(copied));
  return out;
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out.append(separator);
    out.append(parts[i]);
  }
  return out;
}

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

// The byte a ByteFallback token "<0xXX>" stands for, parsed as HF does
// (Rust's u8::from_str_radix, which also takes a leading '+').
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

// ----------------------------------------------------------------------------
// GPT-2's byte-level alphabet: every byte stands for a printable character
// (printable Latin-1 bytes for themselves, the others for U+0100 upwards).

struct byte_level_alphabet {
  std::array<std::string, 256> char_of_byte;
  std::array<int16_t, 512> byte_of_char; // -1: not in the alphabet
};

const byte_level_alphabet& byte_level() {
  static const byte_level_alphabet alphabet = [] {
    byte_level_alphabet a;
    a.byte_of_char.fill(-1);
    char32_t next_extra = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
      const char32_t c = printable ? char32_t(b) : next_extra++;
      unicode::append_utf8(a.char_of_byte[b], c);
      a.byte_of_char[c] = int16_t(b);
    }
    return a;
  }();
  return alphabet;
}

std::string to_byte_level(std::string_view bytes) {
  const auto& alphabet = byte_level();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char b : bytes) out.append(alphabet.char_of_byte[static_cast<unsigned char>(b)]);
  return out;
}

// ----------------------------------------------------------------------------
// Normalizers

class normalizer_step {
 public:
  virtual ~normalizer_step() = default;
  virtual void apply(std::string& text) const = 0;
};

class nfc_normalizer final : public normalizer_step {
 public:
  void apply(std::string& text) const override {
    // ASCII text is already in NFC.
    if (std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; }))
      text = unicode::nfc(text);
  }
};

class prepend_normalizer final : public normalizer_step {
 public:
  explicit prepend_normalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void apply(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class replace_normalizer final : public normalizer_step {
 public:
  replace_normalizer(unicode::regex pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void apply(std::string& text) const override { text = replace_all(pattern_, text, content_); }

 private:
  unicode::regex pattern_;
  std::string content_;
};

using normalizer_chain = std::vector<std::unique_ptr<normalizer_step>>;

void parse_normalizer(const json::value& v, normalizer_chain& chain) {
  if (v.is_null()) return;
  const json::object& o = as_object(v, "normalizer");
  const std::string type = type_of(o, "normalizer");
  if (type == "Sequence") {
    for (const json::value& item : as_array(require(o, "normalizers", "Sequence normalizer"), "normalizers"))
      parse_normalizer(item, chain);
  } else if (type == "NFC") {
    chain.push_back(std::make_unique<nfc_normalizer>());
  } else if (type == "Prepend") {
    chain.push_back(std::make_unique<prepend_normalizer>(get_string(o, "prepend", "Prepend normalizer")));
  } else if (type == "Replace") {
    chain.push_back(std::make_unique<replace_normalizer>(
        parse_pattern(require(o, "pattern", "Replace normalizer"), "Replace normalizer pattern"),
        get_string(o, "content", "Replace normalizer")));
  } else {
    throw bad_content("unsupported normalizer type '" + type + "'");
  }
}

// ----------------------------------------------------------------------------
// Pre-tokenizers

struct piece {
  std::string text;
  bool at_input_start; // begins at byte 0 of the text being encoded
};

enum class split_behavior : uint8_t { removed, isolated, merged_with_previous, merged_with_next, contiguous };

split_behavior parse_split_behavior(const std::string& name) {
  if (name == "Removed") return split_behavior::removed;
  if (name == "Isolated") return split_behavior::isolated;
  if (name == "MergedWithPrevious") return split_behavior::merged_with_previous;
  if (name == "MergedWithNext") return split_behavior::merged_with_next;
  if (name == "Contiguous") return split_behavior::contiguous;
  throw bad_content("unsupported split behavior '" + name + "'");
}

// Cuts `p` at `matches` as HF's NormalizedString::split does and appends the
// non-empty parts to `out`.
void split_piece(const piece& p, const std::vector<std::pair<size_t, size_t>>& matches,
                 split_behavior behavior, bool invert, std::vector<piece>& out) {
  struct part {
    size_t begin, end;
    bool is_match;
  };
  std::vector<part> parts;
  size_t covered = 0;
  for (const auto& [begin, end] : matches) {
    if (begin > covered) parts.push_back({covered, begin, invert});
    parts.push_back({begin, end, !invert});
    covered = end;
  }
  if (covered < p.text.size()) parts.push_back({covered, p.text.size(), invert});

  std::vector<part> kept;
  switch (behavior) {
    case split_behavior::removed:
      for (const part& x : parts)
        if (!x.is_match) kept.push_back(x);
      break;
    case split_behavior::isolated: kept = parts; break;
    case split_behavior::merged_with_previous: {
      bool previous_match = false;
      for (const part& x : parts) {
        if (x.is_match && !previous_match && !kept.empty()) kept.back().end = x.end;
        else kept.push_back(x);
        previous_match = x.is_match;
      }
      break;
    }
    case split_behavior::merged_with_next: {
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) kept.back().begin = it->begin;
        else kept.push_back(*it);
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
    case split_behavior::contiguous: {
      bool previous_match = false;
      for (const part& x : parts) {
        if (x.is_match == previous_match && !kept.empty()) kept.back().end = x.end;
        else kept.push_back(x);
        previous_match = x.is_match;
      }
      break;
    }
  }
  for (const part& x : kept) {
    if (x.end > x.begin)
      out.push_back({p.text.substr(x.begin, x.end - x.begin), p.at_input_start && x.begin == 0});
  }
}

class pre_tokenizer_step {
 public:
  virtual ~pre_tokenizer_step() = default;
  virtual void apply(std::vector<piece>& pieces) const = 0;
};

class split_pre_tokenizer final : public pre_tokenizer_step {
 public:
  split_pre_tokenizer(unicode::regex pattern, split_behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void apply(std::vector<piece>& pieces) const override {
    std::vector<piece> out;
    out.reserve(pieces.size());
    for (const piece& p : pieces) split_piece(p, pattern_.find_all(p.text), behavior_, invert_, out);
    pieces = std::move(out);
  }

 private:
  unicode::regex pattern_;
  split_behavior behavior_;
  bool invert_;
};

class byte_level_pre_tokenizer final : public pre_tokenizer_step {
 public:
  byte_level_pre_tokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}
  void apply(std::vector<piece>& pieces) const override {
    // GPT-2's own split, applied when the file asks for it (use_regex).
    static const unicode::regex gpt2_split(
        R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", false);
    std::vector<piece> split;
    split.reserve(pieces.size());
    for (piece& p : pieces) {
      if (add_prefix_space_ && !p.text.starts_with(' ')) p.text = ' ' + p.text;
      if (use_regex_) split_piece(p, gpt2_split.find_all(p.text), split_behavior::isolated, false, split);
      else split.push_back(std::move(p));
    }
    for (piece& p : split) p.text = to_byte_level(p.text);
    pieces = std::move(split);
  }

 private:
  bool add_prefix_space_;
  bool use_regex_;
};

enum class prepend_scheme : uint8_t { always, first, never };

prepend_scheme parse_prepend_scheme(const json::object& o, std::string_view what) {
  prepend_scheme scheme = prepend_scheme::always;
  const json::value* v = find(o, "prepend_scheme");
  if (v) {
    const std::string name = as_string(*v, std::string(what) + " prepend_scheme");
    if (name == "always") scheme = prepend_scheme::always;
    else if (name == "first") scheme = prepend_scheme::first;
    else if (name == "never") scheme = prepend_scheme::never;
    else throw bad_content(std::string(what) + " has unknown prepend_scheme '" + name + "'");
  }
  // Older files say add_prefix_space instead.
  if (!get_bool(o, "add_prefix_space", true, what)) {
    if (v && scheme != prepend_scheme::never)
      throw bad_content(std::string(what) + " add_prefix_space contradicts prepend_scheme");
    scheme = prepend_scheme::never;
  }
  return scheme;
}

class metaspace_pre_tokenizer final : public pre_tokenizer_step {
 public:
  metaspace_pre_tokenizer(std::string replacement, prepend_scheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split),
        space_(" ", true), replacement_pattern_(replacement_, true) {}
  void apply(std::vector<piece>& pieces) const override {
    std::vector<piece> out;
    out.reserve(pieces.size());
    for (piece& p : pieces) {
      p.text = replace_all(space_, p.text, replacement_);
      const bool prepend = !p.text.starts_with(replacement_) &&
                           (scheme_ == prepend_scheme::always || (scheme_ == prepend_scheme::first && p.at_input_start));
      if (prepend) p.text.insert(0, replacement_);
      if (split_) {
        split_piece(p, replacement_pattern_.find_all(p.text), split_behavior::merged_with_next, false, out);
      } else {
        out.push_back(std::move(p));
      }
    }
    pieces = std::move(out);
  }

 private:
  std::string replacement_;
  prepend_scheme scheme_;
  bool split_;
  unicode::regex space_;
  unicode::regex replacement_pattern_;
};

using pre_tokenizer_chain = std::vector<std::unique_ptr<pre_tokenizer_step>>;

void parse_pre_tokenizer(const json::value& v, pre_tokenizer_chain& chain) {
  if (v.is_null()) return;
  const json::object& o = as_object(v, "pre_tokenizer");
  const std::string type = type_of(o, "pre_tokenizer");
  if (type == "Sequence") {
    for (const json::value& item : as_array(require(o, "pretokenizers", "Sequence pre_tokenizer"), "pretokenizers"))
      parse_pre_tokenizer(item, chain);
  } else if (type == "Split") {
    chain.push_back(std::make_unique<split_pre_tokenizer>(
        parse_pattern(require(o, "pattern", "Split pre_tokenizer"), "Split pre_tokenizer pattern"),
        parse_split_behavior(get_string(o, "behavior", "Split pre_tokenizer")),
        get_bool(o, "invert", false, "Split pre_tokenizer")));
  } else if (type == "ByteLevel") {
    chain.push_back(std::make_unique<byte_level_pre_tokenizer>(
        get_bool(o, "add_prefix_space", true, "ByteLevel pre_tokenizer"),
        get_bool(o, "use_regex", true, "ByteLevel pre_tokenizer")));
  } else if (type == "Metaspace") {
    const std::string replacement = get_string(o, "replacement", "Metaspace pre_tokenizer");
    as_char(replacement, "Metaspace replacement");
    chain.push_back(std::make_unique<metaspace_pre_tokenizer>(
        replacement, parse_prepend_scheme(o, "Metaspace pre_tokenizer"),
        get_bool(o, "split", true, "Metaspace pre_tokenizer")));
  } else {
    throw bad_content("unsupported pre_tokenizer type '" + type + "'");
  }
}

// ----------------------------------------------------------------------------
// BPE model

struct bpe_merge {
  int32_t rank;   // position in the merges list: lower merges first
  int32_t new_id; // the merged token
};

uint64_t pair_key(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }

class bpe_model {
 public:
  string_to_id vocab;
  std::unordered_map<uint64_t, bpe_merge> merges;
  std::optional<int32_t> unk_id;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false; // a piece that is itself a token maps to it directly
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
  std::array<int32_t, 256> byte_ids{}; // id of "<0xXX>", -1 when absent

  // SentencePiece-style vocabularies (Llama 2) have "▁" only at the start
  // of a token, so no merge joins across a point where "▁" follows another
  // character. A piece is then encoded chunk by chunk with the same result,
  // and each chunk is a word the cache can hold: without a pre-tokenizer the
  // whole prompt is one piece.
  bool split_before_word_marker = false;

  // Appends the ids of one pre-tokenized piece.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (ignore_merges) {
      if (auto it = vocab.find(word); it != vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    if (!split_before_word_marker) {
      tokenize_chunk(word, out);
      return;
    }
    size_t begin = 0;
    for (size_t at = word.find(word_marker, 1); at != std::string_view::npos; at = word.find(word_marker, at + 1)) {
      if (word.substr(0, at).ends_with(word_marker)) continue;
      tokenize_chunk(word.substr(begin, at - begin), out);
      begin = at;
    }
    tokenize_chunk(word.substr(begin), out);
  }

  // Whether split_before_word_marker holds for the vocabulary. The marker
  // must be a token itself, or a run of unknown characters could span a cut.
  bool marker_only_starts_tokens() const {
    if (ignore_merges || !continuing_subword_prefix.empty() || !end_of_word_suffix.empty() ||
        !vocab.contains(word_marker))
      return false;
    for (const auto& [token, id] : vocab)
      if (token.find(word_marker, leading_markers(token)) != std::string::npos) return false;
    return true;
  }

 private:
  static constexpr std::string_view word_marker = "\xE2\x96\x81"; // U+2581, SentencePiece's space
  static constexpr size_t max_cached_word_bytes = 256;
  static constexpr size_t max_cached_words = 1 << 16;

  static size_t leading_markers(std::string_view token) {
    size_t n = 0;
    while (token.substr(n).starts_with(word_marker)) n += word_marker.size();
    return n;
  }

  void tokenize_chunk(std::string_view word, std::vector<int32_t>& out) const {
    const bool cacheable = word.size() < max_cached_word_bytes;
    if (cacheable) {
      std::lock_guard lock(cache_mutex_);
      if (auto it = cache_.find(word); it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> ids = merge_word(word);
    out.insert(out.end(), ids.begin(), ids.end());
    if (cacheable) {
      std::lock_guard lock(cache_mutex_);
      // NOTE: dropping everything when full is crude but keeps memory bounded;
      // the words of a language refill it quickly.
      if (cache_.size() >= max_cached_words) cache_.clear();
      cache_.emplace(std::string(word), std::move(ids));
    }
  }

  const bpe_merge* find_merge(int32_t left, int32_t right) const {
    auto it = merges.find(pair_key(left, right));
    return it == merges.end() ? nullptr : &it->second;
  }

  // One symbol per character (or byte, or fused unknown run), as HF's BPE::merge_word.
  std::vector<int32_t> initial_symbols(std::string_view word) const {
    std::vector<int32_t> ids;
    ids.reserve(word.size());
    bool pending_unk = false;
    std::string decorated;
    for (size_t pos = 0; pos < word.size();) {
      const size_t begin = pos;
      pos += unicode::char_length(static_cast<unsigned char>(word[pos]));
      std::string_view symbol = word.substr(begin, pos - begin);
      const bool add_prefix = begin > 0 && !continuing_subword_prefix.empty();
      const bool add_suffix = pos == word.size() && !end_of_word_suffix.empty();
      if (add_prefix || add_suffix) {
        decorated = (add_prefix ? continuing_subword_prefix : "") + std::string(symbol) +
                    (add_suffix ? end_of_word_suffix : "");
        symbol = decorated;
      }
      if (auto it = vocab.find(symbol); it != vocab.end()) {
        if (pending_unk) ids.push_back(*unk_id), pending_unk = false;
        ids.push_back(it->second);
        continue;
      }
      if (byte_fallback && std::all_of(symbol.begin(), symbol.end(),
                                       [&](char b) { return byte_ids[static_cast<unsigned char>(b)] >= 0; })) {
        for (char b : symbol) ids.push_back(byte_ids[static_cast<unsigned char>(b)]);
        continue;
      }
      if (unk_id) {
        if (pending_unk && !fuse_unk) ids.push_back(*unk_id);
        pending_unk = true;
      }
    }
    if (pending_unk) ids.push_back(*unk_id);
    return ids;
  }

  // Applies merges lowest rank first, leftmost first among equal ranks, with
  // a priority queue: O(n log n) in the piece length, which matters for
  // tokenizers without a pre-tokenizer (a whole prompt is one piece).
  std::vector<int32_t> merge_word(std::string_view word) const {
    std::vector<int32_t> ids = initial_symbols(word);
    if (ids.size() < 2 || merges.empty()) return ids;

    struct symbol {
      int32_t id;
      int32_t prev; // -1: none
      int32_t next; // -1: none
      bool alive;
    };
    const int32_t n = int32_t(ids.size());
    std::vector<symbol> symbols(n); // [n]
    for (int32_t i = 0; i < n; ++i) symbols[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1, true};

    struct candidate {
      int32_t rank, pos, new_id;
    };
    const auto later = [](const candidate& a, const candidate& b) {
      return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    };
    std::vector<candidate> storage;
    storage.reserve(ids.size());
    std::priority_queue<candidate, std::vector<candidate>, decltype(later)> queue(later, std::move(storage));
    for (int32_t i = 0; i + 1 < n; ++i)
      if (const bpe_merge* m = find_merge(ids[i], ids[i + 1])) queue.push({m->rank, i, m->new_id});

    while (!queue.empty()) {
      const candidate top = queue.top();
      queue.pop();
      symbol& left = symbols[top.pos];
      if (!left.alive || left.next < 0) continue;
      const symbol right = symbols[left.next];
      // An entry is stale when either side has merged since it was queued.
      const bpe_merge* m = find_merge(left.id, right.id);
      if (!m || m->new_id != top.new_id) continue;
      symbols[left.next].alive = false;
      left.id = top.new_id;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = top.pos;
      if (left.prev >= 0)
        if (const bpe_merge* p = find_merge(symbols[left.prev].id, left.id)) queue.push({p->rank, left.prev, p->new_id});
      if (left.next >= 0)
        if (const bpe_merge* q = find_merge(left.id, symbols[left.next].id)) queue.push({q->rank, top.pos, q->new_id});
    }
    ids.clear();
    for (const symbol& s : symbols)
      if (s.alive) ids.push_back(s.id);
    return ids;
  }

  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, string_hash, std::equal_to<>> cache_;
};

void parse_bpe_model(const json::value& v, bpe_model& model) {
  const json::object& o = as_object(v, "model");
  const std::string type = type_of(o, "model");
  if (type != "BPE") throw bad_content("unsupported model type '" + type + "'");
  if (const json::value* dropout = find(o, "dropout");
      dropout && !(dropout->is_number() && dropout->to_number<double>() == 0.0))
    throw bad_content("unsupported BPE dropout (only deterministic BPE is supported)");

  const json::object& vocab = as_object(require(o, "vocab", "model"), "model vocab");
  model.vocab.reserve(vocab.size());
  for (const auto& [token, id] : vocab)
    model.vocab.insert_or_assign(std::string(token), as_token_id(id, "vocab id"));
  model.fuse_unk = get_bool(o, "fuse_unk", false, "model");
  model.byte_fallback = get_bool(o, "byte_fallback", false, "model");
  model.ignore_merges = get_bool(o, "ignore_merges", false, "model");
  if (const json::value* p = find(o, "continuing_subword_prefix"))
    model.continuing_subword_prefix = as_string(*p, "continuing_subword_prefix");
  if (const json::value* s = find(o, "end_of_word_suffix")) model.end_of_word_suffix = as_string(*s, "end_of_word_suffix");
  if (const json::value* unk = find(o, "unk_token")) {
    const std::string name = as_string(*unk, "unk_token");
    auto it = model.vocab.find(name);
    if (it == model.vocab.end()) throw bad_content("unk_token '" + name + "' is not in the vocabulary");
    model.unk_id = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = model.vocab.find(std::string_view(name));
    model.byte_ids[b] = it == model.vocab.end() ? -1 : it->second;
  }

  model.split_before_word_marker = model.marker_only_starts_tokens();

  const auto token_of = [&](const std::string& token) {
    auto it = model.vocab.find(token);
    if (it == model.vocab.end()) throw bad_content("merge token '" + token + "' is not in the vocabulary");
    return it->second;
  };
  const json::array& merges = as_array(require(o, "merges", "model"), "model merges");
  model.merges.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    std::string left, right;
    const json::value& m = merges[rank];
    if (m.is_string()) {
      // "a b": exactly one space, as HF requires.
      const std::string line(m.get_string());
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        throw bad_content("merge " + std::to_string(rank) + " '" + line + "' is not two tokens");
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else {
      const json::array& pair = as_array(m, "merge");
      if (pair.size() != 2) throw bad_content("merge " + std::to_string(rank) + " is not a pair");
      left = as_string(pair[0], "merge token");
      right = as_string(pair[1], "merge token");
    }
    const std::string& prefix = model.continuing_subword_prefix;
    if (!prefix.empty() && !right.starts_with(prefix))
      throw bad_content("merge " + std::to_string(rank) + " right token lacks the continuing_subword_prefix");
    const int32_t left_id = token_of(left);
    const int32_t right_id = token_of(right);
    const int32_t new_id = token_of(left + right.substr(prefix.size()));
    // Later duplicates win, as in HF's HashMap.
    model.merges.insert_or_assign(pair_key(left_id, right_id), bpe_merge{int32_t(rank), new_id});
  }
}

// ----------------------------------------------------------------------------
// Added tokens

struct added_token {
  int32_t id;
  std::string content;
  bool single_word, lstrip, rstrip, normalized, special;
};

struct text_span {
  size_t begin, end;
  int32_t token_id; // -1: ordinary text
};

// Finds added tokens in text, leftmost-longest, with the lstrip / rstrip /
// single_word rules of HF's AddedVocabulary::find_matches.
class added_token_matcher {
 public:
  void add(std::string pattern, const added_token* token) {
    if (pattern.empty()) return;
    by_first_byte_[static_cast<unsigned char>(pattern[0])].push_back({std::move(pattern), token});
  }
  void finish_adding() {
    for (auto& bucket : by_first_byte_)
      std::stable_sort(bucket.begin(), bucket.end(),
                       [](const entry& a, const entry& b) { return a.pattern.size() > b.pattern.size(); });
  }

  // Appends spans covering `text`; empty spans are left out.
  void split(std::string_view text, std::vector<text_span>& out) const {
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

 private:
  struct entry {
    std::string pattern;
    const added_token* token;
  };
  const entry* longest_at(std::string_view text, size_t at) const {
    for (const entry& e : by_first_byte_[static_cast<unsigned char>(text[at])])
      if (text.compare(at, e.pattern.size(), e.pattern) == 0) return &e;
    return nullptr;
  }
  std::array<std::vector<entry>, 256> by_first_byte_;
};

// ----------------------------------------------------------------------------
// Post-processors: with add_special_tokens, TemplateProcessing's "single"
// template wraps the ids (ByteLevel changes offsets only, which we do not keep).

struct template_processing {
  // Each item: the ids of a special token, or nullopt for the sequence itself.
  std::vector<std::optional<std::vector<int32_t>>> single;

  std::vector<int32_t> apply(const std::vector<int32_t>& ids) const {
    std::vector<int32_t> out;
    for (const auto& item : single) {
      const std::vector<int32_t>& part = item ? *item : ids;
      out.insert(out.end(), part.begin(), part.end());
    }
    return out;
  }
};

void parse_post_processor(const json::value& v, std::vector<template_processing>& chain) {
  if (v.is_null()) return;
  const json::object& o = as_object(v, "post_processor");
  const std::string type = type_of(o, "post_processor");
  if (type == "Sequence") {
    for (const json::value& item : as_array(require(o, "processors", "Sequence post_processor"), "processors"))
      parse_post_processor(item, chain);
  } else if (type == "ByteLevel") {
    return;
  } else if (type == "TemplateProcessing") {
    const json::object& specials = as_object(require(o, "special_tokens", "TemplateProcessing"), "special_tokens");
    template_processing t;
    for (const json::value& item : as_array(require(o, "single", "TemplateProcessing"), "single template")) {
      const json::object& piece = as_object(item, "template piece");
      if (const json::value* special = find(piece, "SpecialToken")) {
        const std::string name = get_string(as_object(*special, "SpecialToken"), "id", "SpecialToken");
        const json::value* entry = find(specials, name);
        if (!entry) throw bad_content("template special token '" + name + "' is not in special_tokens");
        std::vector<int32_t> ids;
        for (const json::value& id : as_array(require(as_object(*entry, "special token"), "ids", "special token"), "ids"))
          ids.push_back(as_token_id(id, "special token id"));
        t.single.emplace_back(std::move(ids));
      } else if (const json::value* sequence = find(piece, "Sequence")) {
        const std::string id = get_string(as_object(*sequence, "Sequence"), "id", "Sequence");
        if (id != "A") throw bad_content("single template refers to sequence '" + id + "'");
        t.single.emplace_back(std::nullopt);
      } else {
        throw bad_content("template piece is neither SpecialToken nor Sequence");
      }
    }
    chain.push_back(std::move(t));
  } else {
    throw bad_content("unsupported post_processor type '" + type + "'");
  }
}

// ----------------------------------------------------------------------------
// Decoders: each rewrites the list of token strings (HF's decode_chain); the
// result is concatenated.

class decoder_step {
 public:
  virtual ~decoder_step() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

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
        for (size_t i = 0; i < run.size(); ++i) out.emplace_back(replacement_character);
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

using decoder_chain = std::vector<std::unique_ptr<decoder_step>>;

size_t as_count(const json::value& v, std::string_view what) {
  const int64_t n = as_integer(v, what);
  if (n < 0) throw bad_content(std::string(what) + " is negative");
  return size_t(n);
}

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

} // namespace

// ----------------------------------------------------------------------------
// tokenizer

struct tokenizer::impl {
  normalizer_chain normalizers;
  pre_tokenizer_chain pre_tokenizers;
  bpe_model model;
  std::vector<template_processing> post_processors;
  decoder_chain decoders;
  bool has_decoder = false;

  std::vector<added_token> added_tokens;
  added_token_matcher raw_matcher;        // added tokens with normalized = false
  added_token_matcher normalized_matcher; // the others, matched in normalized text
  string_to_id added_ids;

  struct token_info {
    std::string text;
    bool known = false;
    bool special = false;
    bool fallback_byte = false; // <0xXX> under a ByteFallback decoder
  };
  std::vector<token_info> tokens; // [vocab_size]

  void normalize(std::string& text) const {
    for (const auto& n : normalizers) n->apply(text);
  }

  void encode_span(std::string_view text, bool at_input_start, std::vector<int32_t>& ids) const {
    std::string normalized(text);
    normalize(normalized);
    std::vector<text_span> spans;
    normalized_matcher.split(normalized, spans);
    for (const text_span& s : spans) {
      if (s.token_id >= 0) {
        ids.push_back(s.token_id);
        continue;
      }
      std::vector<piece> pieces{{normalized.substr(s.begin, s.end - s.begin), at_input_start && s.begin == 0}};
      for (const auto& p : pre_tokenizers) p->apply(pieces);
      for (const piece& p : pieces) model.tokenize(p.text, ids);
    }
  }
};

tokenizer::tokenizer(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
tokenizer::tokenizer(tokenizer&&) noexcept = default;
tokenizer& tokenizer::operator=(tokenizer&&) noexcept = default;
tokenizer::~tokenizer() = default;

tokenizer tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw load_error(path, std::string("cannot open: ") + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw load_error(path, "read failed");
  return from_json(text.str(), path);
}

tokenizer tokenizer::from_json(const std::string& json_text, const std::string& path) {
  boost::system::error_code ec;
  const json::value root = json::parse(json_text, ec);
  if (ec) throw load_error(path, "invalid JSON: " + ec.message());
  auto t = std::make_unique<impl>();
  try {
    const json::object& top = as_object(root, "tokenizer.json");
    const json::value null_value;
    const auto section = [&](std::string_view key) -> const json::value& {
      const json::value* v = top.if_contains(key);
      return v ? *v : null_value;
    };
    parse_bpe_model(require(top, "model", "tokenizer.json"), t->model);
    parse_normalizer(section("normalizer"), t->normalizers);
    parse_pre_tokenizer(section("pre_tokenizer"), t->pre_tokenizers);
    parse_post_processor(section("post_processor"), t->post_processors);
    parse_decoder(section("decoder"), t->decoders);
    t->has_decoder = !section("decoder").is_null();

    if (const json::value* added = find(top, "added_tokens")) {
      for (const json::value& item : as_array(*added, "added_tokens")) {
        const json::object& a = as_object(item, "added token");
        added_token token{as_token_id(require(a, "id", "added token"), "added token id"),
                          get_string(a, "content", "added token"),
                          get_bool(a, "single_word", false, "added token"),
                          get_bool(a, "lstrip", false, "added token"),
                          get_bool(a, "rstrip", false, "added token"),
                          get_bool(a, "normalized", true, "added token"),
                          get_bool(a, "special", false, "added token")};
        if (token.content.empty()) throw bad_content("added token " + std::to_string(token.id) + " is empty");
        t->added_tokens.push_back(std::move(token));
      }
    }
    // Pointers into added_tokens are taken only now that it no longer grows.
    for (const added_token& token : t->added_tokens) {
      t->added_ids.insert_or_assign(token.content, token.id);
      if (token.normalized) {
        std::string pattern = token.content;
        t->normalize(pattern);
        t->normalized_matcher.add(std::move(pattern), &token);
      } else {
        t->raw_matcher.add(token.content, &token);
      }
    }
    t->raw_matcher.finish_adding();
    t->normalized_matcher.finish_adding();

    int32_t largest_id = -1;
    for (const auto& [token, id] : t->model.vocab) largest_id = std::max(largest_id, id);
    for (const added_token& token : t->added_tokens) largest_id = std::max(largest_id, token.id);
    t->tokens.resize(size_t(largest_id + 1));
    for (const auto& [token, id] : t->model.vocab) t->tokens[id].text = token, t->tokens[id].known = true;
    std::unordered_set<std::string_view> special_contents;
    for (const added_token& token : t->added_tokens) {
      t->tokens[token.id].text = token.content;
      t->tokens[token.id].known = true;
      if (token.special) special_contents.insert(token.content);
    }
    const bool byte_fallback_decoder_present = std::any_of(
        t->decoders.begin(), t->decoders.end(),
        [](const auto& d) { return dynamic_cast<const byte_fallback_decoder*>(d.get()) != nullptr; });
    for (impl::token_info& info : t->tokens) {
      // HF decides "special" by the token's text, whichever id it comes from.
      info.special = info.known && special_contents.contains(info.text);
      info.fallback_byte = byte_fallback_decoder_present && fallback_byte(info.text).has_value();
    }
  } catch (const bad_content& e) {
    throw load_error(path, e.what());
  } catch (const error& e) { // a pattern that does not compile
    throw load_error(path, e.what());
  }
  return tokenizer(std::move(t));
}

std::vector<int32_t> tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (const size_t bad = unicode::find_invalid_utf8(text); bad != std::string_view::npos)
    throw error("tokenizer input is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  std::vector<int32_t> ids;
  std::vector<text_span> spans;
  impl_->raw_matcher.split(text, spans);
  for (const text_span& s : spans) {
    if (s.token_id >= 0) ids.push_back(s.token_id);
    else impl_->encode_span(text.substr(s.begin, s.end - s.begin), s.begin == 0, ids);
  }
  if (add_special_tokens)
    for (const template_processing& t : impl_->post_processors) ids = t.apply(ids);
  return ids;
}

std::string tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return decode_range(ids, skip_special_tokens);
}

std::string tokenizer::decode_range(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids)
    if (decodes(id, skip_special_tokens)) tokens.push_back(impl_->tokens[size_t(id)].text);
  if (!impl_->has_decoder) return join(tokens, " ");
  for (const auto& d : impl_->decoders) d->apply(tokens);
  return join(tokens, "");
}

bool tokenizer::decodes(int32_t id, bool skip_special_tokens) const {
  if (id < 0 || size_t(id) >= impl_->tokens.size()) return false;
  const impl::token_info& info = impl_->tokens[size_t(id)];
  return info.known && !(skip_special_tokens && info.special);
}

bool tokenizer::is_fallback_byte(int32_t id) const {
  return id >= 0 && size_t(id) < impl_->tokens.size() && impl_->tokens[size_t(id)].fallback_byte;
}

int32_t tokenizer::vocab_size() const { return int32_t(impl_->tokens.size()); }

std::optional<int32_t> tokenizer::token_id(std::string_view token) const {
  if (auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) return it->second;
  if (auto it = impl_->model.vocab.find(token); it != impl_->model.vocab.end()) return it->second;
  return std::nullopt;
}

std::string tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || size_t(id) >= impl_->tokens.size()) return {};
  return impl_->tokens[size_t(id)].text;
}

bool tokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < impl_->tokens.size() && impl_->tokens[size_t(id)].special;
}

// ----------------------------------------------------------------------------
// incremental_decoder
//
// Each push decodes two short windows that start at prefix_offset_: the one
// already emitted (up to read_offset_) and the one including the new tokens;
// the difference is the new text (vLLM's detokenize_incrementally). Starting
// both windows at the same token makes position-dependent decoders (Strip of
// the leading space, Metaspace's first token) act on both alike. The windows
// start only where text was final: after a complete character, and never
// inside a run of ByteFallback bytes. This assumes a Strip decoder removes at
// most one leading character, as every file we serve has it.

incremental_decoder::incremental_decoder(const tokenizer& tok, bool skip_special_tokens)
    : tok_(&tok), skip_special_(skip_special_tokens) {}

std::string incremental_decoder::push(int32_t id) {
  // decode() drops these, so they add no text.
  if (!tok_->decodes(id, skip_special_)) return {};
  ids_.push_back(id);
  // The bytes of a run are checked as a whole when it ends.
  if (tok_->is_fallback_byte(id)) return {};
  return emit(false);
}

std::string incremental_decoder::finish() { return emit(true); }

std::string incremental_decoder::emit(bool final) {
  const std::span<const int32_t> ids(ids_);
  const std::string emitted = tok_->decode_range(ids.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  const std::string text = tok_->decode_range(ids.subspan(prefix_offset_), skip_special_);
  // A trailing U+FFFD may be the start of a character later tokens complete.
  if (!final && (text.size() <= emitted.size() || text.ends_with(replacement_character))) return {};
  if (!text.starts_with(emitted))
    throw error("incremental_decoder: the decoder chain is not prefix-stable for these tokens");
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return text.substr(emitted.size());
}

} // namespace kvactor
