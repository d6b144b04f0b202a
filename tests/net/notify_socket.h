#pragma once
// A unix datagram socket standing in for systemd's NOTIFY_SOCKET: what the
// code under test notifies arrives here, one datagram a message.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>

namespace kvactor::net::testing {

struct notify_socket {
  notify_socket() {
    path = std::filesystem::temp_directory_path() / ("kvactor_notify_" + std::to_string(::getpid()));
    std::filesystem::remove(path);
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~notify_socket() {
    ::close(fd);
    std::filesystem::remove(path);
  }
  notify_socket(const notify_socket&) = delete;
  notify_socket& operator=(const notify_socket&) = delete;

  // The next message; none within `limit`.
  std::optional<std::string> receive(std::chrono::milliseconds limit = std::chrono::seconds(60)) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, int(limit.count())) <= 0) return std::nullopt;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    return n < 0 ? std::nullopt : std::optional<std::string>(std::string(buf, size_t(n)));
  }

  std::filesystem::path path;
  int fd = -1;
};

} // namespace kvactor::net::testing
