#pragma once
// A scripted engine_port for the server's tests: what it does is chosen by
// the prompt, on one worker thread, so every protocol behaviour can be
// driven fast and deterministically.
//
//   any prompt           max_tokens tokens "t0 ", "t1 ", ... (ids 0, 1, ...),
//                        one every `interval`, then finish_reason length
//   "endless"            tokens until cancelled
//   "big"                like endless, each token carrying 64 KiB of text
//   "fail:<code>"        ends at once, inside submit(), with that error code
//   "throw"              submit() throws
//
// It records every submit and cancel.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "net/engine_port.h"

namespace kvactor::net::testing {

class fake_engine final : public engine_port {
 public:
  using clock = std::chrono::steady_clock;

  explicit fake_engine(std::chrono::microseconds interval = std::chrono::milliseconds(1))
      : interval_(interval), worker_([this] { run(); }) {}

  ~fake_engine() override {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    worker_.join();
  }

  generation_handle submit(const generate_request& request, generation_callbacks callbacks) override {
    if (request.prompt == "throw") throw std::runtime_error("the fake engine is down");
    std::unique_lock lock(mutex_);
    const generation_handle handle = next_handle_++;
    submitted_.push_back(request);
    if (request.prompt.starts_with("fail:")) {
      lock.unlock();
      generate_result r;
      r.reason = finish_reason::error;
      r.error = code_of(request.prompt.substr(5));
      r.message = "scripted failure";
      callbacks.on_done(r);
      return handle;
    }
    active& a = active_[handle];
    a.request = request;
    a.callbacks = std::move(callbacks);
    a.next = clock::now() + interval_;
    wake_.notify_all();
    return handle;
  }

  void cancel(generation_handle handle) override {
    std::lock_guard lock(mutex_);
    cancels_.push_back(handle);
    if (auto it = active_.find(handle); it != active_.end()) {
      it->second.cancelled = true;
      it->second.next = clock::now();
      wake_.notify_all();
    }
  }

  std::map<std::string, double> stats() override {
    std::lock_guard lock(mutex_);
    return {{std::string(stat_requests_running), double(active_.size())},
            {std::string(stat_requests_waiting), 0},
            {std::string(stat_kv_pages_total), 100},
            {std::string(stat_kv_pages_used), double(2 * active_.size())}};
  }

  std::vector<model_info> models() override { return {model_info{"fake", "FakeForCausalLM", 4096, 256}}; }

  // -- what the tests look at -------------------------------------------------------

  std::vector<generate_request> submitted() {
    std::lock_guard lock(mutex_);
    return submitted_;
  }
  std::vector<generation_handle> cancels() {
    std::lock_guard lock(mutex_);
    return cancels_;
  }
  size_t running() {
    std::lock_guard lock(mutex_);
    return active_.size();
  }

 private:
  struct active {
    generate_request request;
    generation_callbacks callbacks;
    clock::time_point next;
    int32_t produced = 0;
    bool cancelled = false;
  };

  static error_code code_of(const std::string& name) {
    for (auto c : {error_code::bad_request, error_code::context_length_exceeded, error_code::overloaded,
                   error_code::cancelled, error_code::internal})
      if (to_string(c) == name) return c;
    return error_code::internal;
  }

  bool endless(const active& a) const { return a.request.prompt == "endless" || a.request.prompt == "big"; }

  // One step of one request: a token, or its end.
  std::function<void()> step(active& a, bool& finished) {
    generate_result r;
    r.usage.prompt_tokens = int32_t(a.request.prompt.size());
    r.usage.completion_tokens = a.produced;
    if (a.cancelled || (!endless(a) && a.produced >= a.request.max_tokens)) {
      finished = true;
      r.reason = a.cancelled ? finish_reason::cancelled : finish_reason::length;
      if (a.cancelled) r.error = error_code::cancelled;
      return [cb = std::move(a.callbacks), r] { cb.on_done(r); }; // the last use: hand the callbacks over
    }
    const int32_t id = a.produced++;
    std::string text = a.request.prompt == "big" ? std::string(64 * 1024, 'x') : "t" + std::to_string(id) + " ";
    return [cb = a.callbacks, text = std::move(text), id] { cb.on_token(text, std::span<const int32_t>(&id, 1)); };
  }

  void run() {
    std::unique_lock lock(mutex_);
    while (!stop_) {
      if (active_.empty()) {
        wake_.wait(lock);
        continue;
      }
      auto first = std::min_element(active_.begin(), active_.end(),
                                    [](const auto& a, const auto& b) { return a.second.next < b.second.next; });
      if (first->second.next > clock::now()) {
        wake_.wait_until(lock, first->second.next);
        continue;
      }
      // Every request that is due moves one step; callbacks run unlocked.
      std::vector<std::function<void()>> calls;
      const auto now = clock::now();
      for (auto it = active_.begin(); it != active_.end();) {
        if (it->second.next > now) {
          ++it;
          continue;
        }
        bool finished = false;
        calls.push_back(step(it->second, finished));
        it->second.next = now + interval_;
        it = finished ? active_.erase(it) : std::next(it);
      }
      lock.unlock();
      for (auto& call : calls) call();
      lock.lock();
    }
  }

  const std::chrono::microseconds interval_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::map<generation_handle, active> active_;
  std::vector<generate_request> submitted_;
  std::vector<generation_handle> cancels_;
  generation_handle next_handle_ = 1;
  bool stop_ = false;
  std::thread worker_;
};

} // namespace kvactor::net::testing
