#include "actors/kv_cache_actor.h"

namespace kvactor {

kv_cache_actor::behavior_type kv_cache(kv_cache_actor::stateful_pointer<kv_cache_state> self,
                                       kv_cache_options options) {
  self->state.kv = std::make_unique<kv_cache_manager>(options);
  return {
    [self](const kv_request_ptr& request) -> kv_reply_ptr {
      // A protocol error throws: the actor ends and the engine with it.
      return std::make_shared<const kv_step_reply>(self->state.kv->apply(*request));
    },
  };
}

} // namespace kvactor
