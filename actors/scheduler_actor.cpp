#include "actors/scheduler_actor.h"

#include <algorithm>
#include <iterator>

namespace kvactor {

namespace {

using self_ptr = scheduler_actor::stateful_pointer<scheduler_state>;

void pump(self_ptr self);

// Hands the undelivered tokens and endings to the requests' output actors.
void deliver(self_ptr self) {
  auto& st = self->state;
  for (const seq_event& e : st.undelivered) {
    auto it = st.outputs.find(e.id);
    if (it == st.outputs.end()) continue;
    if (e.what == seq_event::kind::token) {
      self->send(it->second, token_atom_v, e.token);
    } else {
      self->send(it->second, e);
      st.outputs.erase(it);
    }
  }
  st.undelivered.clear();
}

void queue(self_ptr self, std::vector<seq_event>&& events) {
  auto& pending = self->state.undelivered;
  if (pending.empty())
    pending = std::move(events);
  else
    pending.insert(pending.end(), std::make_move_iterator(events.begin()), std::make_move_iterator(events.end()));
}

// After any change: ask the KV cache for what is next; events wait for its
// reply only if a request went out.
void advance(self_ptr self) {
  pump(self);
  if (!self->state.core->kv_pending()) deliver(self);
}

// Answers the running reload once its prompts are pinned (or failed) and
// the KV cache has applied the last request, then starts the next one.
void progress_reloads(self_ptr self) {
  auto& st = self->state;
  for (;;) {
    if (st.reloading) {
      if (!st.core->system_prompts_settled() || st.core->kv_pending()) return;
      auto& r = *st.reloading;
      if (r.answer.applied) {
        r.answer.failed = st.core->system_prompt_failures();
        r.answer.pinned_pages = st.core->kv().pages_pinned;
      }
      r.promise.deliver(std::move(r.answer));
      st.reloading.reset();
    }
    if (st.reloads_waiting.empty()) return;
    st.reloading = std::move(st.reloads_waiting.front());
    st.reloads_waiting.pop_front();
    auto& r = *st.reloading;
    system_prompt_change change = st.core->set_system_prompts(r.prompts, st.extras.prefix_namespace);
    r.answer.applied = change.refused.empty();
    r.answer.error = std::move(change.refused);
    r.answer.added = std::move(change.added);
    r.answer.removed = std::move(change.removed);
    r.answer.kept = std::move(change.kept);
    // Unpins and warm-ups go out with the next request.
    if (r.answer.applied) advance(self);
  }
}

size_t idle_slot(const scheduler_state& st) {
  return size_t(std::find(st.busy.begin(), st.busy.end(), 0) - st.busy.begin());
}

void run(self_ptr self, size_t slot, engine_step step) {
  auto& st = self->state;
  st.busy[slot] = 1;
  const uint64_t step_id = step.id;
  st.last_step[slot] = std::make_shared<engine_step>(std::move(step));
  self->request(st.executors[slot], caf::infinite, step_ptr(st.last_step[slot]))
    .then(
      [self, slot](const step_result& r) {
        auto& st = self->state;
        st.busy[slot] = 0;
        queue(self, r.error.empty() ? st.core->on_step_done(r.step_id, r.tokens)
                                    : st.core->on_step_failed(r.step_id, r.error));
        advance(self);
        progress_reloads(self);
      },
      [self, slot, step_id](caf::error& err) {
        // The executor is gone: its step's requests fail, its slot stays busy.
        auto& st = self->state;
        queue(self, st.core->on_step_failed(step_id, "executor failed: " + self->system().render(err)));
        advance(self);
      });
}

// Sends the next KV request if there is something to ask: a new step when an
// executor is idle, else only releases, inserts and probes.
void pump(self_ptr self) {
  auto& st = self->state;
  if (st.core->kv_pending()) return;
  const bool idle = idle_slot(st) < st.busy.size();
  auto request = st.core->next_kv_request(idle);
  if (!request) return;
  self->request(st.kv, caf::infinite, kv_request_ptr(std::make_shared<kv_step_request>(std::move(*request))))
    .then(
      [self](const kv_reply_ptr& reply) {
        auto& st = self->state;
        // A planned step always finds an idle executor: steps are only
        // dispatched here, one KV request at a time.
        const size_t slot = idle_slot(st);
        engine_step recycled;
        if (slot < st.busy.size() && st.last_step[slot].use_count() == 1)
          recycled = std::move(*st.last_step[slot]);
        started_step started = st.core->on_kv_reply(*reply, std::move(recycled));
        queue(self, std::move(started.events));
        progress_reloads(self);
        if (!started.step.empty()) run(self, slot, std::move(started.step));
        pump(self);
        // NOTE: hundreds of token messages go out only now, while the
        // executor already runs the next step.
        deliver(self);
      },
      [self](caf::error& err) { self->quit(std::move(err)); });
}

} // namespace

scheduler_actor::behavior_type scheduler(self_ptr self, scheduler_options options, kv_cache_actor kv,
                                         std::vector<executor_actor> executors,
                                         lifecycle_observer observer, scheduler_extras extras) {
  auto& st = self->state;
  st.extras = extras;
  options.max_steps_in_flight = int32_t(executors.size());
  st.core = std::make_unique<scheduler_core>(options, std::move(observer));
  st.kv = std::move(kv);
  st.executors = std::move(executors);
  st.busy.assign(st.executors.size(), 0);
  st.last_step.resize(st.executors.size());
  self->link_to(st.kv);
  for (const auto& e : st.executors) self->link_to(e);
  return {
    [self](add_atom, const seq_params& params, const output_actor& out) {
      auto& st = self->state;
      st.outputs.emplace(params.id, out);
      queue(self, st.core->add(params));
      advance(self);
    },
    [self](cancel_atom, uint64_t id) {
      queue(self, self->state.core->cancel(id));
      advance(self);
    },
    [self](finish_atom, uint64_t id) {
      queue(self, self->state.core->finish(id, finish_reason::stop));
      advance(self);
    },
    [self](stats_atom) {
      const auto& core = *self->state.core;
      const kv_counters& kv = core.kv();
      const scheduler_counters& c = core.counters();
      engine_stats s;
      s.running = int64_t(core.num_running());
      s.waiting = int64_t(core.num_waiting());
      s.steps = c.steps;
      s.forwarded_tokens = c.forwarded_tokens;
      s.generated_tokens = c.generated_tokens;
      s.preemptions = c.preemptions;
      s.prefix_queried_tokens = kv.queried_tokens;
      s.prefix_hit_tokens = kv.hit_tokens;
      s.evictions = kv.evictions;
      s.pages_total = kv.pages_total;
      s.pages_used = kv.pages_used;
      s.pages_pinned = kv.pages_pinned;
      s.system_prompts_pinned = kv.pins;
      s.system_prompt_hits = kv.pinned_hits;
      s.system_prompt_hit_tokens = kv.pinned_hit_tokens;
      s.window_released_pages = kv.window_released_pages;
      s.kv_cache_bytes = self->state.extras.kv_cache_bytes;
      s.kv_scale_bytes = self->state.extras.kv_scale_bytes;
      return s;
    },
    [self](reload_atom, std::vector<system_prompt>& prompts) -> caf::result<system_prompts_reloaded> {
      auto& st = self->state;
      auto promise = self->make_response_promise<system_prompts_reloaded>();
      st.reloads_waiting.push_back({std::move(prompts), promise, {}});
      progress_reloads(self);
      return promise;
    },
  };
}

} // namespace kvactor
