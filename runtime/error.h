#pragma once
// Errors that cross the runtime's boundary. A load or parse failure names the
// file and the problem, so a user can act on the message alone.
#include <stdexcept>
#include <string>

namespace kvactor {

class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A file that cannot be used: "<path>: <problem>".
class load_error : public error {
 public:
  load_error(const std::string& path, const std::string& problem)
      : error(path + ": " + problem) {}
};

} // namespace kvactor
