// The actor engine on the CUDA backend (gpu/cuda_engine.h): requests through
// kvactor/engine.h with device "cuda" must give what cuda_backend gives one
// request alone; the KV cache is sized from gpu_memory_fraction; dummy
// weights are drawn on the device. Needs a GPU (labelled gpu).
#include "gpu/cuda_engine.h"

#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <unistd.h>

#include "gpu/cuda_backend.h"
#include "runtime/default_model.h"
#include "runtime/error.h"
#include "runtime/model_loader.h"
#include "runtime/sampler.h"

using namespace kvactor;
using namespace std::chrono_literals;

namespace {

// Batched and alone, a step runs other kernels: up to gemv_max_rows rows
// fused GEMVs, past that cuBLASLt GEMMs whose algorithm depends on the
// shape. Both round in bf16, differently: logits typically about 1e-2 apart
// in relative L2 (cuda_backend_test's mixed-batch case), with tails. One
// seed (1636829284, request 6) measured against the fp32 CPU backend, same
// output fed back: the 8-row decode step 2.7e-2 from fp32 at one step where
// one row alone was 0.84e-2, which flipped a pick whose fp32 margin was 7.4%
// of the logits' RMS. A greedy pick may differ only where the request alone
// puts the two tokens closer than near_tie x the RMS of its logits row
// (2.7e-2 x sqrt(2) x 2.5, rounded up); corrupted state (a wrong page, a
// lost token) moves the logits by their whole RMS.
constexpr double near_tie = 0.10;

// One line of the run's summary; scripts/gpu_tests.sh collects them.
void summary(const std::string& line) {
  std::printf("summary: %s\n", line.c_str());
  std::fflush(stdout);
}

// A new seed each run, or $KVACTOR_TEST_SEED to repeat one a failure printed.
uint32_t fresh_seed() {
  if (const char* seed = std::getenv("KVACTOR_TEST_SEED"); seed && *seed) return uint32_t(std::stoul(seed));
  static std::random_device device;
  return device();
}

// -- the engine ----------------------------------------------------------------------

struct collector {
  std::mutex m;
  std::condition_variable cv;
  std::map<uint64_t, std::vector<int32_t>> tokens;
  std::map<uint64_t, generate_result> results;
};

generation_sink::behavior_type sink(generation_sink::pointer, std::shared_ptr<collector> c) {
  return {
    [c](const token_delta& d) {
      std::lock_guard lock(c->m);
      auto& t = c->tokens[d.request_id];
      t.insert(t.end(), d.token_ids.begin(), d.token_ids.end());
    },
    [c](const generation_done& d) {
      std::lock_guard lock(c->m);
      c->results[d.request_id] = d.result;
      c->cv.notify_all();
    },
  };
}

struct cuda_engine {
  explicit cuda_engine(const engine_config& c, std::vector<std::string>* log = nullptr)
      : sys(cfg), collected(std::make_shared<collector>()), self(sys) {
    engine_hooks hooks;
    hooks.make_backend = cuda_backend_factory([log](const std::string& line) {
      std::printf("%s\n", line.c_str());
      if (log) log->push_back(line);
    });
    engine = spawn_engine(sys, c, std::move(hooks));
    out = sys.spawn(sink, collected);
  }
  ~cuda_engine() {
    caf::anon_send_exit(engine, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(out, caf::exit_reason::user_shutdown);
  }

  // Submits every request at once and waits for all of them; their tokens.
  std::vector<std::vector<int32_t>> run(const std::vector<generate_request>& requests) {
    std::vector<uint64_t> ids;
    for (const auto& r : requests)
      self->request(engine, 10s, generate_atom_v, r, out)
        .receive([&](uint64_t id) { ids.push_back(id); }, [&](caf::error& e) { FAIL("generate: ", sys.render(e)); });
    std::unique_lock lock(collected->m);
    const bool done = collected->cv.wait_for(lock, 300s, [&] {
      return std::all_of(ids.begin(), ids.end(), [&](uint64_t id) { return collected->results.contains(id); });
    });
    REQUIRE_MESSAGE(done, "the engine did not finish every request in 300 s");
    std::vector<std::vector<int32_t>> outputs;
    for (uint64_t id : ids) {
      const generate_result& r = collected->results.at(id);
      CHECK_MESSAGE(r.reason == finish_reason::length, "request ", id, ": ", r.message);
      outputs.push_back(collected->tokens[id]);
    }
    return outputs;
  }

  engine_stats stats() {
    engine_stats s;
    self->request(engine, 10s, stats_atom_v)
      .receive([&](const engine_stats& x) { s = x; }, [&](caf::error& e) { FAIL(sys.render(e)); });
    return s;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
  std::shared_ptr<collector> collected;
  caf::scoped_actor self;
  engine_actor engine;
  generation_sink out;
};

engine_config cuda_config() {
  engine_config c;
  c.device = "cuda";
  c.num_pages = 512;
  c.gpu_memory_fraction = 0.5;
  return c;
}

// -- the single-request reference ----------------------------------------------------

struct reference_run {
  std::vector<int32_t> tokens;
  std::vector<double> margins; // [tokens] top-1 minus top-2 where each was picked
  std::vector<double> rms;     // [tokens] RMS of the logits row each was picked from
};

float margin(std::span<const float> v) {
  float a = -INFINITY, b = -INFINITY;
  for (float x : v) {
    if (x > a) {
      b = a;
      a = x;
    } else if (x > b) {
      b = x;
    }
  }
  return a - b;
}

double rms(std::span<const float> v) {
  double sum = 0;
  for (float x : v) sum += double(x) * x;
  return std::sqrt(sum / double(v.size()));
}

std::vector<int32_t> pages_for(const cuda_backend& b, size_t tokens) {
  const size_t page_size = size_t(b.layout().page_size);
  std::vector<int32_t> pages((tokens + page_size - 1) / page_size);
  std::iota(pages.begin(), pages.end(), 0);
  REQUIRE(int32_t(pages.size()) <= b.layout().num_pages);
  return pages;
}

// The repetition penalty over the prompt and output so far.
void penalize(std::vector<float>& logits, float penalty, const std::vector<int32_t>& prompt,
              std::span<const int32_t> output) {
  if (penalty == 1.0f) return;
  std::vector<int32_t> history = prompt;
  history.insert(history.end(), output.begin(), output.end());
  apply_repetition_penalty(logits, penalty, history);
}

// Greedy decoding of one request alone on `b` (pages from 0): the whole
// prompt in one step, then one token per step.
reference_run greedy_alone(cuda_backend& b, const std::vector<int32_t>& prompt, int32_t max_tokens, float penalty) {
  reference_run run;
  std::vector<float> logits;
  forward_batch batch;
  batch.seqs.push_back({prompt, 0, pages_for(b, prompt.size() + size_t(max_tokens)), true});
  for (int32_t i = 0; i < max_tokens; ++i) {
    b.forward(batch, logits);
    penalize(logits, penalty, prompt, run.tokens);
    const auto best = std::max_element(logits.begin(), logits.end());
    run.tokens.push_back(int32_t(best - logits.begin()));
    run.margins.push_back(margin(logits));
    run.rms.push_back(rms(logits));
    batch.seqs[0].start_pos += int32_t(batch.seqs[0].tokens.size());
    batch.seqs[0].tokens = {run.tokens.back()};
  }
  return run;
}

// The engine's tokens against the request run alone on its own: equal up to
// the end, or up to a first difference at a near tie. Returns how many
// matched before it.
size_t check_free_run(const std::string& what, const std::vector<int32_t>& got, const reference_run& want) {
  CAPTURE(what);
  REQUIRE(got.size() == want.tokens.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] == want.tokens[i]) continue;
    CHECK_MESSAGE(want.margins[i] < near_tie * want.rms[i], "token ", i, ": ", got[i], " instead of ", want.tokens[i],
                  " with a margin of ", want.margins[i], " (logits RMS ", want.rms[i], ")");
    return i;
  }
  return got.size();
}

// Every token of the engine's output against the request alone fed that
// same output (teacher forcing): each must be the pick alone, or within a
// near tie of it. Returns how many were the pick alone.
size_t check_teacher_forced(const std::string& what, cuda_backend& b, const std::vector<int32_t>& prompt,
                            float penalty, const std::vector<int32_t>& got) {
  CAPTURE(what);
  std::vector<float> logits;
  forward_batch batch;
  batch.seqs.push_back({prompt, 0, pages_for(b, prompt.size() + got.size()), true});
  size_t equal = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    b.forward(batch, logits);
    penalize(logits, penalty, prompt, std::span(got).first(i));
    REQUIRE((got[i] >= 0 && size_t(got[i]) < logits.size()));
    const float best = *std::max_element(logits.begin(), logits.end());
    const double behind = double(best) - logits[size_t(got[i])];
    CHECK_MESSAGE(behind < near_tie * rms(logits), "token ", i, ": ", got[i], " is ", behind,
                  " below the pick alone (logits RMS ", rms(logits), ")");
    equal += behind == 0 ? 1 : 0;
    batch.seqs[0].start_pos += int32_t(batch.seqs[0].tokens.size());
    batch.seqs[0].tokens = {got[i]};
  }
  return equal;
}

// The source tree: $KVACTOR_SOURCE_DIR (the GPU machine has another
// checkout path), else the one this was built from.
std::string source_dir() {
  const char* env = std::getenv("KVACTOR_SOURCE_DIR");
  return env && *env ? env : KVACTOR_SOURCE_DIR;
}

// Resident host memory of this process, bytes.
size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * size_t(sysconf(_SC_PAGESIZE));
}

} // namespace

TEST_CASE("greedy requests through the actor engine on CUDA pick what cuda_backend picks for each alone, up to near ties, "
          "penalized or not") {
  const uint32_t seed = fresh_seed();
  CAPTURE(seed);
  std::mt19937 rng(seed);
  const loaded_model m{load_model_dir_config(default_model_dir()), nullptr, default_model_dir()};
  const int32_t vocab = m.config.vocab_size;
  // Eight prompts of 3 to 300 tokens; the four at odd places begin with
  // the same 40 tokens, so that the prefix cache serves some of them.
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int32_t> preamble(40);
  for (auto& t : preamble) t = int32_t(rng() % uint32_t(vocab));
  for (int32_t length : {3, 64, 17, 100, 300, 45, 90, 130}) {
    std::vector<int32_t> p(static_cast<size_t>(length));
    for (auto& t : p) t = int32_t(rng() % uint32_t(vocab));
    if (prompts.size() % 2 == 1) {
      REQUIRE(p.size() > preamble.size());
      std::copy(preamble.begin(), preamble.end(), p.begin());
    }
    prompts.push_back(std::move(p));
  }
  const int32_t max_tokens = 40;
  // Every third request has a repetition penalty, which the device applies.
  const auto penalty = [](size_t i) { return i % 3 == 1 ? 1.3f : 1.0f; };

  auto alone = load_cuda_backend(default_model_dir(), 64, 16);
  std::vector<reference_run> want;
  for (size_t i = 0; i < prompts.size(); ++i) want.push_back(greedy_alone(*alone, prompts[i], max_tokens, penalty(i)));

  std::vector<generate_request> requests;
  for (size_t i = 0; i < prompts.size(); ++i) {
    generate_request r;
    r.prompt_tokens = prompts[i];
    r.sampling.temperature = 0;
    r.sampling.repetition_penalty = penalty(i);
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    requests.push_back(r);
  }
  struct variant {
    std::string name;
    int32_t streams;
    int32_t prefill_chunk;
    bool prefix_cache;
  };
  for (const variant& v : {variant{"1 stream, whole prompts", 1, 0, false},
                           variant{"2 streams, chunks of 16, prefix cache", 2, 16, true},
                           variant{"2 streams, chunks of 64, max_seqs 3", 2, 64, true}}) {
    CAPTURE(v.name);
    engine_config c = cuda_config();
    c.streams = v.streams;
    c.prefill_chunk = v.prefill_chunk;
    c.prefix_cache = v.prefix_cache;
    if (v.prefill_chunk == 64) c.max_seqs = 3;
    cuda_engine e(c);
    // Twice: the second round meets the first round's prompts in the cache.
    size_t free_run = 0, forced = 0, total = 0;
    for (int round = 0; round < 2; ++round) {
      const auto got = e.run(requests);
      REQUIRE(got.size() == want.size());
      for (size_t i = 0; i < got.size(); ++i) {
        const std::string what = "request " + std::to_string(i) + " round " + std::to_string(round);
        free_run += check_free_run(what, got[i], want[i]);
        forced += check_teacher_forced(what, *alone, prompts[i], penalty(i), got[i]);
        total += got[i].size();
      }
    }
    const engine_stats s = e.stats();
    if (v.prefix_cache) CHECK(s.prefix_hit_tokens > 0);
    summary("engine on CUDA vs cuda_backend alone, " + v.name + ": greedy tokens equal before any difference " +
            std::to_string(free_run) + "/" + std::to_string(total) + ", each the pick alone given the same output " +
            std::to_string(forced) + "/" + std::to_string(total) + "; " + std::to_string(s.steps) + " steps, " +
            std::to_string(s.prefix_hit_tokens) + " prompt tokens from the prefix cache");
  }
}

TEST_CASE("device cuda sizes the KV cache from gpu_memory_fraction once weights and executors are counted") {
  size_t free_before = 0, total = 0;
  REQUIRE(cudaMemGetInfo(&free_before, &total) == cudaSuccess);
  const model_config config = load_model_dir_config(default_model_dir());
  const size_t page_bytes = size_t(config.num_layers) * 2 * 16 * size_t(config.num_kv_heads * config.head_dim) * 2;

  engine_config c = cuda_config();
  c.num_pages = 0;
  c.gpu_memory_fraction = 0.3;
  c.streams = 2;
  std::vector<std::string> log;
  int64_t bf16_pages = 0;
  {
    cuda_engine e(c, &log);
    // NOTE: the stats' page counts come with the KV cache's replies, so
    // before any request only the cache's bytes are known.
    const engine_stats s = e.stats();
    const double budget = 0.3 * double(total) - double(total - free_before);
    const double kv = double(s.kv_cache_bytes);
    CHECK(s.kv_cache_bytes % int64_t(page_bytes) == 0);
    // Under the budget, by what the weights, two executors and their graphs
    // take: a few hundred MiB for this model, 3 GiB at most.
    CHECK(kv <= budget);
    CHECK(kv >= budget - 3.0 * double(size_t(1) << 30));
    size_t free_after = 0;
    REQUIRE(cudaMemGetInfo(&free_after, &total) == cudaSuccess);
    CHECK(double(total - free_after) <= 0.3 * double(total));
    bf16_pages = s.kv_cache_bytes / int64_t(page_bytes);
    summary("KV cache at gpu_memory_fraction 0.3 with 2 streams: " + std::to_string(s.kv_cache_bytes / int64_t(page_bytes)) + " pages, " +
            std::to_string(kv / double(size_t(1) << 30)) + " GiB of a budget of " +
            std::to_string(budget / double(size_t(1) << 30)) + " GiB; in use after " +
            std::to_string(double(total - free_after) / double(total)) + " of the device");
  }
  REQUIRE(log.size() == 2);
  CHECK(log[1].find("cuda: KV cache ") == 0);

  c.num_pages = 1000;
  {
    cuda_engine e(c);
    CHECK(e.stats().kv_cache_bytes == int64_t(1000 * page_bytes));
  }
  c.num_pages = 0;
  c.gpu_memory_fraction = 1e-4;
  CHECK_THROWS_WITH_AS(cuda_engine{c}, doctest::Contains("leaves no room for the KV cache"), error);
  c.gpu_memory_fraction = 0.3;
  c.kv_dtype = "f32";
  CHECK_THROWS_WITH_AS(cuda_engine{c}, doctest::Contains("kv.dtype \"f32\" is not available on the GPU"), error);

  // 8-bit KV: twice the pages at the same memory (their scales on top), and
  // the engine serves from them.
  std::string line = "8-bit KV at gpu_memory_fraction 0.3 (bf16: " + std::to_string(bf16_pages) + " pages):";
  for (const char* dtype : {"fp8", "int8"}) {
    CAPTURE(dtype);
    c.kv_dtype = dtype;
    std::vector<std::string> lines;
    cuda_engine e(c, &lines);
    const int64_t pages = e.stats().kv_cache_bytes / int64_t(page_bytes / 2);
    CHECK(double(pages) >= 2.0 * double(bf16_pages) * 0.99);
    CHECK(double(pages) <= 2.0 * double(bf16_pages) * 1.01);
    REQUIRE(lines.size() == 2);
    CHECK(lines[1].find(std::string(" ") + dtype + " (scales ") != std::string::npos);
    generate_request r;
    r.prompt_tokens = {0, 40, 41, 42, 43, 44, 45, 46, 47, 48};
    r.sampling.temperature = 0;
    r.max_tokens = 300;
    r.ignore_eos = true;
    const auto outputs = e.run({r, r});
    REQUIRE(outputs.size() == 2);
    CHECK(outputs[0].size() == 300);
    CHECK(outputs[0] == outputs[1]);
    line += " " + std::string(dtype) + " " + std::to_string(pages) + " pages (" +
            std::to_string(double(pages) / double(bf16_pages)) + "x);";
  }
  summary(line);
}

TEST_CASE("dummy weights of a full shape are drawn on the device, with no host copy") {
  const std::string source = source_dir() + "/tools/shapes/llama3-1b";
  engine_config c = cuda_config();
  c.dummy_weights = true;
  c.dummy_seed = 5;
  c.num_pages = 64;
  const loaded_model m{load_model_dir_config(source), nullptr, ""};
  const size_t resident = resident_bytes();
  auto b = cuda_backend_factory()(m, 0, c);
  // fp32 weights on the host would be 4 x 1.24e9 bytes.
  const size_t after = resident_bytes();
  const size_t grown = after - std::min(resident, after);
  CHECK(grown < (size_t(1) << 30));
  forward_batch batch;
  batch.seqs.push_back({{128000, 791, 6864}, 0, {0}, true});
  std::vector<float> logits;
  b->forward(batch, logits);
  REQUIRE(logits.size() == size_t(m.config.vocab_size));
  CHECK(std::all_of(logits.begin(), logits.end(), [](float x) { return std::isfinite(x); }));
  std::vector<int32_t> tokens;
  const sampling_params greedy{0.0f};
  const uint64_t counter = 0;
  CHECK(b->forward_and_sample(batch, {&greedy, 1}, {}, {&counter, 1}, tokens));
  CHECK(tokens.at(0) == int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin()));
  summary("dummy llama3-1b weights on the device: host memory grew by " + std::to_string(grown >> 20) + " MiB");
}
