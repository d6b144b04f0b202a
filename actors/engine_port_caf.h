#pragma once
// net::engine_port over the actor engine (kvactor/engine.h), for kvactord:
// each generation gets a small sink actor that turns the engine's messages
// into the request's callbacks, and that carries the request's cancellation.
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kvactor/engine.h"
#include "net/engine_port.h"

namespace kvactor {

class caf_engine_port final : public net::engine_port {
 public:
  // Spawns the engine in `sys`; throws as spawn_engine does. `on_step`, when
  // set, is called with the duration in seconds of every forward pass, from
  // the executor's thread. `make_backend`: the backend factory of
  // config.device (empty: the CPU's).
  caf_engine_port(caf::actor_system& sys, const engine_config& config,
                  std::function<void(double seconds)> on_step = {}, backend_factory make_backend = {});
  // Stops the engine. Requests still running end without their on_done:
  // stop the line server first.
  ~caf_engine_port() override;
  caf_engine_port(const caf_engine_port&) = delete;
  caf_engine_port& operator=(const caf_engine_port&) = delete;

  net::generation_handle submit(const generate_request& request, net::generation_callbacks callbacks) override;
  void cancel(net::generation_handle handle) override;
  // Asks the engine, waiting two seconds at most.
  std::map<std::string, double> stats() override;
  // Makes `prompts` the configured system prompts (e.g. on SIGHUP): added
  // ones are prefilled and pinned, removed ones unpinned, requests naming
  // them served accordingly. Blocks until done; a refused list (over
  // prefix_cache.max_pinned_fraction, longer than the context) changes
  // nothing and says why in `error`. Throws kvactor::error when the engine
  // is gone.
  system_prompts_reloaded reload_system_prompts(const std::vector<system_prompt_config>& prompts);
  std::vector<net::model_info> models() override { return models_; }

  struct sink_table;

 private:
  caf::actor_system& sys_;
  engine_actor engine_;
  std::vector<net::model_info> models_;
  std::shared_ptr<sink_table> sinks_;
  std::atomic<net::generation_handle> next_handle_{1};
};

} // namespace kvactor
