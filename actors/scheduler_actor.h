#pragma once
// The scheduler actor drives engine steps: one request to the KV cache actor
// per step, then the step to an idle executor. With N executors it keeps one
// step in flight on each, over disjoint groups of sequences, so one step's
// CPU work (planning, KV bookkeeping, sampling) overlaps another's forward
// pass. It streams each produced token to the request's output actor and
// reports every request transition to the observer.
//
// A reload of the system prompts is answered once their warm-up sequences
// have run and the KV cache has answered their pins; reloads arriving
// meanwhile wait their turn.
#include <deque>
#include <memory>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "actors/messages.h"
#include "runtime/request_lifecycle.h"
#include "runtime/scheduler_core.h"

namespace kvactor {

// What the scheduler reports of the KV cache's memory, and the prefix-cache
// namespace of system prompts.
struct scheduler_extras {
  uint64_t prefix_namespace = 0;
  int64_t kv_cache_bytes = 0;
  int64_t kv_scale_bytes = 0;
};

struct scheduler_state {
  static inline const char* name = "kvactor.scheduler";
  std::unique_ptr<scheduler_core> core;
  kv_cache_actor kv;
  std::vector<executor_actor> executors;
  std::vector<uint8_t> busy; // [executors]
  // [executors] the last step each ran, recycled into its next one once the
  // executor has let go of it
  std::vector<std::shared_ptr<engine_step>> last_step;
  std::unordered_map<seq_id, output_actor> outputs;
  // Tokens and endings for the output actors, sent once the next step is on
  // its way (see pump() in scheduler_actor.cpp).
  std::vector<seq_event> undelivered;
  scheduler_extras extras;

  // System prompt reloads: the one being prefilled, and those waiting.
  using reload_promise = caf::typed_response_promise<system_prompts_reloaded>;
  struct reload {
    std::vector<system_prompt> prompts;
    reload_promise promise;
    system_prompts_reloaded answer; // filled as the reload proceeds
  };
  std::optional<reload> reloading;
  std::deque<reload> reloads_waiting;
};

// Links to the KV cache actor and the executors: the engine's parts stop
// together.
scheduler_actor::behavior_type scheduler(scheduler_actor::stateful_pointer<scheduler_state> self,
                                         scheduler_options options, kv_cache_actor kv,
                                         std::vector<executor_actor> executors,
                                         lifecycle_observer observer, scheduler_extras extras);

} // namespace kvactor
