#pragma once
// A tokenizer worker: a few of them encode prompts in parallel so that a long
// prompt never holds up the scheduler or other requests.
#include <memory>

#include "actors/messages.h"
#include "runtime/tokenizer.h"

namespace kvactor {

struct tokenizer_state {
  static inline const char* name = "kvactor.tokenizer";
  std::shared_ptr<const tokenizer> tok;
};

tokenizer_actor::behavior_type tokenizer_worker(tokenizer_actor::stateful_pointer<tokenizer_state> self,
                                                std::shared_ptr<const tokenizer> tok);

} // namespace kvactor
