#include "runtime/thread_pool.h"

#include <algorithm>
#include <chrono>

namespace kvactor {

namespace {

// How long an idle thread polls before it sleeps.
constexpr auto spin_time = std::chrono::microseconds(100);

// Polls `ready` for up to spin_time, yielding the core now and then in case
// the thread it waits for shares it; true when `ready` turned true.
template <class Ready>
bool spin_until(Ready ready) {
  const auto deadline = std::chrono::steady_clock::now() + spin_time;
  for (uint32_t i = 1;; ++i) {
    if (ready()) return true;
    if (i % 64 == 0) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::yield();
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

} // namespace

thread_pool::thread_pool(int32_t num_threads) {
  if (num_threads <= 0) num_threads = int32_t(std::max(1u, std::thread::hardware_concurrency()));
  claimed_ = std::make_unique<std::atomic<uint64_t>[]>(size_t(num_threads));
  for (int32_t i = 0; i < num_threads; ++i) claimed_[i] = 0;
  for (int32_t i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { work(i); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  start_.notify_all();
  for (auto& w : workers_) w.join();
}

// Takes range `range` of job `generation` unless someone already has.
bool thread_pool::claim(int32_t range, uint64_t generation) {
  uint64_t seen = claimed_[range].load();
  while (seen < generation)
    if (claimed_[range].compare_exchange_weak(seen, generation)) return true;
  return false;
}

void thread_pool::run_range(int32_t range) {
  const int64_t begin = count_ * range / parts_, end = count_ * (range + 1) / parts_;
  if (begin < end) (*job_)(begin, end);
  if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard lock(mutex_); // the caller checks remaining_ under it before sleeping
    done_.notify_one();
  }
}

void thread_pool::parallel_for(int64_t count, const std::function<void(int64_t, int64_t)>& fn) {
  if (count <= 0) return;
  const int32_t parts = int32_t(std::min<int64_t>(count, size()));
  if (parts == 1) {
    fn(0, count);
    return;
  }
  job_ = &fn;
  count_ = count;
  parts_ = parts;
  remaining_.store(parts, std::memory_order_relaxed);
  const uint64_t generation = generation_.load(std::memory_order_relaxed) + 1;
  // Ranges past the end are taken up front, so a worker that wins a claim
  // knows its range exists and that the job waits for it.
  for (int32_t r = parts; r < size(); ++r) claim(r, generation);
  {
    // Under the lock, so a worker about to sleep sees the bump or the notify.
    std::lock_guard lock(mutex_);
    generation_.store(generation, std::memory_order_release);
  }
  start_.notify_all();
  run_range(0);
  for (int32_t r = 1; r < parts; ++r)
    if (claim(r, generation)) run_range(r);
  auto finished = [this] { return remaining_.load(std::memory_order_acquire) == 0; };
  if (!spin_until(finished)) {
    std::unique_lock lock(mutex_);
    done_.wait(lock, finished);
  }
  job_ = nullptr;
}

void thread_pool::work(int32_t index) {
  uint64_t seen = 0;
  for (;;) {
    auto ready = [&] { return stop_.load() || generation_.load(std::memory_order_acquire) != seen; };
    if (!spin_until(ready)) {
      std::unique_lock lock(mutex_);
      start_.wait(lock, ready);
    }
    if (stop_) return;
    seen = generation_.load(std::memory_order_acquire);
    // A won claim means the job cannot finish, nor its fields change, until
    // this range is done; a lost one means the caller ran it.
    if (claim(index, seen)) run_range(index);
  }
}

} // namespace kvactor
