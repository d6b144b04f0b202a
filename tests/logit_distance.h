#pragma once
// How far one set of logits is from another, for the tests that hold a
// backend against a reference: relative L2 error, cosine similarity and the
// argmax, summed in double. Anything not finite makes the error infinite
// and the similarity 0, so a NaN never passes a bound.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace kvactor::test {

// ||got - want|| / ||want||.
template <class T, class U>
double rel_l2(const std::vector<T>& got, const std::vector<U>& want) {
  REQUIRE(got.size() == want.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = double(got[i]) - double(want[i]);
    diff += d * d;
    norm += double(want[i]) * double(want[i]);
  }
  return std::isfinite(diff) ? std::sqrt(diff / norm) : std::numeric_limits<double>::infinity();
}

inline double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return std::isfinite(ab) ? ab / std::sqrt(aa * bb) : 0.0;
}

inline int32_t argmax(const std::vector<float>& v) {
  return int32_t(std::max_element(v.begin(), v.end()) - v.begin());
}

} // namespace kvactor::test
