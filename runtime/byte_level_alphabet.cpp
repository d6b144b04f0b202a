#include "runtime/byte_level_alphabet.h"

#include "runtime/unicode.h"

namespace kvactor::tokenization {

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

} // namespace kvactor::tokenization
