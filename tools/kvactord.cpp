// kvactord: the kvactor daemon. Serves the line protocol (docs/protocol.md)
// over TCP, metrics over HTTP, and tells systemd when it is ready.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "actors/engine_port_caf.h"
#ifdef KVACTOR_HAVE_CUDA
#include "gpu/cuda_engine.h"
#endif
#include "net/daemon.h"
#include "net/daemon_config.h"
#include "net/log.h"
#include "runtime/error.h"
#include "runtime/failing_backend.h"

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

// The backend factory of the configured device; none for the CPU (the
// engine's own).
backend_factory device_backend(const engine_config& config) {
  if (config.device != "cuda") return {};
#ifdef KVACTOR_HAVE_CUDA
  return cuda_backend_factory([](const std::string& line) { net::log::info(line); });
#else
  throw error("backend.device = \"cuda\": this kvactord was built without the CUDA backend "
              "(configure with -DKVACTOR_CUDA=ON where nvcc is installed)");
#endif
}

// The test hook of docs/reliability.md: with KVACTOR_FAULT_STEP=N the Nth
// forward pass throws (runtime/failing_backend.h). Unset, nothing is wrapped.
backend_factory with_fault_hook(backend_factory factory) {
  const char* step = std::getenv("KVACTOR_FAULT_STEP");
  if (!step) return factory;
  char* end = nullptr;
  const long long n = std::strtoll(step, &end, 10);
  if (end == step || *end != '\0' || n < 1) throw error("KVACTOR_FAULT_STEP must be a step number >= 1, got '" + std::string(step) + "'");
  net::log::warn("test hook: forward pass " + std::to_string(n) + " will fail (KVACTOR_FAULT_STEP)");
  auto inner = factory ? std::move(factory) : cpu_backend_factory();
  return [inner = std::move(inner), n](const loaded_model& m, int32_t num_pages, const engine_config& c) {
    return std::make_shared<failing_backend>(inner(m, num_pages, c), int64_t(n));
  };
}

// What SIGHUP changes in the engine: its system prompts.
std::string set_system_prompts(caf_engine_port& engine, const std::vector<system_prompt_config>& prompts) {
  const system_prompts_reloaded r = engine.reload_system_prompts(prompts);
  if (!r.applied) throw error(r.error);
  const auto names = [](const std::vector<std::string>& list) {
    std::string out;
    for (const auto& n : list) out += (out.empty() ? "" : ",") + n;
    return out;
  };
  std::string change = net::log::field("added", names(r.added)) + net::log::field("removed", names(r.removed)) +
                       net::log::field("kept", names(r.kept)) + net::log::field("pinned_pages", double(r.pinned_pages));
  if (!r.failed.empty()) change += net::log::field("not_pinned", names(r.failed));
  return change.substr(1);
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
  // A reload asked for while the model loads must not end the process; once
  // serving, SIGHUP reloads the configuration (net/daemon.h).
  std::signal(SIGHUP, SIG_IGN);
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
    caf_engine_port engine(system, config.engine, [&metrics](double seconds) { metrics.step_finished(seconds); },
                           with_fault_hook(device_backend(config.engine)));
    net::reload_hooks reload;
    reload.read_config = [argc, argv] { return read_config(argc, argv); };
    reload.set_system_prompts = [&engine](const std::vector<system_prompt_config>& prompts) {
      return set_system_prompts(engine, prompts);
    };
    net::serve(config, engine, registry, metrics, notifier, reload);
  } catch (const std::exception& e) {
    net::log::error(e.what());
    notifier.status(std::string("failed: ") + e.what());
    return 1;
  }
  return 0;
}
