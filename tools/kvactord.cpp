// kvactord: the kvactor daemon. Serves the line protocol (docs/protocol.md)
// over TCP, metrics over HTTP, and tells systemd when it is ready.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "actors/engine_port_caf.h"
#include "net/daemon.h"
#include "net/daemon_config.h"
#include "net/log.h"
#include "runtime/error.h"

namespace {

using namespace kvactor;

constexpr const char* usage = R"(usage: kvactord [--config FILE] [--model DIR] [--host H] [--port N]
                [--metrics-port N] [--log-level L] [section.key=value ...]
Serves the kvactor line protocol (docs/protocol.md). Without --config every
setting has its default (config/kvactord.toml lists them); options and
section.key=value arguments override the file. With no model configured, the
embedded default model is served.
)";

struct usage_error : error {
  using error::error;
};

// The configuration file, then the command line's overrides in order.
net::daemon_config read_config(int argc, char** argv) {
  std::string config_file;
  std::vector<std::pair<std::string, std::string>> overrides;
  const std::vector<std::pair<std::string_view, std::string_view>> flags = {
      {"--model", "model.dir"},          {"--host", "server.host"},          {"--port", "server.port"},
      {"--metrics-port", "server.metrics_port"}, {"--log-level", "log.level"}};
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--")) {
      const bool known = arg == "--config" || std::any_of(flags.begin(), flags.end(), [&](const auto& f) {
                           return f.first == arg;
                         });
      if (!known) throw usage_error("unknown option " + std::string(arg));
      if (i + 1 >= argc) throw usage_error(std::string(arg) + " needs a value");
      const std::string value = argv[++i];
      if (arg == "--config") {
        config_file = value;
        continue;
      }
      for (const auto& [flag, key] : flags)
        if (flag == arg) overrides.emplace_back(key, value);
    } else if (const size_t eq = arg.find('='); eq != std::string_view::npos) {
      overrides.emplace_back(arg.substr(0, eq), arg.substr(eq + 1));
    } else {
      throw usage_error("unexpected argument '" + std::string(arg) + "'");
    }
  }
  net::daemon_config config = config_file.empty() ? net::daemon_config{} : net::load_daemon_config(config_file);
  for (const auto& [key, value] : overrides) net::apply_override(config, key, value);
  return config;
}

} // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
  }
  net::daemon_config config;
  try {
    config = read_config(argc, argv);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "kvactord: %s\n%s", e.what(), usage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvactord: %s\n", e.what());
    return 2;
  }
  // Writes to a vanished client fail with EPIPE instead of killing us.
  std::signal(SIGPIPE, SIG_IGN);
  net::log::set_level(config.log.level);
  net::service_notifier notifier;
  try {
    net::metrics_registry registry;
    net::serving_metrics metrics(registry);
    notifier.status("loading the model");
    net::log::info("loading" + net::log::field("model", config.engine.model_dir.empty() ? "default" : config.engine.model_dir) +
                   net::log::field("device", config.engine.device));
    caf::actor_system_config caf_config;
    caf::actor_system system{caf_config};
    caf_engine_port engine(system, config.engine, [&metrics](double seconds) { metrics.step_finished(seconds); });
    net::serve(config, engine, registry, metrics, notifier);
  } catch (const std::exception& e) {
    net::log::error(e.what());
    notifier.status(std::string("failed: ") + e.what());
    return 1;
  }
  return 0;
}
