#pragma once
// The engine's door. For each generate request it checks the parameters,
// spawns the request's output actor, has a tokenizer worker encode the prompt
// (so tokenization never blocks scheduling), checks the context length and
// hands the sequence to the scheduler. Errors end the request at once with a
// code from request.h; the caller always gets a request id.
//
// It also owns the configured system prompts' tokens: a reload tokenizes the
// new list, has the scheduler pin it, and serves it once that is accepted.
#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/messages.h"
#include "runtime/request_check.h"
#include "runtime/request_lifecycle.h"
#include "runtime/tokenizer.h"

namespace kvactor {

struct intake_options {
  request_limits limits;
  std::vector<int32_t> eos_token_ids;
  std::unordered_map<std::string, token_list> system_prompts; // name -> tokens
  uint64_t prefix_namespace = 0;
};

struct intake_state {
  static inline const char* name = "kvactor.intake";
  intake_options options;
  scheduler_actor scheduler;
  std::vector<tokenizer_actor> workers;
  size_t next_worker = 0;
  std::shared_ptr<const tokenizer> tok;
  lifecycle_observer observer;
  uint64_t next_id = 1;
  // Requests still being tokenized, and whether they were cancelled meanwhile.
  std::unordered_map<uint64_t, bool> tokenizing;
};

// Links to the scheduler and the workers: stopping the intake (the handle
// spawn_engine returns) stops the engine.
engine_actor::behavior_type intake(engine_actor::stateful_pointer<intake_state> self, intake_options options,
                                   scheduler_actor scheduler, std::vector<tokenizer_actor> workers,
                                   std::shared_ptr<const tokenizer> tok, lifecycle_observer observer);

} // namespace kvactor
