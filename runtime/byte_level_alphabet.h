#pragma once
// GPT-2's byte-level alphabet: every byte stands for a printable character
// (printable Latin-1 bytes for themselves, the others for U+0100 upwards).
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvactor::tokenization {

struct byte_level_alphabet {
  std::array<std::string, 256> char_of_byte;
  std::array<int16_t, 512> byte_of_char; // -1: not in the alphabet
};

const byte_level_alphabet& byte_level();

// Each byte of `bytes` as its character in the alphabet.
std::string to_byte_level(std::string_view bytes);

} // namespace kvactor::tokenization
