#include <utility> // before Asio: GCC 12 in C++20 mode needs it first

#include <boost/asio.hpp>

#include "tools/bench/load_driver.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <deque>
#include <memory>
#include <unordered_map>
#include <unordered_set>

#include <boost/json.hpp>

#include "runtime/error.h"
#include "tools/bench/random.h"

namespace kvactor::bench {

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;

// Arrivals draw from their own stream, so the requests themselves are the
// same in open and closed loop.
constexpr uint64_t arrival_stream = 0x9E3779B97F4A7C15ull;

struct connection {
  explicit connection(asio::io_context& io) : socket(io) {}
  tcp::socket socket;
  bool connected = false, writing = false, closed = false;
  bool dedicated = false; // one request that will hang up
  std::deque<std::string> writes;
  std::array<char, 64 * 1024> chunk;
  std::string pending; // bytes after the last '\n'
  std::unordered_set<int64_t> in_flight;
  std::string refusal; // the code of an error line without an id, e.g. `overloaded`
};
using connection_ptr = std::shared_ptr<connection>;

// {"id":..,"tokens":[..],"max_tokens":..,"ignore_eos":true,"stream":true,"seed":..}
std::string request_line(int64_t id, const request_plan& plan, uint64_t seed) {
  std::string line = "{\"id\":" + std::to_string(id) + ",\"tokens\":[";
  for (size_t i = 0; i < plan.prompt.size(); ++i) {
    if (i) line += ',';
    line += std::to_string(plan.prompt[i]);
  }
  line += "],\"max_tokens\":" + std::to_string(plan.max_tokens) + ",\"ignore_eos\":true,\"stream\":true,\"seed\":" +
          std::to_string(seed);
  if (!plan.system.empty()) line += ",\"system\":" + json::serialize(json::string(plan.system));
  line += "}\n";
  return line;
}

class driver {
 public:
  driver(const load_options& options, workload& work, const std::function<void(const progress_counts&)>& on_progress,
         double progress_period_s)
      : options_(options), work_(work), on_progress_(on_progress), progress_period_(progress_period_s),
        arrivals_(options.seed ^ arrival_stream), arrival_timer_(io_), stop_timer_(io_), progress_timer_(io_) {
    boost::system::error_code ec;
    tcp::resolver resolver(io_);
    const auto found = resolver.resolve(options.host, std::to_string(options.port), ec);
    if (ec || found.empty())
      throw error("cannot resolve " + options.host + ":" + std::to_string(options.port) + ": " + ec.message());
    endpoint_ = found.begin()->endpoint();
  }

  load_result run() {
    start_ = clock::now();
    if (options_.duration_s) {
      stop_timer_.expires_at(at(*options_.duration_s));
      stop_timer_.async_wait([this](boost::system::error_code ec) {
        if (!ec) stop_sending();
      });
    }
    if (options_.rate) {
      next_arrival_ = arrivals_.exponential(*options_.rate);
      wait_for_arrival();
    } else {
      for (int32_t i = 0; i < options_.concurrency && may_send(); ++i) send_next(now());
      if (!may_send()) stop_sending();
    }
    tick_progress();
    io_.run();
    result_.records.assign(std::make_move_iterator(records_.begin()), std::make_move_iterator(records_.end()));
    return std::move(result_);
  }

 private:
  double now() const { return std::chrono::duration<double>(clock::now() - start_).count(); }
  clock::time_point at(double s) const {
    return start_ + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(s));
  }

  // -- sending ----------------------------------------------------------------

  bool may_send() const {
    if (sending_stopped_) return false;
    if (options_.requests && int64_t(records_.size()) >= *options_.requests) return false;
    return !options_.duration_s || now() < *options_.duration_s;
  }

  void wait_for_arrival() {
    arrival_timer_.expires_at(at(next_arrival_));
    arrival_timer_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      // The timer may fire late: send every arrival that is due.
      while (next_arrival_ <= now() && may_send() &&
             (!options_.duration_s || next_arrival_ < *options_.duration_s)) {
        send_next(next_arrival_);
        next_arrival_ += arrivals_.exponential(*options_.rate);
      }
      if (!may_send() || (options_.duration_s && next_arrival_ >= *options_.duration_s)) return stop_sending();
      wait_for_arrival();
    });
  }

  void send_next(double start) {
    const request_plan plan = work_.next();
    request_record& r = records_.emplace_back();
    r.id = int64_t(records_.size()) - 1;
    r.group = plan.group;
    r.prompt_tokens = int32_t(plan.prompt.size());
    r.max_tokens = plan.max_tokens;
    r.disconnect_after = plan.disconnect_after;
    r.start = start;
    ++outstanding_;
    const connection_ptr c = pick_connection(plan.disconnect_after.has_value());
    c->in_flight.insert(r.id);
    owner_[r.id] = c;
    c->writes.push_back(request_line(r.id, plan, options_.seed * 1000003u + uint64_t(r.id)));
    if (c->connected) write_more(c);
  }

  void stop_sending() {
    if (sending_stopped_) return;
    sending_stopped_ = true;
    arrival_timer_.cancel();
    stop_timer_.expires_after(std::chrono::duration_cast<clock::duration>(
        std::chrono::duration<double>(options_.drain_timeout_s)));
    stop_timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec) give_up();
    });
    finish_if_done();
  }

  // -- connections ------------------------------------------------------------

  connection_ptr pick_connection(bool dedicated) {
    if (!dedicated) {
      for (const auto& c : shared_)
        if (c->in_flight.empty()) return c;
      if (int32_t(shared_.size() + dedicated_.size()) >= options_.max_connections && !shared_.empty())
        return *std::min_element(shared_.begin(), shared_.end(),
                                 [](const auto& a, const auto& b) { return a->in_flight.size() < b->in_flight.size(); });
    }
    auto c = std::make_shared<connection>(io_);
    c->dedicated = dedicated;
    (dedicated ? dedicated_ : shared_).push_back(c);
    c->socket.async_connect(endpoint_, [this, c](boost::system::error_code ec) {
      if (c->closed) return;
      if (ec) return drop(c, "connection_failed");
      c->socket.set_option(tcp::no_delay(true));
      c->connected = true;
      write_more(c);
      read_more(c);
    });
    return c;
  }

  void write_more(const connection_ptr& c) {
    if (c->writing || c->closed || c->writes.empty()) return;
    c->writing = true;
    asio::async_write(c->socket, asio::buffer(c->writes.front()), [this, c](boost::system::error_code ec, size_t) {
      c->writing = false;
      if (c->closed) return;
      if (ec) return drop(c, "connection_lost");
      c->writes.pop_front();
      write_more(c);
    });
  }

  void read_more(const connection_ptr& c) {
    c->socket.async_read_some(asio::buffer(c->chunk), [this, c](boost::system::error_code ec, size_t n) {
      if (c->closed) return;
      if (ec) return drop(c, "connection_lost");
      const double t = now();
      c->pending.append(c->chunk.data(), n);
      size_t begin = 0;
      for (size_t nl; !c->closed && (nl = c->pending.find('\n', begin)) != std::string::npos; begin = nl + 1)
        on_line(c, std::string_view(c->pending).substr(begin, nl - begin), t);
      if (c->closed) return;
      c->pending.erase(0, begin);
      read_more(c);
    });
  }

  void close(const connection_ptr& c) {
    if (c->closed) return;
    c->closed = true;
    boost::system::error_code ignored;
    c->socket.close(ignored);
    auto& list = c->dedicated ? dedicated_ : shared_;
    list.erase(std::remove(list.begin(), list.end(), c), list.end());
  }

  // A connection that failed: its requests end as errors.
  void drop(const connection_ptr& c, const std::string& code) {
    const auto ids = c->in_flight;
    const std::string reason = c->refusal.empty() ? code : c->refusal;
    close(c);
    const double t = now();
    for (int64_t id : ids) {
      request_record& r = records_[size_t(id)];
      r.result = outcome::error;
      r.error_code = reason;
      r.end = t;
      ended(r);
    }
  }

  // -- replies ----------------------------------------------------------------

  void on_line(const connection_ptr& c, std::string_view line, double t) {
    if (line.empty() || line == "\r") return;
    boost::system::error_code ec;
    const json::value v = json::parse(line, ec);
    const json::object* o = ec ? nullptr : v.if_object();
    if (!o) {
      ++result_.unattributed_lines;
      return;
    }
    const json::value* id = o->if_contains("id");
    const json::object* err = o->contains("error") ? o->at("error").if_object() : nullptr;
    const std::string code = err && err->contains("code") && err->at("code").is_string()
                                 ? std::string(err->at("code").as_string())
                                 : std::string("internal");
    if (!id || !id->is_int64() || id->as_int64() < 0 || id->as_int64() >= int64_t(records_.size())) {
      ++result_.unattributed_lines;
      if (err) {
        ++result_.unattributed_errors[code];
        c->refusal = code;
      }
      return;
    }
    request_record& r = records_[size_t(id->as_int64())];
    const json::value* done = o->if_contains("done");
    const bool terminal = err || (done && done->is_bool() && done->as_bool());
    if (r.result != outcome::pending) {
      ++r.lines_after_terminal;
      if (terminal) ++r.terminal_lines;
      return;
    }
    if (err) {
      ++r.terminal_lines;
      r.result = outcome::error;
      r.error_code = code;
      r.end = t;
      return ended(r);
    }
    if (terminal) {
      ++r.terminal_lines;
      r.result = outcome::finished;
      r.end = t;
      read_final(*o, r);
      return ended(r);
    }
    const json::value* tokens = o->if_contains("tokens");
    const auto n = tokens && tokens->is_array() ? int32_t(tokens->as_array().size()) : 0;
    if (n == 0) return; // text held back: nothing to count
    r.arrivals.push_back({t, n});
    output_tokens_ += n;
    if (r.disconnect_after && r.tokens_received() >= *r.disconnect_after) {
      r.result = outcome::disconnected;
      r.end = t;
      close(c);
      ended(r);
    }
  }

  static void read_final(const json::object& o, request_record& r) {
    if (const auto* reason = o.if_contains("finish_reason"); reason && reason->is_string())
      r.finish_reason = std::string(reason->as_string());
    auto int_at = [](const json::object* parent, std::string_view key) -> std::optional<int32_t> {
      const json::value* v = parent ? parent->if_contains(key) : nullptr;
      if (!v || !v->is_int64()) return std::nullopt;
      return int32_t(v->as_int64());
    };
    const json::object* usage = o.contains("usage") ? o.at("usage").if_object() : nullptr;
    r.usage_prompt = int_at(usage, "prompt_tokens");
    r.usage_cached = int_at(usage, "cached_tokens");
    r.usage_completion = int_at(usage, "completion_tokens");
    const json::object* timings = o.contains("timings") ? o.at("timings").if_object() : nullptr;
    if (const json::value* q = timings ? timings->if_contains("queue_ms") : nullptr; q && q->is_number())
      r.server_queue_ms = q->to_number<double>();
  }

  // -- the end of requests and of the run -------------------------------------------

  void ended(request_record& r) {
    --outstanding_;
    ++ended_;
    if (r.result == outcome::error) ++errors_;
    if (const auto it = owner_.find(r.id); it != owner_.end()) {
      it->second->in_flight.erase(r.id);
      owner_.erase(it);
    }
    if (!options_.rate && may_send()) send_next(now());
    else if (!options_.rate && !sending_stopped_) stop_sending();
    finish_if_done();
  }

  void finish_if_done() {
    if (sending_stopped_ && outstanding_ == 0) shut_down();
  }

  void give_up() {
    const double t = now();
    for (auto& r : records_) {
      if (r.result != outcome::pending) continue;
      r.result = outcome::unanswered;
      r.end = t;
    }
    shut_down();
  }

  void shut_down() {
    if (finished_) return;
    finished_ = true;
    arrival_timer_.cancel();
    stop_timer_.cancel();
    progress_timer_.cancel();
    for (auto list : {shared_, dedicated_})
      for (const auto& c : list) close(c);
    report_progress();
  }

  void report_progress() {
    if (on_progress_) on_progress_({now(), int64_t(records_.size()), ended_, errors_, output_tokens_});
  }

  void tick_progress() {
    if (finished_) return;
    report_progress();
    progress_timer_.expires_after(std::chrono::duration_cast<clock::duration>(
        std::chrono::duration<double>(progress_period_)));
    progress_timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec) tick_progress();
    });
  }

  const load_options& options_;
  workload& work_;
  const std::function<void(const progress_counts&)>& on_progress_;
  double progress_period_;

  asio::io_context io_{1};
  tcp::endpoint endpoint_;
  random_source arrivals_;
  asio::steady_timer arrival_timer_, stop_timer_, progress_timer_;
  clock::time_point start_;
  double next_arrival_ = 0;

  std::deque<request_record> records_; // by id; a deque keeps references stable
  std::vector<connection_ptr> shared_, dedicated_;
  std::unordered_map<int64_t, connection_ptr> owner_; // the connection of each request in flight
  int64_t outstanding_ = 0, ended_ = 0, errors_ = 0, output_tokens_ = 0;
  bool sending_stopped_ = false, finished_ = false;
  load_result result_;
};

} // namespace

load_result run_load(const load_options& options, workload& work,
                     const std::function<void(const progress_counts&)>& on_progress, double progress_period_s) {
  if (!options.rate && options.concurrency < 1) throw error("--concurrency must be at least 1");
  if (options.rate && !(*options.rate > 0)) throw error("--rate must be above 0");
  return driver(options, work, on_progress, progress_period_s).run();
}

} // namespace kvactor::bench
