// Tokenizers on arbitrary bytes: the embedded default model's (byte-level
// BPE) and, when cached, Llama 2's (SentencePiece-style BPE with byte
// fallback). The first input byte picks the tokenizer and the mode; the rest
// is text to encode, or token ids to decode.
//
// Properties: encode refuses text that is not UTF-8 with an error naming the
// byte, and otherwise gives ids in the vocabulary; decode gives valid UTF-8; the incremental decoder's pieces plus finish() equal
// the full decode, each piece whole characters; the byte-level tokenizer
// gives back exactly the text it encoded.
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "runtime/error.h"
#include "runtime/tokenizer.h"
#include "runtime/unicode.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace kvactor;

struct loaded {
  std::unique_ptr<tokenizer> tok;
  bool byte_level = false; // decode(encode(text)) == text
};

std::vector<loaded> load_all() {
  std::vector<loaded> out;
  out.push_back({std::make_unique<tokenizer>(
                     tokenizer::from_file(std::string(KVACTOR_SOURCE_DIR) + "/models/default/tokenizer.json")),
                 true});
  const std::string llama2 = std::string(KVACTOR_TOKENIZER_CACHE) + "/llama2/tokenizer.json";
  if (std::filesystem::exists(llama2))
    out.push_back({std::make_unique<tokenizer>(tokenizer::from_file(llama2)), false});
  return out;
}

const std::vector<loaded>& tokenizers() {
  static const std::vector<loaded> all = load_all();
  return all;
}

bool valid_utf8(std::string_view s) { return unicode::find_invalid_utf8(s) == std::string_view::npos; }

void check_decoding(const tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  const std::string whole = tok.decode(ids, skip_special);
  FUZZ_CHECK(valid_utf8(whole));
  incremental_decoder stream(tok, skip_special);
  std::string pieces;
  for (const int32_t id : ids) {
    const std::string piece = stream.push(id);
    FUZZ_CHECK(valid_utf8(piece));
    pieces += piece;
  }
  const std::string rest = stream.finish();
  FUZZ_CHECK(valid_utf8(rest));
  FUZZ_CHECK(pieces + rest == whole);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& all = tokenizers();
  const uint8_t mode = data[0];
  const loaded& t = all[(mode & 1) % all.size()];
  const tokenizer& tok = *t.tok;
  const bool add_special = mode & 2;
  const bool skip_special = mode & 4;
  const std::string_view rest = kvactor::fuzz::as_text(data + 1, size - 1);

  if (mode & 8) {
    // Ids: 16 bits each, some past the vocabulary (decode skips those).
    std::vector<int32_t> ids;
    for (size_t i = 0; i + 1 < rest.size(); i += 2) {
      uint16_t v;
      std::memcpy(&v, rest.data() + i, 2);
      ids.push_back(int32_t(v % uint32_t(tok.vocab_size() + 16)));
    }
    check_decoding(tok, ids, skip_special);
    return 0;
  }

  // Text that is not UTF-8 is refused by value, naming the first bad byte.
  if (const size_t bad = unicode::find_invalid_utf8(rest); bad != std::string_view::npos) {
    try {
      tok.encode(rest, add_special);
      FUZZ_CHECK(!"encode took text that is not UTF-8");
    } catch (const error& e) {
      FUZZ_CHECK(std::string(e.what()) == "tokenizer input is not valid UTF-8 (byte " + std::to_string(bad) + ")");
    }
    return 0;
  }
  const std::vector<int32_t> ids = tok.encode(rest, add_special);
  for (const int32_t id : ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size());
  check_decoding(tok, ids, skip_special);
  if (t.byte_level && !add_special) FUZZ_CHECK(tok.decode(ids, false) == rest);
  return 0;
}
