// kvactor_overhead: what the engine costs around the model. A null backend
// (fixed logits, no compute) serves N sequences that all keep decoding; the
// time between consecutive forward passes is one engine step: the KV cache
// actor's round trip, planning, building the batch, sampling, and handing
// every token to its request's output actor. Prints median and p99.
//
//   kvactor_overhead [--seqs 256] [--steps 2000] [--vocab 32] [--streams 1]
//                    [--caf-threads N] [--caf-policy stealing|sharing]
//                    [--caf-poll N]
// The --caf options set CAF's scheduler (its worker count, its policy, and
// how many times an idle work-stealing worker polls before it sleeps): each
// step passes through several actors, so how fast an idle worker picks up
// a message is part of the step time.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "kvactor/engine.h"
#include "runtime/default_model.h"
#include "runtime/null_backend.h"

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

namespace {

// -- options ---------------------------------------------------------------------

struct options {
  int32_t seqs = 256;
  int32_t steps = 2000;
  int32_t warmup = 50;
  int32_t vocab = 32;
  int32_t streams = 1;
  int32_t caf_threads = 0; // 0 = CAF's default (the hardware's threads)
  std::string caf_policy;  // "" = CAF's default (stealing)
  int32_t caf_poll = 0;    // 0 = CAF's default
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const int32_t value = std::atoi(argv[i + 1]);
    if (key == "--caf-policy") o.caf_policy = argv[i + 1];
    else if (key == "--caf-threads") o.caf_threads = value;
    else if (key == "--caf-poll") o.caf_poll = value;
    else if (key == "--seqs") o.seqs = value;
    else if (key == "--steps") o.steps = value;
    else if (key == "--warmup") o.warmup = value;
    else if (key == "--vocab") o.vocab = value;
    else if (key == "--streams") o.streams = value;
    else throw std::runtime_error("unknown option " + key);
  }
  if (o.seqs < 1 || o.steps < 1 || o.vocab < 4 || o.streams < 1 || o.warmup < 0)
    throw std::runtime_error("options must be positive (vocab >= 4)");
  return o;
}

// The default model's config and tokenizer with a context long enough for
// every sequence to decode the whole run.
std::string long_context_model_dir(int32_t context) {
  const fs::path src = kvactor::default_model_dir();
  const fs::path dir = fs::temp_directory_path() / ("kvactor_overhead_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(src / "tokenizer.json", dir / "tokenizer.json", fs::copy_options::overwrite_existing);
  std::ifstream in(src / "config.json");
  std::stringstream text;
  text << in.rdbuf();
  const std::regex max_pos("\"max_position_embeddings\":\\s*[0-9]+");
  std::ofstream(dir / "config.json")
    << std::regex_replace(text.str(), max_pos, "\"max_position_embeddings\": " + std::to_string(context));
  return dir.string();
}

// -- measurement -------------------------------------------------------------------

// Records when each forward pass starts and how many sequences it carries.
class timing_backend final : public kvactor::backend {
 public:
  explicit timing_backend(std::shared_ptr<kvactor::backend> inner) : inner_(std::move(inner)) {
    starts_.reserve(1 << 16);
    sizes_.reserve(1 << 16);
  }
  const kvactor::model_config& config() const override { return inner_->config(); }
  const kvactor::kv_layout& layout() const override { return inner_->layout(); }
  void forward(const kvactor::forward_batch& batch, std::vector<float>& logits) override {
    starts_.push_back(clock_type::now());
    sizes_.push_back(int32_t(batch.seqs.size()));
    inner_->forward(batch, logits);
  }
  const std::vector<clock_type::time_point>& starts() const { return starts_; }
  const std::vector<int32_t>& sizes() const { return sizes_; }

 private:
  std::shared_ptr<kvactor::backend> inner_;
  std::vector<clock_type::time_point> starts_;
  std::vector<int32_t> sizes_;
};

struct finish_counter {
  std::mutex m;
  std::condition_variable cv;
  int32_t done = 0;
  int32_t failed = 0;
};

kvactor::generation_sink::behavior_type counting_sink(kvactor::generation_sink::pointer,
                                                      std::shared_ptr<finish_counter> c) {
  return {
    [](const kvactor::token_delta&) {},
    [c](const kvactor::generation_done& d) {
      std::lock_guard lock(c->m);
      ++c->done;
      if (d.result.error != kvactor::error_code::none) ++c->failed;
      c->cv.notify_all();
    },
  };
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(p * double(v.size())))];
}

} // namespace

int main(int argc, char** argv) {
  try {
    const options o = parse(argc, argv);
    const int32_t prompt_len = 8;
    const int32_t max_tokens = o.warmup + o.steps + 16;
    const int32_t context = prompt_len + max_tokens + 16;

    kvactor::engine_config ec;
    ec.model_dir = long_context_model_dir(context);
    ec.dummy_weights = true; // the null backend never reads them
    ec.max_seqs = o.seqs;
    ec.max_batch_tokens = std::max(2048, o.seqs);
    ec.num_pages = o.seqs * ((context + ec.page_size - 1) / ec.page_size) + 16;
    ec.streams = o.streams;
    std::shared_ptr<timing_backend> timed;
    kvactor::engine_hooks hooks;
    hooks.make_backend = [&](const kvactor::loaded_model& m, int32_t num_pages, const kvactor::engine_config& c) {
      timed = std::make_shared<timing_backend>(kvactor::null_backend_factory(o.vocab)(m, num_pages, c));
      return timed;
    };

    caf::actor_system_config cfg;
    if (o.caf_threads > 0) cfg.set("scheduler.max-threads", size_t(o.caf_threads));
    if (!o.caf_policy.empty()) cfg.set("scheduler.policy", caf::atom_from_string(o.caf_policy));
    if (o.caf_poll > 0) cfg.set("work-stealing.aggressive-poll-attempts", size_t(o.caf_poll));
    caf::actor_system sys{cfg};
    auto engine = kvactor::spawn_engine(sys, ec, hooks);
    fs::remove_all(ec.model_dir);
    auto counter = std::make_shared<finish_counter>();
    auto sink = sys.spawn(counting_sink, counter);

    for (int32_t i = 0; i < o.seqs; ++i) {
      kvactor::generate_request r;
      for (int32_t t = 0; t < prompt_len; ++t) r.prompt_tokens.push_back(2 + (i + t) % (o.vocab - 2));
      r.sampling.temperature = 0;
      r.max_tokens = max_tokens;
      r.ignore_eos = true;
      caf::anon_send(engine, kvactor::generate_atom_v, r, sink);
    }
    {
      std::unique_lock lock(counter->m);
      counter->cv.wait(lock, [&] { return counter->done == o.seqs; });
    }
    caf::anon_send_exit(engine, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);

    // Steps where every sequence decodes, after the warmup.
    std::vector<double> us;
    const auto& starts = timed->starts();
    const auto& sizes = timed->sizes();
    const int32_t full = o.seqs / o.streams;
    int32_t seen = 0;
    for (size_t i = 1; i < starts.size(); ++i) {
      if (sizes[i] < full || sizes[i - 1] < full || seen++ < o.warmup) continue;
      us.push_back(std::chrono::duration<double, std::micro>(starts[i] - starts[i - 1]).count());
    }
    if (us.empty()) throw std::runtime_error("no full decode steps were measured");
    double mean = 0;
    for (double x : us) mean += x;
    mean /= double(us.size());
    std::printf("kvactor_overhead: null backend (vocab %d), %d sequences decoding, %d executor(s), "
                "CAF: %zu threads, %s policy\n",
                o.vocab, o.seqs, o.streams, sys.scheduler().num_workers(),
                o.caf_policy.empty() ? "stealing" : o.caf_policy.c_str());
    std::printf("  steps measured: %zu (of %zu forward passes; %d requests failed)\n", us.size(), starts.size(),
                counter->failed);
    std::printf("  step time: median %.1f us, p99 %.1f us, mean %.1f us, max %.1f us\n", percentile(us, 0.5),
                percentile(us, 0.99), mean, percentile(us, 1.0));
    std::printf("  throughput: %.0f tokens/s\n", double(full) * 1e6 / mean);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "kvactor_overhead: " << e.what() << "\n";
    return 1;
  }
}
