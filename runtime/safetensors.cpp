#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "runtime/error.h"

namespace kvactor {

namespace json = boost::json;

// -- element types -----------------------------------------------------------

namespace {

struct dtype_entry {
  std::string_view name;
  safetensors_dtype type;
  size_t size;
};

constexpr dtype_entry dtype_table[] = {
    {"F32", safetensors_dtype::f32, 4},  {"F16", safetensors_dtype::f16, 2},
    {"BF16", safetensors_dtype::bf16, 2}, {"F64", safetensors_dtype::f64, 8},
    {"I64", safetensors_dtype::i64, 8},  {"I32", safetensors_dtype::i32, 4},
    {"I16", safetensors_dtype::i16, 2},  {"I8", safetensors_dtype::i8, 1},
    {"U8", safetensors_dtype::u8, 1},    {"BOOL", safetensors_dtype::boolean, 1},
};

const dtype_entry& entry_of(safetensors_dtype t) {
  for (const auto& e : dtype_table)
    if (e.type == t) return e;
  return dtype_table[0]; // unreachable: the table covers the enum
}

std::optional<safetensors_dtype> parse_dtype(std::string_view name) {
  for (const auto& e : dtype_table)
    if (e.name == name) return e.type;
  return std::nullopt;
}

// A JSON integer >= 0, or nothing (negative, fractional or not a number).
std::optional<uint64_t> non_negative_int(const json::value& v) {
  if (v.is_uint64()) return v.get_uint64();
  if (v.is_int64() && v.get_int64() >= 0) return uint64_t(v.get_int64());
  return std::nullopt;
}

// Bytes of a tensor of this shape, multiplied out in order as the reference
// implementation does; nothing when a partial product passes 2^63 - 1, even
// if a later dimension is 0, so safetensors_view::numel() cannot overflow.
std::optional<uint64_t> byte_size(const std::vector<int64_t>& shape, size_t elem_size) {
  int64_t bytes = int64_t(elem_size);
  for (auto d : shape)
    if (__builtin_mul_overflow(bytes, d, &bytes)) return std::nullopt;
  return uint64_t(bytes);
}

// NOTE: the reference implementation refuses headers over 100 MB; so do we,
// before allocating anything for one.
constexpr uint64_t max_header_bytes = 100'000'000;

} // namespace

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

size_t safetensors_dtype_size(safetensors_dtype t) { return entry_of(t).size; }

std::string_view safetensors_dtype_name(safetensors_dtype t) { return entry_of(t).name; }

std::optional<dtype> as_weight_dtype(safetensors_dtype t) {
  switch (t) {
    case safetensors_dtype::f32: return dtype::f32;
    case safetensors_dtype::f16: return dtype::f16;
    case safetensors_dtype::bf16: return dtype::bf16;
    default: return std::nullopt;
  }
}

// -- opening -----------------------------------------------------------------

std::shared_ptr<const safetensors_file> safetensors_file::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw load_error(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw load_error(path, "not a regular file");
  }
  const auto size = size_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw load_error(path, "file is " + std::to_string(size) +
                               " bytes, too short for the 8-byte header length");
  }
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd); // the mapping keeps the file open
  if (base == MAP_FAILED) throw load_error(path, std::string("cannot map: ") + std::strerror(map_errno));
  // Owned from here, so a validation failure unmaps.
  std::shared_ptr<safetensors_file> file(
      new safetensors_file(path, static_cast<const std::byte*>(base), size));
  file->parse_header();
  return file;
}

safetensors_file::safetensors_file(std::string path, const std::byte* base, size_t size)
    : path_(std::move(path)), base_(base), size_(size) {}

safetensors_file::~safetensors_file() {
  ::munmap(const_cast<std::byte*>(base_), size_);
}

void safetensors_file::parse_header() {
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | uint64_t(base_[i]);
  if (header_len > size_ - 8)
    throw load_error(path_, "header length " + std::to_string(header_len) + " exceeds the file size (" +
                                std::to_string(size_) + " bytes)");
  if (header_len > max_header_bytes)
    throw load_error(path_, "header length " + std::to_string(header_len) + " is over the 100 MB limit");

  const std::string_view header_text(reinterpret_cast<const char*>(base_ + 8), header_len);
  boost::system::error_code ec;
  const json::value header = json::parse(header_text, ec);
  if (ec) throw load_error(path_, "header is not valid JSON: " + ec.message());
  if (!header.is_object()) throw load_error(path_, "header is not a JSON object");

  const std::byte* data = base_ + 8 + header_len;
  const size_t data_size = size_ - 8 - header_len;
  for (const auto& [key, value] : header.get_object()) {
    const std::string name(key);
    if (name == "__metadata__") {
      if (!value.is_object()) throw load_error(path_, "__metadata__ is not a JSON object");
      for (const auto& [meta_key, meta_value] : value.get_object()) {
        if (!meta_value.is_string())
          throw load_error(path_, "__metadata__ '" + std::string(meta_key) + "' is not a string");
        metadata_.emplace(std::string(meta_key), std::string(meta_value.get_string()));
      }
      continue;
    }
    const std::string where = "tensor '" + name + "': ";
    if (!value.is_object()) throw load_error(path_, where + "entry is not a JSON object");
    const auto& entry = value.get_object();

    const auto* dtype_value = entry.if_contains("dtype");
    if (!dtype_value || !dtype_value->is_string()) throw load_error(path_, where + "missing dtype");
    const auto type = parse_dtype(dtype_value->get_string());
    if (!type) throw load_error(path_, where + "unknown dtype '" + std::string(dtype_value->get_string()) + "'");
    const size_t elem_size = safetensors_dtype_size(*type);

    const auto* shape_value = entry.if_contains("shape");
    if (!shape_value || !shape_value->is_array())
      throw load_error(path_, where + "shape is missing or not an array");
    safetensors_view view;
    view.type = *type;
    for (const auto& dim : shape_value->get_array()) {
      const auto d = non_negative_int(dim);
      if (!d || *d > uint64_t(std::numeric_limits<int64_t>::max()))
        throw load_error(path_, where + "shape must be an array of non-negative integers");
      view.shape.push_back(int64_t(*d));
    }
    const auto needed = byte_size(view.shape, elem_size);

    const auto* offsets_value = entry.if_contains("data_offsets");
    if (!offsets_value || !offsets_value->is_array() || offsets_value->get_array().size() != 2)
      throw load_error(path_, where + "data_offsets must be [begin, end]");
    const auto begin = non_negative_int(offsets_value->get_array()[0]);
    const auto end = non_negative_int(offsets_value->get_array()[1]);
    if (!begin || !end || *begin > *end)
      throw load_error(path_, where + "data_offsets must be two non-negative integers with begin <= end");
    if (*end > data_size)
      throw load_error(path_, where + "data_offsets [" + std::to_string(*begin) + ", " + std::to_string(*end) +
                                  "] reach past the end of the data section (" + std::to_string(data_size) +
                                  " bytes)");
    if (!needed || *end - *begin != *needed)
      throw load_error(path_, where + "data_offsets span " + std::to_string(*end - *begin) + " bytes but shape " +
                                  shape_string(view.shape) + " of " + std::string(safetensors_dtype_name(*type)) +
                                  " needs " + (needed ? std::to_string(*needed) : std::string("more than 2^63 - 1")));
    view.data = data + *begin;
    view.nbytes = size_t(*needed);
    tensors_.emplace(name, std::move(view));
  }
}

// -- access ------------------------------------------------------------------

std::vector<std::string> safetensors_file::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) out.push_back(name);
  return out;
}

std::optional<safetensors_view> safetensors_file::find(std::string_view name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) return std::nullopt;
  return it->second;
}

} // namespace kvactor
