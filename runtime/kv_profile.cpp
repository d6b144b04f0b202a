#include "runtime/kv_profile.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "runtime/cpu_backend.h"
#include "runtime/error.h"

namespace kvactor {

// -- meters ---------------------------------------------------------------------

namespace {

// A "Key:   1234 kB" line of /proc/self/status, in bytes.
int64_t status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  if (!in) throw error("/proc/self/status: cannot read the process's memory use");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(key.size() + 1));
    int64_t kib = 0;
    fields >> kib;
    return kib * 1024;
  }
  throw error("/proc/self/status: no " + key + " line");
}

} // namespace

void rss_meter::reset_peak() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  hwm_reset_ = bool(clear);
  sampled_peak_ = status_bytes("VmRSS");
}

int64_t rss_meter::current() {
  const int64_t now = status_bytes("VmRSS");
  sampled_peak_ = std::max(sampled_peak_, now);
  return now;
}

int64_t rss_meter::peak() {
  const int64_t now = current();
  return hwm_reset_ ? std::max(status_bytes("VmHWM"), now) : sampled_peak_;
}

// -- backends ---------------------------------------------------------------------

profile_backend_factory cpu_profile_backend(const loaded_model& model, kv_format format, int32_t threads) {
  return [&model, format, threads](int32_t num_pages, int32_t page_size) {
    auto b = std::make_unique<cpu_backend>(model.config, model.weights, num_pages, page_size, threads, format);
    profiled_backend out;
    out.kv_element_bytes = int64_t(b->kv_element_bytes());
    out.kv_scale_bytes = int64_t(b->kv_scale_bytes());
    out.model = std::move(b);
    return out;
  };
}

// -- the profile ----------------------------------------------------------------------

int64_t kv_formula_bytes(const model_config& c, kv_format format, int64_t batch, int64_t seq_len) {
  return batch * seq_len * int64_t(kv_bytes_per_token(c.num_layers, c.num_kv_heads, c.head_dim, kv_element_size(format)));
}

int64_t kv_formula_scale_bytes(const model_config& c, kv_format format, int64_t batch, int64_t seq_len,
                               int32_t page_size) {
  const int64_t per_kv_head = int64_t(c.num_layers) * 2 * c.num_kv_heads * int64_t(sizeof(float));
  switch (format) {
    case kv_format::fp8: return batch * ((seq_len + page_size - 1) / page_size) * per_kv_head;
    case kv_format::int8: return batch * seq_len * per_kv_head;
    default: return 0;
  }
}

namespace {

void return_freed_memory() {
#if defined(__GLIBC__)
  malloc_trim(0); // so that the next row's baseline does not count the last one's freed heap
#endif
}

// Prefills every sequence in chunks, all sequences in each step, then
// decodes their last tokens one step at a time.
void run_row(backend& b, int32_t batch, int32_t seq_len, const kv_profile_options& o, memory_meter& meter) {
  const int32_t pages_per_seq = (seq_len + o.page_size - 1) / o.page_size;
  std::mt19937 rng{uint32_t(seq_len)};
  std::uniform_int_distribution<int32_t> pick(0, b.config().vocab_size - 1);
  forward_batch step;
  step.seqs.resize(size_t(batch));
  for (int32_t s = 0; s < batch; ++s) {
    auto& table = step.seqs[size_t(s)].page_table;
    table.resize(size_t(pages_per_seq));
    std::iota(table.begin(), table.end(), s * pages_per_seq);
  }
  std::vector<float> logits;
  const int32_t prompt = seq_len - o.decode_tokens;
  const int32_t chunk = o.prefill_chunk > 0 ? o.prefill_chunk : prompt;
  auto forward = [&](int32_t start, int32_t n) {
    for (auto& s : step.seqs) {
      s.tokens.resize(size_t(n));
      for (auto& t : s.tokens) t = pick(rng);
      s.start_pos = start;
    }
    b.forward(step, logits);
    meter.current();
  };
  for (int32_t start = 0; start < prompt; start += chunk) forward(start, std::min(chunk, prompt - start));
  for (int32_t pos = prompt; pos < seq_len; ++pos) forward(pos, 1);
}

} // namespace

std::vector<kv_profile_row> profile_kv(const model_config& config, const profile_backend_factory& make,
                                       memory_meter& meter, const kv_profile_options& o) {
  if (o.batch <= 0) throw error("profile: the batch must be positive, got " + std::to_string(o.batch));
  if (o.page_size <= 0) throw error("profile: the page size must be positive, got " + std::to_string(o.page_size));
  if (o.decode_tokens < 0 || o.prefill_chunk < 0) throw error("profile: negative decode_tokens or prefill_chunk");
  for (int32_t n : o.seq_lens)
    if (n <= o.decode_tokens)
      throw error("profile: sequence length " + std::to_string(n) + " leaves nothing to prefill before its " +
                  std::to_string(o.decode_tokens) + " decoded tokens");

  // A first pass touches every weight, so that no row counts them. Then
  // what a backend takes besides its KV cache (its scratch: on a GPU the
  // executor's activations and workspace), from one of a single page.
  {
    kv_profile_options warm = o;
    warm.batch = 1;
    warm.decode_tokens = 1;
    profiled_backend tiny = make(1, o.page_size);
    run_row(*tiny.model, 1, 2, warm, meter);
  }
  int64_t backend_overhead = 0;
  {
    return_freed_memory();
    const int64_t before = meter.current();
    profiled_backend tiny = make(1, o.page_size);
    backend_overhead = meter.current() - before - (tiny.kv_element_bytes + tiny.kv_scale_bytes);
  }

  std::vector<kv_profile_row> rows;
  for (int32_t seq_len : o.seq_lens) {
    kv_profile_row r;
    r.seq_len = seq_len;
    r.batch = o.batch;
    r.formula_bytes = kv_formula_bytes(config, o.format, o.batch, seq_len);
    r.formula_scale_bytes = kv_formula_scale_bytes(config, o.format, o.batch, seq_len, o.page_size);
    r.pages = o.batch * ((seq_len + o.page_size - 1) / o.page_size);

    return_freed_memory();
    meter.reset_peak();
    const int64_t before = meter.current();
    {
      profiled_backend made = make(r.pages, o.page_size);
      r.allocated_bytes = made.kv_element_bytes;
      r.allocated_scale_bytes = made.kv_scale_bytes;
      r.resident_after_alloc = meter.current() - before;
      r.measured_kv_bytes = r.resident_after_alloc - backend_overhead;
      const auto t0 = std::chrono::steady_clock::now();
      run_row(*made.model, o.batch, seq_len, o, meter);
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      r.peak_during_run = meter.peak() - before;
    }
    rows.push_back(r);
  }
  return_freed_memory();
  return rows;
}

} // namespace kvactor
