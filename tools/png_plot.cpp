#include "tools/png_plot.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "runtime/error.h"

namespace kvactor::tools {

namespace {

// ---- font -----------------------------------------------------------------

// Rows top to bottom, '#' set.
struct glyph {
  char c;
  const char* rows[7];
};

constexpr glyph font[] = {
    {'A', {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'B', {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."}},
    {'C', {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."}},
    {'D', {"####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."}},
    {'E', {"#####", "#....", "#....", "####.", "#....", "#....", "#####"}},
    {'F', {"#####", "#....", "#....", "####.", "#....", "#....", "#...."}},
    {'G', {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"}},
    {'H', {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'I', {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'J', {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."}},
    {'K', {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"}},
    {'L', {"#....", "#....", "#....", "#....", "#....", "#....", "#####"}},
    {'M', {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"}},
    {'N', {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"}},
    {'O', {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'P', {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."}},
    {'Q', {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"}},
    {'R', {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"}},
    {'S', {".####", "#....", "#....", ".###.", "....#", "....#", "####."}},
    {'T', {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."}},
    {'U', {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'V', {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."}},
    {'W', {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."}},
    {'X', {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"}},
    {'Y', {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."}},
    {'Z', {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"}},
    {'0', {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}},
    {'1', {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'2', {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}},
    {'3', {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."}},
    {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}},
    {'5', {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}},
    {'6', {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."}},
    {'7', {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}},
    {'8', {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}},
    {'9', {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."}},
    {' ', {".....", ".....", ".....", ".....", ".....", ".....", "....."}},
    {'.', {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."}},
    {',', {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."}},
    {'-', {".....", ".....", ".....", "#####", ".....", ".....", "....."}},
    {':', {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."}},
    {'(', {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."}},
    {')', {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."}},
    {'/', {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."}},
    {'%', {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"}},
    {'+', {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."}},
    {'=', {".....", ".....", "#####", ".....", "#####", ".....", "....."}},
    {'_', {".....", ".....", ".....", ".....", ".....", ".....", "#####"}},
    {'?', {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."}},
};

const glyph& glyph_of(char c) {
  const char upper = char(std::toupper(static_cast<unsigned char>(c)));
  for (const glyph& g : font)
    if (g.c == upper) return g;
  return font[std::size(font) - 1]; // '?'
}

// ---- canvas ---------------------------------------------------------------

class canvas {
 public:
  canvas(int32_t w, int32_t h) : w_(w), h_(h), rgb_(size_t(w) * size_t(h) * 3, 0xff) {}

  void pixel(int32_t x, int32_t y, uint32_t c) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    uint8_t* p = &rgb_[(size_t(y) * size_t(w_) + size_t(x)) * 3];
    p[0] = uint8_t(c >> 16);
    p[1] = uint8_t(c >> 8);
    p[2] = uint8_t(c);
  }
  void rect(int32_t x0, int32_t y0, int32_t x1, int32_t y1, uint32_t c) {
    for (int32_t y = y0; y <= y1; ++y)
      for (int32_t x = x0; x <= x1; ++x) pixel(x, y, c);
  }
  // Bresenham, `thick` pixels square pen.
  void line(int32_t x0, int32_t y0, int32_t x1, int32_t y1, uint32_t c, int32_t thick = 1) {
    const int32_t dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
    const int32_t sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int32_t err = dx + dy;
    for (;;) {
      rect(x0 - thick / 2, y0 - thick / 2, x0 + (thick - 1) / 2, y0 + (thick - 1) / 2, c);
      if (x0 == x1 && y0 == y1) break;
      const int32_t e2 = 2 * err;
      if (e2 >= dy) err += dy, x0 += sx;
      if (e2 <= dx) err += dx, y0 += sy;
    }
  }
  // Text at scale 2: 12 pixels per character, 14 high.
  static int32_t text_width(const std::string& s) { return int32_t(s.size()) * 12; }
  void text(int32_t x, int32_t y, const std::string& s, uint32_t c) {
    for (char ch : s) {
      const glyph& g = glyph_of(ch);
      for (int32_t row = 0; row < 7; ++row)
        for (int32_t col = 0; col < 5; ++col)
          if (g.rows[row][col] == '#') rect(x + col * 2, y + row * 2, x + col * 2 + 1, y + row * 2 + 1, c);
      x += 12;
    }
  }

  const std::vector<uint8_t>& rgb() const { return rgb_; }

 private:
  int32_t w_, h_;
  std::vector<uint8_t> rgb_; // [h, w, 3]
};

std::string number_label(double v) {
  char s[32];
  std::snprintf(s, sizeof s, "%.0f", v);
  return s;
}

// 10^k bytes as "1 KB", "10 MB", ...
std::string bytes_label(int32_t k) {
  static const char* units[] = {"B", "KB", "MB", "GB", "TB", "PB"};
  const int32_t unit = std::clamp(k / 3, 0, 5);
  std::string s = "1";
  for (int32_t i = unit * 3; i < k; ++i) s += "0";
  return s + " " + units[unit];
}

// ---- png ------------------------------------------------------------------

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(uint8_t(v >> shift));
}

void chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
  put_u32(out, uint32_t(data.size()));
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  put_u32(out, crc32(out.data() + start, out.size() - start));
}

// zlib (RFC 1950) around deflate stored blocks (RFC 1951, BTYPE 00).
std::vector<uint8_t> zlib_stored(const std::vector<uint8_t>& raw) {
  std::vector<uint8_t> z = {0x78, 0x01};
  size_t at = 0;
  do {
    const size_t n = std::min<size_t>(65535, raw.size() - at);
    const bool last = at + n == raw.size();
    z.push_back(last ? 1 : 0);
    z.push_back(uint8_t(n));
    z.push_back(uint8_t(n >> 8));
    z.push_back(uint8_t(~n));
    z.push_back(uint8_t(~n >> 8));
    z.insert(z.end(), raw.begin() + ptrdiff_t(at), raw.begin() + ptrdiff_t(at + n));
    at += n;
  } while (at < raw.size());
  uint32_t a = 1, b = 0; // Adler-32
  for (uint8_t byte : raw) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  put_u32(z, (b << 16) | a);
  return z;
}

} // namespace

std::vector<uint8_t> encode_png(int32_t width, int32_t height, const std::vector<uint8_t>& rgb) {
  if (width <= 0 || height <= 0 || rgb.size() != size_t(width) * size_t(height) * 3)
    throw error("encode_png: " + std::to_string(rgb.size()) + " bytes are not a " + std::to_string(width) + " x " +
                std::to_string(height) + " RGB image");
  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> header;
  put_u32(header, uint32_t(width));
  put_u32(header, uint32_t(height));
  header.insert(header.end(), {8, 2, 0, 0, 0}); // 8-bit, truecolour, deflate, no filter method, no interlace
  chunk(out, "IHDR", header);
  std::vector<uint8_t> raw; // each row: filter type 0, then its pixels
  raw.reserve(size_t(height) * (1 + size_t(width) * 3));
  for (int32_t y = 0; y < height; ++y) {
    raw.push_back(0);
    const auto row = rgb.begin() + ptrdiff_t(size_t(y) * size_t(width) * 3);
    raw.insert(raw.end(), row, row + ptrdiff_t(size_t(width) * 3));
  }
  chunk(out, "IDAT", zlib_stored(raw));
  chunk(out, "IEND", {});
  return out;
}

std::vector<uint8_t> render_log_plot_png(const plot_spec& spec) {
  double x_min = INFINITY, x_max = -INFINITY, y_min = INFINITY, y_max = -INFINITY;
  for (const plot_series& s : spec.series)
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!(s.x[i] > 0 && s.y[i] > 0)) continue;
      x_min = std::min(x_min, s.x[i]);
      x_max = std::max(x_max, s.x[i]);
      y_min = std::min(y_min, s.y[i]);
      y_max = std::max(y_max, s.y[i]);
    }
  if (!(x_min <= x_max)) throw error("plot \"" + spec.title + "\": no positive points to draw");

  const int32_t w = spec.width, h = spec.height;
  const int32_t left = 120, right = w - 40, top = 70, bottom = h - 80;
  // x: half a step of room either side; y: whole decades.
  const double lx0 = std::log10(x_min) - 0.15, lx1 = std::log10(x_max) + 0.15;
  const int32_t dec0 = int32_t(std::floor(std::log10(y_min))), dec1 = int32_t(std::ceil(std::log10(y_max) + 1e-9));
  const double ly0 = dec0, ly1 = std::max(dec1, dec0 + 1);
  auto px = [&](double x) { return int32_t(std::lround(left + (std::log10(x) - lx0) / (lx1 - lx0) * (right - left))); };
  auto py = [&](double y) {
    return int32_t(std::lround(bottom - (std::log10(y) - ly0) / (ly1 - ly0) * (bottom - top)));
  };

  canvas c(w, h);
  const uint32_t ink = 0x202020, grid = 0xdddddd;
  c.text((w - canvas::text_width(spec.title)) / 2, 20, spec.title, ink);
  for (int32_t k = int32_t(ly0); k <= int32_t(ly1); ++k) {
    const int32_t y = py(std::pow(10.0, k));
    c.line(left, y, right, y, grid);
    const std::string label = spec.y_bytes ? bytes_label(k) : number_label(std::pow(10.0, k));
    c.text(left - 10 - canvas::text_width(label), y - 7, label, ink);
  }
  if (!spec.series.empty())
    for (double x : spec.series.front().x) {
      if (!(x > 0)) continue;
      const int32_t xp = px(x);
      c.line(xp, top, xp, bottom, grid);
      const std::string label = number_label(x);
      c.text(xp - canvas::text_width(label) / 2, bottom + 10, label, ink);
    }
  c.line(left, bottom, right, bottom, ink, 2);
  c.line(left, top, left, bottom, ink, 2);
  c.text((left + right - canvas::text_width(spec.x_label)) / 2, bottom + 40, spec.x_label, ink);
  c.text(left - 60, top - 30, spec.y_label, ink);

  int32_t legend_y = top + 10;
  for (const plot_series& s : spec.series) {
    int32_t prev_x = 0, prev_y = 0;
    bool have_prev = false;
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!(s.x[i] > 0 && s.y[i] > 0)) {
        have_prev = false;
        continue;
      }
      const int32_t x = px(s.x[i]), y = py(s.y[i]);
      if (s.lines && have_prev) c.line(prev_x, prev_y, x, y, s.rgb, s.line_width);
      if (s.lines) {
        c.rect(x - 4, y - 4, x + 4, y + 4, s.rgb);
      } else { // a hollow square, so that a line under it stays visible
        c.rect(x - 7, y - 7, x + 7, y + 7, s.rgb);
        c.rect(x - 4, y - 4, x + 4, y + 4, 0xffffff);
      }
      prev_x = x, prev_y = y, have_prev = true;
    }
    c.rect(left + 15, legend_y + 2, left + 35, legend_y + 10, s.rgb);
    c.text(left + 45, legend_y, s.name, ink);
    legend_y += 22;
  }
  return encode_png(w, h, c.rgb());
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  if (out) out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  if (!out) throw load_error(path, std::string("cannot write: ") + std::strerror(errno));
}

} // namespace kvactor::tools
