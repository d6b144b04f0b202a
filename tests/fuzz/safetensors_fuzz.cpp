// A .safetensors file of arbitrary bytes: opening it either throws a
// load_error or gives tensors that each lie inside the data section, exactly
// where and as long as an independent reading of the header says.
#include <sys/mman.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <cstring>
#include <string>

#include "runtime/error.h"
#include "runtime/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace kvactor;
namespace json = boost::json;

// The input as a file, in memory: safetensors_file maps files by path.
class memory_file {
 public:
  memory_file(const uint8_t* data, size_t size) {
    fd_ = ::memfd_create("safetensors_fuzz", MFD_CLOEXEC);
    FUZZ_CHECK(fd_ >= 0);
    for (size_t done = 0; done < size;) {
      const ssize_t n = ::write(fd_, data + done, size - done);
      FUZZ_CHECK(n > 0);
      done += size_t(n);
    }
  }
  ~memory_file() { ::close(fd_); }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_ = -1;
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const memory_file file(data, size);
  std::shared_ptr<const safetensors_file> st;
  try {
    st = safetensors_file::open(file.path());
  } catch (const load_error& e) {
    FUZZ_CHECK(std::string(e.what()).starts_with(file.path() + ": "));
    return 0;
  }
  // Accepted: the header, read again here, places every tensor.
  uint64_t header_len = 0;
  std::memcpy(&header_len, data, 8);
  const uint8_t* section = data + 8 + header_len;
  const json::value header = json::parse(kvactor::fuzz::as_text(data + 8, size_t(header_len)));
  for (const std::string& name : st->names()) {
    const auto view = st->find(name);
    FUZZ_CHECK(view.has_value());
    const auto& entry = header.at(name);
    const auto& offsets = entry.at("data_offsets").as_array();
    const auto begin = offsets[0].to_number<uint64_t>(), end = offsets[1].to_number<uint64_t>();
    FUZZ_CHECK(begin <= end && end <= size - 8 - header_len);
    FUZZ_CHECK(view->nbytes == end - begin);
    FUZZ_CHECK(view->shape.size() == entry.at("shape").as_array().size());
    if (view->nbytes > 0) {
      FUZZ_CHECK(view->numel() * int64_t(safetensors_dtype_size(view->type)) == int64_t(view->nbytes));
      FUZZ_CHECK(std::memcmp(view->data, section + begin, view->nbytes) == 0);
    }
    (void)view->numel();
  }
  return 0;
}
