#pragma once
// A small persistent pool that splits one loop across threads and waits for
// it: the CPU backend's matmuls and attention run a few hundred such loops per
// step, too many to start threads for each.
//
// NOTE: the loop is cut into one range per thread, and the caller runs every
// range no worker has claimed yet, so a worker the OS has not scheduled never
// holds a step up. Idle workers poll briefly before they sleep: waking a
// sleeping thread costs about as much as a decode-step matmul of a small model.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace kvactor {

class thread_pool {
 public:
  // `num_threads` counts the calling thread; 0 = hardware_concurrency.
  explicit thread_pool(int32_t num_threads = 0);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int32_t size() const { return int32_t(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint ranges covering [0, count), at most one
  // range per thread, and returns when all are done.
  // note: not reentrant; call from one thread at a time; fn must not throw.
  void parallel_for(int64_t count, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void work(int32_t index);
  bool claim(int32_t range, uint64_t generation);
  void run_range(int32_t range);

  std::vector<std::thread> workers_;
  std::mutex mutex_; // guards sleeping, not the job
  std::condition_variable start_;
  std::condition_variable done_;
  // The current job: written before generation_ is bumped, stable until
  // remaining_ drops to 0.
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t count_ = 0;
  int32_t parts_ = 0;
  std::atomic<uint64_t> generation_{0};          // one per job
  // [threads] the last job whose range i was taken
  std::unique_ptr<std::atomic<uint64_t>[]> claimed_;
  std::atomic<int32_t> remaining_{0};             // ranges of the current job not yet finished
  std::atomic<bool> stop_{false};
};

} // namespace kvactor
