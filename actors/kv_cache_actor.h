#pragma once
// The KV cache actor: owns the kv_cache_manager (page pool + prefix index)
// and applies one request per step for the scheduler.
#include "actors/messages.h"
#include "runtime/kv_cache_manager.h"

namespace kvactor {

struct kv_cache_state {
  static inline const char* name = "kvactor.kv_cache";
  std::unique_ptr<kv_cache_manager> kv;
};

kv_cache_actor::behavior_type kv_cache(kv_cache_actor::stateful_pointer<kv_cache_state> self,
                                       kv_cache_options options);

} // namespace kvactor
