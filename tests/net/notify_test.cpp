// systemd notifications reach the NOTIFY_SOCKET datagram socket, with the
// watchdog period read from WATCHDOG_USEC; without systemd nothing happens.
#include "net/notify.h"

#include <doctest/doctest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>

using namespace kvactor::net;
namespace fs = std::filesystem;

namespace {

struct notify_socket {
  notify_socket() {
    path = fs::temp_directory_path() / ("notify_test_" + std::to_string(::getpid()));
    fs::remove(path);
    fd = ::socket(AF_UNIX, SOCK_DGRAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~notify_socket() {
    ::close(fd);
    fs::remove(path);
  }
  std::optional<std::string> receive() {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 2000) <= 0) return std::nullopt;
    char buf[1024];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    return n < 0 ? std::nullopt : std::optional<std::string>(std::string(buf, size_t(n)));
  }
  fs::path path;
  int fd = -1;
};

} // namespace

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
  CHECK(systemd.receive() == "STATUS=loading");
  CHECK(systemd.receive() == "READY=1\nSTATUS=serving on 127.0.0.1:7070");
  CHECK(systemd.receive() == "WATCHDOG=1");
  CHECK(systemd.receive() == "STOPPING=1\nSTATUS=stopping");
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
