// config.json and generation_config.json of arbitrary bytes: parsing either
// throws a load_error naming the file or gives a config whose dimensions are
// positive and consistent, so nothing sized from it can overflow.
#include <limits>

#include "runtime/error.h"
#include "runtime/model_config.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace kvactor;

void check_config(const model_config& c) {
  FUZZ_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0 && c.num_layers > 0);
  FUZZ_CHECK(c.num_heads > 0 && c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0);
  FUZZ_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0);
  FUZZ_CHECK(c.max_position_embeddings > 0);
  FUZZ_CHECK(c.layer_sliding.size() == size_t(c.num_layers));
  FUZZ_CHECK(c.sliding_window >= 0);
  FUZZ_CHECK(c.bos_token_id >= -1);
  for (const int32_t id : c.eos_token_ids) FUZZ_CHECK(id >= 0);
  // The attention widths are int32 everywhere they are used.
  FUZZ_CHECK(int64_t(c.num_heads) * c.head_dim <= std::numeric_limits<int32_t>::max());
  FUZZ_CHECK(c.q_dim() > 0 && c.kv_dim() > 0);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(kvactor::fuzz::as_text(data, size));
  model_config config;
  try {
    config = parse_model_config(text, "fuzz/config.json");
  } catch (const load_error& e) {
    FUZZ_CHECK(std::string(e.what()).starts_with("fuzz/config.json: "));
    return 0;
  }
  check_config(config);
  try {
    apply_generation_config(config, text, "fuzz/generation_config.json");
  } catch (const load_error& e) {
    FUZZ_CHECK(std::string(e.what()).starts_with("fuzz/generation_config.json: "));
  }
  check_config(config);
  return 0;
}
