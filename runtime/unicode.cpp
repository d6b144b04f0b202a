#include "runtime/unicode.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <cstdlib>
#include <optional>

#include "runtime/error.h"

namespace kvactor::unicode {

namespace {

struct sequence_scan {
  size_t length; // of the well-formed sequence, or of the maximal ill-formed subpart
  bool well_formed;
};

// Unicode's Table 3-7 of well-formed byte sequences: the second byte's range
// depends on the first, which rules out overlong forms, surrogates and code
// points above U+10FFFF.
sequence_scan scan_sequence(std::string_view bytes, size_t at) {
  const unsigned char lead = bytes[at];
  if (lead < 0x80) return {1, true};
  size_t need = 0;
  unsigned char low = 0x80, high = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    need = 2;
  } else if (lead == 0xe0) {
    need = 3, low = 0xa0;
  } else if ((lead >= 0xe1 && lead <= 0xec) || lead == 0xee || lead == 0xef) {
    need = 3;
  } else if (lead == 0xed) {
    need = 3, high = 0x9f;
  } else if (lead == 0xf0) {
    need = 4, low = 0x90;
  } else if (lead >= 0xf1 && lead <= 0xf3) {
    need = 4;
  } else if (lead == 0xf4) {
    need = 4, high = 0x8f;
  } else {
    return {1, false};
  }
  for (size_t k = 1; k < need; ++k) {
    if (at + k >= bytes.size()) return {k, false};
    const unsigned char c = bytes[at + k];
    if (k == 1 ? (c < low || c > high) : (c < 0x80 || c > 0xbf)) return {k, false};
  }
  return {need, true};
}

// PCRE2's JIT runs on a stack of its own; the default 32 KiB can be too small
// for long runs of whitespace, so each thread gets a growable one.
struct jit_context {
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  jit_context() {
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr);
    if (context && stack) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~jit_context() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
  }
};

pcre2_match_context* thread_match_context() {
  thread_local jit_context local;
  return local.context;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

} // namespace

size_t find_invalid_utf8(std::string_view bytes) {
  for (size_t i = 0; i < bytes.size();) {
    const sequence_scan s = scan_sequence(bytes, i);
    if (!s.well_formed) return i;
    i += s.length;
  }
  return std::string_view::npos;
}

std::string from_utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const sequence_scan s = scan_sequence(bytes, i);
    if (s.well_formed) {
      out.append(bytes.substr(i, s.length));
    } else {
      out.append(replacement_character);
    }
    i += s.length;
  }
  return out;
}

size_t char_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xe0) return 2;
  if (lead < 0xf0) return 3;
  return 4;
}

char32_t next_char(std::string_view text, size_t& pos) {
  const unsigned char lead = text[pos];
  const size_t length = char_length(lead);
  char32_t c = length == 1 ? lead : length == 2 ? lead & 0x1f : length == 3 ? lead & 0x0f : lead & 0x07;
  for (size_t k = 1; k < length; ++k) c = (c << 6) | (static_cast<unsigned char>(text[pos + k]) & 0x3f);
  pos += length;
  return c;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
  }
}

std::string nfc(std::string_view text) {
  utf8proc_uint8_t* composed = nullptr;
  const utf8proc_ssize_t length =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &composed,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (length < 0) throw error(std::string("NFC normalization failed: ") + utf8proc_errmsg(length));
  std::string out(reinterpret_cast<const char*>(composed), static_cast<size_t>(length));
  std::free(composed);
  return out;
}

bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
         c == 0x205f || c == 0x3000;
}

bool is_word_char(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC: return true;
    default: return c == 0x200c || c == 0x200d; // Join_Control
  }
}

regex::regex(std::string_view pattern, bool literal) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // PCRE2 refuses UCP with LITERAL; a literal has no classes for it to affect.
  const uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &error_code, &error_offset, nullptr);
  if (!code) {
    throw error("regex '" + std::string(pattern) + "' does not compile at offset " +
                std::to_string(error_offset) + ": " + pcre2_message(error_code));
  }
  code_.reset(code, pcre2_code_free);
  // Without JIT (an unsupported CPU) the interpreter gives the same matches.
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

std::vector<std::pair<size_t, size_t>> regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create(1, nullptr), pcre2_match_data_free);
  if (!data) throw error("regex: out of memory");
  pcre2_match_context* context = thread_match_context();
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t search_from = 0;
  std::optional<size_t> last_match_end;
  while (search_from <= text.size()) {
    // The subject was validated once by the caller: checking it on every
    // call would make this loop quadratic.
    const int rc = jit_ ? pcre2_jit_match(code_.get(), subject, text.size(), search_from, 0, data.get(), context)
                        : pcre2_match(code_.get(), subject, text.size(), search_from, PCRE2_NO_UTF_CHECK,
                                      data.get(), context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw error("regex match failed: " + pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0], end = ovector[1];
    if (begin == end && last_match_end == end) {
      search_from += search_from < text.size() ? char_length(text[search_from]) : 1;
      continue;
    }
    matches.emplace_back(begin, end);
    search_from = end;
    last_match_end = end;
  }
  return matches;
}

} // namespace kvactor::unicode
