#pragma once
// A .safetensors file, memory-mapped read-only and validated when opened.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"key": "value"}}, then the data section; offsets are
// relative to its start. Every tensor is checked when the file is opened, so a
// view handed out is always in bounds.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/dtype.h"

namespace kvactor {

// Element types a safetensors file may hold. Weights are float; the integer
// types occur in some checkpoints as buffers and are readable as raw bytes.
enum class safetensors_dtype : uint8_t { f32, f16, bf16, f64, i64, i32, i16, i8, u8, boolean };

size_t safetensors_dtype_size(safetensors_dtype t);
std::string_view safetensors_dtype_name(safetensors_dtype t); // as written: "F32", "BF16", ...
// The weight type for f32/f16/bf16; nothing for the others.
std::optional<dtype> as_weight_dtype(safetensors_dtype t);

// One tensor inside a mapped file: row-major, little-endian, possibly
// unaligned (offsets in the file need not be multiples of the element size).
struct safetensors_view {
  safetensors_dtype type = safetensors_dtype::f32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

// "[2, 3]", for messages.
std::string shape_string(const std::vector<int64_t>& shape);

class safetensors_file {
 public:
  // Maps and validates `path`. Throws load_error("<path>: ...") on any defect.
  static std::shared_ptr<const safetensors_file> open(const std::string& path);

  safetensors_file(const safetensors_file&) = delete;
  safetensors_file& operator=(const safetensors_file&) = delete;
  ~safetensors_file();

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const; // sorted
  // Views stay valid while this file is alive.
  std::optional<safetensors_view> find(std::string_view name) const;
  const std::map<std::string, std::string, std::less<>>& metadata() const { return metadata_; }

 private:
  safetensors_file(std::string path, const std::byte* base, size_t size);
  void parse_header();

  std::string path_;
  const std::byte* base_ = nullptr; // the whole file, mapped
  size_t size_ = 0;
  std::map<std::string, safetensors_view, std::less<>> tensors_;
  std::map<std::string, std::string, std::less<>> metadata_;
};

} // namespace kvactor
