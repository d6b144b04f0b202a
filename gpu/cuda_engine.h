#pragma once
// The CUDA backend in the actor engine (kvactor/engine.h): what
// engine_config.device = "cuda" runs on. One cuda_model (weights and the KV
// pool) on the current GPU, shared by one cuda_executor per stream.
//
//   kvactor::engine_hooks hooks;
//   hooks.make_backend = kvactor::cuda_backend_factory();
//   auto engine = kvactor::spawn_engine(sys, config, hooks); // config.device = "cuda"
#include <functional>
#include <string>

#include "gpu/cuda_executor.h"
#include "kvactor/engine.h"

namespace kvactor {

// Receives what the factory made, one line at a time (device, weights,
// executors, KV cache).
using cuda_log = std::function<void(const std::string& line)>;

// The executor options an engine configuration implies: activations for
// max_batch_tokens, decode graphs for up to max_seqs sequences (256 at most).
cuda_executor_options cuda_options_for(const engine_config& config);

// The backend factory of device "cuda". The weights come from the model
// directory (converted to bf16 on upload) or, with config.dummy_weights,
// are drawn on the device from config.dummy_seed (no host copy). The
// returned backend holds the first executor; make_stream() gives the others
// (config.streams in all). The KV cache stores engine_kv_format(config)
// (auto and bf16: bf16; fp8; int8) with config.num_pages pages, or when that
// is 0 as many as fit in config.gpu_memory_fraction of the device's memory
// once the weights, the executors (config.streams of them) and their decode
// graphs are counted (8-bit scales on top, as kv_pages_for_budget counts);
// the first executor's graphs are captured before it is handed out. Throws
// kvactor::error for kv_dtype f32, for no GPU, and for too little memory.
backend_factory cuda_backend_factory(cuda_log log = {});

} // namespace kvactor
