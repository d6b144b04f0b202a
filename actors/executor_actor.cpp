#include "actors/executor_actor.h"

#include <exception>

namespace kvactor {

namespace {

// Runs `step` through the backend's own sampling; false when the backend
// cannot (nothing has run then).
bool sample_on_backend(executor_state& st, const engine_step& step, std::vector<int32_t>& tokens) {
  st.params.clear();
  st.histories.clear();
  st.counters.clear();
  for (const step_row& r : step.rows) {
    st.params.push_back(r.sampling);
    st.histories.push_back(r.history ? std::span<const int32_t>(*r.history) : std::span<const int32_t>());
    st.counters.push_back(r.counter);
  }
  return st.device->model->forward_and_sample(step.batch, st.params, st.histories, st.counters, tokens);
}

} // namespace

executor_actor::behavior_type executor(executor_actor::stateful_pointer<executor_state> self,
                                       std::shared_ptr<device_slot> device) {
  self->state.device = std::move(device);
  return {
    [self](const step_ptr& step) -> step_result {
      auto& st = self->state;
      step_result result{step->id, {}, {}};
      try {
        bool sampled = false;
        {
          std::lock_guard<std::mutex> turn(st.device->forward_turn);
          sampled = sample_on_backend(st, *step, result.tokens);
          if (!sampled) st.device->model->forward(step->batch, st.logits);
        }
        if (!sampled) result.tokens = sample_step(*step, st.logits, st.device->model->config().vocab_size);
      } catch (const std::exception& e) {
        result.error = e.what();
      }
      return result;
    },
  };
}

} // namespace kvactor
