#pragma once
// The KV cache's memory, by the formula and measured: for each sequence
// length, a fresh backend sized for `batch` sequences of that length
// prefills and decodes them while a memory meter watches. `kvactor profile`
// prints the rows as a table and a plot.
//
//   KV bytes = batch x seq x layers x kv_heads x head_dim x 2 (K, V) x element bytes
//
// plus, for fp8 and int8, their scales (kv_quant.h), shown apart. A paged
// cache allocates whole pages: batch x ceil(seq / page_size) of them.
//
// The meter and the backend are parameters, so that the same profile runs on
// a device: a GPU backend factory plus a meter of device memory (peak of the
// allocator, or cudaMemGetInfo) give the GPU's rows. The CPU's are
// cpu_profile_backend() and rss_meter.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/kv_quant.h"
#include "runtime/model_loader.h"

namespace kvactor {

// -- meters ---------------------------------------------------------------------

class memory_meter {
 public:
  virtual ~memory_meter() = default;
  virtual std::string name() const = 0; // for the table's header, e.g. "resident"
  // Starts a new peak at the current use.
  virtual void reset_peak() = 0;
  // Bytes in use now; also feeds the peak where it cannot be read directly.
  virtual int64_t current() = 0;
  // The most bytes in use since reset_peak().
  virtual int64_t peak() = 0;
};

// The process's resident memory: VmRSS from /proc/self/status, and VmHWM,
// its peak, reset by writing 5 to /proc/self/clear_refs. Where that is not
// allowed the peak is the largest current() seen. Throws kvactor::error when
// /proc/self/status cannot be read.
class rss_meter final : public memory_meter {
 public:
  std::string name() const override { return "resident"; }
  void reset_peak() override;
  int64_t current() override;
  int64_t peak() override;

 private:
  bool hwm_reset_ = false;
  int64_t sampled_peak_ = 0;
};

// -- backends ---------------------------------------------------------------------

// A backend made for one row, and what it allocated for its KV cache.
struct profiled_backend {
  std::unique_ptr<backend> model;
  int64_t kv_element_bytes = 0;
  int64_t kv_scale_bytes = 0;
};

using profile_backend_factory = std::function<profiled_backend(int32_t num_pages, int32_t page_size)>;

// The CPU backend over `model`'s weights, storing `format`.
profile_backend_factory cpu_profile_backend(const loaded_model& model, kv_format format, int32_t threads = 0);

// -- the profile ----------------------------------------------------------------------

struct kv_profile_options {
  std::vector<int32_t> seq_lens;
  int32_t batch = 1;
  kv_format format = kv_format::f32;
  int32_t page_size = 16;
  int32_t prefill_chunk = 512; // tokens of each sequence per prefill step
  int32_t decode_tokens = 8;   // each sequence's last tokens, one step each
};

struct kv_profile_row {
  int32_t seq_len = 0;
  int32_t batch = 0;
  int64_t formula_bytes = 0;       // the formula above
  int64_t formula_scale_bytes = 0; // fp8: per page and kv head; int8: per token and kv head
  int32_t pages = 0;               // batch x ceil(seq / page_size)
  int64_t allocated_bytes = 0;     // the backend's KV elements: pages x page bytes
  int64_t allocated_scale_bytes = 0;
  int64_t resident_after_alloc = 0; // meter: after the backend is made, less before
  int64_t measured_kv_bytes = 0;    // that, less what a one-page backend takes beyond its page
  int64_t peak_during_run = 0;      // meter: peak over prefill and decode, less before
  double seconds = 0;               // prefill + decode
};

// The formula's bytes for (batch, seq_len) of `config` in `format`.
int64_t kv_formula_bytes(const model_config& config, kv_format format, int64_t batch, int64_t seq_len);
int64_t kv_formula_scale_bytes(const model_config& config, kv_format format, int64_t batch, int64_t seq_len,
                               int32_t page_size);

// One row per sequence length, in the order given. Each row's backend is
// made, run on random tokens and destroyed before the next. Throws
// kvactor::error for lengths or a batch that are not positive, or fewer
// tokens than decode_tokens + 1.
std::vector<kv_profile_row> profile_kv(const model_config& config, const profile_backend_factory& make,
                                       memory_meter& meter, const kv_profile_options& options);

} // namespace kvactor
