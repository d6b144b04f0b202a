// kvactor: the engine from the command line, one request at a time on the CPU
// backend. Subcommands: generate, tokenize, detokenize, kv-budget, profile
// (also on the GPU, in a build with CUDA).
#include <chrono>
#include <cmath>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "runtime/cpu_backend.h"
#include "runtime/default_model.h"
#include "runtime/error.h"
#include "runtime/generator.h"
#include "runtime/kv_profile.h"
#include "runtime/model_loader.h"
#include "runtime/tokenizer.h"
#include "tools/plot/chart.h"

#ifdef KVACTOR_HAVE_CUDA
#include "gpu/cuda_profile.h"
#endif

namespace {

using namespace kvactor;

constexpr const char* usage = R"(usage:
  kvactor generate   [--model DIR] --prompt TEXT [--max-tokens N] [--temperature T]
                     [--top-p P] [--top-k K] [--min-p M] [--repetition-penalty R]
                     [--seed S] [--chunk C] [--ignore-eos] [--threads N]
  kvactor tokenize   [--model DIR] [--add-special] [--text TEXT]   (stdin without --text)
  kvactor detokenize [--model DIR] [--skip-special]               (a JSON array on stdin)
  kvactor kv-budget  [--model DIR] --seq N [--batch B] [--kv-dtype bf16|fp16|fp32|fp8|int8]
                     [--page-size P]
  kvactor profile    [--model DIR] --seq-lens N,N,... [--batch B] [--kv-dtype f32|bf16|fp8|int8]
                     [--device cpu|cuda] [--dummy] [--seed S] [--page-size P] [--chunk C]
                     [--threads N] [--png FILE]
                     KV memory by the formula and measured (resident memory around a
                     fresh CPU backend, or device memory around a fresh KV cache and
                     executor on the GPU, prefilling and decoding each length); a
                     table on stdout and a plot in FILE (default kv_profile.png)
With no --model, the embedded default model is used.
)";

struct usage_error : error {
  using error::error;
};

// "--name value" and "--flag" options after the subcommand.
class options {
 public:
  options(int argc, char** argv, std::initializer_list<const char*> flags) {
    for (int i = 2; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) throw usage_error("unexpected argument '" + a + "'");
      bool is_flag = false;
      for (auto f : flags) is_flag |= a == f;
      if (is_flag) {
        values_[a] = "";
      } else {
        if (i + 1 >= argc) throw usage_error(a + " needs a value");
        values_[a] = argv[++i];
      }
    }
  }
  // Each subcommand states what it accepts, so a typo is an error, not ignored.
  void allow(std::initializer_list<const char*> names) const {
    for (const auto& [k, v] : values_) {
      bool ok = false;
      for (auto n : names) ok |= k == n;
      if (!ok) throw usage_error("unknown option " + k);
    }
  }
  bool has(const std::string& k) const { return values_.count(k) != 0; }
  std::string str(const std::string& k, std::string def = "") const {
    auto it = values_.find(k);
    return it == values_.end() ? def : it->second;
  }
  template <class T>
  T num(const std::string& k, T def) const {
    auto it = values_.find(k);
    if (it == values_.end()) return def;
    try {
      size_t used = 0;
      double v = std::stod(it->second, &used);
      if (used != it->second.size() || !std::isfinite(v)) throw std::invalid_argument("");
      if constexpr (std::is_integral_v<T>) {
        if (v != std::floor(v) || v < double(std::numeric_limits<T>::min()) ||
            v > double(std::numeric_limits<T>::max()))
          throw std::invalid_argument("");
      }
      return T(v);
    } catch (const std::logic_error&) {
      throw usage_error(k + ": '" + it->second + "' is not a valid number");
    }
  }

 private:
  std::map<std::string, std::string> values_;
};

std::string model_dir(const options& o) { return o.has("--model") ? o.str("--model") : default_model_dir(); }

std::string read_stdin() { return {std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()}; }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int cmd_generate(const options& o) {
  o.allow({"--model", "--prompt", "--max-tokens", "--temperature", "--top-p", "--top-k", "--min-p",
           "--repetition-penalty", "--seed", "--chunk", "--ignore-eos", "--threads"});
  if (!o.has("--prompt")) throw usage_error("generate needs --prompt");
  const std::string dir = model_dir(o);
  const auto model = load_model(dir);
  const auto tok = tokenizer::from_file(dir + "/tokenizer.json");

  generation_options opt;
  opt.max_tokens = o.num<int32_t>("--max-tokens", 128);
  opt.prefill_chunk = o.num<int32_t>("--chunk", 0);
  opt.ignore_eos = o.has("--ignore-eos");
  opt.sampling.temperature = o.num<float>("--temperature", 1.0f);
  opt.sampling.top_p = o.num<float>("--top-p", 1.0f);
  opt.sampling.top_k = o.num<int32_t>("--top-k", 0);
  opt.sampling.min_p = o.num<float>("--min-p", 0.0f);
  opt.sampling.repetition_penalty = o.num<float>("--repetition-penalty", 1.0f);
  opt.sampling.seed = o.num<uint64_t>("--seed", 0);
  if (opt.max_tokens < 0 || opt.prefill_chunk < 0 || opt.sampling.temperature < 0 || opt.sampling.top_k < 0 ||
      !(opt.sampling.top_p > 0 && opt.sampling.top_p <= 1) || opt.sampling.min_p < 0 || opt.sampling.min_p > 1 ||
      !(opt.sampling.repetition_penalty > 0))
    throw usage_error("a sampling option is out of range (see --help)");

  const auto prompt = tok.encode(o.str("--prompt"), /*add_special_tokens=*/true);
  if (prompt.empty()) throw usage_error("the prompt encodes to no tokens");
  const int32_t page_size = 16;
  const int64_t positions = int64_t(prompt.size()) + opt.max_tokens;
  if (positions > model.config.max_position_embeddings)
    throw usage_error("prompt (" + std::to_string(prompt.size()) + " tokens) + --max-tokens exceeds the model's " +
                      std::to_string(model.config.max_position_embeddings) + "-token context");
  cpu_backend backend(model.config, model.weights, int32_t((positions + page_size - 1) / page_size), page_size,
                      o.num<int32_t>("--threads", 0));

  incremental_decoder text(tok);
  const auto t0 = std::chrono::steady_clock::now();
  std::optional<double> first_token_s;
  auto result = generate(backend, prompt, opt, [&](int32_t id) {
    if (!first_token_s) first_token_s = seconds_since(t0);
    std::cout << text.push(id) << std::flush;
  });
  std::cout << text.finish() << std::endl;
  const double total_s = seconds_since(t0);
  const size_t n = result.tokens.size();
  std::fprintf(stderr, "prompt tokens: %zu, completion tokens: %zu, finish: %s\n", prompt.size(), n,
               result.finish_reason.c_str());
  if (first_token_s) {
    std::fprintf(stderr, "prefill: %.1f tokens/s (%.1f ms to first token)", prompt.size() / *first_token_s,
                 *first_token_s * 1e3);
    if (n > 1) std::fprintf(stderr, ", decode: %.1f tokens/s", (n - 1) / (total_s - *first_token_s));
    std::fprintf(stderr, "\n");
  }
  return 0;
}

int cmd_tokenize(const options& o) {
  o.allow({"--model", "--add-special", "--text"});
  const auto tok = tokenizer::from_file(model_dir(o) + "/tokenizer.json");
  const std::string text = o.has("--text") ? o.str("--text") : read_stdin();
  const auto ids = tok.encode(text, o.has("--add-special"));
  std::cout << boost::json::serialize(boost::json::value_from(ids)) << "\n";
  return 0;
}

int cmd_detokenize(const options& o) {
  o.allow({"--model", "--skip-special"});
  const auto tok = tokenizer::from_file(model_dir(o) + "/tokenizer.json");
  boost::system::error_code ec;
  auto v = boost::json::parse(read_stdin(), ec);
  if (ec || !v.is_array()) throw error("stdin: detokenize reads a JSON array of token ids on stdin");
  std::vector<int32_t> ids;
  for (const auto& x : v.as_array()) {
    if (!x.is_int64() || x.as_int64() < 0 || x.as_int64() >= tok.vocab_size())
      throw error("stdin: token id " + boost::json::serialize(x) + " is not in the vocabulary (size " +
                        std::to_string(tok.vocab_size()) + ")");
    ids.push_back(int32_t(x.as_int64()));
  }
  std::cout << tok.decode(ids, o.has("--skip-special")) << "\n";
  return 0;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) b /= 1000, ++u;
  char s[32];
  std::snprintf(s, sizeof s, u ? "%.2f %s" : "%.0f %s", b, units[u]);
  return s;
}

int cmd_kv_budget(const options& o) {
  o.allow({"--model", "--seq", "--batch", "--kv-dtype", "--page-size"});
  if (!o.has("--seq")) throw usage_error("kv-budget needs --seq");
  const auto config = load_model_dir_config(model_dir(o));
  const int64_t seq = o.num<int64_t>("--seq", 0), batch = o.num<int64_t>("--batch", 1);
  const int64_t page_size = o.num<int64_t>("--page-size", 16);
  if (seq <= 0 || batch <= 0 || page_size <= 0) throw usage_error("--seq, --batch and --page-size must be positive");
  const std::map<std::string, size_t> elem_bytes = {{"fp32", 4}, {"bf16", 2}, {"fp16", 2}, {"fp8", 1}, {"int8", 1}};
  const std::string dt = o.str("--kv-dtype", "bf16");
  if (!elem_bytes.count(dt)) throw usage_error("--kv-dtype must be one of fp32, bf16, fp16, fp8, int8");

  // batch x seq x layers x kv_heads x head_dim x 2 (K and V) x element bytes
  const size_t per_token = kv_bytes_per_token(config.num_layers, config.num_kv_heads, config.head_dim, elem_bytes.at(dt));
  const int64_t pages = (seq + page_size - 1) / page_size;
  std::printf("model: %s, %d layers x %d kv heads x head_dim %d, kv dtype %s\n", config.architecture.c_str(),
              config.num_layers, config.num_kv_heads, config.head_dim, dt.c_str());
  std::printf("per token:    %zu bytes (%s)\n", per_token, human_bytes(double(per_token)).c_str());
  std::printf("per sequence: %lld bytes (%s) for %lld tokens\n", (long long)(per_token * seq),
              human_bytes(double(per_token * seq)).c_str(), (long long)seq);
  std::printf("total:        %lld bytes (%s) for batch %lld\n", (long long)(per_token * seq * batch),
              human_bytes(double(per_token * seq * batch)).c_str(), (long long)batch);
  std::printf("paged:        %lld pages of %lld tokens per sequence, %s (the last page partly empty)\n",
              (long long)pages, (long long)page_size, human_bytes(double(per_token * page_size * pages * batch)).c_str());
  return 0;
}

// "512,2048,8192" -> {512, 2048, 8192}
std::vector<int32_t> parse_lengths(const std::string& text) {
  std::vector<int32_t> out;
  size_t at = 0;
  while (at <= text.size()) {
    const size_t comma = std::min(text.find(',', at), text.size());
    const std::string item = text.substr(at, comma - at);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::logic_error&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v <= 0 || v > INT32_MAX)
      throw usage_error("--seq-lens: '" + item + "' is not a positive length");
    out.push_back(int32_t(v));
    at = comma + 1;
  }
  return out;
}

int cmd_profile(const options& o) {
  o.allow({"--model", "--seq-lens", "--batch", "--kv-dtype", "--device", "--dummy", "--seed", "--page-size", "--chunk",
           "--threads", "--png"});
  const std::string device = o.str("--device", "cpu");
  if (device != "cpu" && device != "cuda") throw usage_error("--device must be cpu or cuda");
#ifndef KVACTOR_HAVE_CUDA
  if (device == "cuda") throw usage_error("--device cuda: this build has no CUDA backend");
#endif
  if (!o.has("--seq-lens")) throw usage_error("profile needs --seq-lens, e.g. --seq-lens 512,2048,8192");
  kv_profile_options po;
  po.seq_lens = parse_lengths(o.str("--seq-lens"));
  po.batch = o.num<int32_t>("--batch", 1);
  po.page_size = o.num<int32_t>("--page-size", 16);
  po.prefill_chunk = o.num<int32_t>("--chunk", 512);
  const auto format = parse_kv_format(o.str("--kv-dtype", device == "cpu" ? "f32" : "bf16"));
  if (!format) throw usage_error("--kv-dtype must be one of f32, bf16, fp8, int8");
  if (device == "cuda" && *format == kv_format::f32) throw usage_error("--device cuda stores bf16, fp8 or int8");
  po.format = *format;
  if (po.batch <= 0 || po.page_size <= 0 || po.prefill_chunk <= 0)
    throw usage_error("--batch, --page-size and --chunk must be positive");

  const std::string dir = model_dir(o);
  const uint64_t seed = o.num<uint64_t>("--seed", 0);
  const model_config c = load_model_dir_config(dir);
  for (int32_t n : po.seq_lens)
    if (n > c.max_position_embeddings)
      std::fprintf(stderr, "note: %d tokens exceed the model's %d-token context; the memory is measured all the same\n",
                   n, c.max_position_embeddings);

  std::vector<kv_profile_row> rows;
  std::string meter_name;
  if (device == "cpu") {
    const loaded_model model = o.has("--dummy") ? make_dummy_model(c, seed) : load_model(dir);
    rss_meter meter;
    rows = profile_kv(c, cpu_profile_backend(model, po.format, o.num<int32_t>("--threads", 0)), meter, po);
    meter_name = meter.name();
  } else {
#ifdef KVACTOR_HAVE_CUDA
    // Weights once (drawn on the device with --dummy); each row a new cache.
    auto weights = std::make_shared<const gpu::device_weights>(
        o.has("--dummy") ? gpu::random_weights(c, seed)
                         : gpu::upload_weights(c, gpu::host_tensors(load_weight_views(dir, c))));
    device_memory_meter meter;
    rows = profile_kv(c, cuda_profile_backend(c, weights, po.format), meter, po);
    meter_name = meter.name();
#endif
  }

  const std::string dt(kv_format_name(po.format));
  std::printf("model: %s, %d layers x %d kv heads x head_dim %d, kv dtype %s, batch %d, pages of %d tokens\n",
              c.architecture.c_str(), c.num_layers, c.num_kv_heads, c.head_dim, dt.c_str(), po.batch, po.page_size);
  std::printf("KV bytes = batch x seq x layers x kv_heads x head_dim x 2 x %zu byte%s%s\n",
              kv_element_size(po.format), kv_element_size(po.format) > 1 ? "s" : "",
              po.format == kv_format::fp8    ? " (+ fp32 scales per page and kv head)"
              : po.format == kv_format::int8 ? " (+ fp32 scales per token and kv head)"
                                             : "");
  std::printf("%8s %8s %14s %12s %14s %14s %18s %18s %9s\n", "seq", "pages", "formula KV", "scales", "allocated KV",
              "measured KV", "resident after", "peak during run", "seconds");
  for (const auto& r : rows)
    std::printf("%8d %8d %14s %12s %14s %14s %18s %18s %9.2f\n", r.seq_len, r.pages,
                human_bytes(double(r.formula_bytes)).c_str(), human_bytes(double(r.formula_scale_bytes)).c_str(),
                human_bytes(double(r.allocated_bytes + r.allocated_scale_bytes)).c_str(),
                human_bytes(double(r.measured_kv_bytes)).c_str(), human_bytes(double(r.resident_after_alloc)).c_str(),
                human_bytes(double(r.peak_during_run)).c_str(), r.seconds);
  std::printf("(allocated KV: whole pages, scales included; resident after: the %s memory gained by making the\n"
              " backend; measured KV: that less what a one-page backend takes beyond its page (its scratch);\n"
              " peak during run: over prefill and decode; all less the memory before the backend)\n",
              meter_name.c_str());

  auto name = std::filesystem::path(dir).lexically_normal();
  if (name.filename().empty()) name = name.parent_path(); // "models/x/"
  plot::chart chart;
  chart.title = "KV cache memory: " + name.filename().string() + ", " + dt + ", batch " + std::to_string(po.batch) +
                (device == "cuda" ? ", GPU" : "");
  chart.x_label = "sequence length (tokens)";
  chart.y_label = "bytes";
  chart.log_x = chart.log_y = chart.y_bytes = true;
  plot::series resident, measured, peak, formula, allocated;
  resident.label = "resident after allocation";
  measured.label = "measured KV (less the backend's scratch)";
  peak.label = "peak during run";
  formula.label = "formula";
  allocated.label = "allocated (pages)";
  allocated.dots = true;
  for (const auto& r : rows) {
    const double x = r.seq_len;
    resident.points.emplace_back(x, double(r.resident_after_alloc));
    measured.points.emplace_back(x, double(r.measured_kv_bytes));
    peak.points.emplace_back(x, double(r.peak_during_run));
    formula.points.emplace_back(x, double(r.formula_bytes + r.formula_scale_bytes));
    allocated.points.emplace_back(x, double(r.allocated_bytes + r.allocated_scale_bytes));
  }
  chart.lines = {resident, peak, measured, formula, allocated}; // the formula and allocation drawn last, on top
  plot::canvas canvas(900, 560);
  plot::draw_chart(canvas, {0, 8, canvas.width() - 8, canvas.height() - 8}, chart);
  const std::string png = o.str("--png", "kv_profile.png");
  canvas.save_png(png);
  std::printf("plot: %s\n", png.c_str());
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "generate") return cmd_generate(options(argc, argv, {"--ignore-eos"}));
    if (cmd == "tokenize") return cmd_tokenize(options(argc, argv, {"--add-special"}));
    if (cmd == "detokenize") return cmd_detokenize(options(argc, argv, {"--skip-special"}));
    if (cmd == "kv-budget") return cmd_kv_budget(options(argc, argv, {}));
    if (cmd == "profile") return cmd_profile(options(argc, argv, {"--dummy"}));
    throw usage_error("unknown command '" + cmd + "'");
  } catch (const usage_error& e) {
    std::fprintf(stderr, "kvactor %s: %s\n%s", cmd.c_str(), e.what(), usage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvactor %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
