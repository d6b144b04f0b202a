#pragma once
// A small line plot written as a PNG, with no image library: an RGB canvas,
// lines and markers, a built-in 5x7 font (upper case, digits and a little
// punctuation; lower case is drawn upper case, anything else as '?'), and a
// PNG encoder whose zlib stream uses stored (uncompressed) blocks.
#include <cstdint>
#include <string>
#include <vector>

namespace kvactor::tools {

struct plot_series {
  std::string name;
  uint32_t rgb = 0;                    // 0xRRGGBB
  std::vector<double> x, y;            // same length; points with y <= 0 are skipped on a log axis
  bool lines = true;                   // else markers only
  int32_t line_width = 3;              // pixels
};

struct plot_spec {
  std::string title;
  std::string x_label;
  std::string y_label;
  bool y_bytes = false;                // y tick labels as KB, MB, GB (powers of ten)
  std::vector<plot_series> series;
  int32_t width = 900;
  int32_t height = 560;
};

// Both axes logarithmic; x ticks at the first series' x values, y ticks at
// powers of ten. Throws kvactor::error when no series has a positive point.
std::vector<uint8_t> render_log_plot_png(const plot_spec& spec);

// An 8-bit RGB PNG of `rgb` ([height, width, 3]).
std::vector<uint8_t> encode_png(int32_t width, int32_t height, const std::vector<uint8_t>& rgb);

// Throws kvactor::error naming the path when it cannot be written.
void write_file(const std::string& path, const std::vector<uint8_t>& bytes);

} // namespace kvactor::tools
