#pragma once
// Everything the engine is started with, whatever the front end (daemon TOML,
// command line, an embedding application). Plain data; defaults are the
// daemon's defaults.
#include <cstdint>
#include <string>
#include <vector>

namespace kvactor {

struct system_prompt_config {
  std::string name;
  std::string text;

  bool operator==(const system_prompt_config&) const = default;
};

struct engine_config {
  // -- model ---------------------------------------------------------------
  std::string model_dir;       // "" = the embedded default model
  bool dummy_weights = false;  // random weights from config.json alone
  uint64_t dummy_seed = 0;

  // -- scheduler -----------------------------------------------------------
  int32_t max_batch_tokens = 2048; // tokens forwarded per step, all sequences together
  int32_t max_seqs = 256;          // sequences per step
  int32_t prefill_chunk = 512;     // most prompt tokens of one sequence per step; 0 = unlimited
  int32_t max_queued = 1024;       // waiting requests before new ones get `overloaded`
  int32_t max_context = 0;         // prompt + output tokens; 0 = the model's max_position_embeddings

  // -- kv cache ------------------------------------------------------------
  int32_t page_size = 16;
  int32_t num_pages = 0;           // 0 = size from kv_memory_mb (CPU) or gpu_memory_fraction (GPU)
  int64_t kv_memory_mb = 256;      // CPU backend's budget for KV elements (fp8/int8 scales on top)
  int32_t watermark_pages = 0;     // kept free for running decodes
  // KV element format (kv_quant.h): "auto" (f32 on the CPU, bf16 on a
  // device), "f32", "bf16", "fp8" or "int8".
  std::string kv_dtype = "auto";
  // Release the pages behind a sliding window while sequences run, when
  // every layer slides (docs/kv_cache.md).
  bool window_release = true;

  // -- prefix cache ----------------------------------------------------------
  bool prefix_cache = true;
  double max_pinned_fraction = 0.5; // of all pages, for pinned system prompts
  std::vector<system_prompt_config> system_prompts;

  // -- backend ---------------------------------------------------------------
  std::string device = "cpu";      // "cpu" or "cuda"
  int32_t streams = 1;             // executors (one per stream); 1 is the faster on one H100 (docs/performance.md)
  double gpu_memory_fraction = 0.9;
  int32_t cpu_threads = 0;         // CPU backend threads; 0 = hardware concurrency
  int32_t tokenizer_workers = 2;

  bool operator==(const engine_config&) const = default;
};

} // namespace kvactor
