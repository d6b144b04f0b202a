#include "runtime/bpe_model.h"

#include <algorithm>
#include <cstdio>
#include <queue>

#include "runtime/unicode.h"

namespace kvactor::tokenization {

namespace {

constexpr std::string_view word_marker = "\xE2\x96\x81"; // U+2581, SentencePiece's space
constexpr size_t max_cached_word_bytes = 256;
constexpr size_t max_cached_words = 1 << 16;

uint64_t pair_key(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }

size_t leading_markers(std::string_view token) {
  size_t n = 0;
  while (token.substr(n).starts_with(word_marker)) n += word_marker.size();
  return n;
}

} // namespace

void bpe_model::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    if (auto it = vocab.find(word); it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (!split_before_word_marker) {
    tokenize_chunk(word, out);
    return;
  }
  size_t begin = 0;
  for (size_t at = word.find(word_marker, 1); at != std::string_view::npos; at = word.find(word_marker, at + 1)) {
    if (word.substr(0, at).ends_with(word_marker)) continue;
    tokenize_chunk(word.substr(begin, at - begin), out);
    begin = at;
  }
  tokenize_chunk(word.substr(begin), out);
}

bool bpe_model::marker_only_starts_tokens() const {
  if (ignore_merges || !continuing_subword_prefix.empty() || !end_of_word_suffix.empty() ||
      !vocab.contains(word_marker))
    return false;
  for (const auto& [token, id] : vocab)
    if (token.find(word_marker, leading_markers(token)) != std::string::npos) return false;
  return true;
}

void bpe_model::tokenize_chunk(std::string_view word, std::vector<int32_t>& out) const {
  const bool cacheable = word.size() < max_cached_word_bytes;
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids = merge_word(word);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    // NOTE: dropping everything when full is crude but keeps memory bounded;
    // the words of a language refill it quickly.
    if (cache_.size() >= max_cached_words) cache_.clear();
    cache_.emplace(std::string(word), std::move(ids));
  }
}

const bpe_merge* bpe_model::find_merge(int32_t left, int32_t right) const {
  auto it = merges.find(pair_key(left, right));
  return it == merges.end() ? nullptr : &it->second;
}

std::vector<int32_t> bpe_model::initial_symbols(std::string_view word) const {
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  bool pending_unk = false;
  std::string decorated;
  for (size_t pos = 0; pos < word.size();) {
    const size_t begin = pos;
    pos += unicode::char_length(static_cast<unsigned char>(word[pos]));
    std::string_view symbol = word.substr(begin, pos - begin);
    const bool add_prefix = begin > 0 && !continuing_subword_prefix.empty();
    const bool add_suffix = pos == word.size() && !end_of_word_suffix.empty();
    if (add_prefix || add_suffix) {
      decorated = (add_prefix ? continuing_subword_prefix : "") + std::string(symbol) +
                  (add_suffix ? end_of_word_suffix : "");
      symbol = decorated;
    }
    if (auto it = vocab.find(symbol); it != vocab.end()) {
      if (pending_unk) ids.push_back(*unk_id), pending_unk = false;
      ids.push_back(it->second);
      continue;
    }
    if (byte_fallback && std::all_of(symbol.begin(), symbol.end(),
                                     [&](char b) { return byte_ids[static_cast<unsigned char>(b)] >= 0; })) {
      for (char b : symbol) ids.push_back(byte_ids[static_cast<unsigned char>(b)]);
      continue;
    }
    if (unk_id) {
      if (pending_unk && !fuse_unk) ids.push_back(*unk_id);
      pending_unk = true;
    }
  }
  if (pending_unk) ids.push_back(*unk_id);
  return ids;
}

std::vector<int32_t> bpe_model::merge_word(std::string_view word) const {
  std::vector<int32_t> ids = initial_symbols(word);
  if (ids.size() < 2 || merges.empty()) return ids;

  struct symbol {
    int32_t id;
    int32_t prev; // -1: none
    int32_t next; // -1: none
    bool alive;
  };
  const int32_t n = int32_t(ids.size());
  std::vector<symbol> symbols(n); // [n]
  for (int32_t i = 0; i < n; ++i) symbols[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1, true};

  struct candidate {
    int32_t rank, pos, new_id;
  };
  const auto later = [](const candidate& a, const candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::vector<candidate> storage;
  storage.reserve(ids.size());
  std::priority_queue<candidate, std::vector<candidate>, decltype(later)> queue(later, std::move(storage));
  for (int32_t i = 0; i + 1 < n; ++i)
    if (const bpe_merge* m = find_merge(ids[i], ids[i + 1])) queue.push({m->rank, i, m->new_id});

  while (!queue.empty()) {
    const candidate top = queue.top();
    queue.pop();
    symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    const symbol right = symbols[left.next];
    // An entry is stale when either side has merged since it was queued.
    const bpe_merge* m = find_merge(left.id, right.id);
    if (!m || m->new_id != top.new_id) continue;
    symbols[left.next].alive = false;
    left.id = top.new_id;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0)
      if (const bpe_merge* p = find_merge(symbols[left.prev].id, left.id)) queue.push({p->rank, left.prev, p->new_id});
    if (left.next >= 0)
      if (const bpe_merge* q = find_merge(left.id, symbols[left.next].id)) queue.push({q->rank, top.pos, q->new_id});
  }
  ids.clear();
  for (const symbol& s : symbols)
    if (s.alive) ids.push_back(s.id);
  return ids;
}

void parse_bpe_model(const json::value& v, bpe_model& model) {
  const json::object& o = as_object(v, "model");
  const std::string type = type_of(o, "model");
  if (type != "BPE") throw bad_content("unsupported model type '" + type + "'");
  if (const json::value* dropout = find(o, "dropout");
      dropout && !(dropout->is_number() && dropout->to_number<double>() == 0.0))
    throw bad_content("unsupported BPE dropout (only deterministic BPE is supported)");

  const json::object& vocab = as_object(require(o, "vocab", "model"), "model vocab");
  model.vocab.reserve(vocab.size());
  for (const auto& [token, id] : vocab)
    model.vocab.insert_or_assign(std::string(token), as_token_id(id, "vocab id"));
  model.fuse_unk = get_bool(o, "fuse_unk", false, "model");
  model.byte_fallback = get_bool(o, "byte_fallback", false, "model");
  model.ignore_merges = get_bool(o, "ignore_merges", false, "model");
  if (const json::value* p = find(o, "continuing_subword_prefix"))
    model.continuing_subword_prefix = as_string(*p, "continuing_subword_prefix");
  if (const json::value* s = find(o, "end_of_word_suffix")) model.end_of_word_suffix = as_string(*s, "end_of_word_suffix");
  if (const json::value* unk = find(o, "unk_token")) {
    const std::string name = as_string(*unk, "unk_token");
    auto it = model.vocab.find(name);
    if (it == model.vocab.end()) throw bad_content("unk_token '" + name + "' is not in the vocabulary");
    model.unk_id = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = model.vocab.find(std::string_view(name));
    model.byte_ids[b] = it == model.vocab.end() ? -1 : it->second;
  }

  model.split_before_word_marker = model.marker_only_starts_tokens();

  const auto token_of = [&](const std::string& token) {
    auto it = model.vocab.find(token);
    if (it == model.vocab.end()) throw bad_content("merge token '" + token + "' is not in the vocabulary");
    return it->second;
  };
  const json::array& merges = as_array(require(o, "merges", "model"), "model merges");
  model.merges.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    std::string left, right;
    const json::value& m = merges[rank];
    if (m.is_string()) {
      // "a b": exactly one space, as HF requires.
      const std::string line(m.get_string());
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        throw bad_content("merge " + std::to_string(rank) + " '" + line + "' is not two tokens");
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else {
      const json::array& pair = as_array(m, "merge");
      if (pair.size() != 2) throw bad_content("merge " + std::to_string(rank) + " is not a pair");
      left = as_string(pair[0], "merge token");
      right = as_string(pair[1], "merge token");
    }
    const std::string& prefix = model.continuing_subword_prefix;
    if (!prefix.empty() && !right.starts_with(prefix))
      throw bad_content("merge " + std::to_string(rank) + " right token lacks the continuing_subword_prefix");
    const int32_t left_id = token_of(left);
    const int32_t right_id = token_of(right);
    const int32_t new_id = token_of(left + right.substr(prefix.size()));
    // Later duplicates win, as in HF's HashMap.
    model.merges.insert_or_assign(pair_key(left_id, right_id), bpe_merge{int32_t(rank), new_id});
  }
}

} // namespace kvactor::tokenization
