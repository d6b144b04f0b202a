#include "runtime/post_processors.h"

#include <utility>

namespace kvactor::tokenization {

std::vector<int32_t> template_processing::apply(const std::vector<int32_t>& ids) const {
  std::vector<int32_t> out;
  for (const auto& item : single) {
    const std::vector<int32_t>& part = item ? *item : ids;
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

void parse_post_processor(const json::value& v, std::vector<template_processing>& chain) {
  if (v.is_null()) return;
  const json::object& o = as_object(v, "post_processor");
  const std::string type = type_of(o, "post_processor");
  if (type == "Sequence") {
    for (const json::value& item : as_array(require(o, "processors", "Sequence post_processor"), "processors"))
      parse_post_processor(item, chain);
  } else if (type == "ByteLevel") {
    return;
  } else if (type == "TemplateProcessing") {
    const json::object& specials = as_object(require(o, "special_tokens", "TemplateProcessing"), "special_tokens");
    template_processing t;
    for (const json::value& item : as_array(require(o, "single", "TemplateProcessing"), "single template")) {
      const json::object& piece = as_object(item, "template piece");
      if (const json::value* special = find(piece, "SpecialToken")) {
        const std::string name = get_string(as_object(*special, "SpecialToken"), "id", "SpecialToken");
        const json::value* entry = find(specials, name);
        if (!entry) throw bad_content("template special token '" + name + "' is not in special_tokens");
        std::vector<int32_t> ids;
        for (const json::value& id : as_array(require(as_object(*entry, "special token"), "ids", "special token"), "ids"))
          ids.push_back(as_token_id(id, "special token id"));
        t.single.emplace_back(std::move(ids));
      } else if (const json::value* sequence = find(piece, "Sequence")) {
        const std::string id = get_string(as_object(*sequence, "Sequence"), "id", "Sequence");
        if (id != "A") throw bad_content("single template refers to sequence '" + id + "'");
        t.single.emplace_back(std::nullopt);
      } else {
        throw bad_content("template piece is neither SpecialToken nor Sequence");
      }
    }
    chain.push_back(std::move(t));
  } else {
    throw bad_content("unsupported post_processor type '" + type + "'");
  }
}

} // namespace kvactor::tokenization
