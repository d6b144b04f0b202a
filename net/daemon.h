#pragma once
// kvactord's life once its engine is up, whatever the engine: a warm-up
// generation, the line server and the metrics endpoint listening, then
// READY=1 to systemd (the engine has loaded the model and pinned the
// configured system prompts before it is handed over). It serves until
// SIGTERM or SIGINT, then stops gracefully (line_server::shutdown); a second
// signal cancels what is still running at once. With WatchdogSec set it
// pings systemd while the engine answers its stats.
#include "net/daemon_config.h"
#include "net/engine_port.h"
#include "net/metrics.h"
#include "net/notify.h"
#include "net/serving_metrics.h"

namespace kvactor::net {

// Returns once every request has ended and every connection is closed.
// Throws kvactor::error when the warm-up fails or a port cannot be bound.
void serve(const daemon_config& config, engine_port& engine, metrics_registry& registry, serving_metrics& metrics,
           service_notifier& notifier);

} // namespace kvactor::net
