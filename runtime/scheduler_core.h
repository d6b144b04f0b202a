#pragma once
// The engine's scheduling loop as a plain object: it owns the sequences and
// their queues and runs the step_planner; it knows pages only through the KV
// cache's replies (kv_step.h). One engine step is four calls:
//
//   next_kv_request()  plan a step; what the KV cache must apply for it
//   on_kv_reply()      the cache's answer; gives the step to run
//   (an executor runs the step: forward + sampling)
//   on_step_done()     the sampled tokens; gives the token/finish events
//
// A sequence is admitted only once a probe of the prefix cache for it has
// come back in the latest reply, so the planner knows its prefix hits.
//
// Several steps may be in flight (one per executor): a sequence in a step
// that has not completed is skipped when planning, so steps in flight cover
// disjoint groups. With N executors a step takes at most 1/N of the active
// sequences, leaving the rest for the next one.
//
// Preemption by recompute: a preempted sequence keeps its generated tokens
// and waits again with nothing computed; it recomputes prompt + output
// (mostly from the prefix cache) and continues with the same output, since
// sampling is keyed by (seed, token index).
//
// Sliding window: when every layer slides (options.sliding_window), each
// completed step trims the leading pages no future token of the sequence
// sees (sliding_window.h), so a sequence holds at most the pages of its
// window plus one step's tokens.
//
// Pinned system prompts: set_system_prompts() prefills each new prompt with
// an internal warm-up sequence (id >= first_warm_up_id; no events, no
// lifecycle notifications) and pins its pages once computed; prompts gone or
// changed are unpinned.
//
// Single-threaded. Not an actor: the scheduler actor translates messages into
// these calls.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/engine_step.h"
#include "runtime/kv_step.h"
#include "runtime/request.h"
#include "runtime/request_lifecycle.h"
#include "runtime/sampler.h"
#include "runtime/step_planner.h"

namespace kvactor {

// Ids of the internal sequences that prefill system prompts; request ids
// stay below.
inline constexpr seq_id first_warm_up_id = seq_id{1} << 62;

// A request as the scheduler sees it: tokens, limits and sampling.
struct seq_params {
  seq_id id = 0;
  token_list prompt;              // system prompt tokens first, when there is one
  sampling_params sampling;
  int32_t max_tokens = 256;
  int32_t max_total_tokens = 0;   // prompt + output (the context length); 0 = no cap
  std::vector<int32_t> stop_token_ids;
  int32_t priority = 0;           // higher is scheduled first
  uint64_t ns = 0;                // prefix-cache namespace
  std::string system;             // system prompt name, "" for none...
  int32_t system_tokens = 0;      // ...and how many leading prompt tokens it is
  bool warm_up = false;           // internal: prefills the system prompt to pin it
};

// A configured system prompt, tokenized as a request naming it starts.
struct system_prompt {
  std::string name;
  token_list tokens;
};

// What set_system_prompts() did.
struct system_prompt_change {
  std::string refused;              // non-empty: nothing changed, and why
  std::vector<std::string> added;   // queued for prefill and pinning
  std::vector<std::string> removed; // unpinned
  std::vector<std::string> kept;    // same name and tokens as before
};

// What the scheduler tells the request's output side.
struct seq_event {
  enum class kind : uint8_t { token, finished };
  kind what = kind::token;
  seq_id id = 0;
  int32_t token = 0;               // token
  finish_reason reason = finish_reason::stop; // finished...
  error_code error = error_code::none;
  std::string message;
  usage_counts usage;
  std::chrono::steady_clock::time_point first_scheduled; // epoch: never scheduled
};

struct scheduler_options {
  step_budget budget;
  int32_t num_pages = 0;        // the KV pool, to refuse requests that can never fit
  int32_t watermark = 0;
  int32_t max_queued = 1024;    // waiting sequences before add() answers `overloaded`
  int32_t max_steps_in_flight = 1;
  bool prefix_cache = true;
  int32_t max_probes = 64;      // waiting sequences probed per step, in service order
  double max_pinned_fraction = 0.5; // of num_pages, for pinned system prompts
  int32_t sliding_window = 0;   // reclaimable_window(); 0 = no pages released early
};

struct scheduler_counters {
  int64_t steps = 0;
  int64_t forwarded_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t preemptions = 0;
};

// The step to run and what the reply settled (sequences whose admission
// was refused and that were meanwhile cancelled).
struct started_step {
  engine_step step;
  std::vector<seq_event> events;
};

class scheduler_core {
 public:
  // Throws kvactor::error for an invalid budget (see step_planner).
  explicit scheduler_core(const scheduler_options& options, lifecycle_observer observer = {});

  // -- requests -------------------------------------------------------------------

  // Queues a sequence; refuses it at once (a finished event) when it has no
  // tokens, the queue is full, or it could never fit the KV pool.
  std::vector<seq_event> add(seq_params params);
  // Ends a sequence (cancelled, or stopped by a stop string downstream). One
  // in a step in flight ends when the step completes. Unknown ids: nothing.
  std::vector<seq_event> cancel(seq_id id);
  std::vector<seq_event> finish(seq_id id, finish_reason reason);

  // -- steps ----------------------------------------------------------------------

  // What the KV cache must apply next: pending releases, inserts and pins,
  // a new step's plan when `plan_step` and a step slot is free, and probes.
  // Nothing when there is nothing to do.
  // note: call only when no request is outstanding (kv_pending() false).
  std::optional<kv_step_request> next_kv_request(bool plan_step = true);
  // `recycled`: a step that has run, whose buffers the new one reuses (a
  // step is hundreds of small vectors; reusing them spares the allocator).
  started_step on_kv_reply(const kv_step_reply& reply, engine_step recycled = {});
  // `tokens`: one per row of the step. Throws kvactor::error for an unknown
  // step or a wrong count.
  std::vector<seq_event> on_step_done(uint64_t step_id, std::span<const int32_t> tokens);
  // The executor could not run the step: its sequences end with `internal`.
  std::vector<seq_event> on_step_failed(uint64_t step_id, const std::string& message);

  // -- pinned system prompts --------------------------------------------------------

  // Makes `prompts` the pinned system prompts of namespace `ns`: those gone
  // or whose tokens changed are unpinned, new ones are queued for prefill
  // and pinned once computed. Refuses, changing nothing: while an earlier
  // change is still prefilling, for a repeated name or an empty prompt, or
  // when the prompts' whole pages exceed max_pinned_fraction of the pool.
  // With the prefix cache off nothing is pinned (or prefilled).
  system_prompt_change set_system_prompts(const std::vector<system_prompt>& prompts, uint64_t ns);
  // Whether every prompt of the latest change is pinned or has failed.
  bool system_prompts_settled() const;
  // "name: why" for each prompt that could not be prefilled or pinned.
  std::vector<std::string> system_prompt_failures() const;

  // -- state ----------------------------------------------------------------------

  bool kv_pending() const { return kv_pending_; }
  int32_t steps_in_flight() const { return int32_t(steps_.size()); }
  size_t num_sequences() const { return seqs_.size(); }
  size_t num_waiting() const { return waiting_.size(); }
  size_t num_running() const { return seqs_.size() - waiting_.size(); }
  const kv_counters& kv() const { return kv_; }
  int32_t free_pages() const { return free_pages_; }
  const scheduler_counters& counters() const { return counters_; }

 private:
  struct sequence {
    seq_params params;
    std::vector<int32_t> generated;
    token_list admit_tokens;    // the prompt, or prompt + output once preempted
    uint64_t arrival = 0;
    bool running = false;       // holds pages
    bool decoding = false;      // its prompt (or recompute) is done
    int32_t num_computed = 0;
    std::vector<page_id> pages; // its page table, as of the latest reply
    int32_t num_exclusive_pages = 0;
    int32_t kv_known = 0;       // tokens the KV cache holds for it
    int32_t inserted_pages = 0; // whole pages sent for insertion
    int32_t released_pages = 0; // leading pages let go behind the sliding window
    uint64_t step = 0;          // step in flight, 0 = none
    std::optional<cached_prefix> probe;
    uint64_t probe_epoch = 0;   // the reply the probe came in
    int32_t cached_tokens = -1; // first admission's hits
    std::optional<std::pair<finish_reason, error_code>> pending_finish;
    std::chrono::steady_clock::time_point first_scheduled;

    int32_t num_tokens() const { return int32_t(params.prompt->size() + generated.size()); }
  };

  // One sequence of a step: what it computes.
  struct step_entry {
    seq_id id = 0;
    int32_t start_pos = 0;
    int32_t num_new_tokens = 0;
    bool want_logits = false;
  };

  using waiting_key = std::pair<int64_t, uint64_t>; // (-priority, arrival): service order

  void plan(kv_step_request& request);
  void admit(sequence& s, const scheduled_seq& entry, kv_step_request& request);
  void requeue(sequence& s);
  void queue_insert(sequence& s);
  void queue_pin(const sequence& s);
  void queue_trim(sequence& s);
  std::vector<seq_event> end(seq_id id, finish_reason reason, error_code error, std::string message,
                             bool cache_pages = true);
  seq_event finished_event(const sequence& s, finish_reason reason, error_code error,
                           std::string message) const;
  void append_tokens(const sequence& s, int32_t from, int32_t to, std::vector<int32_t>& out) const;
  token_list all_tokens(const sequence& s) const;
  void notify(seq_id id, life_stage stage, int32_t start_pos = 0, int32_t num_tokens = 0,
              finish_reason reason = finish_reason::stop, error_code error = error_code::none) const;
  int32_t pages_for(int64_t num_tokens) const;
  int32_t most_pages_held(int64_t num_tokens) const;
  bool pages_may_run_short(const kv_step_request& request) const;
  static waiting_key key_of(const sequence& s) { return {-int64_t(s.params.priority), s.arrival}; }

  scheduler_options options_;
  lifecycle_observer observer_;
  std::unordered_map<seq_id, sequence> seqs_;
  std::map<waiting_key, seq_id> waiting_;
  std::unordered_map<uint64_t, std::vector<step_entry>> steps_; // in flight, by id
  uint64_t next_arrival_ = 0;
  uint64_t next_step_id_ = 1;

  // The KV cache's side, as of its latest reply.
  bool kv_pending_ = false;
  uint64_t pending_step_ = 0; // planned in the outstanding request; 0 = none
  uint64_t reply_epoch_ = 0;
  int32_t free_pages_ = 0;
  int32_t watermark_ = 0;
  kv_counters kv_;

  // Queued for the next request.
  std::vector<kv_insert> inserts_;
  std::vector<std::string> unpins_;
  std::vector<kv_pin> pins_;
  std::vector<kv_trim> trims_;
  std::vector<seq_id> releases_;

  // The configured system prompts, by name.
  struct pinned_prompt {
    enum class state : uint8_t { prefilling, pinned, unpinnable, failed };
    token_list tokens;
    uint64_t ns = 0;
    state what = state::prefilling;
    seq_id warm_up = 0;
    bool pin_requested = false;
    std::string problem; // failed: why
  };
  std::map<std::string, pinned_prompt> system_prompts_;
  seq_id next_warm_up_id_ = first_warm_up_id;

  scheduler_counters counters_;
};

} // namespace kvactor
