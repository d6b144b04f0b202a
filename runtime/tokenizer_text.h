#pragma once
// String helpers shared by the tokenizer's pipeline stages.
#include <string>
#include <string_view>
#include <vector>

#include "runtime/unicode.h"

namespace kvactor::tokenization {

// `text` with every match of `pattern` replaced by `content`.
std::string replace_all(const unicode::regex& pattern, std::string_view text, std::string_view content);
std::string join(const std::vector<std::string>& parts, std::string_view separator);

} // namespace kvactor::tokenization
