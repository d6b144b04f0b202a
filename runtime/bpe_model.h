#pragma once
// The BPE model of a tokenizer.json, as HF's models/bpe: vocabulary, ranked
// merges, unknown-token and byte fallback, and a cache of encoded words.
#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/tokenizer_json.h"

namespace kvactor::tokenization {

// NOTE: not noexcept on purpose: libstdc++ then stores each key's hash in
// its node, so lookups and rehashes do not hash or compare strings again.
struct string_hash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using string_to_id = std::unordered_map<std::string, int32_t, string_hash, std::equal_to<>>;

struct bpe_merge {
  int32_t rank;   // position in the merges list: lower merges first
  int32_t new_id; // the merged token
};

class bpe_model {
 public:
  string_to_id vocab;
  std::unordered_map<uint64_t, bpe_merge> merges;
  std::optional<int32_t> unk_id;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false; // a piece that is itself a token maps to it directly
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
  std::array<int32_t, 256> byte_ids{}; // id of "<0xXX>", -1 when absent

  // SentencePiece-style vocabularies (Llama 2) have "▁" only at the start
  // of a token, so no merge joins across a point where "▁" follows another
  // character. A piece is then encoded chunk by chunk with the same result,
  // and each chunk is a word the cache can hold: without a pre-tokenizer the
  // whole prompt is one piece.
  bool split_before_word_marker = false;

  // Appends the ids of one pre-tokenized piece.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  // Whether split_before_word_marker holds for the vocabulary. The marker
  // must be a token itself, or a run of unknown characters could span a cut.
  bool marker_only_starts_tokens() const;

 private:
  void tokenize_chunk(std::string_view word, std::vector<int32_t>& out) const;
  const bpe_merge* find_merge(int32_t left, int32_t right) const;
  // One symbol per character (or byte, or fused unknown run), as HF's BPE::merge_word.
  std::vector<int32_t> initial_symbols(std::string_view word) const;
  // Applies merges lowest rank first, leftmost first among equal ranks, with
  // a priority queue: O(n log n) in the piece length, which matters for
  // tokenizers without a pre-tokenizer (a whole prompt is one piece).
  std::vector<int32_t> merge_word(std::string_view word) const;

  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, string_hash, std::equal_to<>> cache_;
};

// Fills `model` from the "model" section `v`.
void parse_bpe_model(const json::value& v, bpe_model& model);

} // namespace kvactor::tokenization
