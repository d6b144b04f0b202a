#pragma once
// Tells systemd how the daemon is doing (sd_notify, for Type=notify units):
// READY=1 once it serves, STATUS= lines along the way, WATCHDOG=1 pings when
// the unit sets WatchdogSec, STOPPING=1 on shutdown. Outside systemd
// (NOTIFY_SOCKET unset) every call does nothing.
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace kvactor::net {

class service_notifier {
 public:
  // Reads WATCHDOG_USEC / WATCHDOG_PID (sd_watchdog_enabled).
  service_notifier();

  void status(std::string_view text);
  // READY=1 with a status line.
  void ready(std::string_view status);
  void stopping(std::string_view status);
  void watchdog();

  // How often to ping: half of WatchdogSec, when systemd asked for pings.
  std::optional<std::chrono::microseconds> watchdog_period() const { return watchdog_period_; }

 private:
  void send(const std::string& state);

  std::optional<std::chrono::microseconds> watchdog_period_;
};

} // namespace kvactor::net
