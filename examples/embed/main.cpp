// Spawns a kvactor engine on the embedded default model, streams one
// generation to stdout and prints its usage.
//   embed ["prompt"]
#include <caf/all.hpp>

#include <future>
#include <iostream>

#include "kvactor/engine.h"

namespace {

// Prints text as it streams and hands the final result to main().
kvactor::generation_sink::behavior_type printer(kvactor::generation_sink::pointer self,
                                                std::promise<kvactor::generate_result>* done) {
  return {
    [](const kvactor::token_delta& d) { std::cout << d.text << std::flush; },
    [self, done](const kvactor::generation_done& d) {
      done->set_value(d.result);
      self->quit();
    },
  };
}

} // namespace

int main(int argc, char** argv) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};

  kvactor::engine_config config; // model_dir "" = the embedded default model
  config.num_pages = 512;
  auto engine = kvactor::spawn_engine(sys, config);

  kvactor::generate_request request;
  request.prompt = argc > 1 ? argv[1] : "The if statement is used for";
  request.sampling.temperature = 0; // greedy
  request.max_tokens = 48;

  std::promise<kvactor::generate_result> done;
  auto sink = sys.spawn(printer, &done);
  caf::scoped_actor self{sys};
  bool accepted = false;
  self->request(engine, std::chrono::seconds(10), kvactor::generate_atom_v, request, sink)
    .receive([&](uint64_t id) { accepted = true, std::cout << "[request " << id << "] "; },
             [&](caf::error& e) { std::cerr << "generate failed: " << sys.render(e) << "\n"; });
  auto finished = done.get_future();
  if (!accepted || finished.wait_for(std::chrono::minutes(2)) != std::future_status::ready) {
    caf::anon_send_exit(engine, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
    return 1;
  }
  const kvactor::generate_result result = finished.get();
  std::cout << "\n[" << kvactor::to_string(result.reason) << "] prompt " << result.usage.prompt_tokens
            << " tokens, completion " << result.usage.completion_tokens << " tokens, ttft "
            << result.timings.ttft_ms << " ms\n";
  caf::anon_send_exit(engine, caf::exit_reason::user_shutdown);
  return result.error == kvactor::error_code::none ? 0 : 1;
}
