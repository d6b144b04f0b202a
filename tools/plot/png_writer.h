#pragma once
// A PNG encoder without zlib: 8-bit palette images, the image data stored in
// uncompressed deflate blocks. Charts use a handful of colours, so one byte a
// pixel keeps files moderate while the encoder stays a few dozen lines.
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace kvactor::plot {

struct rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const rgb&) const = default;
};

// CRC-32 as PNG chunks use it (ISO 3309, reflected 0xEDB88320).
uint32_t crc32(std::span<const uint8_t> data, uint32_t crc = 0);

// Adler-32 as a zlib stream ends with it.
uint32_t adler32(std::span<const uint8_t> data);

// A zlib stream (RFC 1950) holding `data` in stored deflate blocks.
std::vector<uint8_t> zlib_stored(std::span<const uint8_t> data);

// The PNG file of a width x height image whose pixels are indices into
// `palette` (at most 256 colours), row by row. // pixels: [height, width]
std::vector<uint8_t> encode_png(int width, int height, std::span<const uint8_t> pixels,
                                std::span<const rgb> palette);

// Writes encode_png's output to `path`; throws kvactor::error naming the path
// when it cannot.
void write_png(const std::string& path, int width, int height, std::span<const uint8_t> pixels,
               std::span<const rgb> palette);

} // namespace kvactor::plot
