#include "actors/intake_actor.h"

#include <algorithm>

#include "actors/output_actor.h"

namespace kvactor {

namespace {

using self_ptr = engine_actor::stateful_pointer<intake_state>;

// Ends a request that never reached the scheduler.
void fail(self_ptr self, const output_actor& out, uint64_t id, error_code code, std::string message) {
  seq_event e;
  e.what = seq_event::kind::finished;
  e.id = id;
  e.reason = code == error_code::cancelled ? finish_reason::cancelled : finish_reason::error;
  e.error = code;
  e.message = std::move(message);
  self->send(out, e);
  if (self->state.observer)
    self->state.observer(life_event{id, life_stage::finished, 0, 0, e.reason, code,
                                    std::chrono::steady_clock::now()});
}

// A request for no tokens ends as soon as its prompt is counted: nothing
// runs, and it finishes with reason length.
void finish_empty(self_ptr self, const output_actor& out, uint64_t id, int32_t prompt_tokens) {
  seq_event e;
  e.what = seq_event::kind::finished;
  e.id = id;
  e.reason = finish_reason::length;
  e.usage.prompt_tokens = prompt_tokens;
  self->send(out, e);
  if (self->state.observer)
    self->state.observer(life_event{id, life_stage::finished, 0, 0, e.reason, error_code::none,
                                    std::chrono::steady_clock::now()});
}

// Prompt tokens are known: check the length and hand over to the scheduler.
void submit(self_ptr self, const output_actor& out, uint64_t id, const generate_request& r,
            std::vector<int32_t> user_tokens) {
  const intake_options& o = self->state.options;
  token_list system;
  if (!r.system.empty()) {
    auto it = o.system_prompts.find(r.system);
    // Checked on arrival, but a reload may have removed it while the prompt was tokenized.
    if (it == o.system_prompts.end())
      return fail(self, out, id, error_code::bad_request, "unknown system prompt \"" + r.system + "\"");
    system = it->second;
  }
  auto prompt = std::make_shared<std::vector<int32_t>>();
  if (system) prompt->assign(system->begin(), system->end());
  prompt->insert(prompt->end(), user_tokens.begin(), user_tokens.end());
  if (prompt->empty()) return fail(self, out, id, error_code::bad_request, "the prompt encodes to no tokens");
  if (auto problem = check_prompt_length(prompt->size(), o.limits))
    return fail(self, out, id, problem->code, problem->message);
  if (r.max_tokens == 0) return finish_empty(self, out, id, int32_t(prompt->size()));

  seq_params p;
  p.id = id;
  p.sampling = r.sampling;
  p.max_tokens = std::min(r.max_tokens, o.limits.max_context - int32_t(prompt->size()));
  p.max_total_tokens = o.limits.max_context;
  if (!r.ignore_eos) p.stop_token_ids = o.eos_token_ids;
  p.priority = r.priority;
  p.ns = o.prefix_namespace;
  p.system = r.system;
  p.system_tokens = system ? int32_t(system->size()) : 0;
  p.prompt = std::move(prompt);
  self->send(self->state.scheduler, add_atom_v, std::move(p), out);
}

} // namespace

engine_actor::behavior_type intake(self_ptr self, intake_options options, scheduler_actor scheduler,
                                   std::vector<tokenizer_actor> workers, std::shared_ptr<const tokenizer> tok,
                                   lifecycle_observer observer) {
  auto& st = self->state;
  st.options = std::move(options);
  st.scheduler = std::move(scheduler);
  st.workers = std::move(workers);
  st.tok = std::move(tok);
  st.observer = std::move(observer);
  self->link_to(st.scheduler);
  for (const auto& w : st.workers) self->link_to(w);
  return {
    [self](generate_atom, const generate_request& r, const generation_sink& sink) -> uint64_t {
      auto& st = self->state;
      const uint64_t id = st.next_id++;
      const auto now = std::chrono::steady_clock::now();
      if (st.observer) st.observer(life_event{id, life_stage::submitted, 0, 0, {}, {}, now});
      auto out = self->spawn(output, id, sink, st.scheduler, st.tok, r.stop, now);
      if (auto problem = check_request(r, st.options.limits)) {
        fail(self, out, id, problem->code, problem->message);
        return id;
      }
      if (!r.prompt_tokens.empty()) {
        submit(self, out, id, r, r.prompt_tokens);
        return id;
      }
      // With a system prompt (which brings BOS), the user text adds no specials.
      const bool add_special = r.system.empty();
      const auto& worker = st.workers[st.next_worker++ % st.workers.size()];
      st.tokenizing.emplace(id, false);
      self->request(worker, caf::infinite, tokenize_atom_v, r.prompt, add_special)
        .then(
          [self, out, id, r](std::vector<int32_t>& tokens) {
            const bool cancelled = self->state.tokenizing.at(id);
            self->state.tokenizing.erase(id);
            if (cancelled) return fail(self, out, id, error_code::cancelled, "cancelled");
            submit(self, out, id, r, std::move(tokens));
          },
          [self, out, id](caf::error& err) {
            self->state.tokenizing.erase(id);
            fail(self, out, id, error_code::bad_request,
                 "the prompt could not be tokenized: " + self->system().render(err));
          });
      return id;
    },
    [self](cancel_atom, uint64_t id) {
      auto& st = self->state;
      if (auto it = st.tokenizing.find(id); it != st.tokenizing.end())
        it->second = true;
      else
        self->send(st.scheduler, cancel_atom_v, id);
    },
    [self](stats_atom) { return self->delegate(self->state.scheduler, stats_atom_v); },
    [self](reload_atom, const std::vector<system_prompt_config>& configs) -> caf::result<system_prompts_reloaded> {
      auto& st = self->state;
      std::vector<system_prompt> prompts;
      for (const auto& c : configs) {
        auto tokens = std::make_shared<const std::vector<int32_t>>(st.tok->encode(c.text, true));
        // A request naming it brings at least one token and wants one back.
        if (int64_t(tokens->size()) + 2 > st.options.limits.max_context) {
          system_prompts_reloaded refused;
          refused.error = "system prompt \"" + c.name + "\" is " + std::to_string(tokens->size()) +
                          " tokens: no request naming it fits the " + std::to_string(st.options.limits.max_context) +
                          "-token context";
          return refused;
        }
        prompts.push_back(system_prompt{c.name, std::move(tokens)});
      }
      auto promise = self->make_response_promise<system_prompts_reloaded>();
      self->request(st.scheduler, caf::infinite, reload_atom_v, prompts)
        .then(
          [self, promise, prompts](const system_prompts_reloaded& r) mutable {
            if (r.applied) {
              auto& o = self->state.options;
              o.system_prompts.clear();
              o.limits.system_prompts.clear();
              for (const auto& p : prompts) {
                o.system_prompts[p.name] = p.tokens;
                o.limits.system_prompts.push_back(p.name);
              }
            }
            promise.deliver(r);
          },
          [promise](caf::error& err) mutable { promise.deliver(std::move(err)); });
      return promise;
    },
  };
}

} // namespace kvactor
