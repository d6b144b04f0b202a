#pragma once
// A palette raster to draw charts on: filled rectangles, lines, dots and 5x7
// text, clipped to the image; saved as PNG.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tools/plot/png_writer.h"

namespace kvactor::plot {

// Palette indices.
enum class colour : uint8_t { white, black, grid, text, blue, orange, green, red, purple, brown };

// The series colours, in the order charts hand them out.
inline constexpr colour series_colours[] = {colour::blue, colour::orange, colour::green,
                                            colour::red,  colour::purple, colour::brown};

class canvas {
 public:
  canvas(int width, int height); // white
  int width() const { return width_; }
  int height() const { return height_; }
  colour at(int x, int y) const { return colour(pixels_[size_t(y) * size_t(width_) + size_t(x)]); }

  // Later drawing touches only this rectangle (corners inclusive) until
  // unclip().
  void clip(int x0, int y0, int x1, int y1);
  void unclip() { clip(0, 0, width_ - 1, height_ - 1); }

  // Corners inclusive.
  void fill_rect(int x0, int y0, int x1, int y1, colour c);
  // A line `thickness` pixels wide (a square pen).
  void line(int x0, int y0, int x1, int y1, colour c, int thickness = 1);
  // Text with its top-left corner at (x, y), each font pixel drawn scale x
  // scale; characters outside printable ASCII are drawn as '?'.
  void text(int x, int y, std::string_view s, colour c, int scale = 1);
  static int text_width(std::string_view s, int scale = 1);
  static int text_height(int scale = 1);

  void save_png(const std::string& path) const;

 private:
  int width_, height_;
  int clip_x0_, clip_y0_, clip_x1_, clip_y1_;
  std::vector<uint8_t> pixels_; // [height, width] palette indices
};

} // namespace kvactor::plot
