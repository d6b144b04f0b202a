#pragma once
// One stream's forward passes over a shared cuda_model: the per-stream state
// (activations, cuBLASLt handle and workspace, step metadata in pinned and
// device memory, captured CUDA graphs). Several executors on several
// streams may share one model; each is used by one thread at a time.
//
// A step: the batch is flattened into one metadata buffer (gpu/batch_plan.h),
// copied to the device in one transfer, then every layer runs; the
// projections are GEMVs for up to gpu::gemv_max_rows tokens and cuBLASLt
// GEMMs above; the residual stream, norms, RoPE and softmax are fp32.
// Attention: decode steps use the split-KV decode kernel; other steps the
// tensor-core kernel where the head size allows, else the general one.
//
// Decode steps (one new token per sequence, at most max_decode_batch
// sequences) are padded to a bucket of 1, 2, 4, ... rows. With use_graphs the
// first step of a bucket runs its launches and captures them; later steps of
// that bucket replay the graph after the one metadata copy.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "gpu/cuda_model.h"
#include "runtime/forward_batch.h"
#include "runtime/sampler.h"

namespace kvactor {

struct cuda_executor_options {
  int32_t max_decode_batch = 256; // larger decode steps run as general steps
  bool use_graphs = true;
  int32_t max_batch_tokens = 2048; // activations allocated up front; larger steps grow them
  // Time cuBLASLt's first candidates at each GEMM shape's first run and keep
  // the fastest (gpu/gemm.h). Off, two executors compute the same bits.
  bool tune_gemms = false;
};

class cuda_executor {
 public:
  // Works on `stream`, which must not be the legacy default stream (no graph
  // can be captured there); a null stream: a stream of its own. The model's
  // device must be current.
  explicit cuda_executor(std::shared_ptr<cuda_model> model, cudaStream_t stream = nullptr,
                         cuda_executor_options options = {});
  ~cuda_executor();
  cuda_executor(const cuda_executor&) = delete;
  cuda_executor& operator=(const cuda_executor&) = delete;

  const cuda_model& model() const;
  cudaStream_t stream() const;

  // backend::forward: `logits` becomes [batch.num_logits(), vocab]. Returns
  // once the logits are on the host. Throws kvactor::error on invalid input.
  void forward(const forward_batch& batch, std::vector<float>& logits);

  // One token per sequence that wants logits, in order, chosen on the device
  // as sample_token (runtime/sampler.h) chooses from forward()'s logits with
  // params[i], histories[i] (none when `histories` is empty) and
  // counters[i]; only the tokens cross to the host, and the distinct tokens
  // of the histories of rows with a repetition penalty to the device.
  void forward_and_sample(const forward_batch& batch, std::span<const sampling_params> params,
                          std::span<const std::span<const int32_t>> histories, std::span<const uint64_t> counters,
                          std::vector<int32_t>& tokens);

  // Runs and captures the decode step of every bucket, sampling on the
  // device, so that serving never waits for a capture (and the graphs'
  // memory is taken before serving). Writes K/V at slot 0 of pages 0, 1,
  // ... (as many as the largest bucket, modulo the cache's pages).
  // note: call before the KV cache holds anything.
  void capture_decode_graphs();

  // Graphs captured so far: one per decode bucket and kind of output.
  size_t graphs_captured() const;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

} // namespace kvactor
