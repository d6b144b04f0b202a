#include "actors/tokenizer_actor.h"

#include <exception>
#include <string>

namespace kvactor {

tokenizer_actor::behavior_type tokenizer_worker(tokenizer_actor::stateful_pointer<tokenizer_state> self,
                                                std::shared_ptr<const tokenizer> tok) {
  self->state.tok = std::move(tok);
  return {
    [self](tokenize_atom, const std::string& text,
           bool add_special_tokens) -> caf::result<std::vector<int32_t>> {
      try {
        return self->state.tok->encode(text, add_special_tokens);
      } catch (const std::exception& e) {
        return caf::make_error(caf::sec::runtime_error, std::string(e.what()));
      }
    },
  };
}

} // namespace kvactor
