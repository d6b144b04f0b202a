#pragma once
// The smoke test's view of a real kvactord: start it on a free port, ask it
// for stats over the line protocol and for metrics over HTTP, stop it. Plain
// POSIX sockets and processes, so nothing here shares code with the tool
// under test.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

namespace kvactor::bench::testing {

namespace fs = std::filesystem;

inline std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A port nobody listens on right now.
inline uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// A connected loopback socket; -1 when nothing listens.
inline int connect_to(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends `request` and reads until `done(reply)` or the peer closes; 10 s at most.
template <class Done>
std::string exchange(uint16_t port, const std::string& request, Done done) {
  const int fd = connect_to(port);
  if (fd < 0) throw std::runtime_error("cannot connect to port " + std::to_string(port));
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string reply;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  char buf[8192];
  while (!done(reply) && std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    reply.append(buf, size_t(n));
  }
  ::close(fd);
  return reply;
}

class daemon_process {
 public:
  // Starts `binary` with `args` plus --port 0 and a free metrics port, and
  // waits until its log says where it listens.
  daemon_process(const std::string& binary, std::vector<std::string> args, const fs::path& log)
      : log_(log), metrics_port_(free_port()) {
    args.insert(args.end(), {"--port", "0", "--metrics-port", std::to_string(metrics_port_)});
    pid_ = ::fork();
    if (pid_ == 0) {
      std::freopen(log.c_str(), "w", stderr);
      std::freopen(log.c_str(), "a", stdout);
      std::vector<char*> argv = {const_cast<char*>(binary.c_str())};
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      std::_Exit(127);
    }
    const std::regex listen(R"(listen=[0-9.]+:([0-9]+))");
    for (int i = 0; i < 600; ++i) {
      std::smatch m;
      const std::string text = slurp(log_);
      if (std::regex_search(text, m, listen)) {
        port_ = uint16_t(std::stoi(m[1]));
        return;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("kvactord exited at startup: " + text);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    throw std::runtime_error("kvactord did not start within 30 s: " + slurp(log_));
  }
  ~daemon_process() { stop(); }
  daemon_process(const daemon_process&) = delete;
  daemon_process& operator=(const daemon_process&) = delete;

  uint16_t port() const { return port_; }

  // SIGTERM, then SIGKILL if it has not exited within 5 s.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  // {"op":"stats"} over the line protocol.
  std::map<std::string, double> stats() const {
    const std::string line = exchange(port_, "{\"op\":\"stats\"}\n",
                                      [](const std::string& r) { return r.find('\n') != std::string::npos; });
    std::map<std::string, double> out;
    const auto doc = boost::json::parse(line);
    for (const auto& [k, v] : doc.at("stats").as_object()) out[std::string(k)] = v.to_number<double>();
    return out;
  }

  // Every sample of the Prometheus text, by its name and labels as written:
  // `kvactor_requests_total{reason="length"}` -> 50.
  std::map<std::string, double> metrics() const {
    const std::string reply =
        exchange(metrics_port_, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n", [](const std::string&) { return false; });
    std::map<std::string, double> out;
    std::istringstream lines(reply.substr(std::min(reply.size(), reply.find("\r\n\r\n") + 4)));
    for (std::string line; std::getline(lines, line);) {
      if (line.empty() || line[0] == '#') continue;
      const size_t space = line.rfind(' ');
      if (space == std::string::npos) continue;
      out[line.substr(0, space)] = std::strtod(line.c_str() + space + 1, nullptr);
    }
    return out;
  }

 private:
  fs::path log_;
  uint16_t metrics_port_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

} // namespace kvactor::bench::testing
