#include "runtime/text_normalizers.h"

#include <algorithm>

#include "runtime/tokenizer_text.h"
#include "runtime/unicode.h"

namespace kvactor::tokenization {

namespace {

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

} // namespace

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

} // namespace kvactor::tokenization
