#include "runtime/pre_tokenizers.h"

#include <algorithm>
#include <utility>

#include "runtime/byte_level_alphabet.h"
#include "runtime/tokenizer_text.h"
#include "runtime/unicode.h"

namespace kvactor::tokenization {

namespace {

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

} // namespace

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

} // namespace kvactor::tokenization
