#pragma once
// Every message the engine's actors exchange: the type-ID block, the atoms,
// the message structs and the typed actor interfaces.
//
// Messages that leave the engine (what a client's sink receives, stats) are
// plain inspectable structs. Messages between the engine's own actors carry
// big payloads as std::shared_ptr<const T>: they never leave the process, so
// they are allowed as unsafe (not serializable) message types.
//
// NOTE: CAF 0.17 needs no registration for messages that stay in one
// process; cfg.add_message_types<caf::id_block::kvactor>() only adds the
// public types' names (for printing, or for a remote sink).
#include <caf/all.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/engine_config.h"
#include "runtime/engine_step.h"
#include "runtime/kv_step.h"
#include "runtime/request.h"
#include "runtime/scheduler_core.h"

namespace kvactor {

// -- public messages -------------------------------------------------------------

// Text produced since the previous delta and the tokens that produced it.
// Text may lag the tokens: an incomplete UTF-8 character or a possible start
// of a stop string is held back until it is settled.
struct token_delta {
  uint64_t request_id = 0;
  std::string text;
  std::vector<int32_t> token_ids;
};

// The last message a sink receives for a request.
struct generation_done {
  uint64_t request_id = 0;
  generate_result result;
};

struct engine_stats {
  int64_t running = 0; // sequences holding KV pages
  int64_t waiting = 0;
  int64_t steps = 0;
  int64_t forwarded_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t preemptions = 0;
  int64_t prefix_queried_tokens = 0;
  int64_t prefix_hit_tokens = 0;
  int64_t evictions = 0;
  int32_t pages_total = 0;
  int32_t pages_used = 0;
  int32_t pages_pinned = 0;
  int32_t system_prompts_pinned = 0;
  int64_t system_prompt_hits = 0;        // admissions that shared pinned pages...
  int64_t system_prompt_hit_tokens = 0;  // ...and the tokens of those pages
  int64_t window_released_pages = 0;     // pages let go behind a sliding window while running
  int64_t kv_cache_bytes = 0;            // the KV cache's elements (kv.memory_mb sizes these)...
  int64_t kv_scale_bytes = 0;            // ...and its fp8/int8 scales, on top
};

// The answer to reload_atom: what changed, or why nothing did.
struct system_prompts_reloaded {
  bool applied = false;              // false: refused, nothing changed (see error)
  std::vector<std::string> added;    // prefilled and pinned now
  std::vector<std::string> removed;  // unpinned
  std::vector<std::string> kept;     // unchanged
  // "name: why" for added prompts that could not be pinned; requests naming
  // them still work, computing the prompt each time.
  std::vector<std::string> failed;
  std::string error;                 // why it was refused
  int32_t pinned_pages = 0;          // after the change
};

// -- internal messages -------------------------------------------------------------

using kv_request_ptr = std::shared_ptr<const kv_step_request>;
using kv_reply_ptr = std::shared_ptr<const kv_step_reply>;
using step_ptr = std::shared_ptr<const engine_step>;

// An executor's answer: the sampled tokens, or why the step failed.
struct step_result {
  uint64_t step_id = 0;
  std::vector<int32_t> tokens;
  std::string error; // empty on success
};

} // namespace kvactor

CAF_BEGIN_TYPE_ID_BLOCK(kvactor, caf::first_custom_type_id)

  CAF_ADD_TYPE_ID(kvactor, (kvactor::generate_request))
  CAF_ADD_TYPE_ID(kvactor, (kvactor::generate_result))
  CAF_ADD_TYPE_ID(kvactor, (kvactor::token_delta))
  CAF_ADD_TYPE_ID(kvactor, (kvactor::generation_done))
  CAF_ADD_TYPE_ID(kvactor, (kvactor::engine_stats))
  CAF_ADD_TYPE_ID(kvactor, (kvactor::step_result))
  CAF_ADD_TYPE_ID(kvactor, (kvactor::system_prompt_config))
  CAF_ADD_TYPE_ID(kvactor, (kvactor::system_prompts_reloaded))

  CAF_ADD_ATOM(kvactor, kvactor, generate_atom, "generate")
  CAF_ADD_ATOM(kvactor, kvactor, cancel_atom, "cancel")
  CAF_ADD_ATOM(kvactor, kvactor, stats_atom, "stats")
  CAF_ADD_ATOM(kvactor, kvactor, add_atom, "add")
  CAF_ADD_ATOM(kvactor, kvactor, finish_atom, "finish")
  CAF_ADD_ATOM(kvactor, kvactor, token_atom, "token")
  CAF_ADD_ATOM(kvactor, kvactor, tokenize_atom, "tokenize")
  CAF_ADD_ATOM(kvactor, kvactor, reload_atom, "reload")

CAF_END_TYPE_ID_BLOCK(kvactor)

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvactor::kv_request_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvactor::kv_reply_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvactor::step_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvactor::seq_params)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvactor::seq_event)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<kvactor::system_prompt>)

namespace kvactor {

// -- inspection ----------------------------------------------------------------------

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sampling_params& x) {
  return f(caf::meta::type_name("sampling_params"), x.temperature, x.top_p, x.top_k, x.min_p,
           x.repetition_penalty, x.seed);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, generate_request& x) {
  return f(caf::meta::type_name("generate_request"), x.prompt, x.prompt_tokens, x.system, x.sampling,
           x.max_tokens, x.stop, x.ignore_eos, x.priority);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, usage_counts& x) {
  return f(caf::meta::type_name("usage_counts"), x.prompt_tokens, x.cached_tokens, x.completion_tokens);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, request_timings& x) {
  return f(caf::meta::type_name("request_timings"), x.queue_ms, x.ttft_ms, x.per_token_ms, x.total_ms);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, generate_result& x) {
  return f(caf::meta::type_name("generate_result"), x.reason, x.error, x.message, x.usage, x.timings);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_delta& x) {
  return f(caf::meta::type_name("token_delta"), x.request_id, x.text, x.token_ids);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, generation_done& x) {
  return f(caf::meta::type_name("generation_done"), x.request_id, x.result);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, engine_stats& x) {
  return f(caf::meta::type_name("engine_stats"), x.running, x.waiting, x.steps, x.forwarded_tokens,
           x.generated_tokens, x.preemptions, x.prefix_queried_tokens, x.prefix_hit_tokens, x.evictions,
           x.pages_total, x.pages_used, x.pages_pinned, x.system_prompts_pinned, x.system_prompt_hits,
           x.system_prompt_hit_tokens, x.window_released_pages, x.kv_cache_bytes, x.kv_scale_bytes);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, system_prompt_config& x) {
  return f(caf::meta::type_name("system_prompt_config"), x.name, x.text);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, system_prompts_reloaded& x) {
  return f(caf::meta::type_name("system_prompts_reloaded"), x.applied, x.added, x.removed, x.kept, x.failed,
           x.error, x.pinned_pages);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_result& x) {
  return f(caf::meta::type_name("step_result"), x.step_id, x.tokens, x.error);
}

// -- actor interfaces ------------------------------------------------------------------

// What a client gives the engine to receive a request's output.
using generation_sink = caf::typed_actor<caf::reacts_to<token_delta>, caf::reacts_to<generation_done>>;

// The engine's door (the intake actor): generate answers the request id at
// once; the output goes to the sink. reload makes a new list the configured
// system prompts (added ones prefilled and pinned, removed ones unpinned)
// and answers once every added prompt is pinned, or at once when refused;
// one reload at a time, later ones wait their turn.
using engine_actor = caf::typed_actor<
  caf::replies_to<generate_atom, generate_request, generation_sink>::with<uint64_t>,
  caf::reacts_to<cancel_atom, uint64_t>,
  caf::replies_to<stats_atom>::with<engine_stats>,
  caf::replies_to<reload_atom, std::vector<system_prompt_config>>::with<system_prompts_reloaded>>;

// One per request: turns tokens into text for the sink.
using output_actor = caf::typed_actor<caf::reacts_to<token_atom, int32_t>, caf::reacts_to<seq_event>>;

using scheduler_actor = caf::typed_actor<
  caf::reacts_to<add_atom, seq_params, output_actor>,
  caf::reacts_to<cancel_atom, uint64_t>,
  caf::reacts_to<finish_atom, uint64_t>, // a stop string ended it
  caf::replies_to<stats_atom>::with<engine_stats>,
  caf::replies_to<reload_atom, std::vector<system_prompt>>::with<system_prompts_reloaded>>;

using kv_cache_actor = caf::typed_actor<caf::replies_to<kv_request_ptr>::with<kv_reply_ptr>>;

using executor_actor = caf::typed_actor<caf::replies_to<step_ptr>::with<step_result>>;

using tokenizer_actor =
  caf::typed_actor<caf::replies_to<tokenize_atom, std::string, bool>::with<std::vector<int32_t>>>;

} // namespace kvactor
