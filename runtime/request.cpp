#include "runtime/request.h"

namespace kvactor {

std::string_view to_string(finish_reason r) {
  switch (r) {
    case finish_reason::stop: return "stop";
    case finish_reason::length: return "length";
    case finish_reason::cancelled: return "cancelled";
    case finish_reason::error: return "error";
  }
  return "error";
}

std::string_view to_string(error_code c) {
  switch (c) {
    case error_code::none: return "none";
    case error_code::bad_request: return "bad_request";
    case error_code::context_length_exceeded: return "context_length_exceeded";
    case error_code::overloaded: return "overloaded";
    case error_code::cancelled: return "cancelled";
    case error_code::internal: return "internal";
  }
  return "internal";
}

} // namespace kvactor
