#include "runtime/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "runtime/added_tokens.h"
#include "runtime/bpe_model.h"
#include "runtime/error.h"
#include "runtime/post_processors.h"
#include "runtime/pre_tokenizers.h"
#include "runtime/text_normalizers.h"
#include "runtime/token_decoders.h"
#include "runtime/tokenizer_json.h"
#include "runtime/tokenizer_text.h"
#include "runtime/unicode.h"

// The pipeline follows HF tokenizers (tokenizer/mod.rs, added_vocabulary.rs,
// models/bpe): added tokens are cut out of the raw text first; every other
// span is normalized, pre-tokenized into pieces and each piece is BPE-encoded.
// Decoding maps ids to token strings and runs them through the decoder chain.

namespace kvactor {

using namespace tokenization;

struct tokenizer::impl {
  normalizer_chain normalizers;
  pre_tokenizer_chain pre_tokenizers;
  bpe_model model;
  std::vector<template_processing> post_processors;
  decoder_chain decoders;
  bool has_decoder = false;

  std::vector<added_token> added_tokens;
  added_token_matcher raw_matcher;        // added tokens with normalized = false
  added_token_matcher normalized_matcher; // the others, matched in normalized text
  string_to_id added_ids;

  struct token_info {
    std::string text;
    bool known = false;
    bool special = false;
    bool fallback_byte = false; // <0xXX> under a ByteFallback decoder
  };
  std::vector<token_info> tokens; // [vocab_size]

  void normalize(std::string& text) const {
    for (const auto& n : normalizers) n->apply(text);
  }

  void encode_span(std::string_view text, bool at_input_start, std::vector<int32_t>& ids) const {
    std::string normalized(text);
    normalize(normalized);
    std::vector<text_span> spans;
    normalized_matcher.split(normalized, spans);
    for (const text_span& s : spans) {
      if (s.token_id >= 0) {
        ids.push_back(s.token_id);
        continue;
      }
      std::vector<piece> pieces{{normalized.substr(s.begin, s.end - s.begin), at_input_start && s.begin == 0}};
      for (const auto& p : pre_tokenizers) p->apply(pieces);
      for (const piece& p : pieces) model.tokenize(p.text, ids);
    }
  }
};

tokenizer::tokenizer(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
tokenizer::tokenizer(tokenizer&&) noexcept = default;
tokenizer& tokenizer::operator=(tokenizer&&) noexcept = default;
tokenizer::~tokenizer() = default;

tokenizer tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw load_error(path, std::string("cannot open: ") + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw load_error(path, "read failed");
  return from_json(text.str(), path);
}

tokenizer tokenizer::from_json(const std::string& json_text, const std::string& path) {
  boost::system::error_code ec;
  const json::value root = json::parse(json_text, ec);
  if (ec) throw load_error(path, "invalid JSON: " + ec.message());
  auto t = std::make_unique<impl>();
  try {
    const json::object& top = as_object(root, "tokenizer.json");
    const json::value null_value;
    const auto section = [&](std::string_view key) -> const json::value& {
      const json::value* v = top.if_contains(key);
      return v ? *v : null_value;
    };
    parse_bpe_model(require(top, "model", "tokenizer.json"), t->model);
    parse_normalizer(section("normalizer"), t->normalizers);
    parse_pre_tokenizer(section("pre_tokenizer"), t->pre_tokenizers);
    parse_post_processor(section("post_processor"), t->post_processors);
    parse_decoder(section("decoder"), t->decoders);
    t->has_decoder = !section("decoder").is_null();

    if (const json::value* added = find(top, "added_tokens")) t->added_tokens = parse_added_tokens(*added);
    // Pointers into added_tokens are taken only now that it no longer grows.
    for (const added_token& token : t->added_tokens) {
      t->added_ids.insert_or_assign(token.content, token.id);
      if (token.normalized) {
        std::string pattern = token.content;
        t->normalize(pattern);
        t->normalized_matcher.add(std::move(pattern), &token);
      } else {
        t->raw_matcher.add(token.content, &token);
      }
    }
    t->raw_matcher.finish_adding();
    t->normalized_matcher.finish_adding();

    int32_t largest_id = -1;
    for (const auto& [token, id] : t->model.vocab) largest_id = std::max(largest_id, id);
    for (const added_token& token : t->added_tokens) largest_id = std::max(largest_id, token.id);
    t->tokens.resize(size_t(largest_id + 1));
    for (const auto& [token, id] : t->model.vocab) t->tokens[id].text = token, t->tokens[id].known = true;
    std::unordered_set<std::string_view> special_contents;
    for (const added_token& token : t->added_tokens) {
      t->tokens[token.id].text = token.content;
      t->tokens[token.id].known = true;
      if (token.special) special_contents.insert(token.content);
    }
    const bool byte_fallback_decoder_present = has_byte_fallback(t->decoders);
    for (impl::token_info& info : t->tokens) {
      // HF decides "special" by the token's text, whichever id it comes from.
      info.special = info.known && special_contents.contains(info.text);
      info.fallback_byte = byte_fallback_decoder_present && fallback_byte(info.text).has_value();
    }
  } catch (const bad_content& e) {
    throw load_error(path, e.what());
  } catch (const error& e) { // a pattern that does not compile
    throw load_error(path, e.what());
  }
  return tokenizer(std::move(t));
}

std::vector<int32_t> tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (const size_t bad = unicode::find_invalid_utf8(text); bad != std::string_view::npos)
    throw error("tokenizer input is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  std::vector<int32_t> ids;
  std::vector<text_span> spans;
  impl_->raw_matcher.split(text, spans);
  for (const text_span& s : spans) {
    if (s.token_id >= 0) ids.push_back(s.token_id);
    else impl_->encode_span(text.substr(s.begin, s.end - s.begin), s.begin == 0, ids);
  }
  if (add_special_tokens)
    for (const template_processing& t : impl_->post_processors) ids = t.apply(ids);
  return ids;
}

std::string tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return decode_range(ids, skip_special_tokens);
}

std::string tokenizer::decode_range(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids)
    if (decodes(id, skip_special_tokens)) tokens.push_back(impl_->tokens[size_t(id)].text);
  if (!impl_->has_decoder) return join(tokens, " ");
  for (const auto& d : impl_->decoders) d->apply(tokens);
  return join(tokens, "");
}

bool tokenizer::decodes(int32_t id, bool skip_special_tokens) const {
  if (id < 0 || size_t(id) >= impl_->tokens.size()) return false;
  const impl::token_info& info = impl_->tokens[size_t(id)];
  return info.known && !(skip_special_tokens && info.special);
}

bool tokenizer::is_fallback_byte(int32_t id) const {
  return id >= 0 && size_t(id) < impl_->tokens.size() && impl_->tokens[size_t(id)].fallback_byte;
}

int32_t tokenizer::vocab_size() const { return int32_t(impl_->tokens.size()); }

std::optional<int32_t> tokenizer::token_id(std::string_view token) const {
  if (auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) return it->second;
  if (auto it = impl_->model.vocab.find(token); it != impl_->model.vocab.end()) return it->second;
  return std::nullopt;
}

std::string tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || size_t(id) >= impl_->tokens.size()) return {};
  return impl_->tokens[size_t(id)].text;
}

bool tokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < impl_->tokens.size() && impl_->tokens[size_t(id)].special;
}

} // namespace kvactor
