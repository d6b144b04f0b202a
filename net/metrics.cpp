#include "net/metrics.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <variant>

#include "runtime/error.h"

namespace kvactor::net {

namespace {

enum kind : int { counter_kind, gauge_kind, histogram_kind };

const char* type_name(int k) {
  switch (k) {
    case counter_kind: return "counter";
    case gauge_kind: return "gauge";
    default: return "histogram";
  }
}

bool valid_name(std::string_view name, bool label) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':');
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  // Names starting with "__" are reserved for Prometheus itself.
  return !(label && name.starts_with("__"));
}

void append_value(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    std::array<char, 32> buf{};
    const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), v);
    out.append(buf.data(), r.ptr);
  }
}

// Label values escape backslash, double quote and newline; help text
// escapes backslash and newline.
void append_escaped(std::string& out, std::string_view text, bool quotes) {
  for (const char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quotes) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// {a="x",le="0.5"}; nothing when there are no labels.
void append_labels(std::string& out, const metric_labels& labels, const std::string* le = nullptr) {
  if (labels.empty() && !le) return;
  out += '{';
  bool first = true;
  for (const auto& [name, value] : labels) {
    if (!first) out += ',';
    first = false;
    out.append(name).append("=\"");
    append_escaped(out, value, true);
    out += '"';
  }
  if (le) {
    if (!first) out += ',';
    out.append("le=\"").append(*le).append("\"");
  }
  out += '}';
}

} // namespace

// -- histogram ------------------------------------------------------------------

histogram::histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1]))
      throw error("histogram: bucket bounds must be finite and strictly increasing");
  }
  counts_.assign(bounds_.size() + 1, 0);
}

void histogram::observe(double value) {
  // The first bucket whose bound is >= value; NaN lands in +Inf.
  const size_t bucket = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  std::lock_guard lock(mutex_);
  ++counts_[std::isnan(value) ? bounds_.size() : bucket];
  sum_ += value;
}

histogram::snapshot histogram::read() const {
  snapshot s;
  std::lock_guard lock(mutex_);
  s.cumulative.resize(counts_.size());
  uint64_t total = 0;
  for (size_t i = 0; i < counts_.size(); ++i) s.cumulative[i] = total += counts_[i];
  s.sum = sum_;
  return s;
}

// -- registry -------------------------------------------------------------------

struct metrics_registry::family {
  std::string name;
  std::string help;
  int kind = counter_kind;
  struct series {
    metric_labels labels;
    std::variant<std::unique_ptr<counter>, std::unique_ptr<gauge>, std::unique_ptr<histogram>> instrument;
  };
  std::vector<series> members;
};

metrics_registry::metrics_registry() = default;
metrics_registry::~metrics_registry() = default;

metrics_registry::family& metrics_registry::family_for(const std::string& name, const std::string& help, int kind) {
  if (!valid_name(name, false)) throw error("metrics: invalid metric name '" + name + "'");
  for (auto& f : families_) {
    if (f->name != name) continue;
    if (f->kind != kind)
      throw error("metrics: '" + name + "' is a " + type_name(f->kind) + ", not a " + type_name(kind));
    return *f;
  }
  auto f = std::make_unique<family>();
  f->name = name;
  f->help = help;
  f->kind = kind;
  families_.push_back(std::move(f));
  return *families_.back();
}

void metrics_registry::check_new_series(const family& f, const metric_labels& labels) const {
  for (const auto& [label, value] : labels) {
    if (!valid_name(label, true) || (f.kind == histogram_kind && label == "le"))
      throw error("metrics: invalid label name '" + label + "' for '" + f.name + "'");
  }
  for (const auto& s : f.members) {
    if (s.labels == labels) throw error("metrics: '" + f.name + "' already has a series with these labels");
  }
}

counter& metrics_registry::add_counter(const std::string& name, const std::string& help,
                                       const metric_labels& labels) {
  std::lock_guard lock(mutex_);
  family& f = family_for(name, help, counter_kind);
  check_new_series(f, labels);
  auto c = std::make_unique<counter>();
  counter& ref = *c;
  f.members.push_back({labels, std::move(c)});
  return ref;
}

gauge& metrics_registry::add_gauge(const std::string& name, const std::string& help, const metric_labels& labels) {
  std::lock_guard lock(mutex_);
  family& f = family_for(name, help, gauge_kind);
  check_new_series(f, labels);
  auto g = std::make_unique<gauge>();
  gauge& ref = *g;
  f.members.push_back({labels, std::move(g)});
  return ref;
}

histogram& metrics_registry::add_histogram(const std::string& name, const std::string& help,
                                           std::vector<double> upper_bounds, const metric_labels& labels) {
  auto h = std::make_unique<histogram>(std::move(upper_bounds));
  std::lock_guard lock(mutex_);
  family& f = family_for(name, help, histogram_kind);
  check_new_series(f, labels);
  histogram& ref = *h;
  f.members.push_back({labels, std::move(h)});
  return ref;
}

void metrics_registry::on_collect(std::function<void()> refresh) {
  std::lock_guard lock(mutex_);
  collectors_.push_back(std::move(refresh));
}

std::string metrics_registry::render() const {
  std::vector<std::function<void()>> collectors;
  {
    std::lock_guard lock(mutex_);
    collectors = collectors_;
  }
  // Outside the lock: a collector may take its time (it asks the engine).
  for (const auto& refresh : collectors) refresh();

  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& f : families_) {
    out.append("# HELP ").append(f->name).append(" ");
    append_escaped(out, f->help, false);
    out.append("\n# TYPE ").append(f->name).append(" ").append(type_name(f->kind)).append("\n");
    for (const auto& s : f->members) {
      if (const auto* c = std::get_if<std::unique_ptr<counter>>(&s.instrument)) {
        out += f->name;
        append_labels(out, s.labels);
        out += ' ';
        append_value(out, (*c)->value());
        out += '\n';
      } else if (const auto* g = std::get_if<std::unique_ptr<gauge>>(&s.instrument)) {
        out += f->name;
        append_labels(out, s.labels);
        out += ' ';
        append_value(out, (*g)->value());
        out += '\n';
      } else {
        const histogram& h = *std::get<std::unique_ptr<histogram>>(s.instrument);
        const histogram::snapshot snap = h.read();
        const auto& bounds = h.upper_bounds();
        for (size_t i = 0; i < snap.cumulative.size(); ++i) {
          std::string le;
          append_value(le, i < bounds.size() ? bounds[i] : INFINITY);
          out.append(f->name).append("_bucket");
          append_labels(out, s.labels, &le);
          out += ' ';
          append_value(out, double(snap.cumulative[i]));
          out += '\n';
        }
        out.append(f->name).append("_sum");
        append_labels(out, s.labels);
        out += ' ';
        append_value(out, snap.sum);
        out.append("\n").append(f->name).append("_count");
        append_labels(out, s.labels);
        out += ' ';
        append_value(out, double(snap.cumulative.back()));
        out += '\n';
      }
    }
  }
  return out;
}

} // namespace kvactor::net
