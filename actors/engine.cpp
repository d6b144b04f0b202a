#include "kvactor/engine.h"

#include <algorithm>
#include <string>

#include "actors/executor_actor.h"
#include "actors/intake_actor.h"
#include "actors/kv_cache_actor.h"
#include "actors/scheduler_actor.h"
#include "actors/tokenizer_actor.h"
#include "runtime/cpu_backend.h"
#include "runtime/default_model.h"
#include "runtime/error.h"
#include "runtime/kv_layout.h"
#include "runtime/kv_quant.h"
#include "runtime/null_backend.h"
#include "runtime/sliding_window.h"

namespace kvactor {

namespace {

void check_config(const engine_config& c, bool custom_backend) {
  auto require = [](bool ok, const std::string& what) {
    if (!ok) throw error("engine_config: " + what);
  };
  require(c.page_size > 0, "page_size must be positive");
  require(c.max_batch_tokens > 0, "max_batch_tokens must be positive");
  require(c.max_seqs > 0, "max_seqs must be positive");
  require(c.prefill_chunk >= 0, "prefill_chunk must not be negative");
  require(c.max_queued > 0, "max_queued must be positive");
  require(c.num_pages >= 0 && c.kv_memory_mb > 0, "num_pages must not be negative and kv_memory_mb positive");
  require(c.watermark_pages >= 0, "watermark_pages must not be negative");
  require(c.max_pinned_fraction >= 0 && c.max_pinned_fraction <= 1, "max_pinned_fraction must be in [0, 1]");
  require(c.streams > 0, "streams must be positive");
  require(c.tokenizer_workers > 0, "tokenizer_workers must be positive");
  require(c.kv_dtype == "auto" || parse_kv_format(c.kv_dtype).has_value(),
          "kv_dtype \"" + c.kv_dtype + "\" is not one of auto, f32, bf16, fp8, int8");
  require(custom_backend || c.device == "cpu",
          "device \"" + c.device + "\" needs a backend factory; this build runs on \"cpu\"");
}

// Pages whose K/V elements fit the CPU budget; fp8/int8 scales come on top.
int32_t pages_for_budget(const engine_config& c, const model_config& m, kv_format format) {
  const kv_layout shape{m.num_layers, 0, c.page_size, m.num_kv_heads, m.head_dim};
  const int64_t pages = kv_pages_for_budget(size_t(c.kv_memory_mb) * 1024 * 1024, shape, format);
  if (pages == 0)
    throw error("engine_config: kv_memory_mb " + std::to_string(c.kv_memory_mb) + " holds no KV page of " +
                std::to_string(kv_page_element_bytes(shape, format)) + " bytes");
  return int32_t(std::min<int64_t>(pages, INT32_MAX));
}

} // namespace

kv_format engine_kv_format(const engine_config& c) {
  if (c.kv_dtype == "auto") return c.device == "cpu" ? kv_format::f32 : kv_format::bf16;
  if (auto f = parse_kv_format(c.kv_dtype)) return *f;
  throw error("engine_config: kv_dtype \"" + c.kv_dtype + "\" is not one of auto, f32, bf16, fp8, int8");
}

backend_factory cpu_backend_factory() {
  return [](const loaded_model& m, int32_t num_pages, const engine_config& c) -> std::shared_ptr<backend> {
    return std::make_shared<cpu_backend>(m.config, m.weights, num_pages, c.page_size, c.cpu_threads,
                                         engine_kv_format(c));
  };
}

backend_factory null_backend_factory(int32_t vocab_size) {
  return [vocab_size](const loaded_model& m, int32_t num_pages, const engine_config& c) -> std::shared_ptr<backend> {
    model_config config = m.config;
    if (vocab_size > 0) config.vocab_size = vocab_size;
    return std::make_shared<null_backend>(config, num_pages, c.page_size);
  };
}

engine_actor spawn_engine(caf::actor_system& sys, const engine_config& c, engine_hooks hooks) {
  check_config(c, bool(hooks.make_backend));
  const std::string dir = c.model_dir.empty() ? default_model_dir() : c.model_dir;
  // A device backend reads (or draws) its weights itself: only the CPU ones
  // are loaded here, as fp32.
  loaded_model model;
  if (c.device != "cpu") {
    model.config = load_model_dir_config(dir);
    if (!c.dummy_weights) model.dir = dir;
  } else {
    model = c.dummy_weights ? make_dummy_model(load_model_dir_config(dir), c.dummy_seed) : load_model(dir);
  }
  auto tok = std::make_shared<const tokenizer>(tokenizer::from_file(dir + "/tokenizer.json"));

  // -- device ---------------------------------------------------------------------
  // The KV cache has as many pages as the backend made: a device backend may
  // size its cache from its own memory rather than from the CPU budget.
  auto device = std::make_shared<device_slot>();
  const kv_format format = engine_kv_format(c);
  const int32_t wanted_pages = c.num_pages > 0 ? c.num_pages : pages_for_budget(c, model.config, format);
  device->model = (hooks.make_backend ? hooks.make_backend : cpu_backend_factory())(model, wanted_pages, c);
  const kv_layout& layout = device->model->layout();
  const int32_t num_pages = layout.num_pages;
  if (layout.page_size != c.page_size || num_pages <= 0)
    throw error("backend: its KV cache has " + std::to_string(num_pages) + " pages of " +
                std::to_string(layout.page_size) + " tokens; the engine needs pages of " +
                std::to_string(c.page_size));
  if (c.watermark_pages > num_pages)
    throw error("engine_config: watermark_pages " + std::to_string(c.watermark_pages) + " exceeds the " +
                std::to_string(num_pages) + " KV pages");

  // -- requests -------------------------------------------------------------------
  intake_options io;
  io.limits.vocab_size = model.config.vocab_size;
  io.limits.max_context = c.max_context > 0 ? std::min(c.max_context, model.config.max_position_embeddings)
                                            : model.config.max_position_embeddings;
  io.eos_token_ids = model.config.eos_token_ids;

  // -- actors -----------------------------------------------------------------------
  // Pages behind a sliding window go back to the pool only if every layer
  // slides and the backend knows not to read released pages.
  const int32_t window =
      c.window_release && device->model->accepts_released_pages() ? reclaimable_window(model.config) : 0;
  kv_cache_options ko{num_pages, c.page_size, c.watermark_pages, c.prefix_cache, c.max_pinned_fraction, window};
  auto kv = sys.spawn(kv_cache, ko);
  // Each executor after the first gets a stream of its own where the
  // backend has streams; otherwise all take turns on the one backend.
  std::vector<executor_actor> executors;
  for (int32_t i = 0; i < c.streams; ++i) {
    std::shared_ptr<device_slot> slot = device;
    if (i > 0) {
      if (auto stream = device->model->make_stream()) {
        slot = std::make_shared<device_slot>();
        slot->model = std::move(stream);
      }
    }
    executors.push_back(sys.spawn<caf::detached>(executor, std::move(slot)));
  }
  scheduler_options so;
  so.budget = step_budget{c.page_size, c.max_batch_tokens, c.max_seqs, c.prefill_chunk};
  so.num_pages = num_pages;
  so.watermark = c.watermark_pages;
  so.max_queued = c.max_queued;
  so.prefix_cache = c.prefix_cache;
  so.max_pinned_fraction = c.max_pinned_fraction;
  so.sliding_window = window;
  const scheduler_extras extras{io.prefix_namespace, int64_t(kv_element_bytes(layout, format)),
                                int64_t(kv_scale_bytes(layout, format))};
  auto sched = sys.spawn(scheduler, so, kv, executors, hooks.observer, extras);
  std::vector<tokenizer_actor> workers;
  for (int32_t i = 0; i < c.tokenizer_workers; ++i) workers.push_back(sys.spawn(tokenizer_worker, tok));
  auto engine = sys.spawn(intake, std::move(io), sched, std::move(workers), tok, std::move(hooks.observer));

  // -- system prompts -----------------------------------------------------------------
  // Prefilled and pinned before the engine is handed out.
  if (!c.system_prompts.empty()) {
    caf::scoped_actor self{sys};
    std::string problem;
    self->request(engine, caf::infinite, reload_atom_v, c.system_prompts)
      .receive(
        [&](const system_prompts_reloaded& r) {
          if (!r.applied) problem = r.error;
          else if (!r.failed.empty()) problem = "system prompt " + r.failed.front();
        },
        [&](caf::error& err) { problem = "the engine stopped while prefilling system prompts: " + sys.render(err); });
    if (!problem.empty()) {
      caf::anon_send_exit(engine, caf::exit_reason::user_shutdown);
      throw error("engine_config: " + problem);
    }
  }
  return engine;
}

} // namespace kvactor
