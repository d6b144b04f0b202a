#pragma once
// Decoders of a tokenizer.json (ByteLevel, Replace, ByteFallback, Fuse, Strip,
// Metaspace, Sequence): each rewrites the list of token strings (HF's
// decode_chain); the result is concatenated.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer_json.h"

namespace kvactor::tokenization {

class decoder_step {
 public:
  virtual ~decoder_step() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

using decoder_chain = std::vector<std::unique_ptr<decoder_step>>;

// Appends the steps the "decoder" section `v` describes (none for null).
void parse_decoder(const json::value& v, decoder_chain& chain);

// Whether `chain` has a ByteFallback decoder, which joins <0xXX> tokens.
bool has_byte_fallback(const decoder_chain& chain);

// The byte a ByteFallback token "<0xXX>" stands for, parsed as HF does
// (Rust's u8::from_str_radix, which also takes a leading '+').
std::optional<uint8_t> fallback_byte(std::string_view token);

} // namespace kvactor::tokenization
