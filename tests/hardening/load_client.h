#pragma once
// Many loopback connections driven by one poll() loop, for load tests: each
// connection has request lines queued to send and records every JSON line
// it gets back by request id, so a test can check that each request got
// exactly one terminal line and nothing after it.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <cerrno>
#include <chrono>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace kvactor::hardening {

// What one request got back.
struct request_outcome {
  int lines = 0;                // every line with its id
  int terminals = 0;            // final or error lines
  int after_terminal = 0;       // lines after the first terminal one
  std::string finish_reason;    // of the final line
  std::string error_code;       // of the error line
  int64_t completion_tokens = -1;
  int64_t tokens_streamed = 0;  // ids in its token lines
};

class load_client {
 public:
  using clock = std::chrono::steady_clock;

  // Opens `n` connections to `port` on 127.0.0.1, raising this process's
  // file limit if it is too low for them.
  load_client(uint16_t port, size_t n) {
    rlimit l{};
    ::getrlimit(RLIMIT_NOFILE, &l);
    if (l.rlim_cur < n + 64 && l.rlim_max >= n + 64) {
      l.rlim_cur = n + 64;
      ::setrlimit(RLIMIT_NOFILE, &l);
    }
    for (size_t i = 0; i < n; ++i) {
      connection c;
      c.fd = ::socket(AF_INET, SOCK_STREAM, 0);
      if (c.fd < 0) throw std::runtime_error("socket() failed");
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(port);
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(c.fd);
        throw std::runtime_error("cannot connect connection " + std::to_string(i));
      }
      ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) | O_NONBLOCK);
      connections_.push_back(std::move(c));
    }
  }
  ~load_client() {
    for (auto& c : connections_)
      if (c.fd >= 0) ::close(c.fd);
  }
  load_client(const load_client&) = delete;
  load_client& operator=(const load_client&) = delete;

  size_t size() const { return connections_.size(); }

  // Queues one request line on connection `conn`; `id` is its JSON id
  // (a string id given without quotes). Sent by run().
  void send(size_t conn, const std::string& id, const std::string& line) {
    connections_[conn].out += line + "\n";
    connections_[conn].outcomes[id];
    ++expected_;
  }

  // Sends and reads until every queued request has its terminal line, or
  // `limit` passes; whether they all did. Lines without an id (a refused
  // connection's) are kept in unattributed().
  bool run(std::chrono::milliseconds limit) {
    return run_until([this] { return terminals_ == expected_; }, limit);
  }

  // Sends and reads until `done()` holds or `limit` passes; whether it held.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
    const auto end = clock::now() + limit;
    std::vector<pollfd> fds;
    while (!done() && clock::now() < end) {
      fds.clear();
      for (auto& c : connections_) {
        short events = c.eof ? 0 : POLLIN;
        if (c.sent < c.out.size()) events |= POLLOUT;
        fds.push_back({c.eof && c.sent >= c.out.size() ? -1 : c.fd, events, 0});
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - clock::now()).count();
      if (::poll(fds.data(), fds.size(), int(std::max<int64_t>(left, 1))) < 0) throw std::runtime_error("poll() failed");
      for (size_t i = 0; i < fds.size(); ++i) {
        if (fds[i].revents & POLLOUT) write_some(connections_[i]);
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) read_some(connections_[i]);
      }
    }
    return done();
  }

  // Every request's outcome, by connection and id.
  std::vector<const std::map<std::string, request_outcome>*> outcomes() const {
    std::vector<const std::map<std::string, request_outcome>*> out;
    for (const auto& c : connections_) out.push_back(&c.outcomes);
    return out;
  }
  // Lines that named no request of theirs (e.g. an `overloaded` connection refusal).
  const std::vector<std::string>& unattributed() const { return unattributed_; }
  // Connections the server closed.
  size_t closed_by_server() const {
    size_t n = 0;
    for (const auto& c : connections_) n += c.eof;
    return n;
  }
  bool closed_by_server(size_t conn) const { return connections_[conn].eof; }

 private:
  struct connection {
    int fd = -1;
    std::string out;
    size_t sent = 0;
    std::string in;
    bool eof = false;
    std::map<std::string, request_outcome> outcomes;
  };

  void write_some(connection& c) {
    const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n > 0) c.sent += size_t(n);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) c.sent = c.out.size(); // the server closed
  }

  void read_some(connection& c) {
    char buf[65536];
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
      c.eof = true;
      return;
    }
    if (n < 0) return;
    c.in.append(buf, size_t(n));
    for (size_t nl; (nl = c.in.find('\n')) != std::string::npos;) {
      on_line(c, c.in.substr(0, nl));
      c.in.erase(0, nl + 1);
    }
  }

  void on_line(connection& c, const std::string& line) {
    namespace json = boost::json;
    const json::object o = json::parse(line).as_object();
    const json::value* id = o.if_contains("id");
    const std::string key = !id ? "" : id->is_string() ? std::string(id->as_string()) : json::serialize(*id);
    const auto it = c.outcomes.find(key);
    if (!id || it == c.outcomes.end()) {
      unattributed_.push_back(line);
      return;
    }
    request_outcome& r = it->second;
    ++r.lines;
    if (r.terminals > 0) ++r.after_terminal;
    if (o.contains("tokens") && !o.contains("done")) r.tokens_streamed += int64_t(o.at("tokens").as_array().size());
    const bool done = o.contains("done"), failed = o.contains("error");
    if (!done && !failed) return;
    if (r.terminals++ == 0) ++terminals_;
    if (done) {
      r.finish_reason = std::string(o.at("finish_reason").as_string());
      r.completion_tokens = o.at("usage").at("completion_tokens").as_int64();
    } else {
      r.error_code = std::string(o.at("error").at("code").as_string());
    }
  }

  std::vector<connection> connections_;
  std::vector<std::string> unattributed_;
  size_t expected_ = 0, terminals_ = 0;
};

} // namespace kvactor::hardening
