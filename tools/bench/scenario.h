#pragma once
// Workloads: the requests each scenario sends, drawn from a seed. Prompts are
// random token ids below the model's vocabulary size, sent with ignore_eos
// and an exact max_tokens, so every length is known in advance.
// docs/bench.md describes each scenario and its length distributions.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tools/bench/random.h"

namespace kvactor::bench {

// What {"op":"models"} says of the model served.
struct model_facts {
  std::string name;
  std::string architecture;
  int32_t vocab_size = 0;
  int32_t max_context = 0;
};

// The protocol's default server.max_tokens_limit: no request asks for more.
inline constexpr int32_t max_tokens_limit = 4096;

// Unset lengths take the scenario's defaults (docs/bench.md lists them).
struct scenario_options {
  std::string name;                  // fixed, chat, shared-prefix, system-prompt, long-prompt, cancel-storm
  std::optional<int32_t> prompt_len; // fixed: exact; chat, system-prompt: mean; shared-prefix: suffix
  std::optional<int32_t> output_len; // fixed, shared-prefix, system-prompt, long-prompt, cancel-storm:
                                     // exact; chat: mean
  int32_t prefixes = 4;              // shared-prefix: distinct prefixes
  int32_t prefix_len = 512;          // shared-prefix: tokens of each
  std::string system;                // system-prompt: the configured [[system_prompt]] name
  int32_t long_prompt_len = 10000;   // long-prompt: clipped to fit the model's context
  int32_t long_output_len = 16;
  int32_t long_every = 16;           // long-prompt: requests 16, 32, 48, ... (1-based) are long
  double disconnect_fraction = 0.5;  // cancel-storm: share of requests that hang up mid-stream
};

const std::vector<std::string_view>& scenario_names();

// One request to send.
struct request_plan {
  std::vector<int32_t> prompt;             // token ids
  int32_t max_tokens = 0;
  std::string system;                      // a system prompt's name, or ""
  std::optional<int32_t> disconnect_after; // hang up after this many tokens
  std::string group;                       // "short" / "long" in long-prompt, "" otherwise
};

class workload {
 public:
  // Resolves the defaults and checks that the lengths fit the model: throws
  // kvactor::error naming the option and the limit otherwise.
  workload(scenario_options options, const model_facts& model, uint64_t seed);

  // The options with every default filled in and long_prompt_len clipped.
  const scenario_options& options() const { return options_; }

  // The next request; the sequence depends on the options and the seed only.
  request_plan next();

 private:
  std::vector<int32_t> random_tokens(int32_t n);
  request_plan fixed_request(int32_t prompt_len, int32_t output_len, std::string group = "");
  request_plan chat_request();

  scenario_options options_;
  model_facts model_;
  random_source rng_;
  std::vector<std::vector<int32_t>> prefixes_; // shared-prefix: [prefixes, prefix_len]
  int64_t issued_ = 0;
};

} // namespace kvactor::bench
