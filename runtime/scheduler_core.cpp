#include "runtime/scheduler_core.h"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>

#include "runtime/error.h"
#include "runtime/sliding_window.h"

namespace kvactor {

namespace {

using clock = std::chrono::steady_clock;

} // namespace

scheduler_core::scheduler_core(const scheduler_options& options, lifecycle_observer observer)
    : options_(options), observer_(std::move(observer)) {
  step_planner check(options.budget); // throws for an invalid budget
  (void)check;
}

// -- requests -------------------------------------------------------------------

std::vector<seq_event> scheduler_core::add(seq_params params) {
  sequence s;
  s.params = std::move(params);
  const seq_id id = s.params.id;
  auto refuse = [&](error_code code, std::string message) {
    s.params.prompt = s.params.prompt ? s.params.prompt : std::make_shared<std::vector<int32_t>>();
    std::vector<seq_event> events{finished_event(s, finish_reason::error, code, std::move(message))};
    notify(id, life_stage::finished, 0, 0, finish_reason::error, code);
    return events;
  };
  if (!s.params.prompt || s.params.prompt->empty()) return refuse(error_code::bad_request, "empty prompt");
  if (seqs_.contains(id))
    return refuse(error_code::bad_request, "request id " + std::to_string(id) + " is in use");
  if (waiting_.size() >= size_t(options_.max_queued))
    return refuse(error_code::overloaded, "the queue is full");
  // A sequence that needs more pages than the pool can ever give it would be
  // preempted forever.
  int64_t longest = int64_t(s.params.prompt->size()) + std::max(s.params.max_tokens, 1);
  if (s.params.max_total_tokens > 0) longest = std::min<int64_t>(longest, s.params.max_total_tokens);
  const int32_t usable = options_.num_pages - options_.watermark - kv_.pages_pinned;
  if (most_pages_held(longest) > usable)
    return refuse(error_code::context_length_exceeded,
                  std::to_string(longest) + " tokens need " + std::to_string(most_pages_held(longest)) +
                      " KV pages at once; the cache has " + std::to_string(usable));

  s.admit_tokens = s.params.prompt;
  s.arrival = next_arrival_++;
  waiting_.emplace(key_of(s), id);
  seqs_.emplace(id, std::move(s));
  notify(id, life_stage::queued);
  return {};
}

std::vector<seq_event> scheduler_core::cancel(seq_id id) {
  return finish(id, finish_reason::cancelled);
}

std::vector<seq_event> scheduler_core::finish(seq_id id, finish_reason reason) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return {};
  const error_code error = reason == finish_reason::cancelled ? error_code::cancelled : error_code::none;
  if (it->second.step != 0) {
    // Its step may be writing its pages: end it when the step completes.
    if (!it->second.pending_finish) it->second.pending_finish = {reason, error};
    return {};
  }
  return end(id, reason, error, reason == finish_reason::cancelled ? "cancelled" : "");
}

// -- steps ----------------------------------------------------------------------

std::optional<kv_step_request> scheduler_core::next_kv_request(bool plan_step) {
  if (kv_pending_) return std::nullopt;
  kv_step_request request;
  request.inserts = std::move(inserts_);
  request.unpins = std::move(unpins_);
  request.pins = std::move(pins_);
  request.trims = std::move(trims_);
  request.releases = std::move(releases_);
  inserts_.clear();
  unpins_.clear();
  pins_.clear();
  trims_.clear();
  releases_.clear();
  if (plan_step && int32_t(steps_.size()) < options_.max_steps_in_flight) plan(request);

  bool probes_needed = false;
  for (const auto& [key, id] : waiting_) {
    if (int32_t(request.probes.size()) == options_.max_probes) break;
    const sequence& s = seqs_.at(id);
    probes_needed = probes_needed || s.probe_epoch != reply_epoch_ || !s.probe;
    request.probes.push_back(kv_probe{id, s.params.ns, s.admit_tokens});
  }
  if (request.inserts.empty() && request.unpins.empty() && request.pins.empty() && request.trims.empty() &&
      request.releases.empty() && request.scheduled.empty() && !probes_needed)
    return std::nullopt;
  request.want_holdings = pages_may_run_short(request);
  kv_pending_ = true;
  return request;
}

void scheduler_core::plan(kv_step_request& request) {
  // In-flight sequences are skipped; with several step slots, a step takes
  // its share of the active sequences so the next slot gets the rest.
  std::vector<running_seq> running;
  std::vector<waiting_seq> waiting;
  int32_t in_flight = 0;
  for (const auto& [id, entries] : steps_) in_flight += int32_t(entries.size());
  for (const auto& [id, s] : seqs_)
    if (s.running && s.step == 0)
      running.push_back(running_seq{id, s.num_tokens(), s.num_computed, int32_t(s.pages.size()),
                                    s.num_exclusive_pages, s.params.priority, s.arrival});
  for (const auto& [key, id] : waiting_) {
    const sequence& s = seqs_.at(id);
    if (s.probe && s.probe_epoch == reply_epoch_)
      waiting.push_back(waiting_seq{id, s.num_tokens(), s.params.priority, s.arrival});
  }
  step_budget budget = options_.budget;
  budget.max_seqs -= in_flight;
  if (options_.max_steps_in_flight > 1) {
    const int32_t active = in_flight + int32_t(running.size() + waiting.size());
    budget.max_seqs = std::min(budget.max_seqs, (active + options_.max_steps_in_flight - 1) /
                                                    options_.max_steps_in_flight);
  }
  if (budget.max_seqs <= 0 || (running.empty() && waiting.empty())) return;

  step_input input;
  input.running = running;
  input.waiting = waiting;
  input.free_pages = free_pages_;
  input.watermark = watermark_;
  input.probe = [this](seq_id id) { return seqs_.at(id).probe.value_or(cached_prefix{}); };
  const step_plan plan = step_planner(budget)(input);

  for (seq_id id : plan.preempted) {
    requeue(seqs_.at(id));
    request.releases.push_back(id);
    ++counters_.preemptions;
  }
  if (plan.scheduled.empty()) return;
  const uint64_t step_id = next_step_id_++;
  auto& entries = steps_[step_id];
  for (const scheduled_seq& e : plan.scheduled) {
    sequence& s = seqs_.at(e.id);
    s.step = step_id;
    entries.push_back(step_entry{e.id, e.start_pos, e.num_new_tokens, e.want_logits});
    if (e.admitted) {
      admit(s, e, request);
    } else {
      request.scheduled.push_back(kv_scheduled{e.id, false, 0, e.num_new_pages, 0, nullptr});
    }
  }
  pending_step_ = step_id;
}

void scheduler_core::admit(sequence& s, const scheduled_seq& e, kv_step_request& request) {
  const int32_t hit_pages = e.start_pos / options_.budget.page_size;
  waiting_.erase(key_of(s));
  s.running = true;
  s.num_computed = e.start_pos;
  s.kv_known = int32_t(s.admit_tokens->size());
  s.inserted_pages = hit_pages;
  // The KV cache lets go of the hits the window has passed (kv_cache_manager).
  s.released_pages = pages_behind_window(e.start_pos, options_.sliding_window, options_.budget.page_size);
  s.probe.reset();
  if (s.cached_tokens < 0) {
    s.cached_tokens = e.start_pos;
    s.first_scheduled = clock::now();
  }
  request.scheduled.push_back(
      kv_scheduled{e.id, true, hit_pages, e.num_new_pages, s.params.ns, s.admit_tokens});
}

started_step scheduler_core::on_kv_reply(const kv_step_reply& reply, engine_step recycled) {
  kv_pending_ = false;
  ++reply_epoch_;
  free_pages_ = reply.free_pages;
  watermark_ = reply.watermark;
  kv_ = reply.counters;
  for (const kv_holding& h : reply.holdings)
    if (auto it = seqs_.find(h.id); it != seqs_.end()) it->second.num_exclusive_pages = h.num_exclusive_pages;
  for (const kv_probe_result& p : reply.probes) {
    auto it = seqs_.find(p.id);
    if (it == seqs_.end() || it->second.running) continue;
    it->second.probe = p.cached;
    it->second.probe_epoch = reply_epoch_;
  }
  for (const kv_pin_result& p : reply.pins) {
    auto it = system_prompts_.find(p.name);
    if (it == system_prompts_.end() || it->second.what != pinned_prompt::state::prefilling) continue;
    if (p.num_tokens > 0) {
      it->second.what = pinned_prompt::state::pinned;
    } else {
      it->second.what = pinned_prompt::state::failed;
      it->second.problem = "the KV cache refused to pin its pages";
    }
  }

  started_step out;
  const uint64_t step_id = std::exchange(pending_step_, 0);
  if (step_id == 0) return out;
  auto& entries = steps_.at(step_id);
  for (seq_id id : reply.rejected) {
    // The cache released it: it waits again, or ends if that was asked.
    std::erase_if(entries, [&](const step_entry& e) { return e.id == id; });
    sequence& s = seqs_.at(id);
    s.step = 0;
    requeue(s);
    if (s.pending_finish) {
      auto [reason, error] = *s.pending_finish;
      auto events = end(id, reason, error, reason == finish_reason::cancelled ? "cancelled" : "");
      out.events.insert(out.events.end(), events.begin(), events.end());
    }
  }
  if (entries.empty()) {
    steps_.erase(step_id);
    return out;
  }

  // Tables come in plan order, less the rejected entries: as `entries` now.
  if (reply.tables.size() != entries.size())
    throw error("scheduler_core: the KV reply has " + std::to_string(reply.tables.size()) +
                " page tables for " + std::to_string(entries.size()) + " scheduled sequences");
  engine_step& step = out.step;
  step = std::move(recycled);
  step.id = step_id;
  step.batch.seqs.resize(entries.size()); // rows kept keep their capacity
  step.seqs.clear();
  step.rows.clear();
  for (size_t i = 0; i < entries.size(); ++i) {
    const step_entry& e = entries[i];
    const kv_table& table = reply.tables[i];
    if (table.id != e.id)
      throw error("scheduler_core: the KV reply's page table " + std::to_string(i) + " is for sequence " +
                  std::to_string(table.id) + ", not " + std::to_string(e.id));
    sequence& s = seqs_.at(e.id);
    if (s.pages.empty())
      s.pages = table.pages; // admitted: the whole table
    else
      s.pages.insert(s.pages.end(), table.pages.begin(), table.pages.end());
    seq_step& row = step.batch.seqs[i];
    row.tokens.clear();
    append_tokens(s, e.start_pos, e.start_pos + e.num_new_tokens, row.tokens);
    row.start_pos = e.start_pos;
    row.page_table.assign(s.pages.begin(), s.pages.end());
    row.want_logits = e.want_logits;
    step.seqs.push_back(e.id);
    if (e.want_logits) {
      const float penalty = s.params.sampling.repetition_penalty;
      step.rows.push_back(step_row{s.params.sampling, uint64_t(s.generated.size()),
                                   penalty != 1.0f ? all_tokens(s) : nullptr});
    }
    if (!s.decoding) notify(e.id, life_stage::prefill_chunk, e.start_pos, e.num_new_tokens);
  }
  return out;
}

std::vector<seq_event> scheduler_core::on_step_done(uint64_t step_id, std::span<const int32_t> tokens) {
  auto it = steps_.find(step_id);
  if (it == steps_.end() || step_id == pending_step_)
    throw error("scheduler_core: step " + std::to_string(step_id) + " is not in flight");
  const size_t rows = size_t(std::count_if(it->second.begin(), it->second.end(),
                                           [](const step_entry& e) { return e.want_logits; }));
  if (tokens.size() != rows)
    throw error("scheduler_core: step " + std::to_string(step_id) + " has " + std::to_string(rows) +
                " rows, got " + std::to_string(tokens.size()) + " tokens");
  const std::vector<step_entry> entries = std::move(it->second);
  steps_.erase(it);
  ++counters_.steps;

  std::vector<seq_event> events;
  events.reserve(entries.size());
  size_t row = 0;
  for (const step_entry& e : entries) {
    sequence& s = seqs_.at(e.id);
    s.step = 0;
    s.num_computed = e.start_pos + e.num_new_tokens;
    counters_.forwarded_tokens += e.num_new_tokens;
    const bool sampled = e.want_logits;
    const int32_t token = sampled ? tokens[row++] : 0;
    // Set once the sequence has ended (and `s` is gone); a warm-up sequence
    // ends with no events.
    std::optional<std::vector<seq_event>> ended;
    if (s.pending_finish) {
      auto [reason, error] = *s.pending_finish;
      ended = end(e.id, reason, error, reason == finish_reason::cancelled ? "cancelled" : "");
    } else if (sampled) {
      s.generated.push_back(token);
      if (!s.params.warm_up) {
        ++counters_.generated_tokens;
        seq_event produced;
        produced.id = e.id;
        produced.token = token;
        events.push_back(std::move(produced));
      }
      if (!s.decoding) {
        s.decoding = true;
        notify(e.id, life_stage::decoding);
      }
      const auto& stops = s.params.stop_token_ids;
      if (std::find(stops.begin(), stops.end(), token) != stops.end())
        ended = end(e.id, finish_reason::stop, error_code::none, "");
      else if (int32_t(s.generated.size()) >= s.params.max_tokens ||
               (s.params.max_total_tokens > 0 && s.num_tokens() >= s.params.max_total_tokens))
        ended = end(e.id, finish_reason::length, error_code::none, "");
    }
    if (ended) {
      events.insert(events.end(), ended->begin(), ended->end());
      continue;
    }
    queue_insert(s);
    queue_pin(s);
    queue_trim(s);
  }
  return events;
}

std::vector<seq_event> scheduler_core::on_step_failed(uint64_t step_id, const std::string& message) {
  auto it = steps_.find(step_id);
  if (it == steps_.end() || step_id == pending_step_)
    throw error("scheduler_core: step " + std::to_string(step_id) + " is not in flight");
  const std::vector<step_entry> entries = std::move(it->second);
  steps_.erase(it);
  std::vector<seq_event> events;
  for (const step_entry& e : entries) {
    seqs_.at(e.id).step = 0;
    // Pages written by the failed step are not trusted: none are cached.
    auto ended = end(e.id, finish_reason::error, error_code::internal, message, false);
    events.insert(events.end(), ended.begin(), ended.end());
  }
  return events;
}

// -- pinned system prompts ----------------------------------------------------------

system_prompt_change scheduler_core::set_system_prompts(const std::vector<system_prompt>& prompts, uint64_t ns) {
  system_prompt_change change;
  auto refuse = [&](std::string why) {
    change.refused = std::move(why);
    return change;
  };
  if (!system_prompts_settled()) return refuse("the previous system prompts are still being prefilled");
  const int32_t page_size = options_.budget.page_size;
  const double cap = options_.max_pinned_fraction * options_.num_pages;
  char fraction[32];
  std::snprintf(fraction, sizeof fraction, "%g", options_.max_pinned_fraction);
  int64_t pages = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const system_prompt& p = prompts[i];
    for (size_t j = 0; j < i; ++j)
      if (prompts[j].name == p.name) return refuse("system prompt \"" + p.name + "\" is given twice");
    const int64_t size = p.tokens ? int64_t(p.tokens->size()) : 0;
    if (size == 0) return refuse("system prompt \"" + p.name + "\" has no tokens");
    pages += size / page_size;
    if (options_.prefix_cache && double(pages) > cap)
      return refuse("system prompt \"" + p.name + "\" (" + std::to_string(size) +
                    " tokens) brings the pinned pages to " + std::to_string(pages) + ", over the cap of " +
                    std::to_string(int64_t(cap)) + ": prefix_cache.max_pinned_fraction " + fraction + " of " +
                    std::to_string(options_.num_pages) + " KV pages");
  }

  auto same = [&](const std::string& name, const pinned_prompt& old) {
    return old.ns == ns && old.what != pinned_prompt::state::failed &&
           std::any_of(prompts.begin(), prompts.end(),
                       [&](const system_prompt& p) { return p.name == name && *p.tokens == *old.tokens; });
  };
  for (auto it = system_prompts_.begin(); it != system_prompts_.end();) {
    if (same(it->first, it->second)) {
      change.kept.push_back(it->first);
      ++it;
      continue;
    }
    if (it->second.what == pinned_prompt::state::pinned) unpins_.push_back(it->first);
    change.removed.push_back(it->first);
    it = system_prompts_.erase(it);
  }
  for (const system_prompt& p : prompts) {
    if (system_prompts_.contains(p.name)) continue;
    change.added.push_back(p.name);
    pinned_prompt& pinned = system_prompts_[p.name];
    pinned.tokens = p.tokens;
    pinned.ns = ns;
    if (!options_.prefix_cache || int32_t(p.tokens->size()) < page_size) {
      pinned.what = pinned_prompt::state::unpinnable;
      continue;
    }
    seq_params warm;
    warm.id = next_warm_up_id_++;
    warm.prompt = p.tokens;
    warm.max_tokens = 1;
    warm.ns = ns;
    warm.system = p.name;
    warm.system_tokens = int32_t(p.tokens->size());
    warm.warm_up = true;
    pinned.warm_up = warm.id;
    const auto refused = add(std::move(warm));
    if (!refused.empty()) {
      pinned.what = pinned_prompt::state::failed;
      pinned.problem = refused.front().message;
    }
  }
  return change;
}

bool scheduler_core::system_prompts_settled() const {
  return std::none_of(system_prompts_.begin(), system_prompts_.end(), [](const auto& entry) {
    return entry.second.what == pinned_prompt::state::prefilling;
  });
}

std::vector<std::string> scheduler_core::system_prompt_failures() const {
  std::vector<std::string> out;
  for (const auto& [name, p] : system_prompts_)
    if (p.what == pinned_prompt::state::failed) out.push_back(name + ": " + p.problem);
  return out;
}

// -- internals --------------------------------------------------------------------

void scheduler_core::requeue(sequence& s) {
  s.running = false;
  s.decoding = false;
  s.num_computed = 0;
  s.pages.clear();
  s.num_exclusive_pages = 0;
  s.kv_known = 0;
  s.inserted_pages = 0;
  s.released_pages = 0;
  s.probe.reset();
  s.admit_tokens = all_tokens(s);
  waiting_.emplace(key_of(s), s.params.id);
  notify(s.params.id, life_stage::preempted);
  notify(s.params.id, life_stage::queued);
}

void scheduler_core::queue_insert(sequence& s) {
  if (!options_.prefix_cache || !s.running) return;
  const int32_t full = s.num_computed / options_.budget.page_size;
  if (full <= s.inserted_pages) return;
  kv_insert ins{s.params.id, {}, s.num_computed};
  if (s.num_computed > s.kv_known) {
    append_tokens(s, s.kv_known, s.num_computed, ins.appended);
    s.kv_known = s.num_computed;
  }
  s.inserted_pages = full;
  inserts_.push_back(std::move(ins));
}

// Only a warm-up pins: a request naming the prompt may carry the tokens of
// an earlier version of it.
void scheduler_core::queue_pin(const sequence& s) {
  if (!s.params.warm_up) return;
  auto it = system_prompts_.find(s.params.system);
  if (it == system_prompts_.end()) return;
  pinned_prompt& p = it->second;
  const int32_t page_size = options_.budget.page_size;
  if (p.warm_up != s.params.id || p.pin_requested || p.what != pinned_prompt::state::prefilling ||
      s.num_computed < int32_t(p.tokens->size()) / page_size * page_size)
    return;
  p.pin_requested = true;
  pins_.push_back(kv_pin{it->first, p.ns, p.tokens});
}

void scheduler_core::queue_trim(sequence& s) {
  if (!s.running) return;
  const int32_t dead = pages_behind_window(s.num_computed, options_.sliding_window, options_.budget.page_size);
  if (dead <= s.released_pages) return;
  s.released_pages = dead;
  std::fill(s.pages.begin(), s.pages.begin() + std::min<ptrdiff_t>(dead, ptrdiff_t(s.pages.size())), no_page);
  trims_.push_back(kv_trim{s.params.id, dead});
}

std::vector<seq_event> scheduler_core::end(seq_id id, finish_reason reason, error_code error,
                                           std::string message, bool cache_pages) {
  sequence& s = seqs_.at(id);
  if (s.running) {
    if (cache_pages) {
      queue_insert(s);
      queue_pin(s); // before the release, in the same request
    }
    releases_.push_back(id);
  } else {
    waiting_.erase(key_of(s));
  }
  std::vector<seq_event> events;
  if (s.params.warm_up) {
    auto it = system_prompts_.find(s.params.system);
    if (it != system_prompts_.end() && it->second.warm_up == id && !it->second.pin_requested &&
        it->second.what == pinned_prompt::state::prefilling) {
      it->second.what = pinned_prompt::state::failed;
      it->second.problem = "its prefill ended without computing it: " + message;
    }
  } else {
    events.push_back(finished_event(s, reason, error, std::move(message)));
  }
  notify(id, life_stage::finished, 0, 0, reason, error);
  seqs_.erase(id);
  return events;
}

seq_event scheduler_core::finished_event(const sequence& s, finish_reason reason, error_code error,
                                         std::string message) const {
  seq_event e;
  e.what = seq_event::kind::finished;
  e.id = s.params.id;
  e.reason = reason;
  e.error = error;
  e.message = std::move(message);
  e.usage.prompt_tokens = int32_t(s.params.prompt->size());
  e.usage.cached_tokens = std::max(s.cached_tokens, 0);
  e.usage.completion_tokens = int32_t(s.generated.size());
  e.first_scheduled = s.first_scheduled;
  return e;
}

void scheduler_core::append_tokens(const sequence& s, int32_t from, int32_t to,
                                   std::vector<int32_t>& out) const {
  const auto& prompt = *s.params.prompt;
  const int32_t prompt_size = int32_t(prompt.size());
  out.reserve(out.size() + size_t(to - from));
  if (from < prompt_size)
    out.insert(out.end(), prompt.begin() + from, prompt.begin() + std::min(to, prompt_size));
  if (to > prompt_size)
    out.insert(out.end(), s.generated.begin() + (std::max(from, prompt_size) - prompt_size),
               s.generated.begin() + (to - prompt_size));
}

token_list scheduler_core::all_tokens(const sequence& s) const {
  if (s.generated.empty()) return s.params.prompt;
  auto tokens = std::make_shared<std::vector<int32_t>>();
  append_tokens(s, 0, s.num_tokens(), *tokens);
  return tokens;
}

void scheduler_core::notify(seq_id id, life_stage stage, int32_t start_pos, int32_t num_tokens,
                            finish_reason reason, error_code error) const {
  if (observer_ && id < first_warm_up_id)
    observer_(life_event{id, stage, start_pos, num_tokens, reason, error, clock::now()});
}

// Whether the plan after this request might need more pages than are free,
// and so preempt, which needs every sequence's exclusive pages. A step needs
// at most a page per sequence plus the pages of its tokens, plus a page per
// sequence for a chunk that starts inside a page.
bool scheduler_core::pages_may_run_short(const kv_step_request& request) const {
  const step_budget& b = options_.budget;
  int64_t taken = 0; // by this request: fresh pages and, at most, every hit
  for (const kv_scheduled& e : request.scheduled) taken += e.num_new_pages + e.num_hit_pages;
  const int64_t next_step_need = 2 * int64_t(b.max_seqs) + pages_for(b.max_batch_tokens);
  return int64_t(free_pages_) - taken < next_step_need;
}

int32_t scheduler_core::pages_for(int64_t num_tokens) const {
  const int64_t p = options_.budget.page_size;
  return int32_t((num_tokens + p - 1) / p);
}

// The most pages a sequence of `num_tokens` holds at once. Behind a sliding
// window a step computing n tokens from position s holds the pages of
// positions [s - window + 1, s + n): at most pages_for(window - 1 + n) + 1.
int32_t scheduler_core::most_pages_held(int64_t num_tokens) const {
  const int32_t window = options_.sliding_window;
  if (window <= 0) return pages_for(num_tokens);
  const step_budget& b = options_.budget;
  const int64_t step_tokens = b.prefill_chunk > 0 ? std::min(b.prefill_chunk, b.max_batch_tokens) : b.max_batch_tokens;
  return std::min(pages_for(num_tokens), pages_for(window - 1 + step_tokens) + 1);
}

} // namespace kvactor
