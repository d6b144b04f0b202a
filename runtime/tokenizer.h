#pragma once
// Hugging Face tokenizer.json, implemented for the model families we serve:
// byte-level BPE (Llama 3, Qwen2/3: Split regex + ByteLevel) and
// SentencePiece-style BPE with byte fallback (Llama 2, Mistral: Prepend/Replace
// normalizers, ByteFallback/Fuse/Strip decoders). Added and special tokens are
// matched in the input text as HF does.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvactor {

class tokenizer {
 public:
  // Throws load_error naming the file on malformed or unsupported content.
  static tokenizer from_file(const std::string& path);
  static tokenizer from_json(const std::string& json_text, const std::string& path);

  tokenizer(tokenizer&&) noexcept;
  tokenizer& operator=(tokenizer&&) noexcept;
  ~tokenizer();

  // As HF's encode(text, add_special_tokens=...): with it, the post-processor's
  // tokens (BOS for Llama 2) are added. Throws kvactor::error naming the
  // first bad byte when `text` is not valid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  // As HF's decode(ids, skip_special_tokens=...). Invalid UTF-8 that byte-level
  // tokens can produce is replaced by U+FFFD, as HF does.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int32_t vocab_size() const; // largest id + 1, added tokens included
  std::optional<int32_t> token_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const; // "" when unknown
  bool is_special(int32_t id) const;

 private:
  friend class incremental_decoder;
  struct impl;
  explicit tokenizer(std::unique_ptr<impl> p);

  std::string decode_range(std::span<const int32_t> ids, bool skip_special_tokens) const;
  // Whether decode keeps `id` (known, and not a skipped special token).
  bool decodes(int32_t id, bool skip_special_tokens) const;
  // Whether `id` is a <0xXX> token that a ByteFallback decoder joins with its
  // neighbours: the text of a run of them is known only once the run ends.
  bool is_fallback_byte(int32_t id) const;

  std::unique_ptr<impl> impl_;
};

// Streams text for a growing list of ids: each call returns only the text
// that is final, never a partial UTF-8 sequence. Concatenating every piece
// plus finish() equals tokenizer.decode(all ids).
class incremental_decoder {
 public:
  // note: `tok` must outlive the decoder.
  explicit incremental_decoder(const tokenizer& tok, bool skip_special_tokens = false);
  std::string push(int32_t id);
  std::string finish(); // whatever is left (a dangling partial character as U+FFFD)

 private:
  std::string emit(bool final);

  const tokenizer* tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  // ids_[prefix_offset_, read_offset_) decode to text already emitted; they
  // give the next tokens the context they decode in. Both move forward only
  // when new text is emitted, so each push decodes a few tokens.
  size_t prefix_offset_ = 0;
  size_t read_offset_ = 0;
};

} // namespace kvactor
