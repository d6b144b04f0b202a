#include "tools/plot/png_writer.h"

#include <algorithm>
#include <fstream>
#include <stdexcept>

#include "runtime/error.h"

namespace kvactor::plot {

namespace {

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t n = 0; n < 256; ++n) {
    uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[n] = c;
  }
  return table;
}

void put_u32_be(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(uint8_t(v >> 24));
  out.push_back(uint8_t(v >> 16));
  out.push_back(uint8_t(v >> 8));
  out.push_back(uint8_t(v));
}

// length, type, data, CRC over type and data.
void put_chunk(std::vector<uint8_t>& out, const char (&type)[5], std::span<const uint8_t> data) {
  put_u32_be(out, uint32_t(data.size()));
  const size_t type_at = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  put_u32_be(out, crc32(std::span(out).subspan(type_at)));
}

} // namespace

uint32_t crc32(std::span<const uint8_t> data, uint32_t crc) {
  static const auto table = make_crc_table();
  crc = ~crc;
  for (uint8_t byte : data) crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t adler32(std::span<const uint8_t> data) {
  constexpr uint32_t mod = 65521;
  uint32_t a = 1, b = 0;
  for (uint8_t byte : data) {
    a = (a + byte) % mod;
    b = (b + a) % mod;
  }
  return (b << 16) | a;
}

std::vector<uint8_t> zlib_stored(std::span<const uint8_t> data) {
  constexpr size_t max_block = 65535; // LEN is 16 bits
  std::vector<uint8_t> out = {0x78, 0x01}; // deflate, 32K window, no dictionary; 0x7801 % 31 == 0
  size_t at = 0;
  do {
    const size_t n = std::min(max_block, data.size() - at);
    const bool last = at + n == data.size();
    out.push_back(last ? 1 : 0); // BFINAL, BTYPE = 00 (stored)
    out.push_back(uint8_t(n));
    out.push_back(uint8_t(n >> 8));
    out.push_back(uint8_t(~n));
    out.push_back(uint8_t(~n >> 8));
    out.insert(out.end(), data.begin() + ptrdiff_t(at), data.begin() + ptrdiff_t(at + n));
    at += n;
  } while (at < data.size());
  put_u32_be(out, adler32(data));
  return out;
}

std::vector<uint8_t> encode_png(int width, int height, std::span<const uint8_t> pixels,
                                std::span<const rgb> palette) {
  if (width <= 0 || height <= 0) throw error("encode_png: empty image");
  if (pixels.size() != size_t(width) * size_t(height)) throw error("encode_png: pixel count does not match the size");
  if (palette.empty() || palette.size() > 256) throw error("encode_png: a palette needs 1 to 256 colours");

  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  std::vector<uint8_t> header;
  put_u32_be(header, uint32_t(width));
  put_u32_be(header, uint32_t(height));
  header.insert(header.end(), {8, 3, 0, 0, 0}); // bit depth 8, palette, deflate, no filter method, no interlace
  put_chunk(out, "IHDR", header);

  std::vector<uint8_t> plte;
  for (const rgb& c : palette) plte.insert(plte.end(), {c.r, c.g, c.b});
  put_chunk(out, "PLTE", plte);

  // Each row starts with its filter type, 0 (none). // [height, 1 + width]
  std::vector<uint8_t> rows;
  rows.reserve(size_t(height) * (size_t(width) + 1));
  for (int y = 0; y < height; ++y) {
    rows.push_back(0);
    const auto row = pixels.subspan(size_t(y) * size_t(width), size_t(width));
    rows.insert(rows.end(), row.begin(), row.end());
  }
  put_chunk(out, "IDAT", zlib_stored(rows));
  put_chunk(out, "IEND", {});
  return out;
}

void write_png(const std::string& path, int width, int height, std::span<const uint8_t> pixels,
               std::span<const rgb> palette) {
  const auto png = encode_png(width, height, pixels, palette);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(png.data()), std::streamsize(png.size()));
  f.close();
  if (!f) throw load_error(path, "cannot write the PNG file");
}

} // namespace kvactor::plot
