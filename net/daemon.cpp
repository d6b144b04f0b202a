#include <utility> // before Asio: GCC 12 in C++20 mode needs it first

#include <boost/asio.hpp>

#include "net/daemon.h"

#include <chrono>
#include <csignal>
#include <future>
#include <memory>
#include <optional>

#include "net/line_server.h"
#include "net/log.h"
#include "net/metrics_server.h"
#include "runtime/error.h"

namespace kvactor::net {

namespace asio = boost::asio;

namespace {

// A generation at startup that does not end in this time means the engine
// cannot serve.
constexpr auto startup_generation_limit = std::chrono::minutes(10);

// Runs one request to its end and returns the result.
generate_result run_to_end(engine_port& engine, const generate_request& request, const std::string& what) {
  auto done = std::make_shared<std::promise<generate_result>>();
  auto result = done->get_future();
  generation_callbacks callbacks;
  callbacks.on_token = [](std::string_view, std::span<const int32_t>) {};
  callbacks.on_done = [done](const generate_result& r) { done->set_value(r); };
  const generation_handle handle = engine.submit(request, std::move(callbacks));
  if (result.wait_for(startup_generation_limit) != std::future_status::ready) {
    engine.cancel(handle);
    throw error(what + ": no answer from the engine within 10 minutes");
  }
  const generate_result r = result.get();
  if (r.reason == finish_reason::error || r.reason == finish_reason::cancelled)
    throw error(what + " failed: " + std::string(to_string(r.error)) + ": " + r.message);
  return r;
}

void warm_up(engine_port& engine) {
  generate_request request;
  request.prompt = "Hello";
  request.max_tokens = 1;
  request.sampling.temperature = 0;
  const auto r = run_to_end(engine, request, "the warm-up generation");
  log::info("warmed up" + log::field("prompt_tokens", r.usage.prompt_tokens) +
            log::field("total_ms", r.timings.total_ms));
}

double stat_or(const std::map<std::string, double>& stats, std::string_view key, double fallback) {
  const auto it = stats.find(std::string(key));
  return it == stats.end() ? fallback : it->second;
}

// Pings systemd every period while the engine answers; a hung engine stops
// the pings and lets systemd restart the daemon.
class watchdog {
 public:
  watchdog(asio::io_context& io, engine_port& engine, service_notifier& notifier, std::chrono::microseconds period)
      : timer_(io), engine_(engine), notifier_(notifier), period_(period) {
    tick();
  }
  void stop() { timer_.cancel(); }

 private:
  void tick() {
    try {
      engine_.stats();
      notifier_.watchdog();
    } catch (const std::exception& e) {
      log::error(std::string("watchdog: the engine does not answer: ") + e.what());
    }
    timer_.expires_after(period_);
    timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec) tick();
    });
  }

  asio::steady_timer timer_;
  engine_port& engine_;
  service_notifier& notifier_;
  std::chrono::microseconds period_;
};

} // namespace

void serve(const daemon_config& config, engine_port& engine, metrics_registry& registry, serving_metrics& metrics,
           service_notifier& notifier) {
  notifier.status("warming up");
  warm_up(engine);

  asio::io_context io(1);
  line_server server(io, config.server, protocol_limits(config), engine, &metrics);
  registry.on_collect([&engine, &metrics] { metrics.update_from_engine(engine.stats()); });
  std::optional<metrics_server> metrics_endpoint;
  if (config.server.metrics_port != 0)
    metrics_endpoint.emplace(config.server.host, config.server.metrics_port, [&registry] { return registry.render(); });

  const auto models = engine.models();
  const auto stats = engine.stats();
  const std::string where = config.server.host + ":" + std::to_string(server.port());
  log::info("serving" + log::field("model", models.empty() ? "" : models.front().name) +
            log::field("architecture", models.empty() ? "" : models.front().architecture) +
            log::field("kv_pages", stat_or(stats, stat_kv_pages_total, 0)) +
            log::field("system_prompts", double(config.engine.system_prompts.size())) + log::field("listen", where) +
            log::field("metrics_port", metrics_endpoint ? double(metrics_endpoint->port()) : 0.0));

  std::optional<watchdog> pinger;
  asio::signal_set signals(io, SIGTERM, SIGINT);
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code ec, int signal) {
    if (ec) return;
    log::info(std::string("received ") + (signal == SIGTERM ? "SIGTERM" : "SIGINT"));
    notifier.stopping("stopping");
    signals.async_wait(on_signal); // a second signal cancels at once
    // NOTE: with nothing running, the server stops inside this call.
    server.shutdown([&] {
      signals.cancel();
      if (pinger) pinger->stop();
    });
  };
  signals.async_wait(on_signal);

  notifier.ready("serving on " + where);
  if (const auto period = notifier.watchdog_period()) pinger.emplace(io, engine, notifier, *period);
  io.run();
  log::info("stopped");
}

} // namespace kvactor::net
