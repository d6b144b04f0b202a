#pragma once
// An executor: runs steps on one stream of a device and answers the sampled
// tokens. Spawn it detached: a forward pass blocks its thread.
//
// Executors of one device share its KV memory, which the KV cache actor
// hands out pages of. A backend that can run several steps at once (a
// device with streams, backend::make_stream) gives each executor a slot of
// its own; otherwise they share one slot and take turns on its forward(),
// sampling outside the turn, which lets one step's CPU work overlap
// another's forward pass.
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "actors/messages.h"
#include "runtime/backend.h"
#include "runtime/sampler.h"

namespace kvactor {

struct device_slot {
  std::shared_ptr<backend> model;
  std::mutex forward_turn;
};

struct executor_state {
  static inline const char* name = "kvactor.executor";
  std::shared_ptr<device_slot> device;
  std::vector<float> logits;                       // [rows, vocab], reused
  std::vector<sampling_params> params;             // [rows], for sampling on the device
  std::vector<std::span<const int32_t>> histories; // [rows], empty without a repetition penalty
  std::vector<uint64_t> counters;                  // [rows]
};

// Steps are sampled by the backend where it can
// (backend::forward_and_sample), else on the host from the logits. A step
// that throws (bad input, device error) is answered with the error; the
// executor keeps serving.
executor_actor::behavior_type executor(executor_actor::stateful_pointer<executor_state> self,
                                       std::shared_ptr<device_slot> device);

} // namespace kvactor
