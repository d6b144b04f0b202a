// Inputs that broke a property of a fuzz target (tests/fuzz/) in the
// daemon's configuration: each is refused now with a load_error naming the
// key and its line. The same inputs are in the fuzz corpora.
#include <doctest/doctest.h>

#include <string>

#include "net/daemon_config.h"
#include "runtime/error.h"

using namespace kvactor;

TEST_CASE("daemon config: a shutdown grace too long for a clock duration is refused") {
  // daemon_config_fuzz's property: the grace fits the int64 nanoseconds the
  // line server's timer takes; 1e300 s made that conversion undefined.
  std::string message = "no load_error";
  try {
    net::parse_daemon_config("[server]\nshutdown_grace_s = 1e300\n", "f.toml");
  } catch (const load_error& e) {
    message = e.what();
  }
  CHECK(message == "f.toml: line 2, column 20: 'server.shutdown_grace_s' must be between 0 and 86400 (a day), got 1e+300");
}
