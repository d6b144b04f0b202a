#pragma once
// Rotary position embedding frequencies, shared by every backend. They are
// computed in double: each backend forms angle = position x frequency (and its
// sine and cosine) in double too, so long positions keep their precision.
#include <vector>

#include "runtime/model_config.h"

namespace kvactor {

// inv_freq[i] = theta^(-2i / head_dim), rescaled for "llama3" as transformers'
// _compute_llama3_parameters does. [head_dim / 2]
// Throws kvactor::error for a rope type other than "default" and "llama3".
std::vector<double> rope_inv_freq(const model_config& config);

} // namespace kvactor
