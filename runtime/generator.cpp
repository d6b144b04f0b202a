#include "runtime/generator.h"

#include <algorithm>

#include "runtime/error.h"

namespace kvactor {

generation_result generate(backend& b, const std::vector<int32_t>& prompt,
                           const generation_options& options, const token_callback& on_token) {
  if (prompt.empty()) throw error("generate: empty prompt");
  const kv_layout& layout = b.layout();
  std::vector<int32_t> stops = options.stop_token_ids;
  if (!options.ignore_eos)
    stops.insert(stops.end(), b.config().eos_token_ids.begin(), b.config().eos_token_ids.end());

  std::vector<int32_t> history = prompt; // prompt + output, for the repetition penalty
  generation_result result{{}, "length"};
  forward_batch batch;
  batch.seqs.resize(1);
  seq_step& seq = batch.seqs[0];
  std::vector<float> logits; // [1, vocab]

  // Feeds history[from, to); sizes the page table to cover it.
  auto feed = [&](size_t from, size_t to) {
    const int32_t pages = int32_t((to + layout.page_size - 1) / layout.page_size);
    if (pages > layout.num_pages)
      throw error("generate: " + std::to_string(to) + " tokens need " + std::to_string(pages) +
                  " KV pages, the backend has " + std::to_string(layout.num_pages));
    while (int32_t(seq.page_table.size()) < pages) seq.page_table.push_back(int32_t(seq.page_table.size()));
    seq.tokens.assign(history.begin() + from, history.begin() + to);
    seq.start_pos = int32_t(from);
    seq.want_logits = to == history.size();
    b.forward(batch, logits);
  };

  const size_t chunk = options.prefill_chunk > 0 ? size_t(options.prefill_chunk) : prompt.size();
  for (size_t i = 0; i < prompt.size(); i += chunk) feed(i, std::min(prompt.size(), i + chunk));
  for (int32_t n = 0; n < options.max_tokens; ++n) {
    if (n > 0) feed(history.size() - 1, history.size());
    const int32_t token = sample_token(logits, options.sampling, history, uint64_t(n));
    history.push_back(token);
    result.tokens.push_back(token);
    if (on_token) on_token(token);
    if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
      result.finish_reason = "stop";
      break;
    }
  }
  return result;
}

} // namespace kvactor
