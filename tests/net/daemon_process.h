#pragma once
// The kvactord binary as a child process for tests: started with arguments
// and extra environment, its stderr in a file, the port it listens on read
// from its "serving" log line, stopped with a signal.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace kvactor::net::testing {

class daemon_process {
 public:
  using clock = std::chrono::steady_clock;

  daemon_process(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {}) {
    static int count = 0;
    log_path_ = std::filesystem::temp_directory_path() /
                ("kvactord_test_" + std::to_string(::getpid()) + "_" + std::to_string(count++) + ".log");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork() failed");
    if (pid_ == 0) {
      const int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, STDERR_FILENO);
      const int null = ::open("/dev/null", O_RDWR);
      ::dup2(null, STDIN_FILENO);
      ::dup2(null, STDOUT_FILENO);
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> argv;
      std::string exe = KVACTORD;
      argv.push_back(exe.data());
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(exe.c_str(), argv.data());
      ::_exit(127);
    }
  }

  ~daemon_process() {
    if (!exit_code_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    std::filesystem::remove(log_path_);
  }
  daemon_process(const daemon_process&) = delete;
  daemon_process& operator=(const daemon_process&) = delete;

  std::string log() const {
    std::ifstream f(log_path_);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }

  // The line port, once the daemon logs that it serves; nothing if it exits
  // or the time runs out first.
  std::optional<uint16_t> wait_serving(std::chrono::seconds limit = std::chrono::seconds(60)) {
    const auto end = clock::now() + limit;
    while (clock::now() < end) {
      const std::string text = log();
      const size_t at = text.find(" serving ");
      if (at != std::string::npos) {
        const std::string key = "listen=";
        const size_t l = text.find(key, at);
        const size_t colon = text.find(':', l);
        return uint16_t(std::stoi(text.substr(colon + 1)));
      }
      if (exited()) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return std::nullopt;
  }

  void signal(int sig) { ::kill(pid_, sig); }
  pid_t pid() const { return pid_; }

  // The exit code once it has exited (-signal when killed by one).
  std::optional<int> wait_exit(std::chrono::seconds limit = std::chrono::seconds(30)) {
    const auto end = clock::now() + limit;
    while (!exited()) {
      if (clock::now() > end) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return exit_code_;
  }

 private:
  bool exited() {
    if (exit_code_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) != pid_) return false;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    return true;
  }

  pid_t pid_ = -1;
  std::filesystem::path log_path_;
  std::optional<int> exit_code_;
};

// A port that was free a moment ago (bound to port 0, then released).
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

} // namespace kvactor::net::testing
