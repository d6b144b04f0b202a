#pragma once
// Seeded draws that give the same numbers with every standard library:
// std::mt19937_64's sequence is fixed by the standard, the distributions
// over it are not, so they are written out here.
#include <cmath>
#include <cstdint>
#include <numbers>
#include <random>

namespace kvactor::bench {

class random_source {
 public:
  explicit random_source(uint64_t seed) : engine_(seed) {}

  uint64_t bits() { return engine_(); }

  // Uniform in [0, 1), 53 bits.
  double uniform() { return double(bits() >> 11) * 0x1.0p-53; }

  // Uniform in [lo, hi] (lo <= hi). Multiply-shift: the bias is below 2^-32
  // for any range a workload uses.
  int64_t uniform_int(int64_t lo, int64_t hi) {
    const auto span = uint64_t(hi - lo) + 1;
    return lo + int64_t((unsigned __int128)(bits()) * span >> 64);
  }

  // Gaps of a Poisson process with `rate` events a second.
  double exponential(double rate) { return -std::log1p(-uniform()) / rate; }

  // Box-Muller; one of the pair is dropped to keep the state simple.
  double normal() {
    const double u1 = 1.0 - uniform(); // (0, 1]: log is finite
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

  // Lognormal with the given mean and log-space sigma: mu = ln(mean) - sigma^2 / 2.
  double lognormal_with_mean(double mean, double sigma) {
    return std::exp(std::log(mean) - sigma * sigma / 2 + sigma * normal());
  }

 private:
  std::mt19937_64 engine_;
};

} // namespace kvactor::bench
