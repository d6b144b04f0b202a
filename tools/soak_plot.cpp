// kvactor-soak-plot: the PNG of a soak run (scripts/soak.sh): the daemon's
// resident memory and KV pages over time from samples.csv, and each round's
// latency percentiles from rounds.csv.
//
//   kvactor-soak-plot samples.csv rounds.csv soak.png
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tools/plot/chart.h"

namespace {

using namespace kvactor::plot;

// A CSV file with a header line, as columns by name; empty cells are NaN.
std::map<std::string, std::vector<double>> read_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  const auto cells = [](const std::string& line) {
    std::vector<std::string> out;
    std::stringstream s(line);
    for (std::string cell; std::getline(s, cell, ',');) out.push_back(cell);
    if (!line.empty() && line.back() == ',') out.emplace_back();
    return out;
  };
  std::string line;
  if (!std::getline(in, line)) throw std::runtime_error(path + ": empty");
  const std::vector<std::string> names = cells(line);
  std::map<std::string, std::vector<double>> columns;
  while (std::getline(in, line)) {
    const std::vector<std::string> row = cells(line);
    for (size_t i = 0; i < names.size(); ++i) {
      double value = __builtin_nan("");
      if (i < row.size() && !row[i].empty()) {
        try {
          value = std::stod(row[i]);
        } catch (const std::exception&) { // a text column (the scenario)
        }
      }
      columns[names[i]].push_back(value);
    }
  }
  return columns;
}

const std::vector<double>& column(const std::map<std::string, std::vector<double>>& csv, const std::string& name,
                                  const std::string& path) {
  const auto it = csv.find(name);
  if (it == csv.end()) throw std::runtime_error(path + ": no column '" + name + "'");
  return it->second;
}

// (x, y * scale) for every row where both are numbers.
series line(std::string label, const std::vector<double>& x, const std::vector<double>& y, double scale = 1,
            bool dots = false) {
  series s{std::move(label), {}, dots, {}, false};
  for (size_t i = 0; i < x.size() && i < y.size(); ++i)
    if (x[i] == x[i] && y[i] == y[i]) s.points.emplace_back(x[i] / 60, y[i] * scale);
  return s;
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fputs("usage: kvactor-soak-plot samples.csv rounds.csv out.png\n", stderr);
    return 2;
  }
  try {
    const std::string samples_path = argv[1], rounds_path = argv[2];
    const auto samples = read_csv(samples_path);
    const auto rounds = read_csv(rounds_path);
    const auto& t = column(samples, "t_s", samples_path);
    const auto& end = column(rounds, "end_s", rounds_path);

    constexpr int width = 1200, height = 840, header = 44;
    canvas c(width, height);
    double requests = 0, errors = 0;
    for (const double n : column(rounds, "sent", rounds_path)) requests += n == n ? n : 0;
    for (const double n : column(rounds, "errors", rounds_path)) errors += n == n ? n : 0;
    char line1[160], line2[160];
    std::snprintf(line1, sizeof line1, "kvactor soak: %.0f minutes, %zu rounds of mixed load", t.empty() ? 0 : t.back() / 60,
                  end.size());
    std::snprintf(line2, sizeof line2, "%.0f requests sent, %.0f errors; one point per sample (memory, pages) or round "
                  "(latency)", requests, errors);
    c.text(16, 10, line1, colour::black, 2);
    c.text(16, 30, line2, colour::text);

    const std::string minutes = "minutes since the start";
    const chart memory{"Daemon resident memory", minutes, "MiB",
                       {line("VmRSS", t, column(samples, "rss_kb", samples_path), 1.0 / 1024),
                        line("VmHWM (peak)", t, column(samples, "hwm_kb", samples_path), 1.0 / 1024)},
                       std::nullopt, std::nullopt, ""};
    const chart pages{"KV pages in use and requests running", minutes, "count",
                      {line("kv_pages_used", t, column(samples, "kv_pages_used", samples_path)),
                       line("requests_running", t, column(samples, "requests_running", samples_path))},
                      std::nullopt, std::nullopt, ""};
    const chart ttft{"Time to first token, per round", minutes + " (end of round)", "ms",
                     {line("p50", end, column(rounds, "ttft_p50_ms", rounds_path), 1, true),
                      line("p99", end, column(rounds, "ttft_p99_ms", rounds_path), 1, true)},
                     std::nullopt, std::nullopt, ""};
    const chart itl{"Inter-token latency, per round", minutes + " (end of round)", "ms",
                    {line("p50", end, column(rounds, "itl_p50_ms", rounds_path), 1, true),
                     line("p99", end, column(rounds, "itl_p99_ms", rounds_path), 1, true)},
                    std::nullopt, std::nullopt, ""};
    const int mid_x = width / 2, mid_y = header + (height - header) / 2;
    draw_chart(c, {0, header + 8, mid_x - 8, mid_y - 8}, memory);
    draw_chart(c, {mid_x + 8, header + 8, width - 8, mid_y - 8}, pages);
    draw_chart(c, {0, mid_y + 8, mid_x - 8, height - 8}, ttft);
    draw_chart(c, {mid_x + 8, mid_y + 8, width - 8, height - 8}, itl);
    c.save_png(argv[3]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvactor-soak-plot: %s\n", e.what());
    return 1;
  }
  return 0;
}
