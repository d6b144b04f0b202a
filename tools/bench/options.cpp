#include "tools/bench/options.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>

namespace kvactor::bench {

const char* const usage_text = R"(usage: kvactor-bench --scenario NAME [options]
       kvactor-bench sweep --scenario NAME (--rates R1,R2,.. | --concurrencies C1,C2,..) [options]
Drives a kvactord with a workload over its line protocol and reports
throughput and latency (docs/bench.md describes every scenario and field).

target and load:
  --host H                 daemon address (127.0.0.1)
  --port P                 line protocol port (7070)
  --rate R                 open loop: Poisson arrivals, R requests a second
  --concurrency C          closed loop: C requests in flight (the default, C = 1)
  --requests N             requests to send (100 when neither this nor --duration-s is given)
  --duration-s D           stop sending after D seconds
  --seed S                 workload, arrivals and sampling seeds (1); a sweep's i-th point uses S + i
  --max-connections N      connections to open at most (64)
  --drain-timeout-s T      after the last send, wait T seconds for replies at most (120)
  --idle-timeout-s T       after the run, wait T seconds for the daemon to go idle at most (30)
sweep:
  --rates R1,R2,..         one open-loop run per rate
  --concurrencies C1,..    one closed-loop run per concurrency
scenario (fixed, chat, shared-prefix, system-prompt, long-prompt, cancel-storm):
  --prompt-len N           prompt tokens (chat, system-prompt: the mean; shared-prefix: after the prefix)
  --output-len N           tokens to generate (chat: the mean)
  --prefixes K             shared-prefix: distinct prefixes (4)
  --prefix-len N           shared-prefix: tokens of each prefix (512)
  --system NAME            system-prompt: a [[system_prompt]] configured in the daemon
  --long-prompt-len N      long-prompt: tokens of the long prompts (10000, cut to the context)
  --long-output-len N      long-prompt: tokens the long prompts generate (16)
  --long-every N           long-prompt: every N-th request is long (16)
  --disconnect-fraction F  cancel-storm: share of clients that hang up mid-stream (0.5)
output:
  --out FILE.json          the report for machines
  --plot FILE.png          latency distributions and throughput over time (sweep: the curves)
)";

namespace {

int64_t parse_int(const std::string& flag, const std::string& text, int64_t lo, int64_t hi) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || end != text.data() + text.size())
    throw usage_error(flag + " needs an integer, got '" + text + "'");
  if (v < lo || v > hi)
    throw usage_error(flag + " must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + text);
  return v;
}

double parse_double(const std::string& flag, const std::string& text, double lo, double hi) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v))
    throw usage_error(flag + " needs a number, got '" + text + "'");
  if (v < lo || v > hi) throw usage_error(flag + " is out of range: " + text);
  return v;
}

std::vector<std::string> split_list(const std::string& flag, const std::string& text) {
  std::vector<std::string> items;
  size_t begin = 0;
  for (;;) {
    const size_t comma = text.find(',', begin);
    items.push_back(text.substr(begin, comma - begin));
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  for (const auto& item : items)
    if (item.empty()) throw usage_error(flag + " needs a comma-separated list, got '" + text + "'");
  return items;
}

} // namespace

bench_options parse_options(const std::vector<std::string>& args) {
  bench_options o;
  bool has_rate = false, has_concurrency = false;
  constexpr int32_t max_i32 = 2147483647;
  using setter = std::function<void(const std::string& flag, const std::string& value)>;
  const std::map<std::string, setter> flags = {
      {"--host", [&](auto&, auto& v) { o.load.host = v; }},
      {"--port", [&](auto& f, auto& v) { o.load.port = uint16_t(parse_int(f, v, 1, 65535)); }},
      {"--scenario", [&](auto&, auto& v) { o.scenario.name = v; }},
      {"--rate", [&](auto& f, auto& v) { o.load.rate = parse_double(f, v, 1e-6, 1e9), has_rate = true; }},
      {"--concurrency",
       [&](auto& f, auto& v) { o.load.concurrency = int32_t(parse_int(f, v, 1, 1 << 20)), has_concurrency = true; }},
      {"--requests", [&](auto& f, auto& v) { o.load.requests = parse_int(f, v, 0, int64_t(1) << 40); }},
      {"--duration-s", [&](auto& f, auto& v) { o.load.duration_s = parse_double(f, v, 0, 1e9); }},
      {"--seed", [&](auto& f, auto& v) { o.load.seed = uint64_t(parse_int(f, v, 0, INT64_MAX)); }},
      {"--max-connections", [&](auto& f, auto& v) { o.load.max_connections = int32_t(parse_int(f, v, 1, 65536)); }},
      {"--drain-timeout-s", [&](auto& f, auto& v) { o.load.drain_timeout_s = parse_double(f, v, 0, 1e9); }},
      {"--idle-timeout-s", [&](auto& f, auto& v) { o.idle_timeout_s = parse_double(f, v, 0, 1e9); }},
      {"--prompt-len", [&](auto& f, auto& v) { o.scenario.prompt_len = int32_t(parse_int(f, v, 1, max_i32)); }},
      {"--output-len", [&](auto& f, auto& v) { o.scenario.output_len = int32_t(parse_int(f, v, 0, max_i32)); }},
      {"--prefixes", [&](auto& f, auto& v) { o.scenario.prefixes = int32_t(parse_int(f, v, 1, 1 << 20)); }},
      {"--prefix-len", [&](auto& f, auto& v) { o.scenario.prefix_len = int32_t(parse_int(f, v, 1, max_i32)); }},
      {"--system", [&](auto&, auto& v) { o.scenario.system = v; }},
      {"--long-prompt-len", [&](auto& f, auto& v) { o.scenario.long_prompt_len = int32_t(parse_int(f, v, 1, max_i32)); }},
      {"--long-output-len", [&](auto& f, auto& v) { o.scenario.long_output_len = int32_t(parse_int(f, v, 0, max_i32)); }},
      {"--long-every", [&](auto& f, auto& v) { o.scenario.long_every = int32_t(parse_int(f, v, 1, max_i32)); }},
      {"--disconnect-fraction", [&](auto& f, auto& v) { o.scenario.disconnect_fraction = parse_double(f, v, 0, 1); }},
      {"--out", [&](auto&, auto& v) { o.out = v; }},
      {"--plot", [&](auto&, auto& v) { o.plot = v; }},
      {"--rates",
       [&](auto& f, auto& v) {
         for (const auto& item : split_list(f, v)) o.sweep_rates.push_back(parse_double(f, item, 1e-6, 1e9));
       }},
      {"--concurrencies",
       [&](auto& f, auto& v) {
         for (const auto& item : split_list(f, v))
           o.sweep_concurrencies.push_back(int32_t(parse_int(f, item, 1, 1 << 20)));
       }},
  };

  size_t i = 0;
  if (!args.empty() && args[0] == "sweep") {
    o.sweep = true;
    i = 1;
  }
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      o.help = true;
      return o;
    }
    const auto it = flags.find(arg);
    if (it == flags.end()) throw usage_error("unknown argument '" + arg + "'");
    if (i + 1 >= args.size()) throw usage_error(arg + " needs a value");
    it->second(arg, args[++i]);
  }

  if (o.scenario.name.empty()) throw usage_error("--scenario is required");
  if (!o.load.requests && !o.load.duration_s) o.load.requests = 100;
  if (o.sweep) {
    if (has_rate || has_concurrency) throw usage_error("sweep takes --rates or --concurrencies, not --rate or --concurrency");
    if (o.sweep_rates.empty() == o.sweep_concurrencies.empty())
      throw usage_error("sweep needs exactly one of --rates and --concurrencies");
  } else {
    if (has_rate && has_concurrency) throw usage_error("--rate (open loop) and --concurrency (closed loop) exclude each other");
    if (!o.sweep_rates.empty() || !o.sweep_concurrencies.empty())
      throw usage_error("--rates and --concurrencies belong to `kvactor-bench sweep`");
  }
  return o;
}

} // namespace kvactor::bench
