// kvactor-bench's command line and its chart axes.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tools/plot/chart.h"
#include "tools/bench/options.h"

using namespace kvactor::bench;
using namespace kvactor::plot;

TEST_CASE("a single run: defaults, then every option") {
  const auto d = parse_options({"--scenario", "fixed"});
  CHECK(!d.sweep);
  CHECK(d.load.host == "127.0.0.1");
  CHECK(d.load.port == 7070);
  CHECK(!d.load.rate);
  CHECK(d.load.concurrency == 1);
  CHECK(d.load.requests == 100);
  CHECK(!d.load.duration_s);
  CHECK(!d.scenario.prompt_len);

  const auto o = parse_options({"--host", "10.0.0.2", "--port", "7171", "--scenario", "shared-prefix", "--rate", "2.5",
                                "--duration-s", "30", "--seed", "9", "--prompt-len", "12", "--output-len", "0",
                                "--prefixes", "8", "--prefix-len", "256", "--out", "r.json", "--plot", "r.png",
                                "--max-connections", "16", "--drain-timeout-s", "5", "--idle-timeout-s", "3"});
  CHECK(o.load.host == "10.0.0.2");
  CHECK(o.load.port == 7171);
  CHECK(o.scenario.name == "shared-prefix");
  CHECK(o.load.rate == 2.5);
  CHECK(o.load.duration_s == 30);
  CHECK(!o.load.requests); // a duration alone bounds the run
  CHECK(o.load.seed == 9);
  CHECK(o.scenario.prompt_len == 12);
  CHECK(o.scenario.output_len == 0);
  CHECK(o.scenario.prefixes == 8);
  CHECK(o.scenario.prefix_len == 256);
  CHECK(o.out == "r.json");
  CHECK(o.plot == "r.png");
  CHECK(o.load.max_connections == 16);
  CHECK(o.load.drain_timeout_s == 5);
  CHECK(o.idle_timeout_s == 3);
  CHECK(parse_options({"--help"}).help);
}

TEST_CASE("a sweep takes a list of rates or of concurrencies") {
  const auto r = parse_options({"sweep", "--scenario", "chat", "--rates", "1,2.5,8", "--requests", "20"});
  CHECK(r.sweep);
  CHECK(r.sweep_rates == std::vector<double>{1, 2.5, 8});
  CHECK(r.load.requests == 20);
  const auto c = parse_options({"sweep", "--scenario", "chat", "--concurrencies", "1,4,16,64"});
  CHECK(c.sweep_concurrencies == std::vector<int32_t>{1, 4, 16, 64});
}

TEST_CASE("command lines that cannot run say why") {
  CHECK_THROWS_WITH(parse_options({}), "--scenario is required");
  CHECK_THROWS_WITH(parse_options({"--scenario", "fixed", "--bogus", "1"}), "unknown argument '--bogus'");
  CHECK_THROWS_WITH(parse_options({"--scenario"}), "--scenario needs a value");
  CHECK_THROWS_WITH(parse_options({"--scenario", "fixed", "--port", "70000"}),
                    "--port must be between 1 and 65535, got 70000");
  CHECK_THROWS_WITH(parse_options({"--scenario", "fixed", "--requests", "1e3"}),
                    "--requests needs an integer, got '1e3'");
  CHECK_THROWS_WITH(parse_options({"--scenario", "fixed", "--rate", "fast"}), "--rate needs a number, got 'fast'");
  CHECK_THROWS_WITH(parse_options({"--scenario", "fixed", "--rate", "0"}), "--rate is out of range: 0");
  CHECK_THROWS_WITH(parse_options({"--scenario", "fixed", "--rate", "1", "--concurrency", "4"}),
                    "--rate (open loop) and --concurrency (closed loop) exclude each other");
  CHECK_THROWS_WITH(parse_options({"sweep", "--scenario", "fixed"}),
                    "sweep needs exactly one of --rates and --concurrencies");
  CHECK_THROWS_WITH(parse_options({"sweep", "--scenario", "fixed", "--rates", "1", "--concurrencies", "2"}),
                    "sweep needs exactly one of --rates and --concurrencies");
  CHECK_THROWS_WITH(parse_options({"sweep", "--scenario", "fixed", "--rates", "1", "--rate", "2"}),
                    "sweep takes --rates or --concurrencies, not --rate or --concurrency");
  CHECK_THROWS_WITH(parse_options({"sweep", "--scenario", "fixed", "--rates", "1,,2"}),
                    "--rates needs a comma-separated list, got '1,,2'");
  CHECK_THROWS_WITH(parse_options({"--scenario", "fixed", "--rates", "1,2"}),
                    "--rates and --concurrencies belong to `kvactor-bench sweep`");
  CHECK_THROWS_WITH(parse_options({"--scenario", "fixed", "--disconnect-fraction", "1.5"}),
                    "--disconnect-fraction is out of range: 1.5");
}

TEST_CASE("chart axes: round ticks that cover the data, labels with the digits the step needs") {
  CHECK(nice_ticks(87) == std::vector<double>{0, 20, 40, 60, 80, 100});
  CHECK(nice_ticks(100) == std::vector<double>{0, 20, 40, 60, 80, 100});
  for (double hi : {1.0, 0.0}) { // no data: the axis still spans [0, 1]
    const auto ticks = nice_ticks(hi);
    REQUIRE(ticks.size() == 6);
    for (size_t i = 0; i < ticks.size(); ++i) CHECK(ticks[i] == doctest::Approx(0.2 * double(i)));
  }
  CHECK(nice_ticks(7).back() == 8);
  CHECK(nice_ticks(4500).back() == 5000);
  CHECK(tick_label(0.6000000000000001, 0.2) == "0.6");
  CHECK(tick_label(2500, 500) == "2500");
  CHECK(tick_label(0.05, 0.05) == "0.05");
}
