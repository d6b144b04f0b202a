#pragma once
// Normalizers of a tokenizer.json (NFC, Prepend, Replace, Sequence): each
// rewrites the text before it is pre-tokenized.
#include <memory>
#include <string>
#include <vector>

#include "runtime/tokenizer_json.h"

namespace kvactor::tokenization {

class normalizer_step {
 public:
  virtual ~normalizer_step() = default;
  virtual void apply(std::string& text) const = 0;
};

using normalizer_chain = std::vector<std::unique_ptr<normalizer_step>>;

// Appends the steps the "normalizer" section `v` describes (none for null).
void parse_normalizer(const json::value& v, normalizer_chain& chain);

} // namespace kvactor::tokenization
