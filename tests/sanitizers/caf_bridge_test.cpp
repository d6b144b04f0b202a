// The ThreadSanitizer bridge itself (tsan_caf_bridge.cpp), in ThreadSanitizer
// builds only: threads that share an actor handle, use it and drop it at
// once are ordered before the delete by the reference count, so TSan
// (halt_on_error=1 in scripts/sanitizers.sh) must stay quiet. A bridge that
// acquired before its decrement failed this within a second.
#include <doctest/doctest.h>

#include <caf/all.hpp>

#include <atomic>
#include <thread>
#include <vector>

namespace {

constexpr int rounds = 1000;
constexpr int threads = 4;

caf::behavior idle(caf::event_based_actor*) {
  return {[](int) {}};
}

} // namespace

TEST_CASE("caf bridge: the last of several threads dropping an actor handle destroys it") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::atomic<size_t> ids{0};
  for (int r = 0; r < rounds; ++r) {
    auto actor = sys.spawn(idle);
    std::vector<caf::strong_actor_ptr> handles(threads, caf::actor_cast<caf::strong_actor_ptr>(actor));
    // The actor ends meanwhile on a worker thread, which drops its own
    // references too.
    caf::anon_send_exit(actor, caf::exit_reason::kill);
    actor = nullptr;
    std::atomic<bool> go{false};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        while (!go.load(std::memory_order_relaxed)) {
        }
        ids += handles[t]->id();
        handles[t] = nullptr;
      });
    }
    go = true;
    for (auto& t : ts) t.join();
  }
  CHECK(ids > 0);
}
