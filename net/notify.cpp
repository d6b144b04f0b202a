#include "net/notify.h"

#include <systemd/sd-daemon.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "net/log.h"

namespace kvactor::net {

service_notifier::service_notifier() {
  uint64_t usec = 0;
  const int r = sd_watchdog_enabled(0, &usec);
  if (r > 0 && usec > 0) watchdog_period_ = std::chrono::microseconds(usec / 2);
  if (r < 0) log::warn(std::string("systemd watchdog settings are invalid: ") + std::strerror(-r));
}

void service_notifier::send(const std::string& state) {
  // 0: the variables stay set, so each call reaches the same socket.
  const int r = sd_notify(0, state.c_str());
  if (r < 0) log::warn("cannot notify systemd: " + std::string(std::strerror(-r)));
}

void service_notifier::status(std::string_view text) { send("STATUS=" + std::string(text)); }

void service_notifier::ready(std::string_view status) { send("READY=1\nSTATUS=" + std::string(status)); }

void service_notifier::stopping(std::string_view status) { send("STOPPING=1\nSTATUS=" + std::string(status)); }

void service_notifier::watchdog() { send("WATCHDOG=1"); }

} // namespace kvactor::net
