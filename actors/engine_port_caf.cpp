#include "actors/engine_port_caf.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "runtime/default_model.h"
#include "runtime/error.h"
#include "runtime/model_loader.h"

namespace kvactor {

namespace {

// What a request's sink receives: the engine's output, and the port's cancel.
using port_sink_actor = generation_sink::extend<caf::reacts_to<cancel_atom>>;

constexpr auto stats_timeout = std::chrono::seconds(2);

// A backend that times each forward pass.
// NOTE: it must pass on every virtual of backend, or the engine would see
// the defaults instead of the wrapped backend's answers.
class timed_backend final : public backend {
 public:
  timed_backend(std::shared_ptr<backend> inner, std::function<void(double)> on_step)
      : inner_(std::move(inner)), on_step_(std::move(on_step)) {}

  const model_config& config() const override { return inner_->config(); }
  const kv_layout& layout() const override { return inner_->layout(); }
  void forward(const forward_batch& batch, std::vector<float>& logits) override {
    const auto t0 = std::chrono::steady_clock::now();
    inner_->forward(batch, logits);
    on_step_(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  bool accepts_released_pages() const override { return inner_->accepts_released_pages(); }
  bool forward_and_sample(const forward_batch& batch, std::span<const sampling_params> params,
                          std::span<const std::span<const int32_t>> histories, std::span<const uint64_t> counters,
                          std::vector<int32_t>& tokens) override {
    const auto t0 = std::chrono::steady_clock::now();
    if (!inner_->forward_and_sample(batch, params, histories, counters, tokens)) return false;
    on_step_(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return true;
  }
  std::shared_ptr<backend> make_stream() override {
    auto stream = inner_->make_stream();
    return stream ? std::make_shared<timed_backend>(std::move(stream), on_step_) : nullptr;
  }

 private:
  std::shared_ptr<backend> inner_;
  std::function<void(double)> on_step_;
};

std::vector<net::model_info> describe_model(const engine_config& config) {
  const std::string dir = config.model_dir.empty() ? default_model_dir() : config.model_dir;
  const model_config m = load_model_dir_config(dir);
  net::model_info info;
  auto path = std::filesystem::path(dir).lexically_normal();
  if (path.filename().empty()) path = path.parent_path(); // "models/x/"
  info.name = config.model_dir.empty() ? "default" : path.filename().string();
  info.architecture = m.architecture;
  info.max_context = config.max_context > 0 ? std::min(config.max_context, m.max_position_embeddings)
                                            : m.max_position_embeddings;
  info.vocab_size = m.vocab_size;
  return {info};
}

std::map<std::string, double> stats_map(const engine_stats& s) {
  return {
      {std::string(net::stat_requests_running), double(s.running)},
      {std::string(net::stat_requests_waiting), double(s.waiting)},
      {std::string(net::stat_steps), double(s.steps)},
      {"forwarded_tokens", double(s.forwarded_tokens)},
      {"generated_tokens", double(s.generated_tokens)},
      {std::string(net::stat_preemptions), double(s.preemptions)},
      {std::string(net::stat_prefix_queried_tokens), double(s.prefix_queried_tokens)},
      {std::string(net::stat_prefix_hit_tokens), double(s.prefix_hit_tokens)},
      {"prefix_cache_evictions", double(s.evictions)},
      {std::string(net::stat_kv_pages_total), double(s.pages_total)},
      {std::string(net::stat_kv_pages_used), double(s.pages_used)},
      {"kv_pages_pinned", double(s.pages_pinned)},
      {"kv_pages_free", double(s.pages_total - s.pages_used)},
      {"system_prompts_pinned", double(s.system_prompts_pinned)},
      {"system_prompt_hits", double(s.system_prompt_hits)},
      {"system_prompt_hit_tokens", double(s.system_prompt_hit_tokens)},
      {"kv_window_released_pages", double(s.window_released_pages)},
      {"kv_cache_bytes", double(s.kv_cache_bytes)},
      {"kv_scale_bytes", double(s.kv_scale_bytes)},
  };
}

} // namespace

// The sinks of requests still running, by handle, for cancel().
struct caf_engine_port::sink_table {
  struct entry {
    port_sink_actor sink;        // null while being spawned...
    bool cancel_pending = false; // ...and a cancel that came meanwhile
  };
  std::mutex mutex;
  std::unordered_map<net::generation_handle, entry> sinks;

  void forget(net::generation_handle h) {
    std::lock_guard lock(mutex);
    sinks.erase(h);
  }
};

namespace {

struct port_sink_state {
  static inline const char* name = "kvactor.port_sink";
  net::generation_callbacks callbacks;
  std::shared_ptr<caf_engine_port::sink_table> table;
  net::generation_handle handle = 0;
  engine_actor engine;
  std::optional<uint64_t> engine_id; // once the engine has answered
  bool cancel_requested = false;     // before it had
};

using sink_ptr = port_sink_actor::stateful_pointer<port_sink_state>;

void finish(sink_ptr self, const generate_result& result) {
  auto& st = self->state;
  st.table->forget(st.handle);
  st.callbacks.on_done(result);
  self->quit();
}

port_sink_actor::behavior_type port_sink(sink_ptr self, engine_actor engine, generate_request request,
                                         net::generation_callbacks callbacks,
                                         std::shared_ptr<caf_engine_port::sink_table> table,
                                         net::generation_handle handle) {
  auto& st = self->state;
  st.callbacks = std::move(callbacks);
  st.table = std::move(table);
  st.handle = handle;
  st.engine = std::move(engine);
  self->request(st.engine, caf::infinite, generate_atom_v, std::move(request),
                caf::actor_cast<generation_sink>(self))
      .then(
          [self](uint64_t id) {
            auto& st = self->state;
            st.engine_id = id;
            if (st.cancel_requested) self->send(st.engine, cancel_atom_v, id);
          },
          [self](caf::error& err) {
            generate_result r;
            r.reason = finish_reason::error;
            r.error = error_code::internal;
            r.message = "the engine is not running: " + self->system().render(err);
            finish(self, r);
          });
  return {
      [self](const token_delta& d) { self->state.callbacks.on_token(d.text, d.token_ids); },
      [self](const generation_done& d) { finish(self, d.result); },
      [self](cancel_atom) {
        auto& st = self->state;
        if (st.engine_id) {
          self->send(st.engine, cancel_atom_v, *st.engine_id);
        } else {
          st.cancel_requested = true;
        }
      },
  };
}

} // namespace

caf_engine_port::caf_engine_port(caf::actor_system& sys, const engine_config& config,
                                 std::function<void(double seconds)> on_step, backend_factory make_backend)
    : sys_(sys), models_(describe_model(config)), sinks_(std::make_shared<sink_table>()) {
  engine_hooks hooks;
  hooks.make_backend = std::move(make_backend);
  // A device without a factory is not timed: it keeps spawn_engine's own
  // check that it has a backend.
  if (on_step && (hooks.make_backend || config.device == "cpu")) {
    auto inner = hooks.make_backend ? std::move(hooks.make_backend) : cpu_backend_factory();
    hooks.make_backend = [inner = std::move(inner), on_step](const loaded_model& m, int32_t num_pages,
                                                             const engine_config& c) -> std::shared_ptr<backend> {
      return std::make_shared<timed_backend>(inner(m, num_pages, c), on_step);
    };
  }
  engine_ = spawn_engine(sys, config, std::move(hooks));
}

caf_engine_port::~caf_engine_port() {
  caf::anon_send_exit(engine_, caf::exit_reason::user_shutdown);
  std::lock_guard lock(sinks_->mutex);
  for (const auto& [handle, entry] : sinks_->sinks) {
    if (entry.sink) caf::anon_send_exit(entry.sink, caf::exit_reason::user_shutdown);
  }
}

net::generation_handle caf_engine_port::submit(const generate_request& request, net::generation_callbacks callbacks) {
  const net::generation_handle handle = next_handle_++;
  {
    // The entry exists before the sink does, so a sink that ends at once
    // removes it and it is not put back below.
    std::lock_guard lock(sinks_->mutex);
    sinks_->sinks.emplace(handle, sink_table::entry{});
  }
  auto sink = sys_.spawn(port_sink, engine_, request, std::move(callbacks), sinks_, handle);
  std::lock_guard lock(sinks_->mutex);
  if (auto it = sinks_->sinks.find(handle); it != sinks_->sinks.end()) {
    it->second.sink = sink;
    if (it->second.cancel_pending) caf::anon_send(sink, cancel_atom_v);
  }
  return handle;
}

void caf_engine_port::cancel(net::generation_handle handle) {
  std::lock_guard lock(sinks_->mutex);
  auto it = sinks_->sinks.find(handle);
  if (it == sinks_->sinks.end()) return;
  if (it->second.sink) {
    caf::anon_send(it->second.sink, cancel_atom_v);
  } else {
    it->second.cancel_pending = true;
  }
}

system_prompts_reloaded caf_engine_port::reload_system_prompts(const std::vector<system_prompt_config>& prompts) {
  caf::scoped_actor self{sys_};
  std::optional<system_prompts_reloaded> answer;
  std::string problem;
  self->request(engine_, caf::infinite, reload_atom_v, prompts)
      .receive([&](system_prompts_reloaded& r) { answer = std::move(r); },
               [&](caf::error& e) { problem = sys_.render(e); });
  if (!answer) throw error("the engine did not answer the reload: " + problem);
  return *answer;
}

std::map<std::string, double> caf_engine_port::stats() {
  caf::scoped_actor self{sys_};
  std::optional<engine_stats> answer;
  std::string problem;
  self->request(engine_, stats_timeout, stats_atom_v)
      .receive([&](const engine_stats& s) { answer = s; }, [&](caf::error& e) { problem = sys_.render(e); });
  if (!answer) throw error("the engine did not answer its stats: " + problem);
  return stats_map(*answer);
}

} // namespace kvactor
