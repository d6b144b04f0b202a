#pragma once
// One forward step over a mixed batch: each sequence brings its new tokens
// (a whole prompt, a prefill chunk or one decode token), the position of the
// first of them and its page table. The backend writes the new tokens' K/V
// into their pages and returns logits only where asked.
#include <cstdint>
#include <vector>

namespace kvactor {

struct seq_step {
  std::vector<int32_t> tokens;     // new tokens, at positions start_pos, start_pos+1, ...
  int32_t start_pos = 0;           // tokens before it are already in the pages
  std::vector<int32_t> page_table; // covers positions [0, start_pos + tokens.size())
  bool want_logits = true;         // logits of the last new token
};

struct forward_batch {
  std::vector<seq_step> seqs;

  int32_t num_tokens() const {
    int32_t n = 0;
    for (const auto& s : seqs) n += int32_t(s.tokens.size());
    return n;
  }
  int32_t num_logits() const {
    int32_t n = 0;
    for (const auto& s : seqs) n += s.want_logits ? 1 : 0;
    return n;
  }
};

} // namespace kvactor
