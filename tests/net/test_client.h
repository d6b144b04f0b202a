#pragma once
// A blocking loopback TCP client for the daemon's tests: send lines, read
// lines or bytes with a time limit, see the server close. Plain POSIX
// sockets, so the tests do not share the server's I/O code.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

namespace kvactor::net::testing {

class test_client {
 public:
  using clock = std::chrono::steady_clock;

  explicit test_client(uint16_t port, int receive_buffer = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket() failed");
    // A small receive buffer makes a client that never reads fill up fast.
    if (receive_buffer > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      throw std::runtime_error("cannot connect to port " + std::to_string(port));
    }
  }
  ~test_client() { close(); }
  test_client(const test_client&) = delete;
  test_client& operator=(const test_client&) = delete;

  void send(const std::string& data) {
    for (size_t done = 0; done < data.size();) {
      const ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("send() failed");
      done += size_t(n);
    }
  }
  void send_line(const std::string& line) { send(line + "\n"); }

  // The next line without its '\n'; nothing when the time is up or the
  // server closed the connection first.
  std::optional<std::string> read_line(std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto end = clock::now() + limit;
    for (;;) {
      if (const size_t nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      if (!fill(end)) return std::nullopt;
    }
  }

  // Exactly `n` bytes, or nothing.
  std::optional<std::string> read_bytes(size_t n, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto end = clock::now() + limit;
    while (buffer_.size() < n) {
      if (!fill(end)) return std::nullopt;
    }
    std::string out = buffer_.substr(0, n);
    buffer_.erase(0, n);
    return out;
  }

  // Everything up to and including `marker`.
  std::optional<std::string> read_until(const std::string& marker,
                                        std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto end = clock::now() + limit;
    for (;;) {
      if (const size_t at = buffer_.find(marker); at != std::string::npos) {
        std::string out = buffer_.substr(0, at + marker.size());
        buffer_.erase(0, at + marker.size());
        return out;
      }
      if (!fill(end)) return std::nullopt;
    }
  }

  // True once the server has closed the connection (EOF or reset), with
  // nothing unread before it.
  bool closed_by_server(std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto end = clock::now() + limit;
    while (!eof_) {
      if (!fill(end) && !eof_) return false;
    }
    return buffer_.empty();
  }

  bool nothing_within(std::chrono::milliseconds limit) {
    if (!buffer_.empty()) return false;
    return !fill(clock::now() + limit) && !eof_;
  }

  void shutdown_sending() { ::shutdown(fd_, SHUT_WR); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Closes with unread data in the socket, so the server sees a reset.
  void reset() {
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close();
  }

 private:
  // Reads what is there, waiting until `end`; false when nothing came.
  bool fill(clock::time_point end) {
    if (eof_) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, int(left)) <= 0) return false;
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    buffer_.append(chunk, size_t(n));
    return true;
  }

  int fd_ = -1;
  std::string buffer_;
  bool eof_ = false;
};

// Waits until `done()` holds (checked every few milliseconds) or `limit`
// passes; whether it held.
inline bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

} // namespace kvactor::net::testing
