#include "tools/plot/canvas.h"

#include <algorithm>
#include <cstdlib>

#include "tools/plot/font5x7.h"

namespace kvactor::plot {

namespace {

// Indexed by `colour`.
constexpr rgb palette[] = {
    {255, 255, 255}, // white
    {0, 0, 0},       // black
    {225, 225, 225}, // grid
    {60, 60, 60},    // text
    {31, 119, 180},  // blue
    {255, 127, 14},  // orange
    {44, 160, 44},   // green
    {214, 39, 40},   // red
    {148, 103, 189}, // purple
    {140, 86, 75},   // brown
};

constexpr int glyph_advance = glyph_width + 1;

} // namespace

canvas::canvas(int width, int height)
    : width_(width), height_(height), clip_x0_(0), clip_y0_(0), clip_x1_(width - 1), clip_y1_(height - 1),
      pixels_(size_t(width) * size_t(height), uint8_t(colour::white)) {}

void canvas::clip(int x0, int y0, int x1, int y1) {
  clip_x0_ = std::max(0, std::min(x0, x1));
  clip_y0_ = std::max(0, std::min(y0, y1));
  clip_x1_ = std::min(width_ - 1, std::max(x0, x1));
  clip_y1_ = std::min(height_ - 1, std::max(y0, y1));
}

void canvas::fill_rect(int x0, int y0, int x1, int y1, colour c) {
  if (x0 > x1) std::swap(x0, x1);
  if (y0 > y1) std::swap(y0, y1);
  x0 = std::max(x0, clip_x0_);
  y0 = std::max(y0, clip_y0_);
  x1 = std::min(x1, clip_x1_);
  y1 = std::min(y1, clip_y1_);
  for (int y = y0; y <= y1; ++y)
    for (int x = x0; x <= x1; ++x) pixels_[size_t(y) * size_t(width_) + size_t(x)] = uint8_t(c);
}

void canvas::line(int x0, int y0, int x1, int y1, colour c, int thickness) {
  // Bresenham; the pen is a thickness x thickness square centred on the path.
  const int lo = -(thickness - 1) / 2, hi = thickness / 2;
  const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
  const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  for (;;) {
    fill_rect(x0 + lo, y0 + lo, x0 + hi, y0 + hi, c);
    if (x0 == x1 && y0 == y1) break;
    const int e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x0 += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y0 += sy;
    }
  }
}

void canvas::text(int x, int y, std::string_view s, colour c, int scale) {
  for (char ch : s) {
    const int index = (ch >= ' ' && ch <= '~') ? ch - ' ' : '?' - ' ';
    const auto& glyph = font5x7[size_t(index)];
    for (int col = 0; col < glyph_width; ++col)
      for (int row = 0; row < glyph_height; ++row)
        if (glyph[size_t(col)] & (1u << row))
          fill_rect(x + col * scale, y + row * scale, x + (col + 1) * scale - 1, y + (row + 1) * scale - 1, c);
    x += glyph_advance * scale;
  }
}

int canvas::text_width(std::string_view s, int scale) {
  return s.empty() ? 0 : (int(s.size()) * glyph_advance - 1) * scale;
}

int canvas::text_height(int scale) { return glyph_height * scale; }

void canvas::save_png(const std::string& path) const { write_png(path, width_, height_, pixels_, palette); }

} // namespace kvactor::plot
