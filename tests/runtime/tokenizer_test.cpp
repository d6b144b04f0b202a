#include "runtime/tokenizer.h"

#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "runtime/error.h"
#include "runtime/unicode.h"

using kvactor::incremental_decoder;
using kvactor::tokenizer;

namespace {

namespace json = boost::json;

const std::string tokenizer_names[] = {"llama3", "qwen3", "llama2"};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string tokenizer_path(const std::string& name) {
  return std::string(KVACTOR_TOKENIZER_CACHE) + "/" + name + "/tokenizer.json";
}

// Loaded once per binary: the files are megabytes of JSON.
const tokenizer& real_tokenizer(const std::string& name) {
  static std::map<std::string, tokenizer> loaded;
  auto it = loaded.find(name);
  if (it == loaded.end()) {
    const std::string path = tokenizer_path(name);
    REQUIRE_MESSAGE(std::filesystem::exists(path), path << " is missing: run scripts/fetch_tokenizers.sh");
    it = loaded.emplace(name, tokenizer::from_file(path)).first;
  }
  return it->second;
}

struct reference_case {
  std::string text;
  std::vector<int32_t> ids;         // encode(text, add_special_tokens=False)
  std::vector<int32_t> ids_special; // encode(text, add_special_tokens=True)
  std::string decoded;              // decode(ids_special)
  std::string decoded_skip;         // decode(ids_special, skip_special_tokens=True)
};

std::vector<int32_t> to_ids(const json::value& v) {
  std::vector<int32_t> ids;
  for (const json::value& id : v.as_array()) ids.push_back(int32_t(id.as_int64()));
  return ids;
}

// Cases written by HF tokenizers: tests/data/tokenizers/<name>.json.
std::vector<reference_case> reference_cases(const std::string& name) {
  const std::string path = std::string(KVACTOR_TEST_DATA) + "/tokenizers/" + name + ".json";
  REQUIRE_MESSAGE(std::filesystem::exists(path), path << " is missing");
  const json::value root = json::parse(read_file(path));
  std::vector<reference_case> cases;
  for (const json::value& c : root.at("cases").as_array()) {
    cases.push_back({std::string(c.at("text").as_string()), to_ids(c.at("ids")), to_ids(c.at("ids_special")),
                     std::string(c.at("decoded").as_string()), std::string(c.at("decoded_skip").as_string())});
  }
  REQUIRE(!cases.empty());
  return cases;
}

std::string to_string(const std::vector<int32_t>& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  return out + "]";
}

bool is_valid_utf8(std::string_view s) { return kvactor::unicode::find_invalid_utf8(s) == std::string_view::npos; }

// Streams `ids` through an incremental_decoder; every piece must be valid UTF-8.
std::string stream_decode(const tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  incremental_decoder decoder(tok, skip_special);
  std::string text;
  for (int32_t id : ids) {
    const std::string piece = decoder.push(id);
    CHECK_MESSAGE(is_valid_utf8(piece), "invalid UTF-8 after id " << id);
    text += piece;
  }
  const std::string rest = decoder.finish();
  CHECK(is_valid_utf8(rest));
  return text + rest;
}

// GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves,
// the others for U+0100 upwards in byte order.
std::string byte_level_char(unsigned char byte) {
  char32_t next_extra = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    const char32_t c = printable ? char32_t(b) : next_extra++;
    if (b == byte) {
      std::string out;
      kvactor::unicode::append_utf8(out, c);
      return out;
    }
  }
  return {};
}

std::string load_error_message(const std::string& json_text, const std::string& path) {
  try {
    tokenizer::from_json(json_text, path);
  } catch (const kvactor::load_error& e) {
    return e.what();
  }
  return "no error";
}

// A small BPE whose results can be worked out by hand.
//   merges by rank: "a b", "b c", "ab c", "a a"
//   added tokens: <x> (special), <x><y>, <m> (lstrip + rstrip), bc (single_word)
const char* const tiny_json = R"({
  "added_tokens": [
    {"id": 20, "content": "<x>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 21, "content": "<x><y>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false},
    {"id": 22, "content": "<m>", "single_word": false, "lstrip": true, "rstrip": true, "normalized": false, "special": false},
    {"id": 23, "content": "bc", "single_word": true, "lstrip": false, "rstrip": false, "normalized": false, "special": false}
  ],
  "normalizer": null,
  "pre_tokenizer": null,
  "post_processor": null,
  "decoder": null,
  "model": {
    "type": "BPE", "dropout": null, "unk_token": "<unk>", "fuse_unk": FUSE,
    "vocab": {"<unk>": 0, "a": 1, "b": 2, "c": 3, "ab": 4, "bc": 5, "abc": 6, "aa": 7, " ": 8},
    "merges": ["a b", ["b", "c"], "ab c", "a a"]
  }
})";

std::string tiny_tokenizer_json(bool fuse_unk) {
  std::string text = tiny_json;
  text.replace(text.find("FUSE"), 4, fuse_unk ? "true" : "false");
  return text;
}

} // namespace

// -- agreement with Hugging Face --------------------------------------------

TEST_CASE("encode and decode match Hugging Face on the reference cases") {
  for (const std::string& name : tokenizer_names) {
    CAPTURE(name);
    const tokenizer& tok = real_tokenizer(name);
    for (const reference_case& c : reference_cases(name)) {
      CAPTURE(c.text);
      CHECK(to_string(tok.encode(c.text, false)) == to_string(c.ids));
      CHECK(to_string(tok.encode(c.text, true)) == to_string(c.ids_special));
      CHECK(tok.decode(c.ids_special) == c.decoded);
      CHECK(tok.decode(c.ids_special, true) == c.decoded_skip);
    }
  }
}

TEST_CASE("incremental decoding of the reference cases equals the full decode") {
  for (const std::string& name : tokenizer_names) {
    CAPTURE(name);
    const tokenizer& tok = real_tokenizer(name);
    for (const reference_case& c : reference_cases(name)) {
      CAPTURE(c.text);
      for (const auto* ids : {&c.ids, &c.ids_special}) {
        CHECK(stream_decode(tok, *ids, false) == tok.decode(*ids, false));
        CHECK(stream_decode(tok, *ids, true) == tok.decode(*ids, true));
      }
    }
  }
}

// Random ids reach what text rarely does: lone bytes of multi-byte
// characters, runs of <0xXX> tokens that are not UTF-8, special tokens
// between them, and a stream that starts with a space.
TEST_CASE("incremental decoding of random ids equals the full decode") {
  for (const std::string& name : tokenizer_names) {
    CAPTURE(name);
    const tokenizer& tok = real_tokenizer(name);
    std::mt19937 rng(1234);
    std::vector<int32_t> interesting; // byte tokens, specials, spaces
    for (int32_t id = 0; id < tok.vocab_size(); ++id) {
      const std::string t = tok.id_to_token(id);
      if (tok.is_special(id) || t.starts_with("<0x") || t.size() <= 2 || t.starts_with("\xE2\x96\x81"))
        interesting.push_back(id);
    }
    for (int round = 0; round < 300; ++round) {
      std::vector<int32_t> ids(1 + rng() % 40);
      for (int32_t& id : ids)
        id = rng() % 2 ? interesting[rng() % interesting.size()] : int32_t(rng() % uint32_t(tok.vocab_size()));
      CAPTURE(to_string(ids));
      CHECK(stream_decode(tok, ids, false) == tok.decode(ids, false));
      CHECK(stream_decode(tok, ids, true) == tok.decode(ids, true));
    }
  }
}

// -- the real files, without a reference --------------------------------------

TEST_CASE("a 40 KB Llama 2 prompt, one piece without a pre-tokenizer, encodes and round-trips") {
  const tokenizer& tok = real_tokenizer("llama2");
  const std::string paragraph =
      "The quick brown fox jumps over the lazy dog; naïve café owners serve crème brûlée at 9:45 p.m.\n"
      "日本語のテキストと emoji 🤖🦀 mixed with code: for (int i = 0; i < n; ++i) { sum += a[i]; }\n\n";
  std::string text;
  while (text.size() < 40 * 1024) text += paragraph;
  const std::vector<int32_t> ids = tok.encode(text, false);
  CHECK(ids.size() > text.size() / 8);
  CHECK(ids.size() < text.size());
  CHECK(tok.decode(ids) == text);
}

TEST_CASE("a character missing from the Llama 2 vocabulary falls back to its bytes") {
  const tokenizer& tok = real_tokenizer("llama2");
  REQUIRE(!tok.token_id("\xF0\x9F\xA4\x96").has_value()); // U+1F916 is no token
  // "▁" then the four <0xXX> tokens of F0 9F A4 96 (ids 3 + byte).
  const std::vector<int32_t> ids = tok.encode("\xF0\x9F\xA4\x96", false);
  CHECK(to_string(ids) == to_string({28705, 3 + 0xF0, 3 + 0x9F, 3 + 0xA4, 3 + 0x96}));
  CHECK(tok.decode(ids) == "\xF0\x9F\xA4\x96");
  CHECK(to_string(tok.encode("\xF0\x9F\xA4\x96", true)) == to_string({1, 28705, 3 + 0xF0, 3 + 0x9F, 3 + 0xA4, 3 + 0x96}));
  // An incomplete run: one U+FFFD per byte, as HF's ByteFallback decoder gives.
  CHECK(tok.decode({3 + 0xF0, 3 + 0x9F}) == "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("Llama 2 strips one leading space and keeps BOS unless skipped") {
  const tokenizer& tok = real_tokenizer("llama2");
  const std::vector<int32_t> ids = tok.encode("Hello world", true);
  CHECK(to_string(ids) == to_string({1, 22557, 1526}));
  CHECK(tok.decode(ids) == "<s> Hello world");
  CHECK(tok.decode(ids, true) == "Hello world");
  CHECK(tok.decode({1526}) == "world");
  CHECK(tok.is_special(1));
  CHECK(!tok.is_special(1526));
}

TEST_CASE("special tokens in the text are matched before the byte-level split") {
  const tokenizer& llama3 = real_tokenizer("llama3");
  const std::vector<int32_t> ids = llama3.encode("<|begin_of_text|>Hello<|eot_id|> world", false);
  CHECK(to_string(ids) == to_string({128000, 9906, 128009, 1917}));
  CHECK(llama3.decode(ids) == "<|begin_of_text|>Hello<|eot_id|> world");
  CHECK(llama3.decode(ids, true) == "Hello world");
  CHECK(llama3.token_id("<|eot_id|>") == 128009);
  CHECK(llama3.id_to_token(22691) == "\xC4\xA0Hello"); // "ĠHello"
  CHECK(llama3.vocab_size() == 128256);
}

TEST_CASE("byte-level decoding replaces ill-formed UTF-8 as from_utf8_lossy does") {
  const tokenizer& llama3 = real_tokenizer("llama3");
  // Unicode's example of maximal subparts: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64,
  // each byte as its own token.
  std::vector<int32_t> ids;
  for (unsigned char b : std::string("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64")) {
    const auto id = llama3.token_id(byte_level_char(b));
    REQUIRE(id.has_value());
    ids.push_back(*id);
  }
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(llama3.decode(ids) == "a" + fffd + fffd + fffd + "b" + fffd + "c" + fffd + fffd + "d");
  CHECK(stream_decode(llama3, ids, false) == llama3.decode(ids));
}

// -- small tokenizers worked out by hand ---------------------------------------

TEST_CASE("BPE applies merges by rank, leftmost first") {
  const tokenizer tok = tokenizer::from_json(tiny_tokenizer_json(true), "tiny.json");
  CHECK(to_string(tok.encode("abc", false)) == "[6]");    // a b -> ab, ab c -> abc
  CHECK(to_string(tok.encode("bca", false)) == "[5, 1]"); // b c -> bc
  CHECK(to_string(tok.encode("aaa", false)) == "[7, 1]"); // the leftmost "a a" first
  CHECK(to_string(tok.encode("abab", false)) == "[4, 4]");
  CHECK(tok.decode({4, 3}) == "ab c"); // no decoder: tokens joined by spaces
}

TEST_CASE("unknown characters become unk, fused when fuse_unk is set") {
  const tokenizer fused = tokenizer::from_json(tiny_tokenizer_json(true), "tiny.json");
  const tokenizer unfused = tokenizer::from_json(tiny_tokenizer_json(false), "tiny.json");
  CHECK(to_string(fused.encode("axyb", false)) == "[1, 0, 2]");
  CHECK(to_string(unfused.encode("axyb", false)) == "[1, 0, 0, 2]");
}

TEST_CASE("added tokens: longest match, lstrip/rstrip, single_word") {
  const tokenizer tok = tokenizer::from_json(tiny_tokenizer_json(true), "tiny.json");
  CHECK(to_string(tok.encode("<x><y>a<x>", false)) == "[21, 1, 20]");
  CHECK(to_string(tok.encode("a  <m>  b", false)) == "[1, 22, 2]");   // the spaces go with <m>
  CHECK(to_string(tok.encode("a bc", false)) == "[1, 8, 23]");        // bc as a word
  CHECK(to_string(tok.encode("abc", false)) == "[6]");                // bc inside a word is no match
  CHECK(tok.is_special(20));
  CHECK(!tok.is_special(21));
  CHECK(tok.decode({1, 20, 2}, true) == "a b");
  CHECK(tok.vocab_size() == 24);
  CHECK(tok.id_to_token(15) == "");
  CHECK(tok.decode({1, 15, 999, -1, 2}) == "a b"); // unknown ids are dropped
}

TEST_CASE("Metaspace pre-tokenizer and decoder") {
  // merges by rank: "y ▁", "▁ H", "▁H e", "▁He y"
  std::string json_text = R"({
    "added_tokens": [{"id": 8, "content": "<x>", "special": true, "normalized": false}],
    "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "SCHEME", "split": SPLIT},
    "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "SCHEME", "split": SPLIT},
    "model": {"type": "BPE", "vocab": {"▁": 0, "H": 1, "e": 2, "y": 3, "▁H": 4, "▁He": 5, "▁Hey": 6, "y▁": 7},
              "merges": ["y ▁", "▁ H", "▁H e", "▁He y"]}
  })";
  const auto make = [&](const std::string& scheme, bool split) {
    std::string text = json_text;
    for (size_t at; (at = text.find("SCHEME")) != std::string::npos;) text.replace(at, 6, scheme);
    for (size_t at; (at = text.find("SPLIT")) != std::string::npos;) text.replace(at, 5, split ? "true" : "false");
    return tokenizer::from_json(text, "metaspace.json");
  };
  const tokenizer split = make("always", true);
  CHECK(to_string(split.encode("Hey Hey", false)) == "[6, 6]");
  CHECK(split.decode({6, 6}) == "Hey Hey");
  const tokenizer whole = make("always", false);
  CHECK(to_string(whole.encode("Hey Hey", false)) == "[5, 7, 1, 2, 3]");
  CHECK(to_string(whole.encode("<x>Hey", false)) == "[8, 6]"); // always: after <x> too
  const tokenizer first = make("first", false);
  CHECK(to_string(first.encode("Hey", false)) == "[6]");
  CHECK(to_string(first.encode("<x>Hey", false)) == "[8, 1, 2, 3]"); // first: only at the input start
  const tokenizer never = make("never", true);
  CHECK(to_string(never.encode("Hey", false)) == "[1, 2, 3]");
  CHECK(never.decode({6}) == " Hey");
}

TEST_CASE("from_utf8_lossy follows Rust's maximal-subpart rule") {
  using kvactor::unicode::from_utf8_lossy;
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(from_utf8_lossy("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64") ==
        "a" + fffd + fffd + fffd + "b" + fffd + "c" + fffd + fffd + "d");
  CHECK(from_utf8_lossy("\xF0\x90\x80") == fffd);                 // truncated: one
  CHECK(from_utf8_lossy("\xE0\x80\xAF") == fffd + fffd + fffd);   // overlong: E0 80 is no prefix
  CHECK(from_utf8_lossy("\xED\xA0\x80") == fffd + fffd + fffd);   // surrogate
  CHECK(from_utf8_lossy("\xF4\x90\x80\x80") == fffd + fffd + fffd + fffd); // above U+10FFFF
  CHECK(from_utf8_lossy("\xE4\xB8x") == fffd + "x");
  CHECK(from_utf8_lossy("\xC3\xA9") == "\xC3\xA9");
}

// -- bad files ------------------------------------------------------------------

TEST_CASE("bad tokenizer.json files give a load_error naming the file and the problem") {
  const auto message = [](const std::string& json_text) { return load_error_message(json_text, "dir/tokenizer.json"); };
  const std::string m1 = message("{\"model\": ");
  CHECK(m1.find("dir/tokenizer.json") != std::string::npos);
  CHECK(m1.find("invalid JSON") != std::string::npos);
  const std::string m2 = message(R"({"model": {"type": "WordPiece", "vocab": {}}})");
  CHECK(m2.find("dir/tokenizer.json") != std::string::npos);
  CHECK(m2.find("unsupported model type 'WordPiece'") != std::string::npos);
  const std::string bpe = R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []})";
  CHECK(message("{" + bpe + R"(, "normalizer": {"type": "BertNormalizer"}})").find("unsupported normalizer type 'BertNormalizer'") != std::string::npos);
  CHECK(message("{" + bpe + R"(, "pre_tokenizer": {"type": "Whitespace"}})").find("unsupported pre_tokenizer type 'Whitespace'") != std::string::npos);
  CHECK(message("{" + bpe + R"(, "decoder": {"type": "WordPiece"}})").find("unsupported decoder type 'WordPiece'") != std::string::npos);
  CHECK(message("{" + bpe + R"(, "post_processor": {"type": "BertProcessing"}})").find("unsupported post_processor type 'BertProcessing'") != std::string::npos);
  CHECK(message(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})").find("merge token 'b' is not in the vocabulary") != std::string::npos);
  CHECK(message(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"}})").find("unk_token '<unk>'") != std::string::npos);
  CHECK(message("{" + bpe + R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated"}})").find("does not compile") != std::string::npos);
  CHECK(message(R"({"normalizer": null})").find("tokenizer.json has no \"model\"") != std::string::npos);
  CHECK(message("[1, 2]").find("is not an object") != std::string::npos);

  try {
    tokenizer::from_file("/nonexistent/tokenizer.json");
    FAIL("no error");
  } catch (const kvactor::load_error& e) {
    CHECK(std::string(e.what()).find("/nonexistent/tokenizer.json: cannot open") == 0);
  }
}

TEST_CASE("encode refuses text that is not UTF-8") {
  const tokenizer tok = tokenizer::from_json(tiny_tokenizer_json(true), "tiny.json");
  CHECK_THROWS_AS(tok.encode("a\xFF", false), kvactor::error);
}
