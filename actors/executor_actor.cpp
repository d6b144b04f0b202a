#include "actors/executor_actor.h"

#include <exception>

namespace kvactor {

executor_actor::behavior_type executor(executor_actor::stateful_pointer<executor_state> self,
                                       std::shared_ptr<device_slot> device) {
  self->state.device = std::move(device);
  return {
    [self](const step_ptr& step) -> step_result {
      auto& st = self->state;
      step_result result{step->id, {}, {}};
      try {
        {
          std::lock_guard<std::mutex> turn(st.device->forward_turn);
          st.device->model->forward(step->batch, st.logits);
        }
        result.tokens = sample_step(*step, st.logits, st.device->model->config().vocab_size);
      } catch (const std::exception& e) {
        result.error = e.what();
      }
      return result;
    },
  };
}

} // namespace kvactor
