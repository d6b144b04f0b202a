// systemd notifications reach the NOTIFY_SOCKET datagram socket, with the
// watchdog period read from WATCHDOG_USEC; without systemd nothing happens.
#include "net/notify.h"

#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "tests/net/notify_socket.h"

using namespace kvactor::net;
using kvactor::net::testing::notify_socket;
using namespace std::chrono_literals;

TEST_CASE("under systemd: every state reaches the socket") {
  notify_socket systemd;
  ::setenv("NOTIFY_SOCKET", systemd.path.c_str(), 1);
  ::setenv("WATCHDOG_USEC", "3000000", 1);
  ::unsetenv("WATCHDOG_PID");
  service_notifier n;
  REQUIRE(n.watchdog_period().has_value());
  CHECK(n.watchdog_period()->count() == 1500000);
  n.status("loading");
  n.ready("serving on 127.0.0.1:7070");
  n.watchdog();
  n.stopping("stopping");
  CHECK(systemd.receive(2s) == "STATUS=loading");
  CHECK(systemd.receive(2s) == "READY=1\nSTATUS=serving on 127.0.0.1:7070");
  CHECK(systemd.receive(2s) == "WATCHDOG=1");
  CHECK(systemd.receive(2s) == "STOPPING=1\nSTATUS=stopping");
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
}

TEST_CASE("outside systemd: no watchdog, and notifying does nothing") {
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  service_notifier n;
  CHECK(!n.watchdog_period().has_value());
  n.ready("serving");
  n.watchdog();
}

TEST_CASE("a watchdog meant for another process is not ours") {
  ::setenv("WATCHDOG_USEC", "3000000", 1);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid() + 1).c_str(), 1);
  service_notifier n;
  CHECK(!n.watchdog_period().has_value());
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
}
