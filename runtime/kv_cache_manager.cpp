#include "runtime/kv_cache_manager.h"

#include <algorithm>
#include <string>

#include "runtime/error.h"
#include "runtime/sliding_window.h"

namespace kvactor {

namespace {

// Pins are page_pool owners too; request ids stay below this.
constexpr seq_id first_pin_owner = seq_id{1} << 63;

} // namespace

kv_cache_manager::kv_cache_manager(const kv_cache_options& options)
    : options_(options),
      pool_(options.num_pages, options.watermark),
      index_(pool_, options.page_size),
      pins_of_page_(size_t(options.num_pages), 0),
      next_pin_owner_(first_pin_owner) {}

// -- one step -------------------------------------------------------------------

kv_step_reply kv_cache_manager::apply(const kv_step_request& request) {
  check(request);
  kv_step_reply reply;
  for (const auto& ins : request.inserts) insert(ins);
  for (const auto& name : request.unpins) unpin(name);
  for (const auto& p : request.pins)
    reply.pins.push_back({p.name, p.tokens ? pin(p.name, p.ns, *p.tokens) : 0});
  for (const auto& t : request.trims) window_released_ += pool_.release_leading(t.id, t.num_pages);
  for (seq_id id : request.releases) release(id);

  // Every admitted entry shares its hits before any entry allocates: an
  // allocation may evict an unreferenced cached page that a later entry hits.
  const auto& scheduled = request.scheduled;
  std::vector<uint8_t> applied(scheduled.size(), 1);
  for (size_t i = 0; i < scheduled.size(); ++i)
    if (scheduled[i].admitted) applied[i] = share_hits(scheduled[i]);
  for (size_t i = 0; i < scheduled.size(); ++i) {
    const kv_scheduled& e = scheduled[i];
    if (!applied[i]) continue;
    const page_claim claim = e.admitted ? page_claim::admission : page_claim::running;
    if (!allocate(e.id, e.num_new_pages, claim)) {
      release(e.id);
      applied[i] = 0;
    }
  }
  for (size_t i = 0; i < scheduled.size(); ++i) {
    if (!applied[i]) {
      reply.rejected.push_back(scheduled[i].id);
      continue;
    }
    auto table = pool_.page_table(scheduled[i].id);
    if (!scheduled[i].admitted) table = table.last(size_t(scheduled[i].num_new_pages));
    reply.tables.push_back({scheduled[i].id, std::vector<page_id>(table.begin(), table.end())});
  }

  reply.probes.reserve(request.probes.size());
  for (const auto& p : request.probes) reply.probes.push_back({p.id, probe(p)});
  if (request.want_holdings) {
    reply.holdings.reserve(seqs_.size());
    for (const auto& [id, state] : seqs_) reply.holdings.push_back({id, pool_.num_exclusive_pages(id)});
  }
  reply.free_pages = pool_.num_free();
  reply.watermark = pool_.watermark();
  reply.counters = counters();
  return reply;
}

kv_counters kv_cache_manager::counters() const {
  kv_counters c;
  c.queried_tokens = queried_tokens_;
  c.hit_tokens = hit_tokens_;
  c.evictions = evictions_;
  c.window_released_pages = window_released_;
  c.pinned_hits = pinned_hits_;
  c.pinned_hit_tokens = pinned_hit_tokens_;
  c.pages_total = pool_.num_pages();
  c.pages_used = pool_.num_pages() - pool_.num_free();
  c.pages_pinned = pinned_pages_;
  c.pins = int32_t(pins_.size());
  return c;
}

// -- pins -----------------------------------------------------------------------

int32_t kv_cache_manager::pin(const std::string& name, uint64_t ns, std::span<const int32_t> tokens) {
  const size_t page_size = size_t(options_.page_size);
  const size_t num_pages = tokens.size() / page_size;
  if (!options_.prefix_cache || num_pages == 0 || pins_.contains(name)) return 0;
  if (double(pinned_pages_) + double(num_pages) > options_.max_pinned_fraction * pool_.num_pages())
    return 0;
  // peek() never returns the page of the last token (a sequence must compute
  // it for logits); a pin wants every whole page, so look one token further.
  std::vector<int32_t> probe(tokens.begin(), tokens.begin() + ptrdiff_t(num_pages * page_size));
  probe.push_back(0);
  const prefix_hit hit = index_.peek(ns, probe);
  if (hit.pages.size() < num_pages) return 0;
  const seq_id owner = next_pin_owner_++;
  const bool shared = pool_.share(owner, hit.pages);
  if (!shared) throw error("kv_cache_manager: a page the prefix index returned could not be shared");
  pins_.emplace(name, owner);
  pinned_pages_ += int32_t(num_pages);
  for (page_id p : hit.pages) ++pins_of_page_[size_t(p)];
  return int32_t(num_pages * page_size);
}

bool kv_cache_manager::unpin(const std::string& name) {
  auto it = pins_.find(name);
  if (it == pins_.end()) return false;
  const auto pages = pool_.page_table(it->second);
  pinned_pages_ -= int32_t(pages.size());
  for (page_id p : pages) --pins_of_page_[size_t(p)];
  pool_.release(it->second);
  pins_.erase(it);
  return true;
}

// -- internals --------------------------------------------------------------------

void kv_cache_manager::check(const kv_step_request& request) const {
  auto fail = [](const char* what, seq_id id) {
    throw error(std::string("kv_cache_manager: ") + what + " (sequence " + std::to_string(id) + ")");
  };
  std::vector<seq_id> released = request.releases;
  std::sort(released.begin(), released.end());
  if (auto dup = std::adjacent_find(released.begin(), released.end()); dup != released.end())
    fail("released twice in one step", *dup);
  auto is_released = [&](seq_id id) { return std::binary_search(released.begin(), released.end(), id); };
  for (const auto& ins : request.inserts)
    if (!seqs_.contains(ins.id)) fail("insert for a sequence that holds no pages", ins.id);
  for (const auto& t : request.trims)
    if (!seqs_.contains(t.id)) fail("trim of a sequence that holds no pages", t.id);
  for (seq_id id : request.releases)
    if (!seqs_.contains(id)) fail("release of a sequence that holds no pages", id);
  for (const auto& e : request.scheduled) {
    const bool holds = seqs_.contains(e.id) && !is_released(e.id);
    if (e.admitted && holds) fail("admission of a sequence that holds pages", e.id);
    if (e.admitted && !e.tokens) fail("admission without tokens", e.id);
    if (!e.admitted && !holds) fail("growth of a sequence that holds no pages", e.id);
  }
}

void kv_cache_manager::insert(const kv_insert& ins) {
  if (!options_.prefix_cache) return;
  seq_state& state = seqs_.at(ins.id);
  state.tokens.insert(state.tokens.end(), ins.appended.begin(), ins.appended.end());
  const size_t computed = std::min(size_t(std::max(ins.num_computed, 0)), state.tokens.size());
  index_.insert(state.cursor, std::span<const int32_t>(state.tokens).first(computed),
                pool_.page_table(ins.id));
}

void kv_cache_manager::release(seq_id id) {
  pool_.release(id);
  seqs_.erase(id);
}

bool kv_cache_manager::share_hits(const kv_scheduled& e) {
  seq_state state;
  state.cursor = prefix_index::root(e.ns);
  if (options_.prefix_cache) {
    std::span<const int32_t> tokens = *e.tokens;
    queried_tokens_ += int64_t(tokens.size());
    if (e.num_hit_pages > 0) {
      // Looking up exactly the planned pages (plus the token after them)
      // leaves the cursor right behind the last shared page.
      const size_t hit_tokens = size_t(e.num_hit_pages) * size_t(options_.page_size);
      if (tokens.size() <= hit_tokens) return false;
      const prefix_hit hit = index_.lookup(e.ns, tokens.first(hit_tokens + 1));
      if (hit.pages.size() != size_t(e.num_hit_pages)) return false; // the probe went stale
      if (!pool_.share(e.id, hit.pages))
        throw error("kv_cache_manager: a page the prefix index returned could not be shared");
      hit_tokens_ += int64_t(hit_tokens);
      const auto pinned = std::count_if(hit.pages.begin(), hit.pages.end(),
                                        [&](page_id p) { return pins_of_page_[size_t(p)] > 0; });
      if (pinned > 0) {
        ++pinned_hits_;
        pinned_hit_tokens_ += int64_t(pinned) * options_.page_size;
      }
      // Hits its first computed token no longer sees go back at once.
      window_released_ += pool_.release_leading(
          e.id, pages_behind_window(int32_t(hit_tokens), options_.sliding_window, options_.page_size));
      state.cursor = hit.cursor;
    }
    state.tokens.assign(tokens.begin(), tokens.end());
  } else if (e.num_hit_pages > 0) {
    return false;
  }
  seqs_.emplace(e.id, std::move(state));
  return true;
}

bool kv_cache_manager::allocate(seq_id id, int32_t n, page_claim claim) {
  const int32_t unused = pool_.num_free() - pool_.num_evictable();
  if (!pool_.allocate(id, n, claim)) return false;
  evictions_ += std::max(0, n - unused); // allocate() takes unused pages first
  return true;
}

cached_prefix kv_cache_manager::probe(const kv_probe& p) const {
  if (!options_.prefix_cache || !p.tokens) return {};
  const prefix_hit hit = index_.peek(p.ns, *p.tokens);
  const int32_t hit_tokens = int32_t(hit.pages.size()) * options_.page_size;
  if (options_.sliding_window == 0) return cached_prefix{hit_tokens, hit.num_unreferenced};
  // Hits behind the window are let go at admission: they take no free page.
  const size_t dead = size_t(pages_behind_window(hit_tokens, options_.sliding_window, options_.page_size));
  int32_t taken = 0;
  for (size_t i = dead; i < hit.pages.size(); ++i) taken += pool_.refcount(hit.pages[i]) == 0;
  return cached_prefix{hit_tokens, taken};
}

} // namespace kvactor
