#pragma once
// Pre-tokenizers of a tokenizer.json (Split, ByteLevel, Metaspace, Sequence):
// each cuts the normalized text into the pieces the model encodes one by one.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer_json.h"

namespace kvactor::tokenization {

struct piece {
  std::string text;
  bool at_input_start; // begins at byte 0 of the text being encoded
};

class pre_tokenizer_step {
 public:
  virtual ~pre_tokenizer_step() = default;
  virtual void apply(std::vector<piece>& pieces) const = 0;
};

using pre_tokenizer_chain = std::vector<std::unique_ptr<pre_tokenizer_step>>;

// Appends the steps the "pre_tokenizer" section `v` describes (none for null).
void parse_pre_tokenizer(const json::value& v, pre_tokenizer_chain& chain);

// Where Metaspace puts its replacement character in front of a piece; the
// Metaspace decoder reads the same option to undo it.
enum class prepend_scheme : uint8_t { always, first, never };

prepend_scheme parse_prepend_scheme(const json::object& o, std::string_view what);

} // namespace kvactor::tokenization
