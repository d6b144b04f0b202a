#include "runtime/step_planner.h"

#include <algorithm>
#include <numeric>
#include <string>

#include "runtime/error.h"

namespace kvactor {

namespace {

// Service order: higher priority first, then earlier arrival, then input order.
template <class Seq>
std::vector<size_t> service_order(std::span<const Seq> seqs) {
  std::vector<size_t> order(seqs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (seqs[a].priority != seqs[b].priority) return seqs[a].priority > seqs[b].priority;
    return seqs[a].arrival < seqs[b].arrival;
  });
  return order;
}

} // namespace

int32_t step_plan::num_tokens() const {
  int32_t n = 0;
  for (const auto& s : scheduled) n += s.num_new_tokens;
  return n;
}

int32_t step_plan::num_new_pages() const {
  int32_t n = 0;
  for (const auto& s : scheduled) n += s.num_new_pages;
  return n;
}

step_planner::step_planner(step_budget budget) : budget_(budget) {
  auto require = [](bool ok, const char* what, int32_t value) {
    if (!ok) throw error(std::string("step_planner: ") + what + ", got " + std::to_string(value));
  };
  require(budget.page_size > 0, "page_size must be positive", budget.page_size);
  require(budget.max_batch_tokens > 0, "max_batch_tokens must be positive",
          budget.max_batch_tokens);
  require(budget.max_seqs > 0, "max_seqs must be positive", budget.max_seqs);
  require(budget.prefill_chunk >= 0, "prefill_chunk must not be negative", budget.prefill_chunk);
}

int32_t step_planner::pages_for(int32_t num_tokens) const {
  return (num_tokens + budget_.page_size - 1) / budget_.page_size;
}

step_plan step_planner::operator()(const step_input& in) const {
  step_plan plan;
  int32_t tokens_left = budget_.max_batch_tokens;
  int32_t free_pages = in.free_pages;
  const int32_t chunk_cap = budget_.prefill_chunk > 0 ? budget_.prefill_chunk : INT32_MAX;

  // -- running sequences ------------------------------------------------------
  // Victims are always taken from the back of the service order, so the
  // sequences still holding pages are exactly order[0, live).
  const auto order = service_order(in.running);
  size_t live = order.size();
  std::vector<int32_t> entry_of(order.size(), -1); // index into plan.scheduled
  std::vector<uint8_t> dropped;                    // per plan.scheduled entry
  int32_t num_scheduled = 0;

  auto preempt_last = [&] {
    --live;
    const running_seq& victim = in.running[order[live]];
    free_pages += victim.num_exclusive_pages;
    if (int32_t e = entry_of[live]; e >= 0) {
      tokens_left += plan.scheduled[size_t(e)].num_new_tokens;
      free_pages += plan.scheduled[size_t(e)].num_new_pages;
      dropped[size_t(e)] = 1;
      --num_scheduled;
    }
    plan.preempted.push_back(victim.id);
  };

  for (bool decodes : {true, false}) {
    for (size_t k = 0; k < live; ++k) {
      const running_seq& r = in.running[order[k]];
      const int32_t remaining = r.num_tokens - r.num_computed_tokens;
      if (remaining <= 0 || (remaining == 1) != decodes) continue;
      if (tokens_left == 0 || num_scheduled == budget_.max_seqs) break;

      const int32_t n = std::min({remaining, tokens_left, decodes ? 1 : chunk_cap});
      const int32_t need = std::max(0, pages_for(r.num_computed_tokens + n) - r.num_pages);
      while (need > free_pages && live > k + 1) preempt_last();
      if (need > free_pages) {
        preempt_last(); // it is the last one itself
        break;
      }
      free_pages -= need;
      tokens_left -= n;
      entry_of[k] = int32_t(plan.scheduled.size());
      plan.scheduled.push_back(scheduled_seq{r.id, r.num_computed_tokens, n, need,
                                             r.num_computed_tokens + n == r.num_tokens, false});
      dropped.push_back(0);
      ++num_scheduled;
    }
  }

  size_t kept = 0;
  for (size_t e = 0; e < plan.scheduled.size(); ++e)
    if (!dropped[e]) plan.scheduled[kept++] = plan.scheduled[e];
  plan.scheduled.resize(kept);

  // -- waiting sequences ------------------------------------------------------
  for (const auto& w : in.waiting)
    if (w.num_tokens <= 0) plan.refused.push_back(w.id);
  if (!plan.preempted.empty()) return plan;

  for (size_t i : service_order(in.waiting)) {
    const waiting_seq& w = in.waiting[i];
    if (w.num_tokens <= 0) continue;
    if (live >= size_t(budget_.max_seqs) || num_scheduled == budget_.max_seqs ||
        tokens_left == 0)
      break;

    // Whole pages only, and never the last token: it must be computed for logits.
    const cached_prefix cached = in.probe ? in.probe(w.id) : cached_prefix{};
    const int32_t max_hit = (w.num_tokens - 1) / budget_.page_size * budget_.page_size;
    const int32_t hit =
        std::clamp(cached.num_tokens, 0, max_hit) / budget_.page_size * budget_.page_size;
    const int32_t taken = std::clamp(cached.num_unreferenced_pages, 0, hit / budget_.page_size);

    const int32_t n = std::min({w.num_tokens - hit, tokens_left, chunk_cap});
    const int32_t need = pages_for(hit + n) - hit / budget_.page_size;
    if (free_pages - taken - need < in.watermark) break;
    free_pages -= taken + need;
    tokens_left -= n;
    ++live;
    ++num_scheduled;
    plan.scheduled.push_back(scheduled_seq{w.id, hit, n, need, hit + n == w.num_tokens, true});
  }
  return plan;
}

} // namespace kvactor
