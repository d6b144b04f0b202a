#include "runtime/thread_pool.h"

#include <doctest/doctest.h>

#include <atomic>
#include <vector>

using namespace kvactor;

TEST_CASE("parallel_for covers every index exactly once, job after job") {
  for (int32_t threads : {1, 2, 5}) {
    CAPTURE(threads);
    thread_pool pool(threads);
    CHECK(pool.size() == threads);
    for (int64_t count : {0, 1, 3, 100, 1001}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(count));
      std::atomic<int> calls{0};
      pool.parallel_for(count, [&](int64_t begin, int64_t end) {
        ++calls;
        for (int64_t i = begin; i < end; ++i) ++hits[size_t(i)];
      });
      for (int64_t i = 0; i < count; ++i) REQUIRE(hits[size_t(i)].load() == 1);
      CHECK(calls <= threads);
    }
  }
}
