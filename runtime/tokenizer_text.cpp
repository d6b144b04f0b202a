#include "runtime/tokenizer_text.h"

namespace kvactor::tokenization {

std::string replace_all(const unicode::regex& pattern, std::string_view text, std::string_view content) {
  const auto matches = pattern.find_all(text);
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size() + matches.size() * content.size());
  size_t copied = 0;
  for (const auto& [begin, end] : matches) {
    out.append(text.substr(copied, begin - copied));
    out.append(content);
    copied = end;
  }
  out.append(text.substr(copied));
  return out;
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out.append(separator);
    out.append(parts[i]);
  }
  return out;
}

} // namespace kvactor::tokenization
