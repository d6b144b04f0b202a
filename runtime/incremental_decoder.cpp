#include "runtime/tokenizer.h"

#include "runtime/error.h"
#include "runtime/unicode.h"

namespace kvactor {

// Each push decodes two short windows that start at prefix_offset_: the one
// already emitted (up to read_offset_) and the one including the new tokens;
// the difference is the new text (vLLM's detokenize_incrementally). Starting
// both windows at the same token makes position-dependent decoders (Strip of
// the leading space, Metaspace's first token) act on both alike. The windows
// start only where text was final: after a complete character, and never
// inside a run of ByteFallback bytes. This assumes a Strip decoder removes at
// most one leading character, as every file we serve has it.

incremental_decoder::incremental_decoder(const tokenizer& tok, bool skip_special_tokens)
    : tok_(&tok), skip_special_(skip_special_tokens) {}

std::string incremental_decoder::push(int32_t id) {
  // decode() drops these, so they add no text.
  if (!tok_->decodes(id, skip_special_)) return {};
  ids_.push_back(id);
  // The bytes of a run are checked as a whole when it ends.
  if (tok_->is_fallback_byte(id)) return {};
  return emit(false);
}

std::string incremental_decoder::finish() { return emit(true); }

std::string incremental_decoder::emit(bool final) {
  const std::span<const int32_t> ids(ids_);
  const std::string emitted = tok_->decode_range(ids.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  const std::string text = tok_->decode_range(ids.subspan(prefix_offset_), skip_special_);
  // A trailing U+FFFD may be the start of a character later tokens complete.
  if (!final && (text.size() <= emitted.size() || text.ends_with(unicode::replacement_character))) return {};
  if (!text.starts_with(emitted))
    throw error("incremental_decoder: the decoder chain is not prefix-stable for these tokens");
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return text.substr(emitted.size());
}

} // namespace kvactor

