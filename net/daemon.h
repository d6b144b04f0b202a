#pragma once
// kvactord's life once its engine is up, whatever the engine: a warm-up
// generation, the line server and the metrics endpoint listening, then
// READY=1 to systemd (the engine has loaded the model and pinned the
// configured system prompts before it is handed over). It serves until
// SIGTERM or SIGINT, then stops gracefully (line_server::shutdown); a second
// signal cancels what is still running at once. With WatchdogSec set it
// pings systemd while the engine answers its stats.
//
// SIGHUP reloads the configuration. What can change while serving is
// applied: the [[system_prompt]] list (the engine pins and unpins, the line
// server learns the names) and [log] level. Other changed settings are
// logged as needing a restart and keep their running values. A file that
// does not read, or system prompts the engine refuses, change nothing: the
// error is logged, naming the key and its line, and the running
// configuration stays.
#include <functional>
#include <string>
#include <vector>

#include "net/daemon_config.h"
#include "net/engine_port.h"
#include "net/metrics.h"
#include "net/notify.h"
#include "net/serving_metrics.h"

namespace kvactor::net {

// What a reload needs from the program around serve().
struct reload_hooks {
  // The configuration read again as at startup (the file, then the command
  // line's overrides). Throws kvactor::error (a load_error naming the key
  // and its line) when it does not read.
  std::function<daemon_config()> read_config;
  // Makes `prompts` the engine's system prompts, blocking until they are
  // pinned; returns what changed, for the log. Throws kvactor::error, having
  // changed nothing, when the engine refuses them.
  std::function<std::string(const std::vector<system_prompt_config>& prompts)> set_system_prompts;
};

// Returns once every request has ended and every connection is closed.
// Throws kvactor::error when the warm-up fails or a port cannot be bound.
// Without `reload.read_config`, SIGHUP is logged and ignored.
void serve(const daemon_config& config, engine_port& engine, metrics_registry& registry, serving_metrics& metrics,
           service_notifier& notifier, const reload_hooks& reload = {});

} // namespace kvactor::net
