// Workloads: exact lengths where a scenario promises them, the documented
// distributions where it draws them, determinism from the seed, and clear
// refusals of lengths that cannot fit the model.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "runtime/error.h"
#include "tools/bench/random.h"
#include "tools/bench/scenario.h"

using namespace kvactor::bench;

namespace {

const model_facts model{"default", "LlamaForCausalLM", 2048, 1024};

scenario_options named(const std::string& name) {
  scenario_options o;
  o.name = name;
  return o;
}

bool tokens_in_vocab(const request_plan& p) {
  return std::all_of(p.prompt.begin(), p.prompt.end(), [](int32_t t) { return t >= 0 && t < model.vocab_size; });
}

} // namespace

TEST_CASE("random_source: bounds and the means of its distributions") {
  random_source rng(7);
  double sum_u = 0, sum_e = 0, sum_n = 0, sum_n2 = 0, sum_ln = 0;
  std::set<int64_t> seen;
  constexpr int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double u = rng.uniform();
    REQUIRE(u >= 0);
    REQUIRE(u < 1);
    sum_u += u;
    const int64_t k = rng.uniform_int(3, 9);
    REQUIRE(k >= 3);
    REQUIRE(k <= 9);
    seen.insert(k);
    sum_e += rng.exponential(4.0);
    const double z = rng.normal();
    sum_n += z;
    sum_n2 += z * z;
    sum_ln += rng.lognormal_with_mean(200, 1.0);
  }
  CHECK(seen.size() == 7);
  CHECK(sum_u / n == doctest::Approx(0.5).epsilon(0.01));
  CHECK(sum_e / n == doctest::Approx(0.25).epsilon(0.02));
  CHECK(std::abs(sum_n / n) < 0.01);
  CHECK(sum_n2 / n == doctest::Approx(1.0).epsilon(0.02));
  CHECK(sum_ln / n == doctest::Approx(200).epsilon(0.03));
  // mt19937_64's sequence is fixed by the standard: its 10000th output.
  random_source reference(5489);
  uint64_t x = 0;
  for (int i = 0; i < 10000; ++i) x = reference.bits();
  CHECK(x == 9981545732273789042ull);
}

TEST_CASE("fixed: exact lengths, ids below the vocabulary, the same seed gives the same requests") {
  scenario_options o = named("fixed");
  o.prompt_len = 50;
  o.output_len = 20;
  workload a(o, model, 3), b(o, model, 3), c(o, model, 4);
  for (int i = 0; i < 20; ++i) {
    const auto pa = a.next(), pb = b.next(), pc = c.next();
    CHECK(pa.prompt.size() == 50);
    CHECK(pa.max_tokens == 20);
    CHECK(tokens_in_vocab(pa));
    CHECK(pa.prompt == pb.prompt);
    CHECK(pa.prompt != pc.prompt);
    CHECK(pa.group.empty());
    CHECK(pa.system.empty());
    CHECK(!pa.disconnect_after);
  }
  CHECK(workload(named("fixed"), model, 1).options().prompt_len == 128); // the defaults
  CHECK(workload(named("fixed"), model, 1).options().output_len == 128);
}

TEST_CASE("chat: lognormal lengths with the documented means, clipped to the context") {
  workload w(named("chat"), model, 11);
  double prompt_sum = 0, output_sum = 0;
  int32_t prompt_max = 0;
  constexpr int n = 20000;
  for (int i = 0; i < n; ++i) {
    const auto p = w.next();
    REQUIRE(p.prompt.size() >= 1);
    REQUIRE(p.max_tokens >= 1);
    REQUIRE(int32_t(p.prompt.size()) + p.max_tokens <= model.max_context);
    prompt_sum += double(p.prompt.size());
    output_sum += p.max_tokens;
    prompt_max = std::max(prompt_max, int32_t(p.prompt.size()));
  }
  // Clipping at 1023 trims the far tail a little: the means stay within 5%.
  CHECK(prompt_sum / n == doctest::Approx(200).epsilon(0.05));
  CHECK(output_sum / n == doctest::Approx(180).epsilon(0.05));
  CHECK(prompt_max > 800); // a long tail
}

TEST_CASE("shared-prefix: every prompt is one of K prefixes plus its own suffix") {
  scenario_options o = named("shared-prefix");
  o.prefixes = 3;
  o.prefix_len = 100;
  o.prompt_len = 7;
  o.output_len = 5;
  workload w(o, model, 2);
  std::set<std::vector<int32_t>> prefixes, suffixes;
  for (int i = 0; i < 60; ++i) {
    const auto p = w.next();
    REQUIRE(p.prompt.size() == 107);
    CHECK(p.max_tokens == 5);
    CHECK(tokens_in_vocab(p));
    prefixes.insert(std::vector<int32_t>(p.prompt.begin(), p.prompt.begin() + 100));
    suffixes.insert(std::vector<int32_t>(p.prompt.begin() + 100, p.prompt.end()));
  }
  CHECK(prefixes.size() == 3);
  CHECK(suffixes.size() == 60);
}

TEST_CASE("system-prompt: names the system prompt; user turns of half to 1.5 times the mean") {
  scenario_options o = named("system-prompt");
  o.system = "assistant";
  o.prompt_len = 20;
  workload w(o, model, 5);
  std::set<size_t> lengths;
  for (int i = 0; i < 500; ++i) {
    const auto p = w.next();
    CHECK(p.system == "assistant");
    CHECK(p.max_tokens == 64);
    lengths.insert(p.prompt.size());
  }
  CHECK(*lengths.begin() == 10);
  CHECK(*lengths.rbegin() == 30);
  CHECK(lengths.size() == 21);
  CHECK_THROWS_WITH(workload(named("system-prompt"), model, 1),
                    "scenario system-prompt needs --system NAME (a configured [[system_prompt]])");
}

TEST_CASE("long-prompt: every N-th request is long, cut to fit the context") {
  scenario_options o = named("long-prompt");
  o.long_every = 4;
  workload w(o, model, 9);
  CHECK(w.options().long_prompt_len == 1024 - 16);
  for (int i = 1; i <= 12; ++i) {
    const auto p = w.next();
    if (i % 4 == 0) {
      CHECK(p.group == "long");
      CHECK(p.prompt.size() == 1008);
      CHECK(p.max_tokens == 16);
    } else {
      CHECK(p.group == "short");
      CHECK(p.prompt.size() == 64);
      CHECK(p.max_tokens == 128);
    }
  }
  scenario_options small = named("long-prompt");
  small.long_prompt_len = 300;
  CHECK(workload(small, model, 1).options().long_prompt_len == 300);
}

TEST_CASE("cancel-storm: the documented share hangs up, between the first and the last token") {
  scenario_options o = named("cancel-storm");
  o.output_len = 10;
  o.disconnect_fraction = 0.25;
  workload w(o, model, 13);
  int hang_ups = 0;
  std::set<int32_t> points;
  constexpr int n = 4000;
  for (int i = 0; i < n; ++i) {
    const auto p = w.next();
    CHECK(p.max_tokens == 10);
    if (!p.disconnect_after) continue;
    ++hang_ups;
    points.insert(*p.disconnect_after);
  }
  CHECK(double(hang_ups) / n == doctest::Approx(0.25).epsilon(0.1));
  CHECK(points == std::set<int32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9});
  scenario_options none = o;
  none.disconnect_fraction = 0;
  workload quiet(none, model, 13);
  for (int i = 0; i < 100; ++i) CHECK(!quiet.next().disconnect_after);
}

TEST_CASE("workloads refuse what cannot fit, naming the option") {
  scenario_options o = named("fixed");
  o.prompt_len = 1000;
  o.output_len = 100;
  CHECK_THROWS_WITH(workload(o, model, 1),
                    "--prompt-len plus --output-len needs 1100 tokens, more than the model's context of 1024");
  scenario_options p = named("shared-prefix");
  p.prefix_len = 1000;
  CHECK_THROWS_WITH(workload(p, model, 1), "--prefix-len plus --prompt-len plus --output-len needs 1096 tokens, "
                                           "more than the model's context of 1024");
  scenario_options c = named("cancel-storm");
  c.output_len = 1;
  CHECK_THROWS_WITH(workload(c, model, 1),
                    "--output-len (cancel-storm hangs up between the first and the last token) must be at least 2, got 1");
  scenario_options big = named("fixed");
  big.output_len = 5000;
  CHECK_THROWS_WITH(workload(big, model_facts{"m", "a", 100, 100000}, 1), "--output-len must be at most 4096, got 5000");
  CHECK_THROWS_WITH(workload(named("chatty"), model, 1), "unknown scenario 'chatty'");
  CHECK_THROWS_AS(workload(named("fixed"), model_facts{}, 1), kvactor::error);
}
