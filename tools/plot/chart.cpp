#include "tools/plot/chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace kvactor::plot {

namespace {

constexpr int title_scale = 2;
constexpr int margin_left = 64, margin_right = 16, margin_bottom = 36;

double tick_step(double hi, int count) {
  const double raw = hi / std::max(count, 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * magnitude >= raw) return m * magnitude;
  return 10 * magnitude;
}

// The axis end: the data's largest value rounded up to a tick.
double axis_end(double data_max, int count) {
  if (!(data_max > 0) || !std::isfinite(data_max)) return 1;
  const double step = tick_step(data_max, count);
  return std::ceil(data_max / step - 1e-9) * step;
}

// Liang-Barsky: clips the segment to the rectangle; false when nothing is left.
bool clip_segment(double& x0, double& y0, double& x1, double& y1, double left, double top, double right,
                  double bottom) {
  double t0 = 0, t1 = 1;
  const double dx = x1 - x0, dy = y1 - y0;
  const double p[] = {-dx, dx, -dy, dy};
  const double q[] = {x0 - left, right - x0, y0 - top, bottom - y0};
  for (int i = 0; i < 4; ++i) {
    if (p[i] == 0) {
      if (q[i] < 0) return false;
      continue;
    }
    const double t = q[i] / p[i];
    if (p[i] < 0) t0 = std::max(t0, t);
    else t1 = std::min(t1, t);
    if (t0 > t1) return false;
  }
  const double ax = x0 + t0 * dx, ay = y0 + t0 * dy;
  x1 = x0 + t1 * dx;
  y1 = y0 + t1 * dy;
  x0 = ax;
  y0 = ay;
  return true;
}

// Where values land on one axis, linear from 0 or logarithmic.
struct axis {
  std::vector<double> ticks;
  bool log = false;
  double lo = 0, hi = 1; // the ends, in axis units (log10 of the value when log)

  double fraction(double v) const { return ((log ? std::log10(v) : v) - lo) / (hi - lo); }
  double step() const { return ticks.size() > 1 ? ticks[1] - ticks[0] : 1; }
};

axis make_axis(double data_min_positive, double data_max, std::optional<double> fixed_max, bool log) {
  axis a;
  a.log = log;
  if (!log) {
    a.ticks = nice_ticks(fixed_max.value_or(data_max));
    a.hi = a.ticks.back();
    return a;
  }
  const double top = fixed_max.value_or(data_max);
  const int first = int(std::floor(std::log10(data_min_positive > 0 ? data_min_positive : 1)));
  const int last = std::max(first + 1, int(std::ceil(std::log10(top > 0 ? top : 10))));
  for (int e = first; e <= last; ++e) a.ticks.push_back(std::pow(10.0, e));
  a.lo = first;
  a.hi = last;
  return a;
}

std::string byte_label(double v) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (v >= 1000 && u < 4) v /= 1000, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g %s", v, units[u]);
  return buf;
}

} // namespace

std::vector<double> nice_ticks(double hi, int count) {
  const double end = axis_end(hi, count);
  const double step = tick_step(end, count);
  std::vector<double> ticks;
  for (int i = 0; i * step <= end * (1 + 1e-9); ++i) ticks.push_back(i * step);
  return ticks;
}

std::string tick_label(double value, double step) {
  const int decimals = step >= 1 ? 0 : int(std::ceil(-std::log10(step) - 1e-9));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

void draw_chart(canvas& c, const box& area, const chart& spec) {
  const int title_h = canvas::text_height(title_scale);
  c.text(area.x0 + margin_left, area.y0, spec.title, colour::black, title_scale);
  int top = area.y0 + title_h + 6;
  if (!spec.note.empty()) {
    c.text(area.x0 + margin_left, top, spec.note, colour::text);
    top += canvas::text_height() + 4;
  }
  c.text(area.x0 + 4, top, spec.y_label, colour::text);
  // The legend, on the same row, right-aligned: above the data, never over it.
  int legend_x = area.x1 - margin_right;
  for (size_t i = spec.lines.size(); i-- > 0;) {
    const auto& label = spec.lines[i].label;
    legend_x -= canvas::text_width(label);
    c.text(legend_x, top, label, colour::black);
    c.fill_rect(legend_x - 16, top + 3, legend_x - 5, top + 5, series_colours[i % std::size(series_colours)]);
    legend_x -= 16 + 14;
  }
  top += canvas::text_height() + 8;
  const box plot = {area.x0 + margin_left, top, area.x1 - margin_right, area.y1 - margin_bottom};

  auto drawn = [&](double x, double y) { return (!spec.log_x || x > 0) && (!spec.log_y || y > 0); };
  double x_data = 0, y_data = 0, x_min = 0, y_min = 0;
  for (const auto& s : spec.lines)
    for (const auto& [x, y] : s.points) {
      if (!drawn(x, y)) continue;
      x_data = std::max(x_data, x);
      y_data = std::max(y_data, y);
      x_min = x_min > 0 ? std::min(x_min, x) : x;
      y_min = y_min > 0 ? std::min(y_min, y) : y;
    }
  const axis xa = make_axis(x_min, x_data, spec.x_max, spec.log_x);
  const axis ya = make_axis(y_min, y_data, spec.y_max, spec.log_y);
  auto px = [&](double x) { return plot.x0 + xa.fraction(x) * (plot.x1 - plot.x0); };
  auto py = [&](double y) { return plot.y1 - ya.fraction(y) * (plot.y1 - plot.y0); };

  for (double t : xa.ticks) {
    const int x = int(std::lround(px(t)));
    c.line(x, plot.y0, x, plot.y1, colour::grid);
    const std::string label = tick_label(t, xa.log ? t : xa.step());
    c.text(x - canvas::text_width(label) / 2, plot.y1 + 6, label, colour::text);
  }
  for (double t : ya.ticks) {
    const int y = int(std::lround(py(t)));
    c.line(plot.x0, y, plot.x1, y, colour::grid);
    const std::string label = spec.y_bytes ? byte_label(t) : tick_label(t, ya.log ? t : ya.step());
    c.text(plot.x0 - 6 - canvas::text_width(label), y - canvas::text_height() / 2, label, colour::text);
  }
  c.line(plot.x0, plot.y0, plot.x0, plot.y1, colour::black);
  c.line(plot.x0, plot.y1, plot.x1, plot.y1, colour::black);
  c.text((plot.x0 + plot.x1 - canvas::text_width(spec.x_label)) / 2, plot.y1 + 20, spec.x_label, colour::text);

  c.clip(plot.x0, plot.y0, plot.x1, plot.y1);
  auto segment = [&](double xa, double ya, double xb, double yb, colour col) {
    if (!clip_segment(xa, ya, xb, yb, plot.x0 - 2, plot.y0 - 2, plot.x1 + 2, plot.y1 + 2)) return;
    c.line(int(std::lround(xa)), int(std::lround(ya)), int(std::lround(xb)), int(std::lround(yb)), col, 2);
  };
  for (size_t i = 0; i < spec.lines.size(); ++i) {
    const auto& s = spec.lines[i];
    const colour col = series_colours[i % std::size(series_colours)];
    for (size_t k = 1; k < s.points.size(); ++k) {
      const auto [x0, y0] = s.points[k - 1];
      const auto [x1, y1] = s.points[k];
      if (!drawn(x0, y0) || !drawn(x1, y1)) continue;
      if (s.steps) {
        segment(px(x0), py(y0), px(x1), py(y0), col);
        segment(px(x1), py(y0), px(x1), py(y1), col);
      } else {
        segment(px(x0), py(y0), px(x1), py(y1), col);
      }
    }
    if (s.dots)
      for (const auto& [x, y] : s.points) {
        if (!drawn(x, y)) continue;
        const int cx = int(std::lround(px(x))), cy = int(std::lround(py(y)));
        c.fill_rect(cx - 3, cy - 3, cx + 3, cy + 3, col);
      }
  }
  c.unclip();
  // Dot labels may reach into the margins.
  for (const auto& s : spec.lines)
    for (size_t k = 0; k < s.dot_labels.size() && k < s.points.size(); ++k) {
      if (!drawn(s.points[k].first, s.points[k].second)) continue;
      const int cx = int(std::lround(px(s.points[k].first))), cy = int(std::lround(py(s.points[k].second)));
      if (cx >= plot.x0 && cx <= plot.x1 && cy >= plot.y0 && cy <= plot.y1)
        c.text(cx + 6, cy - canvas::text_height() - 2, s.dot_labels[k], colour::text);
    }
}

} // namespace kvactor::plot
