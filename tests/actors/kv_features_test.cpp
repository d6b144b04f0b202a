// The engine's KV features through its public API (kvactor/engine.h):
// system prompts pinned at startup and reloaded, the time to first token
// they save, and quantized KV caches sized from the same memory budget.
#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <unistd.h>

#include "kvactor/engine.h"
#include "runtime/default_model.h"
#include "runtime/error.h"
#include "runtime/tokenizer.h"

using namespace kvactor;
using namespace std::chrono_literals;

namespace {

// -- a client -----------------------------------------------------------------------

struct results {
  std::mutex m;
  std::condition_variable cv;
  std::map<uint64_t, std::vector<int32_t>> tokens;
  std::map<uint64_t, generate_result> done;
};

generation_sink::behavior_type sink(generation_sink::pointer, std::shared_ptr<results> r) {
  return {
    [r](const token_delta& d) {
      std::lock_guard lock(r->m);
      auto& t = r->tokens[d.request_id];
      t.insert(t.end(), d.token_ids.begin(), d.token_ids.end());
    },
    [r](const generation_done& d) {
      std::lock_guard lock(r->m);
      r->done[d.request_id] = d.result;
      r->cv.notify_all();
    },
  };
}

struct engine_under_test {
  explicit engine_under_test(const engine_config& c)
      : sys(cfg), self(sys), collected(std::make_shared<results>()) {
    engine = spawn_engine(sys, c);
    out = sys.spawn(sink, collected);
  }
  ~engine_under_test() {
    caf::anon_send_exit(engine, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(out, caf::exit_reason::user_shutdown);
  }

  // Runs one request to its end.
  std::pair<generate_result, std::vector<int32_t>> run(const generate_request& r) {
    uint64_t id = 0;
    self->request(engine, 10s, generate_atom_v, r, out)
      .receive([&](uint64_t x) { id = x; }, [&](caf::error& e) { FAIL("generate failed: ", sys.render(e)); });
    std::unique_lock lock(collected->m);
    REQUIRE(collected->cv.wait_for(lock, 300s, [&] { return collected->done.contains(id); }));
    return {collected->done.at(id), collected->tokens[id]};
  }

  engine_stats stats() {
    engine_stats s;
    self->request(engine, 10s, stats_atom_v)
      .receive([&](const engine_stats& x) { s = x; }, [&](caf::error& e) { FAIL(sys.render(e)); });
    return s;
  }

  system_prompts_reloaded reload(const std::vector<system_prompt_config>& prompts) {
    system_prompts_reloaded answer;
    self->request(engine, 300s, reload_atom_v, prompts)
      .receive([&](const system_prompts_reloaded& x) { answer = x; }, [&](caf::error& e) { FAIL(sys.render(e)); });
    return answer;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scoped_actor self;
  std::shared_ptr<results> collected;
  engine_actor engine;
  generation_sink out;
};

const tokenizer& tok() {
  static const tokenizer t = tokenizer::from_file(default_model_dir() + "/tokenizer.json");
  return t;
}

// Model directories made for these tests, removed at exit.
struct scratch_dirs {
  std::vector<std::filesystem::path> dirs;
  ~scratch_dirs() {
    std::error_code ignored;
    for (const auto& d : dirs) std::filesystem::remove_all(d, ignored);
  }
};
scratch_dirs scratch;

// The default model with a 4,096-token context: its rope has no scaling, so
// only the limit changes. The weights and tokenizer are linked, not copied.
std::string long_context_default_model() {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    const fs::path src = default_model_dir();
    const fs::path dst = fs::temp_directory_path() / ("kvactor_long_default_" + std::to_string(::getpid()));
    fs::create_directories(dst);
    scratch.dirs.push_back(dst);
    for (const char* f : {"model.safetensors", "tokenizer.json", "generation_config.json"}) {
      fs::remove(dst / f);
      fs::create_symlink(fs::absolute(src / f), dst / f);
    }
    std::ifstream in(src / "config.json");
    std::stringstream text;
    text << in.rdbuf();
    std::string config = text.str();
    const std::string from = "\"max_position_embeddings\": 1024";
    REQUIRE(config.find(from) != std::string::npos);
    config.replace(config.find(from), from.size(), "\"max_position_embeddings\": 4096");
    std::ofstream(dst / "config.json") << config;
    return dst.string();
  }();
  return dir;
}

// The Mistral reference model with a window of 64 (weights linked), and the
// default model's tokenizer so that the engine can load it; requests give
// token ids below the model's 256.
std::string mistral_window_64() {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    const fs::path src = fs::path(KVACTOR_SOURCE_DIR) / "tests" / "data" / "models" / "mistral";
    const fs::path dst = fs::temp_directory_path() / ("kvactor_mistral_64_" + std::to_string(::getpid()));
    fs::create_directories(dst);
    scratch.dirs.push_back(dst);
    for (const auto& [from, name] : {std::pair{src / "model.safetensors", "model.safetensors"},
                                     std::pair{fs::path(default_model_dir()) / "tokenizer.json", "tokenizer.json"}}) {
      fs::remove(dst / name);
      fs::create_symlink(fs::absolute(from), dst / name);
    }
    std::ifstream in(src / "config.json");
    std::stringstream text;
    text << in.rdbuf();
    std::string config = text.str();
    const std::string from = "\"sliding_window\": 8";
    REQUIRE(config.find(from) != std::string::npos);
    config.replace(config.find(from), from.size(), "\"sliding_window\": 64");
    std::ofstream(dst / "config.json") << config;
    return dst.string();
  }();
  return dir;
}

// Text of the language reference's flavour, at least `n` tokens long.
std::string text_of_tokens(size_t n) {
  static const char* sentences[] = {
      "The for statement is used to iterate over the elements of a sequence. ",
      "A class definition defines a class object. ",
      "Names refer to objects and are introduced by name binding operations. ",
      "The with statement is used to wrap the execution of a block with methods defined by a context manager. ",
      "Lambda expressions are used to create anonymous functions. "};
  std::string text;
  for (size_t i = 0; tok().encode(text, true).size() < n; ++i) text += sentences[i % 5];
  return text;
}

engine_config config_with(std::vector<system_prompt_config> prompts) {
  engine_config c;
  c.model_dir = long_context_default_model();
  c.num_pages = 512;
  c.cpu_threads = 2;
  c.system_prompts = std::move(prompts);
  return c;
}

generate_request greedy(int32_t max_tokens) {
  generate_request r;
  r.sampling.temperature = 0;
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

} // namespace

TEST_CASE("a pinned 2,000-token system prompt: the request computes only its 20 user tokens") {
  const std::string system_text = text_of_tokens(2000);
  const auto system_tokens = tok().encode(system_text, true);
  auto user = tok().encode(" What does the with statement do, and when are its exit methods called? Explain.", false);
  REQUIRE(user.size() >= 20);
  user.resize(20);

  // Pinned: the engine prefilled the prompt before spawn_engine returned.
  engine_under_test pinned(config_with({{"doc", system_text}}));
  const engine_stats before = pinned.stats();
  CHECK(before.system_prompts_pinned == 1);
  CHECK(before.pages_pinned == int32_t(system_tokens.size() / 16));
  generate_request named = greedy(8);
  named.system = "doc";
  named.prompt_tokens = user;
  const auto [hit, hit_tokens] = pinned.run(named);
  REQUIRE(hit.error == error_code::none);
  CHECK(hit.usage.prompt_tokens == int32_t(system_tokens.size() + 20));
  CHECK(hit.usage.cached_tokens >= 1984);
  CHECK(hit.usage.cached_tokens == int32_t(system_tokens.size() / 16 * 16));

  // A request that merely starts with the same tokens hits the same pages.
  generate_request unnamed = greedy(8);
  unnamed.prompt_tokens = system_tokens;
  unnamed.prompt_tokens.insert(unnamed.prompt_tokens.end(), user.begin(), user.end());
  const auto [same, same_tokens] = pinned.run(unnamed);
  // At least the pinned pages; the first request's own full pages may add one.
  CHECK(same.usage.cached_tokens >= hit.usage.cached_tokens);
  CHECK(same_tokens == hit_tokens);
  const engine_stats after = pinned.stats();
  CHECK(after.system_prompt_hits == 2);
  CHECK(after.system_prompt_hit_tokens == 2 * int64_t(hit.usage.cached_tokens));

  // Cold: the same tokens on an engine without the prompt.
  engine_under_test cold(config_with({}));
  const auto [miss, miss_tokens] = cold.run(unnamed);
  CHECK(miss.usage.cached_tokens == 0);
  CHECK(miss_tokens == hit_tokens);
  MESSAGE("system prompt of ", system_tokens.size(), " tokens + 20 user tokens: time to first token ",
          hit.timings.ttft_ms, " ms pinned (", hit.usage.cached_tokens, " cached) vs ", miss.timings.ttft_ms,
          " ms without (", miss.usage.prompt_tokens, " tokens computed)");
}

TEST_CASE("a system prompt over the pinned cap is refused when the engine starts") {
  engine_config c = config_with({{"short", "You answer briefly."}, {"long", text_of_tokens(1200)}});
  c.num_pages = 128; // cap: 0.5 x 128 = 64 pages; the long prompt needs 75
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::string message;
  try {
    spawn_engine(sys, c);
  } catch (const error& e) {
    message = e.what();
  }
  CHECK(message.find("engine_config: system prompt \"long\"") == 0);
  CHECK(message.find("over the cap of 64: prefix_cache.max_pinned_fraction 0.5 of 128 KV pages") !=
        std::string::npos);
}

TEST_CASE("reload_system_prompts pins what is added, unpins what is removed, refuses what cannot fit") {
  const std::string doc = text_of_tokens(300), chat = text_of_tokens(100) + "Be kind. ";
  engine_under_test e(config_with({{"doc", doc}}));
  CHECK(e.stats().system_prompts_pinned == 1);

  const system_prompts_reloaded r = e.reload({{"chat", chat}});
  CHECK(r.applied);
  CHECK(r.added == std::vector<std::string>{"chat"});
  CHECK(r.removed == std::vector<std::string>{"doc"});
  CHECK(r.failed.empty());
  const auto chat_tokens = tok().encode(chat, true);
  CHECK(r.pinned_pages == int32_t(chat_tokens.size() / 16));
  CHECK(e.stats().pages_pinned == r.pinned_pages);

  generate_request old = greedy(4);
  old.system = "doc";
  old.prompt = "hello";
  CHECK(e.run(old).first.error == error_code::bad_request);
  generate_request fresh = greedy(4);
  fresh.system = "chat";
  fresh.prompt = " hello";
  const auto [result, tokens] = e.run(fresh);
  CHECK(result.error == error_code::none);
  CHECK(result.usage.cached_tokens == int32_t(chat_tokens.size() / 16 * 16));

  const system_prompts_reloaded refused = e.reload({{"chat", chat}, {"huge", text_of_tokens(5000)}});
  CHECK_FALSE(refused.applied);
  CHECK(refused.error.find("system prompt \"huge\" is ") == 0);
  CHECK(e.stats().pages_pinned == r.pinned_pages); // nothing changed
  const system_prompts_reloaded same = e.reload({{"chat", chat}});
  CHECK(same.applied);
  CHECK(same.kept == std::vector<std::string>{"chat"});
  CHECK(same.added.empty());
}

TEST_CASE("kv_dtype: an 8-bit cache holds twice the pages of bf16 in the same memory, and serves") {
  std::map<std::string, engine_stats> stats;
  std::map<std::string, std::vector<int32_t>> outputs;
  for (const char* dtype : {"bf16", "fp8", "int8"}) {
    engine_config c;
    c.kv_memory_mb = 16;
    c.kv_dtype = dtype;
    c.cpu_threads = 2;
    engine_under_test e(c);
    generate_request r = greedy(24);
    r.prompt = "The for statement is used to iterate over";
    const auto [result, tokens] = e.run(r);
    CHECK(result.error == error_code::none);
    outputs[dtype] = tokens;
    stats[dtype] = e.stats();
  }
  // The default model: 4 layers x 2 kv heads x 32 dims x 2 (K, V) = 512
  // elements per token, 8,192 per page of 16.
  CHECK(stats["bf16"].pages_total == 16 * 1024 * 1024 / (8192 * 2));
  CHECK(stats["fp8"].pages_total == 2 * stats["bf16"].pages_total);
  CHECK(stats["int8"].pages_total == 2 * stats["bf16"].pages_total);
  CHECK(stats["bf16"].kv_cache_bytes == 16 << 20);
  CHECK(stats["fp8"].kv_cache_bytes == 16 << 20);
  CHECK(stats["bf16"].kv_scale_bytes == 0);
  CHECK(stats["fp8"].kv_scale_bytes == int64_t(stats["fp8"].pages_total) * 4 * 2 * 2 * 4);
  CHECK(stats["int8"].kv_scale_bytes == int64_t(stats["int8"].pages_total) * 4 * 2 * 16 * 2 * 4);
  MESSAGE("kv_memory_mb 16: bf16 ", stats["bf16"].pages_total, " pages, fp8 ", stats["fp8"].pages_total,
          " (+", stats["fp8"].kv_scale_bytes, " scale bytes), int8 ", stats["int8"].pages_total, " (+",
          stats["int8"].kv_scale_bytes, " scale bytes); greedy outputs equal to bf16's: fp8 ",
          outputs["fp8"] == outputs["bf16"], ", int8 ", outputs["int8"] == outputs["bf16"]);

  engine_config bad;
  bad.kv_dtype = "fp4";
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  CHECK_THROWS_WITH_AS(spawn_engine(sys, bad),
                       "engine_config: kv_dtype \"fp4\" is not one of auto, f32, bf16, fp8, int8", error);
}

TEST_CASE("window_release: a sliding-window model runs a long generation in a pool of 12 pages") {
  engine_config c;
  c.model_dir = mistral_window_64();
  c.num_pages = 12;
  c.prefill_chunk = 32;
  c.cpu_threads = 1;
  generate_request r = greedy(450);
  r.prompt_tokens = {1, 50, 60, 70, 80, 90, 100, 110, 120, 130};
  {
    engine_under_test e(c);
    const auto [result, tokens] = e.run(r);
    CHECK(result.error == error_code::none);
    CHECK(tokens.size() == 450);
    const engine_stats s = e.stats();
    CHECK(s.window_released_pages == (458 - 63) / 16); // trimmed after computing position 457
    CHECK(s.pages_used == 0);
    MESSAGE("460 tokens (29 pages' worth) with window 64 in 12 pages: ", s.window_released_pages,
            " pages released while running");
  }
  c.window_release = false;
  engine_under_test keeps_all(c);
  const auto [refused, none] = keeps_all.run(r);
  CHECK(refused.error == error_code::context_length_exceeded);
}
