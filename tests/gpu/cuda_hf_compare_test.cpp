// The CUDA backend against Hugging Face transformers on the same random bf16
// weights of a full model shape (llama3-1b): tools/reference/hf_compare.py
// saves the model directory and transformers' answers, and
// $KVACTOR_HF_COMPARE_DIR points here to them (scripts/gpu_tests.sh makes
// both). The backend comes from the engine's factory (gpu/cuda_engine.h),
// which reads the directory as the daemon does.
#include <doctest/doctest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "gpu/cuda_engine.h"
#include "runtime/model_loader.h"
#include "tests/logit_distance.h"
#include "tests/reference_data.h"

using namespace kvactor;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

using test::numbers;
using test::read_json;
using test::rel_l2;

constexpr double max_rel_l2 = 2e-2;
// Where transformers' top-1 / top-2 margin is below this, a greedy pick
// may legitimately differ.
constexpr double close_margin = 0.05;

void summary(const std::string& line) {
  std::printf("summary: %s\n", line.c_str());
  std::fflush(stdout);
}

std::string fixed(double x) {
  char text[32];
  std::snprintf(text, sizeof text, "%.4g", x);
  return text;
}

fs::path compare_dir() {
  const char* env = std::getenv("KVACTOR_HF_COMPARE_DIR");
  REQUIRE_MESSAGE((env && *env && fs::exists(fs::path(env) / "hf_reference.json")),
                  "set KVACTOR_HF_COMPARE_DIR to a directory that tools/reference/hf_compare.py wrote");
  return env;
}

// Greedy tokens against transformers': equal, or first different where its
// pick was a near tie. Returns how many matched before the first difference.
size_t compare_greedy(const std::string& what, const std::vector<int32_t>& got, const std::vector<int32_t>& want,
                      const std::vector<double>& margins, bool strict) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] == want[i]) continue;
    if (strict)
      CHECK_MESSAGE(margins[i] < close_margin, what, ": token ", i, " is ", got[i], ", transformers picked ", want[i],
                    " with a margin of ", margins[i]);
    return i;
  }
  return got.size();
}

} // namespace

TEST_CASE("the CUDA backend matches transformers on random bf16 weights of a full model shape") {
  const fs::path dir = compare_dir();
  const json::value ref = read_json(dir / "hf_reference.json");
  const auto& cases = ref.at("cases").as_array();
  const int32_t new_tokens = json::value_to<int32_t>(ref.at("new_tokens"));

  engine_config c;
  c.device = "cuda";
  c.num_pages = 256;
  c.max_batch_tokens = 2048;
  const loaded_model m{load_model_dir_config(dir.string()), nullptr, dir.string()};
  auto b = cuda_backend_factory([](const std::string& line) { std::printf("%s\n", line.c_str()); })(m, 0, c);
  const int32_t page_size = b->layout().page_size;

  double worst_fp32 = 0, worst_bf16 = 0, worst_chunked = 0;
  size_t same_fp32 = 0, same_bf16 = 0, total = 0;
  for (size_t k = 0; k < cases.size(); ++k) {
    CAPTURE(k);
    const auto& cs = cases[k];
    const auto tokens = numbers<int32_t>(cs.at("tokens"));
    const auto want32 = numbers<double>(cs.at("hf_fp32_last_logits"));
    const auto want16 = numbers<double>(cs.at("hf_bf16_last_logits"));
    const int32_t length = int32_t(tokens.size());
    std::vector<int32_t> pages(size_t((length + new_tokens + page_size - 1) / page_size));
    std::iota(pages.begin(), pages.end(), 0);
    REQUIRE(int32_t(pages.size()) <= b->layout().num_pages);

    // The prompt in chunks of 512 (as the engine's default prefill_chunk),
    // then whole: both against transformers' last logits.
    std::vector<float> logits;
    forward_batch batch;
    for (int32_t at = 0; at < length; at += 512) {
      const int32_t end = std::min(length, at + 512);
      batch.seqs = {{{tokens.begin() + at, tokens.begin() + end}, at, pages, end == length}};
      b->forward(batch, logits);
    }
    const double chunked = rel_l2(logits, want32);
    batch.seqs = {{tokens, 0, pages, true}};
    b->forward(batch, logits);
    const double vs_fp32 = rel_l2(logits, want32), vs_bf16 = rel_l2(logits, want16);
    CHECK(chunked < max_rel_l2);
    CHECK(vs_fp32 < max_rel_l2);
    CHECK(vs_bf16 < max_rel_l2);
    worst_chunked = std::max(worst_chunked, chunked);
    worst_fp32 = std::max(worst_fp32, vs_fp32);
    worst_bf16 = std::max(worst_bf16, vs_bf16);

    // Greedy, sampled on the device as the engine samples.
    const sampling_params greedy{0.0f};
    std::vector<int32_t> got, picked;
    batch.seqs = {{tokens, 0, pages, true}};
    for (int32_t i = 0; i < new_tokens; ++i) {
      const uint64_t counter = uint64_t(i);
      REQUIRE(b->forward_and_sample(batch, {&greedy, 1}, {}, {&counter, 1}, picked));
      got.push_back(picked.at(0));
      batch.seqs[0].start_pos += int32_t(batch.seqs[0].tokens.size());
      batch.seqs[0].tokens = {got.back()};
    }
    const std::string what = "prompt of " + std::to_string(length);
    const size_t n32 = compare_greedy(what + " vs fp32", got, numbers<int32_t>(cs.at("greedy_fp32")),
                                      numbers<double>(cs.at("margins_fp32")), true);
    // transformers in bf16 carries its own rounding (a bf16 residual
    // stream): reported, not asserted.
    const size_t n16 = compare_greedy(what + " vs bf16", got, numbers<int32_t>(cs.at("greedy_bf16")),
                                      numbers<double>(cs.at("margins_bf16")), false);
    same_fp32 += n32;
    same_bf16 += n16;
    total += got.size();
    summary("HF compare, " + what + ": last logits rel-L2 vs transformers fp32 " + fixed(vs_fp32) + " (chunks of 512 " +
            fixed(chunked) + "), vs transformers bf16 " + fixed(vs_bf16) + "; greedy equal for the first " +
            std::to_string(n32) + "/" + std::to_string(got.size()) + " tokens (fp32), " + std::to_string(n16) +
            " (bf16)");
  }
  summary("HF compare overall (" + std::to_string(cases.size()) + " prompts, " + m.config.architecture + " " +
          std::to_string(m.config.num_layers) + " layers, hidden " + std::to_string(m.config.hidden_size) +
          "): max last-logits rel-L2 " + fixed(worst_fp32) + " vs fp32, " + fixed(worst_chunked) +
          " chunked, " + fixed(worst_bf16) + " vs bf16; greedy tokens equal before any difference " +
          std::to_string(same_fp32) + "/" + std::to_string(total) + " (fp32), " + std::to_string(same_bf16) + "/" +
          std::to_string(total) + " (bf16)");
}
