#include "runtime/rope.h"

#include <cmath>
#include <numbers>

#include "runtime/error.h"

namespace kvactor {

std::vector<double> rope_inv_freq(const model_config& c) {
  const int32_t half = c.head_dim / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  for (int32_t i = 0; i < half; ++i) inv[size_t(i)] = std::pow(double(c.rope.theta), -2.0 * i / c.head_dim);
  if (c.rope.type == "default") return inv;
  if (c.rope.type != "llama3") throw error("unsupported rope type \"" + c.rope.type + "\"");
  const double factor = c.rope.factor, low = c.rope.low_freq_factor, high = c.rope.high_freq_factor;
  const double old_len = c.rope.original_max_position_embeddings;
  const double low_wavelen = old_len / low, high_wavelen = old_len / high;
  for (double& f : inv) {
    const double wavelen = 2 * std::numbers::pi / f;
    if (wavelen > low_wavelen) {
      f /= factor; // long wavelengths: interpolated
    } else if (wavelen >= high_wavelen) {
      const double smooth = (old_len / wavelen - low) / (high - low);
      f = (1 - smooth) * f / factor + smooth * f;
    } // short wavelengths: unchanged
  }
  return inv;
}

} // namespace kvactor
