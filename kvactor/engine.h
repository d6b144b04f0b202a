#pragma once
// Embedding kvactor: spawn an engine in your own CAF actor system and talk to
// it with messages.
//
//   caf::actor_system sys{cfg};
//   kvactor::engine_config ec;                 // defaults: the embedded model
//   auto engine = kvactor::spawn_engine(sys, ec);
//   auto sink = sys.spawn(my_sink);            // a kvactor::generation_sink
//   self->request(engine, caf::infinite, kvactor::generate_atom_v, request, sink)
//     .receive([](uint64_t id) { ... }, ...);  // the request id, at once
//   // the sink receives token_delta messages, then one generation_done
//   caf::anon_send(engine, kvactor::cancel_atom_v, id);
//   caf::anon_send_exit(engine, caf::exit_reason::user_shutdown); // stops every part
//
// Messages stay in the process, so nothing needs registering; see
// actors/messages.h for the message types and the type-ID block.
#include <caf/all.hpp>

#include <cstdint>
#include <functional>
#include <memory>

#include "actors/messages.h"
#include "runtime/backend.h"
#include "runtime/engine_config.h"
#include "runtime/kv_quant.h"
#include "runtime/model_loader.h"
#include "runtime/request_lifecycle.h"

namespace kvactor {

// Makes the backend of the device: every executor (stream) shares its KV
// memory, each on a stream of its own where backend::make_stream() gives
// one. `num_pages` is what the configuration asks for (config.num_pages,
// else what kv_memory_mb holds); a device backend may size its cache itself.
// The engine uses layout().num_pages pages of config.page_size tokens. For
// config.device "cpu" `model` holds the weights as fp32; for another device
// only its config, and its `dir` (empty with config.dummy_weights): the
// factory reads or draws the weights itself.
using backend_factory =
  std::function<std::shared_ptr<backend>(const loaded_model& model, int32_t num_pages, const engine_config& config)>;

// The KV cache's element format that `config.kv_dtype` asks of a backend:
// "auto" is f32 on the CPU (its exact reference) and bf16 on a device. A
// backend factory must honour it or throw. Throws kvactor::error for an
// unknown value.
kv_format engine_kv_format(const engine_config& config);

// The reference CPU backend (the default), storing engine_kv_format().
backend_factory cpu_backend_factory();
// A backend that returns fixed logits at once (null_backend.h), for measuring
// the engine's own overhead. `vocab_size` 0 keeps the model's.
backend_factory null_backend_factory(int32_t vocab_size = 0);

struct engine_hooks {
  backend_factory make_backend;  // empty: cpu_backend_factory()
  lifecycle_observer observer;   // every request transition; called from engine threads
};

// Loads the model and tokenizer, sizes the KV cache, spawns the engine's
// actors and prefills and pins the configured system prompts, blocking until
// they are (so call it from outside the actor system's scheduler threads).
// Throws kvactor::error (load_error naming the file) for a bad model
// directory or configuration, and for a system prompt that cannot be pinned
// (over prefix_cache.max_pinned_fraction, longer than the context).
engine_actor spawn_engine(caf::actor_system& sys, const engine_config& config, engine_hooks hooks = {});

} // namespace kvactor
