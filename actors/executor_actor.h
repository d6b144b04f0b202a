#pragma once
// An executor: runs steps on one stream of a device and answers the sampled
// tokens. Spawn it detached: a forward pass blocks its thread.
//
// Executors of one device share its backend, and with it the KV memory the
// KV cache actor hands out pages of. backend::forward is not reentrant, so
// they take turns on it; sampling runs outside the turn, which is what lets
// one step's CPU work overlap another's forward pass.
#include <memory>
#include <mutex>
#include <vector>

#include "actors/messages.h"
#include "runtime/backend.h"

namespace kvactor {

struct device_slot {
  std::shared_ptr<backend> model;
  std::mutex forward_turn;
};

struct executor_state {
  static inline const char* name = "kvactor.executor";
  std::shared_ptr<device_slot> device;
  std::vector<float> logits; // [rows, vocab], reused
};

// A step that throws (bad input, device error) is answered with the error;
// the executor keeps serving.
executor_actor::behavior_type executor(executor_actor::stateful_pointer<executor_state> self,
                                       std::shared_ptr<device_slot> device);

} // namespace kvactor
