#include "runtime/request_check.h"

#include <doctest/doctest.h>

#include <cmath>

using namespace kvactor;

namespace {

const request_limits limits{100, 64, {"assistant"}};

generate_request valid() {
  generate_request r;
  r.prompt = "hi";
  return r;
}

std::string problem(const generate_request& r) {
  auto p = check_request(r, limits);
  REQUIRE(p);
  CHECK(p->code == error_code::bad_request);
  return p->message;
}

} // namespace

TEST_CASE("a valid request passes") {
  CHECK_FALSE(check_request(valid(), limits));
  generate_request r = valid();
  r.prompt.clear();
  r.prompt_tokens = {0, 99};
  r.system = "assistant";
  CHECK_FALSE(check_request(r, limits));
}

TEST_CASE("each bad parameter is named") {
  generate_request r = valid();
  r.prompt.clear();
  CHECK(problem(r) == "a prompt or prompt tokens are required");
  r.prompt_tokens = {5, 100};
  CHECK(problem(r) == "prompt_tokens[1] = 100 is outside the vocabulary of 100 tokens");
  r = valid();
  r.max_tokens = -1;
  CHECK(problem(r) == "max_tokens must be >= 0, got -1");
  r = valid();
  r.sampling.temperature = -1;
  CHECK(problem(r).starts_with("temperature"));
  r.sampling.temperature = NAN;
  CHECK(problem(r).starts_with("temperature"));
  r = valid();
  r.sampling.top_p = 0;
  CHECK(problem(r).starts_with("top_p"));
  r = valid();
  r.sampling.top_k = -2;
  CHECK(problem(r).starts_with("top_k"));
  r = valid();
  r.sampling.min_p = 1.5f;
  CHECK(problem(r).starts_with("min_p"));
  r = valid();
  r.sampling.repetition_penalty = 0;
  CHECK(problem(r).starts_with("repetition_penalty"));
  r = valid();
  r.stop = {"ok", ""};
  CHECK(problem(r) == "stop strings must not be empty");
  r = valid();
  r.system = "pirate";
  CHECK(problem(r) == "unknown system prompt \"pirate\"");
}

TEST_CASE("the prompt must leave room for one output token") {
  CHECK_FALSE(check_prompt_length(63, limits));
  auto p = check_prompt_length(64, limits);
  REQUIRE(p);
  CHECK(p->code == error_code::context_length_exceeded);
  CHECK(p->message == "the prompt has 64 tokens; the context holds 64 with room for at least one output token");
}
