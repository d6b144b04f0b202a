#pragma once
// What the engine needs from a compute backend (CPU here, CUDA in gpu/).
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "runtime/forward_batch.h"
#include "runtime/kv_layout.h"
#include "runtime/model_config.h"
#include "runtime/sampler.h"

namespace kvactor {

class backend {
 public:
  virtual ~backend() = default;
  virtual const model_config& config() const = 0;
  virtual const kv_layout& layout() const = 0;
  // Runs one step. `logits` is resized to [batch.num_logits(), vocab], rows in
  // the order of the sequences that want them. Throws kvactor::error on
  // invalid input (token out of range, page table too short).
  virtual void forward(const forward_batch& batch, std::vector<float>& logits) = 0;
  // Whether forward() takes page tables whose leading entries are no_page
  // (-1) for pages wholly outside the sliding window of every layer and of
  // every token of the step. The engine releases such pages only when this
  // says yes; a backend must then never read those entries.
  virtual bool accepts_released_pages() const { return false; }

  // Runs one step and picks the next token of each sequence that wants
  // logits where the logits are, so that only token ids leave the device:
  // row i as sample_token() (sampler.h) picks from forward()'s logits with
  // params[i], histories[i] and counters[i]. `histories` may be empty: no
  // row has one. Returns false, having done nothing, when the backend
  // cannot (the default); the caller then samples forward()'s logits itself.
  virtual bool forward_and_sample(const forward_batch& /*batch*/, std::span<const sampling_params> /*params*/,
                                  std::span<const std::span<const int32_t>> /*histories*/,
                                  std::span<const uint64_t> /*counters*/, std::vector<int32_t>& /*tokens*/) {
    return false;
  }

  // Another backend over the same weights and KV memory with state of its
  // own (a device stream), whose steps may run at the same time as this
  // one's: the engine gives one to each executor after the first. nullptr
  // (the default): forward() is not reentrant, and executors take turns.
  virtual std::shared_ptr<backend> make_stream() { return nullptr; }
};

} // namespace kvactor
