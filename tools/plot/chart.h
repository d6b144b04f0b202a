#pragma once
// A line chart in a box of a canvas: title, axes with round-numbered ticks
// and grid lines, one polyline per series (with dots when asked), a legend.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tools/plot/canvas.h"

namespace kvactor::plot {

struct series {
  std::string label;
  std::vector<std::pair<double, double>> points; // (x, y), drawn in this order
  bool dots = false;
  std::vector<std::string> dot_labels; // written beside the dots, when given
  bool steps = false; // a step function (CDFs, per-second bins) instead of straight segments
};

struct chart {
  std::string title, x_label, y_label;
  std::vector<series> lines;
  std::optional<double> x_max, y_max; // fixed ends of the axes; otherwise the data's
  std::string note;                   // a line under the title, e.g. what was clipped
  // Logarithmic axes have ticks at powers of ten and skip points <= 0.
  bool log_x = false, log_y = false;
  bool y_bytes = false; // y tick labels as B, KB, MB, GB (powers of 1000)
};

struct box {
  int x0, y0, x1, y1;
};

// Ticks at 1, 2 or 5 times a power of ten, about `count` of them over [0, hi].
std::vector<double> nice_ticks(double hi, int count = 5);
// A tick label: as few digits as the step needs.
std::string tick_label(double value, double step);

void draw_chart(canvas& c, const box& area, const chart& spec);

} // namespace kvactor::plot
