// The PNG encoder: checksums against their published check values, and a
// decoder written here from the PNG and zlib specifications that reads the
// encoder's files back chunk by chunk, checking every CRC and the Adler-32.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "tools/plot/canvas.h"
#include "tools/plot/png_writer.h"

using namespace kvactor::plot;

namespace {

std::span<const uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return uint32_t(b[at]) << 24 | uint32_t(b[at + 1]) << 16 | uint32_t(b[at + 2]) << 8 | b[at + 3];
}

// Inflates a zlib stream of stored blocks only; fails the test on anything else.
std::vector<uint8_t> inflate_stored(const std::vector<uint8_t>& z) {
  REQUIRE(z.size() >= 6);
  CHECK(z[0] == 0x78);
  CHECK((z[0] * 256 + z[1]) % 31 == 0); // FCHECK
  std::vector<uint8_t> out;
  size_t at = 2;
  for (bool last = false; !last;) {
    REQUIRE(at + 5 <= z.size());
    last = z[at] & 1;
    REQUIRE((z[at] >> 1) == 0); // BTYPE 00, padding bits zero
    const unsigned len = z[at + 1] | z[at + 2] << 8, nlen = z[at + 3] | z[at + 4] << 8;
    REQUIRE(len == (~nlen & 0xFFFFu));
    at += 5;
    REQUIRE(at + len <= z.size());
    out.insert(out.end(), z.begin() + ptrdiff_t(at), z.begin() + ptrdiff_t(at + len));
    at += len;
  }
  REQUIRE(at + 4 == z.size());
  CHECK(be32(z, at) == adler32(out));
  return out;
}

struct decoded_png {
  uint32_t width = 0, height = 0;
  std::vector<rgb> palette;
  std::vector<uint8_t> pixels; // [height, width]
  std::vector<std::string> chunk_types;
};

decoded_png decode(const std::vector<uint8_t>& png) {
  const uint8_t signature[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  REQUIRE(png.size() > 8);
  REQUIRE(std::memcmp(png.data(), signature, 8) == 0);
  decoded_png d;
  std::vector<uint8_t> idat;
  for (size_t at = 8; at < png.size();) {
    REQUIRE(at + 12 <= png.size());
    const uint32_t len = be32(png, at);
    REQUIRE(at + 12 + len <= png.size());
    const std::string type(png.begin() + ptrdiff_t(at + 4), png.begin() + ptrdiff_t(at + 8));
    const std::vector<uint8_t> data(png.begin() + ptrdiff_t(at + 8), png.begin() + ptrdiff_t(at + 8 + len));
    CHECK(be32(png, at + 8 + len) == crc32(std::span(png).subspan(at + 4, len + 4)));
    d.chunk_types.push_back(type);
    if (type == "IHDR") {
      REQUIRE(len == 13);
      d.width = be32(data, 0);
      d.height = be32(data, 4);
      CHECK(data[8] == 8); // bit depth
      CHECK(data[9] == 3); // palette
      CHECK(data[10] == 0);
      CHECK(data[11] == 0);
      CHECK(data[12] == 0);
    } else if (type == "PLTE") {
      REQUIRE(len % 3 == 0);
      for (size_t i = 0; i < len; i += 3) d.palette.push_back({data[i], data[i + 1], data[i + 2]});
    } else if (type == "IDAT") {
      idat.insert(idat.end(), data.begin(), data.end());
    }
    at += 12 + len;
  }
  const auto rows = inflate_stored(idat);
  REQUIRE(rows.size() == size_t(d.height) * (d.width + 1));
  for (size_t y = 0; y < d.height; ++y) {
    CHECK(rows[y * (d.width + 1)] == 0); // filter: none
    const auto row = rows.begin() + ptrdiff_t(y * (d.width + 1) + 1);
    d.pixels.insert(d.pixels.end(), row, row + d.width);
  }
  return d;
}

} // namespace

TEST_CASE("crc32 and adler32 give their published check values") {
  CHECK(crc32(bytes("123456789")) == 0xCBF43926u);
  CHECK(crc32(bytes("")) == 0u);
  CHECK(crc32(bytes("IEND")) == 0xAE426082u); // the CRC every PNG ends with
  CHECK(adler32(bytes("Wikipedia")) == 0x11E60398u);
  CHECK(adler32(bytes("")) == 1u);
  // Incremental CRC equals the CRC of the whole.
  CHECK(crc32(bytes("6789"), crc32(bytes("12345"))) == 0xCBF43926u);
}

TEST_CASE("zlib_stored splits data into blocks of at most 65535 bytes") {
  std::vector<uint8_t> data(65535 * 2 + 10);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 7 + i / 300);
  const auto z = zlib_stored(data);
  CHECK(z.size() == 2 + 3 * 5 + data.size() + 4);
  CHECK(inflate_stored(z) == data);
  const std::vector<uint8_t> empty;
  CHECK(inflate_stored(zlib_stored(empty)).empty());
}

TEST_CASE("encode_png writes IHDR, PLTE, IDAT, IEND with the pixels") {
  const std::vector<rgb> palette = {{255, 255, 255}, {10, 20, 30}, {200, 0, 0}};
  const int w = 5, h = 3;
  const std::vector<uint8_t> pixels = {0, 1, 2, 1, 0, //
                                       2, 2, 2, 2, 2, //
                                       1, 0, 0, 0, 1};
  const auto d = decode(encode_png(w, h, pixels, palette));
  CHECK(d.chunk_types == std::vector<std::string>{"IHDR", "PLTE", "IDAT", "IEND"});
  CHECK(d.width == 5);
  CHECK(d.height == 3);
  CHECK(d.palette == palette);
  CHECK(d.pixels == pixels);
}

TEST_CASE("encode_png refuses what PNG cannot hold") {
  const std::vector<rgb> palette = {{0, 0, 0}};
  const std::vector<uint8_t> pixels(6, 0);
  CHECK_THROWS_WITH(encode_png(0, 6, pixels, palette), "encode_png: empty image");
  CHECK_THROWS_WITH(encode_png(2, 2, pixels, palette), "encode_png: pixel count does not match the size");
  CHECK_THROWS_WITH(encode_png(2, 3, pixels, {}), "encode_png: a palette needs 1 to 256 colours");
  CHECK_THROWS_WITH(write_png("/nonexistent-dir/x.png", 2, 3, pixels, palette),
                    "/nonexistent-dir/x.png: cannot write the PNG file");
}

TEST_CASE("canvas: lines, rectangles, clipping and text land on the expected pixels") {
  canvas c(40, 20);
  c.line(0, 0, 9, 0, colour::red);
  for (int x = 0; x <= 9; ++x) CHECK(c.at(x, 0) == colour::red);
  CHECK(c.at(10, 0) == colour::white);
  c.line(0, 5, 6, 11, colour::blue); // a diagonal: one pixel per step
  for (int k = 0; k <= 6; ++k) CHECK(c.at(k, 5 + k) == colour::blue);

  c.clip(20, 0, 29, 9);
  c.fill_rect(15, 5, 35, 15, colour::green);
  CHECK(c.at(20, 5) == colour::green);
  CHECK(c.at(29, 9) == colour::green);
  CHECK(c.at(19, 5) == colour::white);
  CHECK(c.at(30, 9) == colour::white);
  CHECK(c.at(25, 10) == colour::white);
  c.unclip();

  // 'L' at scale 1: a 7-pixel stem in column 0 and a 5-pixel foot in row 6.
  canvas t(12, 10);
  t.text(1, 1, "L", colour::black);
  for (int row = 0; row < 7; ++row) CHECK(t.at(1, 1 + row) == colour::black);
  for (int col = 0; col < 5; ++col) CHECK(t.at(1 + col, 7) == colour::black);
  CHECK(t.at(2, 6) == colour::white);
  CHECK(canvas::text_width("L") == 5);
  CHECK(canvas::text_width("LL", 2) == 22);

  const auto d = decode(encode_png(12, 10, std::vector<uint8_t>(120, 1), std::vector<rgb>{{0, 0, 0}, {9, 9, 9}}));
  CHECK(d.pixels == std::vector<uint8_t>(120, 1));
}
