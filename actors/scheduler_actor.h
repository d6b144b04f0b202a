#pragma once
// The scheduler actor drives engine steps: one request to the KV cache actor
// per step, then the step to an idle executor. With N executors it keeps one
// step in flight on each, over disjoint groups of sequences, so one step's
// CPU work (planning, KV bookkeeping, sampling) overlaps another's forward
// pass. It streams each produced token to the request's output actor and
// reports every request transition to the observer.
#include <memory>
#include <unordered_map>
#include <vector>

#include "actors/messages.h"
#include "runtime/request_lifecycle.h"
#include "runtime/scheduler_core.h"

namespace kvactor {

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
};

// Links to the KV cache actor and the executors: the engine's parts stop
// together.
scheduler_actor::behavior_type scheduler(scheduler_actor::stateful_pointer<scheduler_state> self,
                                         scheduler_options options, kv_cache_actor kv,
                                         std::vector<executor_actor> executors,
                                         lifecycle_observer observer);

} // namespace kvactor
