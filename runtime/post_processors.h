#pragma once
// Post-processors: with add_special_tokens, TemplateProcessing's "single"
// template wraps the ids (ByteLevel changes offsets only, which we do not keep).
#include <cstdint>
#include <optional>
#include <vector>

#include "runtime/tokenizer_json.h"

namespace kvactor::tokenization {

struct template_processing {
  // Each item: the ids of a special token, or nullopt for the sequence itself.
  std::vector<std::optional<std::vector<int32_t>>> single;

  std::vector<int32_t> apply(const std::vector<int32_t>& ids) const;
};

// Appends the templates the "post_processor" section `v` describes (none for null).
void parse_post_processor(const json::value& v, std::vector<template_processing>& chain);

} // namespace kvactor::tokenization
