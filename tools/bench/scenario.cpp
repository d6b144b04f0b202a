#include "tools/bench/scenario.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"

namespace kvactor::bench {

namespace {

// Log-space spreads of chat's lengths: a median well below the mean and a
// tail of a few times the mean, as chat traffic has.
constexpr double chat_prompt_sigma = 1.0;
constexpr double chat_output_sigma = 0.8;

struct length_defaults {
  int32_t prompt, output;
};

length_defaults defaults_for(std::string_view scenario) {
  if (scenario == "chat") return {200, 180};
  if (scenario == "shared-prefix") return {32, 64};
  if (scenario == "system-prompt") return {32, 64};
  if (scenario == "long-prompt") return {64, 128};
  if (scenario == "cancel-storm") return {64, 256};
  return {128, 128}; // fixed
}

// Each scenario draws its own prompts from a seed: a daemon's prefix cache
// keeps the prompts of earlier runs, and another scenario run with the same
// seed must not find its prompts there. FNV-1a of the name.
uint64_t scenario_stream(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : name) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
  return h;
}

[[noreturn]] void refuse(const std::string& what) { throw error(what); }

void require_fit(int64_t tokens, const model_facts& model, const std::string& what) {
  if (tokens > model.max_context)
    refuse(what + " needs " + std::to_string(tokens) + " tokens, more than the model's context of " +
           std::to_string(model.max_context));
}

void require_at_least(int64_t value, int64_t least, const std::string& option) {
  if (value < least) refuse(option + " must be at least " + std::to_string(least) + ", got " + std::to_string(value));
}

// Half to one and a half times the mean, at least 1.
std::pair<int32_t, int32_t> user_turn_range(int32_t mean) {
  return {std::max(1, mean / 2), std::max(1, mean + mean / 2)};
}

} // namespace

const std::vector<std::string_view>& scenario_names() {
  static const std::vector<std::string_view> names = {"fixed",        "chat",        "shared-prefix",
                                                      "system-prompt", "long-prompt", "cancel-storm"};
  return names;
}

workload::workload(scenario_options options, const model_facts& model, uint64_t seed)
    : options_(std::move(options)), model_(model), rng_(seed ^ scenario_stream(options_.name)) {
  const auto& names = scenario_names();
  if (std::find(names.begin(), names.end(), options_.name) == names.end())
    refuse("unknown scenario '" + options_.name + "'");
  if (model.vocab_size <= 0 || model.max_context <= 1) refuse("the daemon reports no usable model");
  const auto d = defaults_for(options_.name);
  const int32_t prompt = options_.prompt_len.value_or(d.prompt);
  const int32_t output = options_.output_len.value_or(d.output);
  options_.prompt_len = prompt;
  options_.output_len = output;
  require_at_least(prompt, 1, "--prompt-len");
  require_at_least(output, 0, "--output-len");
  if (output > max_tokens_limit)
    refuse("--output-len must be at most " + std::to_string(max_tokens_limit) + ", got " + std::to_string(output));

  const std::string& s = options_.name;
  if (s == "fixed" || s == "long-prompt" || s == "cancel-storm") {
    require_fit(int64_t(prompt) + output, model, "--prompt-len plus --output-len");
  } else if (s == "chat") {
    require_at_least(output, 1, "--output-len");
  } else if (s == "shared-prefix") {
    require_at_least(options_.prefixes, 1, "--prefixes");
    require_at_least(options_.prefix_len, 1, "--prefix-len");
    require_fit(int64_t(options_.prefix_len) + prompt + output, model, "--prefix-len plus --prompt-len plus --output-len");
    for (int32_t i = 0; i < options_.prefixes; ++i) prefixes_.push_back(random_tokens(options_.prefix_len));
  } else if (s == "system-prompt") {
    if (options_.system.empty()) refuse("scenario system-prompt needs --system NAME (a configured [[system_prompt]])");
    require_fit(int64_t(user_turn_range(prompt).second) + output, model, "the longest user turn plus --output-len");
  }
  if (s == "long-prompt") {
    require_at_least(options_.long_every, 1, "--long-every");
    require_at_least(options_.long_output_len, 0, "--long-output-len");
    if (options_.long_output_len > max_tokens_limit)
      refuse("--long-output-len must be at most " + std::to_string(max_tokens_limit));
    require_fit(int64_t(options_.long_output_len) + 1, model, "--long-output-len plus one prompt token");
    options_.long_prompt_len = std::min(options_.long_prompt_len, model.max_context - options_.long_output_len);
    require_at_least(options_.long_prompt_len, 1, "--long-prompt-len");
  }
  if (s == "cancel-storm") {
    require_at_least(output, 2, "--output-len (cancel-storm hangs up between the first and the last token)");
    if (!(options_.disconnect_fraction >= 0 && options_.disconnect_fraction <= 1))
      refuse("--disconnect-fraction must be between 0 and 1");
  }
}

std::vector<int32_t> workload::random_tokens(int32_t n) {
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (auto& t : tokens) t = int32_t(rng_.uniform_int(0, model_.vocab_size - 1));
  return tokens;
}

request_plan workload::fixed_request(int32_t prompt_len, int32_t output_len, std::string group) {
  request_plan plan;
  plan.prompt = random_tokens(prompt_len);
  plan.max_tokens = output_len;
  plan.group = std::move(group);
  return plan;
}

request_plan workload::chat_request() {
  const auto prompt = int32_t(std::clamp<double>(std::round(rng_.lognormal_with_mean(*options_.prompt_len, chat_prompt_sigma)),
                                                 1, model_.max_context - 1));
  const int32_t output_cap = std::min(max_tokens_limit, model_.max_context - prompt);
  const auto output = int32_t(std::clamp<double>(std::round(rng_.lognormal_with_mean(*options_.output_len, chat_output_sigma)),
                                                 1, output_cap));
  return fixed_request(prompt, output);
}

request_plan workload::next() {
  const int64_t index = issued_++;
  const std::string& s = options_.name;
  const int32_t prompt = *options_.prompt_len, output = *options_.output_len;
  if (s == "chat") return chat_request();
  if (s == "shared-prefix") {
    request_plan plan;
    plan.prompt = prefixes_[size_t(rng_.uniform_int(0, options_.prefixes - 1))];
    const auto suffix = random_tokens(prompt);
    plan.prompt.insert(plan.prompt.end(), suffix.begin(), suffix.end());
    plan.max_tokens = output;
    return plan;
  }
  if (s == "system-prompt") {
    const auto [lo, hi] = user_turn_range(prompt);
    request_plan plan = fixed_request(int32_t(rng_.uniform_int(lo, hi)), output);
    plan.system = options_.system;
    return plan;
  }
  if (s == "long-prompt") {
    if ((index + 1) % options_.long_every == 0)
      return fixed_request(options_.long_prompt_len, options_.long_output_len, "long");
    return fixed_request(prompt, output, "short");
  }
  if (s == "cancel-storm") {
    request_plan plan = fixed_request(prompt, output);
    if (rng_.uniform() < options_.disconnect_fraction) plan.disconnect_after = int32_t(rng_.uniform_int(1, output - 1));
    return plan;
  }
  return fixed_request(prompt, output);
}

} // namespace kvactor::bench
