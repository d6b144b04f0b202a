#pragma once
// What the engine needs from a compute backend (CPU here, CUDA in gpu/).
#include <vector>

#include "runtime/forward_batch.h"
#include "runtime/kv_layout.h"
#include "runtime/model_config.h"

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
};

} // namespace kvactor
