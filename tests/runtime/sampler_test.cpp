#include "runtime/sampler.h"

#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <vector>

#include "runtime/error.h"

using namespace kvactor;

namespace {

int32_t sample(std::vector<float> logits, const sampling_params& p, uint64_t counter,
               std::vector<int32_t> history = {}) {
  return sample_token(logits, p, history, counter);
}

// Frequency of each token over `draws` counters.
std::map<int32_t, double> frequencies(const std::vector<float>& logits, const sampling_params& p, int draws) {
  std::map<int32_t, double> freq;
  for (int i = 0; i < draws; ++i) freq[sample(logits, p, uint64_t(i))] += 1.0 / draws;
  return freq;
}

// logits whose softmax is exactly `probs`.
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(float(std::log(p)));
  return l;
}

} // namespace

TEST_CASE("sample_uniform is deterministic, in [0, 1) and keyed by seed and counter") {
  CHECK(sample_uniform(7, 3) == sample_uniform(7, 3));
  CHECK(sample_uniform(7, 3) != sample_uniform(8, 3));
  CHECK(sample_uniform(7, 3) != sample_uniform(7, 4));
  double sum = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    double u = sample_uniform(42, uint64_t(i));
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    sum += u;
  }
  CHECK(sum / n == doctest::Approx(0.5).epsilon(0.01));
}

TEST_CASE("temperature 0 is argmax, lowest index on ties") {
  sampling_params p;
  p.temperature = 0;
  CHECK(sample({0.1f, 2.0f, -1.0f, 1.9f}, p, 0) == 1);
  CHECK(sample({3.0f, 1.0f, 3.0f, 3.0f}, p, 0) == 0);
  CHECK(sample({-5.0f, -1.0f, -1.0f}, p, 9) == 1);
}

TEST_CASE("top_k 1 equals greedy for any seed and counter") {
  const std::vector<float> logits{0.5f, 1.5f, 1.5f, -2.0f, 1.4f};
  sampling_params p;
  p.top_k = 1;
  p.temperature = 1.3f;
  for (uint64_t seed = 0; seed < 5; ++seed)
    for (uint64_t c = 0; c < 50; ++c) {
      p.seed = seed;
      CHECK(sample(logits, p, c) == 1);
    }
}

TEST_CASE("full sampling follows the softmax distribution") {
  const auto logits = logits_of({0.1, 0.2, 0.3, 0.4});
  sampling_params p;
  p.seed = 3;
  auto f = frequencies(logits, p, 40000);
  CHECK(f[0] == doctest::Approx(0.1).epsilon(0.1));
  CHECK(f[1] == doctest::Approx(0.2).epsilon(0.05));
  CHECK(f[2] == doctest::Approx(0.3).epsilon(0.05));
  CHECK(f[3] == doctest::Approx(0.4).epsilon(0.05));
}

TEST_CASE("temperature sharpens the distribution") {
  // p ~ exp(l / 0.5): l = log(0.2), log(0.8) -> 0.04 : 0.64 -> 1/17, 16/17
  const auto logits = logits_of({0.2, 0.8});
  sampling_params p;
  p.temperature = 0.5f;
  auto f = frequencies(logits, p, 40000);
  CHECK(f[0] == doctest::Approx(1.0 / 17).epsilon(0.1));
  CHECK(f[1] == doctest::Approx(16.0 / 17).epsilon(0.02));
}

TEST_CASE("top_k keeps the k most likely tokens, renormalised") {
  const auto logits = logits_of({0.1, 0.4, 0.2, 0.3});
  sampling_params p;
  p.top_k = 2;
  auto f = frequencies(logits, p, 40000);
  CHECK(f.count(0) == 0);
  CHECK(f.count(2) == 0);
  CHECK(f[1] == doctest::Approx(4.0 / 7).epsilon(0.03));
  CHECK(f[3] == doctest::Approx(3.0 / 7).epsilon(0.03));
}

TEST_CASE("top_p keeps the smallest set reaching top_p") {
  const auto logits = logits_of({0.125, 0.5, 0.125, 0.25});
  sampling_params p;
  SUBCASE("0.7 keeps the two largest") {
    p.top_p = 0.7f;
    auto f = frequencies(logits, p, 40000);
    CHECK(f.size() == 2);
    CHECK(f[1] == doctest::Approx(2.0 / 3).epsilon(0.02));
    CHECK(f[3] == doctest::Approx(1.0 / 3).epsilon(0.03));
  }
  SUBCASE("0.45 keeps the largest alone") {
    p.top_p = 0.45f;
    auto f = frequencies(logits, p, 2000);
    CHECK(f.size() == 1);
    CHECK(f[1] == doctest::Approx(1.0));
  }
  SUBCASE("a tiny top_p still keeps one token") {
    p.top_p = 1e-6f;
    auto f = frequencies(logits, p, 2000);
    CHECK(f.size() == 1);
    CHECK(f[1] == doctest::Approx(1.0));
  }
  SUBCASE("0.8 keeps three; ties among the rest go to the lower index") {
    p.top_p = 0.8f;
    auto f = frequencies(logits, p, 40000);
    CHECK(f.size() == 3);
    CHECK(f.count(2) == 0);
    CHECK(f[0] == doctest::Approx(0.125 / 0.875).epsilon(0.05));
    CHECK(f[1] == doctest::Approx(0.5 / 0.875).epsilon(0.02));
    CHECK(f[3] == doctest::Approx(0.25 / 0.875).epsilon(0.03));
  }
  SUBCASE("after top_k, top_p works on the renormalised remainder") {
    // top_k 2 leaves {1: 2/3, 3: 1/3}; top_p 0.6 then keeps token 1 alone.
    p.top_k = 2;
    p.top_p = 0.6f;
    auto f = frequencies(logits, p, 2000);
    CHECK(f.size() == 1);
    CHECK(f[1] == doctest::Approx(1.0));
  }
}

TEST_CASE("min_p drops tokens below min_p times the top probability") {
  const auto logits = logits_of({0.05, 0.5, 0.2, 0.25});
  sampling_params p;
  p.min_p = 0.45f; // threshold 0.225: keeps 0.5 and 0.25
  auto f = frequencies(logits, p, 40000);
  CHECK(f.size() == 2);
  CHECK(f[1] == doctest::Approx(2.0 / 3).epsilon(0.02));
  CHECK(f[3] == doctest::Approx(1.0 / 3).epsilon(0.03));
}

TEST_CASE("repetition penalty divides positive and multiplies negative logits, once per token") {
  std::vector<float> logits{2.0f, -1.0f, 0.5f, 3.0f, -4.0f};
  sampling_params p;
  p.temperature = 0;
  p.repetition_penalty = 2.0f;
  const std::vector<int32_t> history{0, 1, 1, 4, 0};
  CHECK(sample_token(logits, p, history, 0) == 3);
  CHECK(logits == std::vector<float>{1.0f, -2.0f, 0.5f, 3.0f, -8.0f});

  // The penalty changes the greedy pick when the top token was seen.
  std::vector<float> l2{3.0f, 2.0f};
  const std::vector<int32_t> h2{0};
  CHECK(sample_token(l2, p, h2, 0) == 1);
  CHECK(l2[0] == 1.5f);

  std::vector<float> l3{1.0f};
  const std::vector<int32_t> bad{5};
  CHECK_THROWS_AS(sample_token(l3, p, bad, 0), error);

  // What a device applies the penalty to: each token once, first seen first.
  CHECK(distinct_tokens(std::vector<int32_t>{3, 1, 3, 0, 1}, 4) == std::vector<int32_t>{3, 1, 0});
  CHECK(distinct_tokens({}, 4).empty());
  CHECK_THROWS_WITH_AS(distinct_tokens(std::vector<int32_t>{1, 4}, 4), doctest::Contains("history token 4"), error);
  CHECK_THROWS_WITH_AS(distinct_tokens(std::vector<int32_t>{-1}, 4), doctest::Contains("history token -1"), error);
}

TEST_CASE("the same seed and counter pick the same token; other seeds differ") {
  std::vector<float> logits(64, 0.0f); // uniform over 64 tokens
  sampling_params p;
  p.seed = 11;
  std::vector<int32_t> a, b, c;
  for (uint64_t i = 0; i < 32; ++i) {
    a.push_back(sample(logits, p, i));
    b.push_back(sample(logits, p, i));
  }
  p.seed = 12;
  for (uint64_t i = 0; i < 32; ++i) c.push_back(sample(logits, p, i));
  CHECK(a == b);
  CHECK(a != c);
}
