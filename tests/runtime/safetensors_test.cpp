// safetensors_file: values read back exactly, and every kind of damaged file
// refused with a load_error that names the file and the defect. Also the f16
// and bf16 scalar conversions the loader relies on.
#include "runtime/safetensors.h"

#include <doctest/doctest.h>
#include <stdlib.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/error.h"

using namespace kvactor;

namespace {

// A fresh directory under the system temp dir, removed at the end of the test.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kvactor_st_XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~temp_dir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// An 8-byte little-endian length, then `header`, then `data`.
void write_raw(const std::string& path, uint64_t header_len, const std::string& header, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 8; ++i) out.put(char((header_len >> (8 * i)) & 0xff));
  out << header << data;
}

void write_file(const std::string& path, const std::string& header, const std::string& data) {
  write_raw(path, header.size(), header, data);
}

template <typename T>
std::string bytes_of(const std::vector<T>& values) {
  std::string s(values.size() * sizeof(T), '\0');
  std::memcpy(s.data(), values.data(), s.size());
  return s;
}

// The what() of the load_error that opening `path` throws.
std::string open_error(const std::string& path) {
  try {
    safetensors_file::open(path);
  } catch (const load_error& e) {
    return e.what();
  }
  FAIL("no load_error for " << path);
  return "";
}

template <typename T>
std::vector<T> read_as(const safetensors_view& v) {
  std::vector<T> out(v.nbytes / sizeof(T));
  std::memcpy(out.data(), v.data, v.nbytes);
  return out;
}

} // namespace

TEST_CASE("a valid file reads back every tensor exactly") {
  temp_dir dir;
  const std::vector<float> f32 = {1.5f, -2.25f, 3e-8f, std::numeric_limits<float>::infinity(), 0.1f, -0.0f};
  const std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x0001, 0x7bff}; // 1, -2, 2^-24, 65504
  const std::vector<uint16_t> bf16 = {0x3f80, 0xc0a0, 0x0001};        // 1, -5, smallest subnormal
  const std::vector<int64_t> i64 = {-7, 1ll << 40};
  const std::string data = bytes_of(f32) + bytes_of(f16) + bytes_of(bf16) + bytes_of(i64);
  // Padded with spaces to a multiple of 8, as the Python writer does.
  std::string header = R"({"__metadata__":{"format":"pt"},)"
                       R"("w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                       R"("h":{"dtype":"F16","shape":[4],"data_offsets":[24,32]},)"
                       R"("b":{"dtype":"BF16","shape":[3,1],"data_offsets":[32,38]},)"
                       R"("i":{"dtype":"I64","shape":[2],"data_offsets":[38,54]},)"
                       R"("e":{"dtype":"F32","shape":[0,5],"data_offsets":[54,54]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  write_file(dir.file("ok.safetensors"), header, data);

  const auto file = safetensors_file::open(dir.file("ok.safetensors"));
  CHECK(file->path() == dir.file("ok.safetensors"));
  CHECK(file->names() == std::vector<std::string>{"b", "e", "h", "i", "w"});
  CHECK(file->metadata().at("format") == "pt");
  CHECK_FALSE(file->find("missing"));

  const auto w = file->find("w");
  REQUIRE(w);
  CHECK(w->type == safetensors_dtype::f32);
  CHECK(w->shape == std::vector<int64_t>{2, 3});
  CHECK(w->numel() == 6);
  CHECK(w->nbytes == 24);
  const auto w_values = read_as<float>(*w);
  for (size_t i = 0; i < f32.size(); ++i) CHECK(std::bit_cast<uint32_t>(w_values[i]) == std::bit_cast<uint32_t>(f32[i]));

  const auto h = file->find("h");
  REQUIRE(h);
  CHECK(h->type == safetensors_dtype::f16);
  CHECK(as_weight_dtype(h->type) == dtype::f16);
  const auto h_values = read_as<uint16_t>(*h);
  CHECK(f16_to_f32(h_values[0]) == 1.0f);
  CHECK(f16_to_f32(h_values[1]) == -2.0f);
  CHECK(f16_to_f32(h_values[2]) == std::ldexp(1.0f, -24));
  CHECK(f16_to_f32(h_values[3]) == 65504.0f);

  const auto b = file->find("b");
  REQUIRE(b);
  CHECK(b->type == safetensors_dtype::bf16);
  CHECK(b->shape == std::vector<int64_t>{3, 1});
  const auto b_values = read_as<uint16_t>(*b);
  CHECK(bf16_to_f32(b_values[0]) == 1.0f);
  CHECK(bf16_to_f32(b_values[1]) == -5.0f);
  CHECK(bf16_to_f32(b_values[2]) == std::ldexp(1.0f, -133));

  const auto i = file->find("i");
  REQUIRE(i);
  CHECK(i->type == safetensors_dtype::i64);
  CHECK_FALSE(as_weight_dtype(i->type));
  CHECK(read_as<int64_t>(*i) == i64);

  const auto e = file->find("e");
  REQUIRE(e);
  CHECK(e->numel() == 0);
  CHECK(e->nbytes == 0);
}

TEST_CASE("views outlive every other handle on the file") {
  temp_dir dir;
  write_file(dir.file("a.safetensors"), R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
             bytes_of(std::vector<float>{42.0f}));
  std::shared_ptr<const void> keep;
  safetensors_view view;
  {
    const auto file = safetensors_file::open(dir.file("a.safetensors"));
    view = *file->find("x");
    keep = file;
  }
  std::filesystem::remove(dir.file("a.safetensors")); // the mapping stays valid
  CHECK(read_as<float>(view)[0] == 42.0f);
}

TEST_CASE("damaged files are refused with the file and the defect named") {
  temp_dir dir;
  const std::string one_float = bytes_of(std::vector<float>{1.0f});
  const auto check = [&](const std::string& name, const std::string& phrase) {
    const std::string message = open_error(dir.file(name));
    INFO(message);
    CHECK(message.find(dir.file(name)) != std::string::npos);
    CHECK(message.find(phrase) != std::string::npos);
  };

  SUBCASE("missing file") { check("absent.safetensors", "cannot open"); }
  SUBCASE("shorter than the length prefix") {
    std::ofstream(dir.file("short.safetensors"), std::ios::binary) << "abcde";
    check("short.safetensors", "5 bytes, too short for the 8-byte header length");
  }
  SUBCASE("header length beyond the file") {
    write_raw(dir.file("long.safetensors"), 1000, R"({"x":1})", "");
    check("long.safetensors", "header length 1000 exceeds the file size (15 bytes)");
  }
  SUBCASE("header length absurdly large") {
    write_raw(dir.file("huge.safetensors"), ~uint64_t(0), "{}", "");
    check("huge.safetensors", "exceeds the file size");
  }
  SUBCASE("header not JSON") {
    write_file(dir.file("text.safetensors"), "not json at all", "");
    check("text.safetensors", "header is not valid JSON");
  }
  SUBCASE("header JSON but not an object") {
    write_file(dir.file("array.safetensors"), "[1, 2]", "");
    check("array.safetensors", "header is not a JSON object");
  }
  SUBCASE("data_offsets past the end of the data") {
    write_file(dir.file("past.safetensors"), R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", one_float);
    check("past.safetensors", "tensor 'x': data_offsets [0, 8] reach past the end of the data section (4 bytes)");
  }
  SUBCASE("data section truncated") {
    write_file(dir.file("cut.safetensors"), R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
               one_float.substr(0, 3));
    check("cut.safetensors", "tensor 'x': data_offsets [0, 4] reach past the end");
  }
  SUBCASE("size does not match the shape") {
    write_file(dir.file("size.safetensors"), R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}})",
               one_float + one_float + one_float);
    check("size.safetensors", "tensor 'x': data_offsets span 4 bytes but shape [3] of F32 needs 12");
  }
  SUBCASE("a shape whose size overflows") {
    write_file(dir.file("overflow.safetensors"),
               R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", one_float);
    check("overflow.safetensors", "needs more than 2^63 - 1");
  }
  SUBCASE("unknown dtype") {
    write_file(dir.file("dtype.safetensors"), R"({"x":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})",
               one_float);
    check("dtype.safetensors", "tensor 'x': unknown dtype 'F8_E4M3'");
  }
  SUBCASE("negative dimension") {
    write_file(dir.file("negative.safetensors"), R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
               one_float);
    check("negative.safetensors", "tensor 'x': shape must be an array of non-negative integers");
  }
  SUBCASE("offsets reversed") {
    write_file(dir.file("reversed.safetensors"), R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})",
               one_float + one_float);
    check("reversed.safetensors", "tensor 'x': data_offsets must be two non-negative integers with begin <= end");
  }
  SUBCASE("missing data_offsets") {
    write_file(dir.file("nooffsets.safetensors"), R"({"x":{"dtype":"F32","shape":[1]}})", one_float);
    check("nooffsets.safetensors", "tensor 'x': data_offsets must be [begin, end]");
  }
  SUBCASE("metadata that is not strings") {
    write_file(dir.file("meta.safetensors"), R"({"__metadata__":{"n":1}})", "");
    check("meta.safetensors", "__metadata__ 'n' is not a string");
  }
}

// -- scalar conversions ------------------------------------------------------

TEST_CASE("f16 round trips through f32 for every bit pattern") {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const auto h = uint16_t(bits);
    const float f = f16_to_f32(h);
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0) {
      CHECK(std::isnan(f));
      CHECK(std::isnan(f16_to_f32(f32_to_f16(f))));
    } else if (f32_to_f16(f) != h) {
      FAIL_CHECK("f16 " << bits << " came back as " << f32_to_f16(f));
    }
  }
}

TEST_CASE("f32 to f16 rounds to nearest even, as torch does") {
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);     // tie -> even (down)
  CHECK(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02); // tie -> even (up)
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3c01);
  CHECK(f32_to_f16(65519.0f) == 0x7bff);
  CHECK(f32_to_f16(65520.0f) == 0x7c00); // overflows to infinity
  CHECK(f32_to_f16(-1e10f) == 0xfc00);
  CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);     // tie between 0 and 2^-24 -> 0
  CHECK(f32_to_f16(3 * std::ldexp(1.0f, -25)) == 0x0002); // tie between 1 and 2 units -> 2
  CHECK(f32_to_f16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -26)) == 0x0400); // rounds up to the smallest normal
  CHECK(f32_to_f16(-0.0f) == 0x8000);
  CHECK(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST_CASE("bf16 conversions") {
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);     // tie -> even (down)
  CHECK(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82); // tie -> even (up)
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(dtype_name(dtype::bf16) == "bf16");
}
