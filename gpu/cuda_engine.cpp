#include "gpu/cuda_engine.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "gpu/cuda_backend.h"
#include "gpu/cuda_check.h"
#include "gpu/device_weights.h"
#include "runtime/error.h"

namespace kvactor {

namespace {

// Most decode rows captured as graphs: larger decode steps run eagerly.
constexpr int32_t max_graph_rows = 256;
// Held back per executor for its captured graphs, beyond what constructing
// it took (measured: see docs/performance.md).
constexpr size_t graph_reserve_bytes = size_t(128) << 20;

size_t free_bytes() {
  size_t free = 0, total = 0;
  KVACTOR_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return free;
}

std::string gib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f GiB", bytes / double(size_t(1) << 30));
  return text;
}

std::string mib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.0f MiB", bytes / double(size_t(1) << 20));
  return text;
}

} // namespace

cuda_executor_options cuda_options_for(const engine_config& c) {
  cuda_executor_options o;
  o.max_batch_tokens = c.max_batch_tokens;
  o.max_decode_batch = std::min(c.max_seqs, max_graph_rows);
  return o;
}

backend_factory cuda_backend_factory(cuda_log log) {
  return [log](const loaded_model& m, int32_t, const engine_config& c) -> std::shared_ptr<backend> {
    const auto say = [&](const std::string& line) {
      if (log) log(line);
    };
    const kv_format format = engine_kv_format(c);
    if (format == kv_format::f32)
      throw error("cuda: kv.dtype \"f32\" is not available on the GPU, which stores bf16, fp8 or int8 KV");
    if (!(c.gpu_memory_fraction > 0 && c.gpu_memory_fraction <= 1))
      throw error("cuda: gpu.memory_fraction must be in (0, 1], got " + std::to_string(c.gpu_memory_fraction));
    if (!c.dummy_weights && m.dir.empty()) throw error("cuda: no model directory to read the weights from");

    int device = 0, count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) throw error("cuda: no CUDA device is visible");
    KVACTOR_CUDA_CHECK(cudaGetDevice(&device));
    KVACTOR_CUDA_CHECK(cudaFree(nullptr)); // makes the context, so that it counts as used
    cudaDeviceProp props{};
    KVACTOR_CUDA_CHECK(cudaGetDeviceProperties(&props, device));
    size_t free0 = 0, total = 0;
    KVACTOR_CUDA_CHECK(cudaMemGetInfo(&free0, &total));

    // -- weights, then one executor: what they take is measured ----------------------
    gpu::device_weights weights = c.dummy_weights
                                      ? gpu::random_weights(m.config, c.dummy_seed)
                                      : gpu::upload_weights(m.config, gpu::host_tensors(load_weight_views(m.dir, m.config)));
    auto model = std::make_shared<cuda_model>(m.config, std::move(weights), c.page_size, format);
    const size_t free1 = free_bytes();
    const cuda_executor_options options = cuda_options_for(c);
    auto first = std::make_shared<cuda_backend>(model, options);
    const size_t free2 = free_bytes();
    const size_t weight_bytes = free0 - std::min(free0, free1);
    const size_t executor_bytes = free1 - std::min(free1, free2) + (options.use_graphs ? graph_reserve_bytes : 0);
    say("cuda: " + std::string(props.name) + " (device " + std::to_string(device) + "), " + gib(double(total)) +
        ", " + gib(double(free0)) + " free; weights " + gib(double(weight_bytes)) +
        (c.dummy_weights ? " (random, seed " + std::to_string(c.dummy_seed) + ")" : " from " + m.dir) +
        "; " + std::to_string(c.streams) + " executor(s) of " + mib(double(executor_bytes)) + " each");

    // -- the KV cache: what is left of the budget -------------------------------------
    // NOTE: as on the CPU (kv_pages_for_budget), the budget counts elements
    // and the scales of fp8 / int8 come on top (0.2% / 3% of them), so an
    // 8-bit cache holds exactly twice the pages of a bf16 one.
    const size_t page_bytes = model->kv_page_bytes();
    int64_t pages = c.num_pages;
    if (pages <= 0) {
      const double budget = c.gpu_memory_fraction * double(total);
      const double used = double(total - free2) + double(c.streams - 1) * double(executor_bytes) +
                          (options.use_graphs ? double(graph_reserve_bytes) : 0.0);
      pages = kv_pages_for_budget(size_t(std::max(0.0, budget - used)), model->layout(), format);
      if (pages <= 0)
        throw error("cuda: gpu.memory_fraction " + std::to_string(c.gpu_memory_fraction) + " of " +
                    gib(double(total)) + " leaves no room for the KV cache: the weights take " +
                    gib(double(weight_bytes)) + ", " + std::to_string(c.streams) + " executor(s) " +
                    mib(double(executor_bytes)) + " each, and " + gib(double(total - free0)) +
                    " was in use before");
      pages = std::min<int64_t>(pages, INT32_MAX);
    }
    model->allocate_kv(int32_t(pages));
    if (options.use_graphs) first->executor().capture_decode_graphs();
    const size_t free3 = free_bytes();
    const double kv_bytes = double(pages) * double(page_bytes);
    const double scale_bytes = double(kv_scale_bytes(model->layout(), format));
    say("cuda: KV cache " + std::to_string(pages) + " pages of " + std::to_string(c.page_size) + " tokens (" +
        std::to_string(page_bytes) + " bytes each) = " + gib(kv_bytes) + " " + std::string(kv_format_name(format)) +
        (scale_bytes > 0 ? " (scales " + mib(scale_bytes) + ")" : "") + ", " +
        std::to_string(pages * c.page_size) + " tokens; " + std::to_string(first->executor().graphs_captured()) +
        " decode graphs captured, taking " + mib(std::max(0.0, double(free2) - double(free3) - kv_bytes)) +
        " with their metadata; " + gib(double(free3)) + " free");
    return first;
  };
}

} // namespace kvactor
