// tokenizer.json of arbitrary bytes: loading either throws a load_error
// naming the file or gives a tokenizer that encodes and decodes a fixed text
// (letters, digits, spaces, an emoji, a special token's text, a NUL) without
// throwing, with ids in its vocabulary and valid UTF-8 out.
#include "runtime/error.h"
#include "runtime/tokenizer.h"
#include "runtime/unicode.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvactor;
  using namespace std::literals;
  constexpr std::string_view sample = "Hello wörld 42 \xF0\x9F\x99\x82 <s>\n\t\0 "sv;
  const std::string text(kvactor::fuzz::as_text(data, size));
  std::optional<tokenizer> tok;
  try {
    tok.emplace(tokenizer::from_json(text, "fuzz/tokenizer.json"));
  } catch (const load_error& e) {
    FUZZ_CHECK(std::string(e.what()).starts_with("fuzz/tokenizer.json: "));
    return 0;
  }
  FUZZ_CHECK(tok->vocab_size() >= 0);
  for (const bool special : {false, true}) {
    const std::vector<int32_t> ids = tok->encode(sample, special);
    for (const int32_t id : ids) FUZZ_CHECK(id >= 0 && id < tok->vocab_size());
    FUZZ_CHECK(unicode::find_invalid_utf8(tok->decode(ids, special)) == std::string_view::npos);
    incremental_decoder stream(*tok);
    for (const int32_t id : ids) FUZZ_CHECK(unicode::find_invalid_utf8(stream.push(id)) == std::string_view::npos);
  }
  return 0;
}
