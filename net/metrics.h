#pragma once
// A small metrics registry: counters, gauges and histograms with fixed
// buckets, rendered in the Prometheus text exposition format (0.0.4).
//
// Instruments are registered once, at startup, and then updated from any
// thread without locks (counters and gauges) or under a per-histogram mutex.
// References returned by add_* stay valid as long as the registry.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace kvactor::net {

// Label names and values of one series, e.g. {{"reason", "stop"}}.
using metric_labels = std::vector<std::pair<std::string, std::string>>;

class counter {
 public:
  void add(double amount = 1) { value_.fetch_add(amount, std::memory_order_relaxed); }
  // For a total kept elsewhere (an engine's counter): its current value.
  void set(double total) { value_.store(total, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class gauge {
 public:
  void set(double value) { value_.store(value, std::memory_order_relaxed); }
  void add(double amount) { value_.fetch_add(amount, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class histogram {
 public:
  // `upper_bounds`: strictly increasing and finite; +Inf is implied.
  // Throws kvactor::error otherwise.
  explicit histogram(std::vector<double> upper_bounds);

  void observe(double value);

  struct snapshot {
    std::vector<uint64_t> cumulative; // [bounds + 1]: observations <= each bound, the last is +Inf
    double sum = 0;
  };
  snapshot read() const;
  const std::vector<double>& upper_bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<uint64_t> counts_; // [bounds + 1], not cumulative
  double sum_ = 0;
};

class metrics_registry {
 public:
  metrics_registry();
  ~metrics_registry();
  metrics_registry(const metrics_registry&) = delete;
  metrics_registry& operator=(const metrics_registry&) = delete;

  // A name may hold several series that differ in their labels; all of one
  // name share its type and help. Throws kvactor::error for an invalid name
  // or label, a name registered as another type, or a repeated series.
  counter& add_counter(const std::string& name, const std::string& help, const metric_labels& labels = {});
  gauge& add_gauge(const std::string& name, const std::string& help, const metric_labels& labels = {});
  histogram& add_histogram(const std::string& name, const std::string& help, std::vector<double> upper_bounds,
                           const metric_labels& labels = {});

  // Runs before every render, to refresh instruments from elsewhere (an
  // engine's stats). Exceptions from it are not caught.
  void on_collect(std::function<void()> refresh);

  // Every series, in registration order, with # HELP and # TYPE lines.
  std::string render() const;

 private:
  struct family;
  family& family_for(const std::string& name, const std::string& help, int kind);
  void check_new_series(const family& f, const metric_labels& labels) const;

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<family>> families_;
  std::vector<std::function<void()>> collectors_;
};

} // namespace kvactor::net
