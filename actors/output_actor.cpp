#include "actors/output_actor.h"

namespace kvactor {

namespace {

using clock = std::chrono::steady_clock;

double ms(clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

generate_result make_result(const output_state& st, const seq_event& e) {
  generate_result r;
  r.reason = st.stopped_by_string ? finish_reason::stop : e.reason;
  r.error = st.stopped_by_string ? error_code::none : e.error;
  r.message = e.message;
  r.usage = e.usage;
  // Tokens after the one that completed a stop string are not output.
  if (st.stopped_by_string) r.usage.completion_tokens = st.num_tokens;
  const auto now = clock::now();
  r.timings.total_ms = ms(now - st.submitted);
  if (e.first_scheduled != clock::time_point{}) r.timings.queue_ms = ms(e.first_scheduled - st.submitted);
  if (st.num_tokens > 0) r.timings.ttft_ms = ms(st.first_token - st.submitted);
  if (st.num_tokens > 1) r.timings.per_token_ms = ms(st.last_token - st.first_token) / (st.num_tokens - 1);
  return r;
}

} // namespace

output_actor::behavior_type output(output_actor::stateful_pointer<output_state> self, uint64_t id,
                                   generation_sink sink, scheduler_actor scheduler,
                                   std::shared_ptr<const tokenizer> tok, std::vector<std::string> stops,
                                   clock::time_point submitted) {
  auto& st = self->state;
  st.id = id;
  st.sink = std::move(sink);
  st.scheduler = std::move(scheduler);
  st.tok = std::move(tok);
  st.decoder = std::make_unique<incremental_decoder>(*st.tok, true);
  st.stops = std::make_unique<stop_matcher>(std::move(stops));
  st.submitted = submitted;
  self->monitor(st.scheduler);
  self->set_down_handler([self](const caf::down_msg&) {
    auto& st = self->state;
    seq_event e;
    e.what = seq_event::kind::finished;
    e.reason = finish_reason::error;
    e.error = error_code::internal;
    e.message = "the engine stopped";
    self->send(st.sink, generation_done{st.id, make_result(st, e)});
    self->quit();
  });
  return {
    [self](token_atom, int32_t token) {
      auto& st = self->state;
      if (st.stopped_by_string) return;
      st.last_token = clock::now();
      if (st.num_tokens++ == 0) st.first_token = st.last_token;
      std::string text = st.stops->push(st.decoder->push(token));
      self->send(st.sink, token_delta{st.id, std::move(text), {token}});
      if (st.stops->stopped()) {
        st.stopped_by_string = true;
        self->send(st.scheduler, finish_atom_v, st.id);
      }
    },
    [self](const seq_event& e) {
      auto& st = self->state;
      if (!st.stopped_by_string) {
        std::string rest = st.stops->push(st.decoder->finish());
        rest += st.stops->finish();
        if (!rest.empty()) self->send(st.sink, token_delta{st.id, std::move(rest), {}});
      }
      self->send(st.sink, generation_done{st.id, make_result(st, e)});
      // NOTE: a monitor stays attached to the scheduler after this actor
      // quits, and keeps this actor's memory alive with it: every request
      // would leave about a kilobyte behind until the engine stops.
      self->demonitor(st.scheduler.address());
      self->quit();
    },
  };
}

} // namespace kvactor
