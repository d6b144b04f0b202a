#pragma once
// Which KV pages a sliding window lets go. A token at position p attends to
// positions [p - window + 1, p], so once a sequence's next token is at
// position n, no future token of it sees positions below n - window + 1: the
// pages wholly below that are dead and can return to the pool while the
// sequence runs, which bounds a long generation's pages by its window.
//
// Only when every layer slides: one full-attention layer (Qwen2 with
// max_window_layers, Gemma-style interleaving) still reads every position,
// so no page can go.
#include <algorithm>
#include <cstdint>

#include "runtime/model_config.h"

namespace kvactor {

// The window that frees pages: the model's sliding window when every layer
// uses it, else 0 (none).
inline int32_t reclaimable_window(const model_config& c) {
  if (c.sliding_window <= 0) return 0;
  for (int32_t layer = 0; layer < c.num_layers; ++layer)
    if (!c.uses_sliding(layer)) return 0;
  return c.sliding_window;
}

// Leading pages no token at position >= next_pos sees, for `window` (0 = none).
constexpr int32_t pages_behind_window(int32_t next_pos, int32_t window, int32_t page_size) {
  return window > 0 ? std::max(0, next_pos - window + 1) / page_size : 0;
}

} // namespace kvactor
