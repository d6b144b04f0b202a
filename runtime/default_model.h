#pragma once
// Where the embedded default model lives: a 2M-parameter Llama with a
// 2,048-token byte-level BPE tokenizer, trained on CPython's language
// reference (tools/reference/make_default_model.py). It lets kvactor run with
// nothing downloaded.
#include <string>

namespace kvactor {

// The first of: $KVACTOR_DEFAULT_MODEL; <exe>/../share/kvactor/models/default
// (installed); the source tree's models/default. Throws kvactor::error when
// none exists.
std::string default_model_dir();

} // namespace kvactor
