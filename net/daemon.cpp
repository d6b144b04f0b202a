#include <utility> // before Asio: GCC 12 in C++20 mode needs it first

#include <boost/asio.hpp>

#include "net/daemon.h"

#include <chrono>
#include <csignal>
#include <future>
#include <memory>
#include <optional>
#include <thread>

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

// The sections whose settings differ between `running` and `next`, among
// those a reload cannot apply while serving.
std::vector<std::string> needing_restart(const daemon_config& running, const daemon_config& next) {
  const engine_config& a = running.engine;
  const engine_config& b = next.engine;
  std::vector<std::string> out;
  const auto note = [&](const char* section, bool changed) {
    if (changed) out.emplace_back(section);
  };
  note("[model]", a.model_dir != b.model_dir || a.dummy_weights != b.dummy_weights || a.dummy_seed != b.dummy_seed);
  note("[backend]", a.device != b.device || a.cpu_threads != b.cpu_threads || a.tokenizer_workers != b.tokenizer_workers);
  note("[gpu]", a.streams != b.streams || a.gpu_memory_fraction != b.gpu_memory_fraction);
  note("[scheduler]", a.max_batch_tokens != b.max_batch_tokens || a.max_seqs != b.max_seqs ||
                          a.prefill_chunk != b.prefill_chunk || a.max_queued != b.max_queued ||
                          a.max_context != b.max_context);
  note("[kv]", a.page_size != b.page_size || a.num_pages != b.num_pages || a.kv_memory_mb != b.kv_memory_mb ||
                   a.watermark_pages != b.watermark_pages || a.kv_dtype != b.kv_dtype ||
                   a.window_release != b.window_release);
  note("[prefix_cache]", a.prefix_cache != b.prefix_cache || a.max_pinned_fraction != b.max_pinned_fraction);
  // Engine settings this list does not know yet still count.
  engine_config rest = b;
  rest.system_prompts = a.system_prompts;
  note("engine settings", out.empty() && rest != a);
  note("[server]", running.server != next.server);
  return out;
}

// SIGHUP: reads the configuration again and applies what can change while
// serving. The engine prefills new system prompts on a thread of its own,
// so the server keeps serving meanwhile; everything else runs on the io
// thread.
class reloader {
 public:
  reloader(asio::io_context& io, line_server& server, const reload_hooks& hooks, const daemon_config& running)
      : io_(io), server_(server), hooks_(hooks), running_(running) {}
  ~reloader() {
    if (worker_.joinable()) worker_.join();
  }
  reloader(const reloader&) = delete;
  reloader& operator=(const reloader&) = delete;

  void reload() {
    if (!hooks_.read_config) return log::warn("SIGHUP: this daemon cannot reload its configuration; ignored");
    if (busy_) return log::warn("SIGHUP: the previous reload is still running; ignored");
    log::info("SIGHUP: reloading the configuration");
    daemon_config next;
    try {
      next = hooks_.read_config();
    } catch (const std::exception& e) {
      return log::error(std::string("reload failed; the running configuration stays: ") + e.what());
    }
    if (const auto kept = needing_restart(running_, next); !kept.empty()) {
      std::string sections;
      for (const auto& s : kept) sections += (sections.empty() ? "" : ", ") + s;
      log::warn("reload: " + sections + " changed; that needs a restart, the running values stay");
    }
    if (next.engine.system_prompts == running_.engine.system_prompts) return apply(next, "");
    if (!hooks_.set_system_prompts)
      return log::error("reload failed; the running configuration stays: this engine cannot change system prompts");
    busy_ = true;
    if (worker_.joinable()) worker_.join();
    worker_ = std::thread([this, next] {
      std::string change, problem;
      try {
        change = hooks_.set_system_prompts(next.engine.system_prompts);
      } catch (const std::exception& e) {
        problem = e.what();
      }
      asio::post(io_, [this, next, change, problem] {
        busy_ = false;
        if (!problem.empty())
          return log::error("reload failed; the running configuration stays: the engine refused the system "
                            "prompts: " + problem);
        apply(next, change);
      });
    });
  }

 private:
  void apply(const daemon_config& next, const std::string& prompts_change) {
    log::set_level(next.log.level);
    std::vector<std::string> names;
    for (const auto& p : next.engine.system_prompts) names.push_back(p.name);
    server_.set_system_prompts(std::move(names));
    running_.engine.system_prompts = next.engine.system_prompts;
    running_.log = next.log;
    log::info("reloaded" + log::field("system_prompts", double(next.engine.system_prompts.size())) +
              (prompts_change.empty() ? "" : " " + prompts_change) + log::field("log_level", to_string(next.log.level)));
  }

  asio::io_context& io_;
  line_server& server_;
  const reload_hooks& hooks_;
  daemon_config running_; // as loaded, with what reloads applied
  bool busy_ = false;     // system prompts being prefilled
  std::thread worker_;
};

} // namespace

void serve(const daemon_config& config, engine_port& engine, metrics_registry& registry, serving_metrics& metrics,
           service_notifier& notifier, const reload_hooks& reload) {
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
  reloader reloads(io, server, reload, config);
  asio::signal_set hangups(io, SIGHUP);
  std::function<void(boost::system::error_code, int)> on_hangup = [&](boost::system::error_code ec, int) {
    if (ec) return;
    reloads.reload();
    hangups.async_wait(on_hangup);
  };
  hangups.async_wait(on_hangup);
  asio::signal_set signals(io, SIGTERM, SIGINT);
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code ec, int signal) {
    if (ec) return;
    log::info(std::string("received ") + (signal == SIGTERM ? "SIGTERM" : "SIGINT"));
    notifier.stopping("stopping");
    signals.async_wait(on_signal); // a second signal cancels at once
    // NOTE: with nothing running, the server stops inside this call.
    server.shutdown([&] {
      signals.cancel();
      hangups.cancel();
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
