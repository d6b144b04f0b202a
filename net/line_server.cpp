#include <utility> // before Asio: GCC 12 in C++20 mode needs it first

#include <boost/asio.hpp>

#include "net/line_server.h"

#include <malloc.h>

#include <array>
#include <chrono>
#include <deque>
#include <random>
#include <unordered_map>
#include <variant>
#include <vector>

#include "net/line_splitter.h"
#include "net/log.h"
#include "net/serving_metrics.h"
#include "runtime/error.h"

namespace kvactor::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;

namespace {

// How long a closing connection waits for its client to read what is left
// and to close its side, before it is closed regardless.
constexpr auto linger_time = std::chrono::seconds(2);
// After shutdown, how long connections get to flush their last lines.
constexpr auto flush_time = std::chrono::seconds(5);
// After accept() fails (out of file descriptors, usually), before retrying.
constexpr auto accept_retry = std::chrono::milliseconds(100);
constexpr size_t read_chunk = 64 * 1024;

double seconds(clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Compares without an early exit, so the time taken does not reveal how much
// of a guessed token was right.
bool same_token(std::string_view given, std::string_view expected) {
  unsigned diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i)
    diff |= uint8_t(i < given.size() ? given[i] : 0) ^ uint8_t(expected[i]);
  return diff == 0;
}

std::string id_text(const std::optional<request_id>& id) {
  if (!id) return "-";
  if (const auto* n = std::get_if<int64_t>(&*id)) return std::to_string(*n);
  return std::get<std::string>(*id);
}

std::string quoted_id(const request_id& id) {
  if (const auto* n = std::get_if<int64_t>(&id)) return std::to_string(*n);
  return "'" + std::get<std::string>(id) + "'";
}

bool failed(const generate_result& r) { return r.reason == finish_reason::cancelled || r.reason == finish_reason::error; }

// How a request ended, as the reason or the error code.
std::string_view outcome(const generate_result& r) {
  if (r.reason == finish_reason::cancelled) return to_string(error_code::cancelled);
  if (r.reason == finish_reason::error) return to_string(r.error == error_code::none ? error_code::internal : r.error);
  return to_string(r.reason);
}

std::string endpoint_text(const tcp::socket& socket) {
  boost::system::error_code ec;
  const auto ep = socket.remote_endpoint(ec);
  if (ec) return "?";
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

} // namespace

class connection;

// ============================================================================
// Server state, shared by the connections
// ============================================================================

struct line_server::state : std::enable_shared_from_this<line_server::state> {
  state(asio::io_context& io, const server_config& config, const parse_limits& limits, engine_port& engine,
        serving_metrics* metrics)
      : io(io), config(config), limits(limits), engine(engine), metrics(metrics), acceptor(io),
        retry_timer(io), grace_timer(io), flush_timer(io), trim_timer(io), seeds(std::random_device{}()) {}

  void listen();
  void accept();
  void begin_shutdown(std::function<void()> done);
  void cancel_everything();
  // Called whenever a generation ends or a connection closes.
  void check_shutdown();
  void connection_closed(uint64_t number);
  void close_all();
  // Once nothing runs, hands the memory freed by closed connections back to
  // the system.
  void trim_when_idle();

  asio::io_context& io;
  const server_config config;
  parse_limits limits; // its system prompt names change on reload
  engine_port& engine;
  serving_metrics* const metrics;
  tcp::acceptor acceptor;
  asio::steady_timer retry_timer, grace_timer, flush_timer, trim_timer;
  bool trim_pending = false;
  const clock::time_point started = clock::now();

  std::map<uint64_t, std::shared_ptr<connection>> connections; // open ones, by number
  uint64_t next_connection = 1;
  uint64_t outstanding = 0; // generations submitted whose on_done has not been handled
  uint64_t requests_total = 0;
  std::mt19937_64 seeds;    // for requests that give no seed

  bool stopping = false;
  bool closing_connections = false; // every generation ended: flushing
  std::function<void()> on_stopped;

  // Every connection reads into this one buffer once its socket is
  // readable, and its line splitter keeps what it needs: an idle connection
  // holds no read buffer. One io thread, so one read at a time.
  std::array<char, read_chunk> read_buf;
};

// ============================================================================
// One client connection
// ============================================================================

class connection : public std::enable_shared_from_this<connection> {
 public:
  // number 0: a connection refused at the limit, tracked by no one.
  connection(std::shared_ptr<line_server::state> server, tcp::socket socket, uint64_t number)
      : server_(std::move(server)), socket_(std::move(socket)), number_(number), peer_(endpoint_text(socket_)),
        splitter_(server_->limits.max_line_bytes), linger_timer_(server_->io),
        authenticated_(server_->config.auth_token.empty()) {}

  void start() {
    log::debug("connection opened" + log::field("conn", double(number_)) + log::field("peer", peer_));
    read();
  }

  // Sends one error line and closes: the connection is over the limit.
  void refuse(std::string line) {
    send(std::move(line));
    close_when_flushed();
    read();
  }

  // The client is gone or must go: its requests are cancelled, whatever is
  // unsent is dropped.
  void abort(std::string_view why) {
    if (gone_) return;
    if (number_ != 0)
      log::debug("connection closed" + log::field("conn", double(number_)) + log::field("reason", why) +
                 log::field("cancelled", double(requests_.size())));
    gone_ = true;
    for (auto& [key, r] : requests_) cancel(r);
    plain_queue_.clear();
    queue_.clear();
    boost::system::error_code ec;
    socket_.close(ec);
    linger_timer_.cancel();
    if (number_ != 0) server_->connection_closed(number_);
  }

  // Shutdown's grace is over: every request is cancelled. Plain prompts
  // queued behind a running one end as it ends (start_next_plain).
  void cancel_all() {
    for (auto& [key, r] : requests_) cancel(r);
  }

  // Stops taking lines; closes once the replies are written.
  void close_when_flushed() {
    closing_ = true;
    maybe_close();
  }

 private:
  struct request {
    std::optional<request_id> id;
    generation_handle handle = 0;
    bool plain = false;
    bool stream = true;
    bool cancelled = false;
    bool sent_text = false;       // plain text: some of the reply went out
    std::string text;             // stream=false: the whole output so far
    std::vector<int32_t> tokens;
    clock::time_point submitted, last_token;
    int32_t num_tokens = 0;
  };

  // -- reading --------------------------------------------------------------------

  void read() {
    socket_.async_wait(tcp::socket::wait_read,
                       [self = shared_from_this()](boost::system::error_code ec) { self->on_readable(ec); });
  }

  void on_readable(boost::system::error_code ec) {
    if (gone_) return;
    size_t n = 0;
    if (!ec) {
      // Non-blocking: a readiness that turns out spurious waits again.
      if (!socket_.non_blocking()) socket_.non_blocking(true, ec);
      if (!ec) n = socket_.read_some(asio::buffer(server_->read_buf), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) return read();
    }
    if (ec == asio::error::eof) {
      read_eof_ = true;
      if (!closing_) {
        // The last line may lack its '\n'.
        const std::string last = splitter_.finish();
        if (!last.empty()) handle_line(last);
      }
      if (closing_ && lingering_) return abort("closed");
      if (idle()) close_when_flushed();
      return;
    }
    if (ec) return abort(ec.message());
    if (!closing_) {
      splitter_.feed(
          std::string_view(server_->read_buf.data(), n), [this](std::string_view line) { return handle_line(line); },
          [this](std::string_view head) { return handle_too_long(head); });
    }
    if (!gone_) read();
  }

  bool taking_lines() const { return !gone_ && !closing_; }

  bool handle_too_long(std::string_view head) {
    const size_t first = head.find_first_not_of(" \t");
    const bool plain = first == std::string_view::npos || head[first] != '{';
    if (server_->metrics) server_->metrics->protocol_error();
    send(format_error(protocol_error{error_code::bad_request,
                                     "the line is longer than the limit of " +
                                         std::to_string(server_->limits.max_line_bytes) + " bytes",
                                     {}, plain}));
    if (!authenticated_) close_when_flushed();
    return taking_lines();
  }

  bool handle_line(std::string_view line) {
    parsed_line parsed = parse_line(line, server_->limits);
    if (!authenticated_) {
      handle_before_auth(parsed);
      return taking_lines();
    }
    if (auto* op = std::get_if<generate_op>(&parsed)) {
      start_generate(std::move(*op));
    } else if (const auto* c = std::get_if<cancel_op>(&parsed)) {
      if (auto it = ids_.find(c->id); it != ids_.end()) cancel(requests_.at(it->second));
    } else if (const auto* h = std::get_if<health_op>(&parsed)) {
      send(format_health(h->id, server_->stopping ? "stopping" : "ok", seconds(clock::now() - server_->started)));
    } else if (const auto* s = std::get_if<stats_op>(&parsed)) {
      send_stats(s->id);
    } else if (const auto* m = std::get_if<models_op>(&parsed)) {
      send_models(m->id);
    } else if (const auto* a = std::get_if<auth_op>(&parsed)) {
      // Without a configured token any token is fine; with one, handle_before_auth checked it.
      send(format_auth_ok(a->id));
    } else if (const auto* e = std::get_if<protocol_error>(&parsed)) {
      if (server_->metrics) server_->metrics->protocol_error();
      send(format_error(*e));
    }
    return taking_lines();
  }

  void handle_before_auth(const parsed_line& parsed) {
    if (std::holds_alternative<empty_line>(parsed)) return;
    if (const auto* a = std::get_if<auth_op>(&parsed)) {
      if (same_token(a->token, server_->config.auth_token)) {
        authenticated_ = true;
        send(format_auth_ok(a->id));
        return;
      }
      log::warn("authentication failed" + log::field("conn", double(number_)) + log::field("peer", peer_));
      send(format_error(a->id, error_code::bad_request, "wrong auth token"));
      return close_when_flushed();
    }
    const auto* op = std::get_if<generate_op>(&parsed);
    const auto* e = std::get_if<protocol_error>(&parsed);
    const bool plain = (op && op->plain_text) || (e && e->plain_text);
    send(format_error(protocol_error{error_code::bad_request,
                                     "authenticate first: send {\"op\":\"auth\",\"token\":\"...\"}", {}, plain}));
    close_when_flushed();
  }

  void send_stats(const std::optional<request_id>& id) {
    std::map<std::string, double> stats;
    try {
      stats = server_->engine.stats();
    } catch (const std::exception& e) {
      return send(format_error(id, error_code::internal, std::string("cannot read the engine's stats: ") + e.what()));
    }
    stats["connections"] = double(server_->connections.size());
    stats["requests_in_flight"] = double(server_->outstanding);
    stats["requests_total"] = double(server_->requests_total);
    send(format_stats(id, stats));
  }

  void send_models(const std::optional<request_id>& id) {
    try {
      const std::vector<model_info> models = server_->engine.models();
      send(format_models(id, models));
    } catch (const std::exception& e) {
      send(format_error(id, error_code::internal, std::string("cannot list the models: ") + e.what()));
    }
  }

  // -- generations ----------------------------------------------------------------

  size_t in_flight() const { return requests_.size() + plain_queue_.size(); }
  bool idle() const { return in_flight() == 0; }

  void refuse(const generate_op& op, error_code code, const std::string& message) {
    if (server_->metrics) server_->metrics->request_refused(code);
    log::debug("request refused" + log::field("conn", double(number_)) + log::field("id", id_text(op.id)) +
               log::field("code", to_string(code)) + log::field("message", message));
    send(op.plain_text ? format_plain_error(code, message) : format_error(op.id, code, message));
  }

  void start_generate(generate_op op) {
    ++server_->requests_total;
    if (server_->stopping) return refuse(op, error_code::cancelled, "the server is shutting down");
    if (op.id && ids_.contains(*op.id))
      return refuse(op, error_code::bad_request,
                    "request id " + quoted_id(*op.id) + " is already in flight on this connection");
    const auto limit = size_t(server_->config.max_queued_per_connection);
    if (in_flight() >= limit)
      return refuse(op, error_code::overloaded,
                    "this connection already has " + std::to_string(limit) +
                        " requests in flight (server.max_queued_per_connection)");
    if (!op.seeded) op.request.sampling.seed = server_->seeds();
    if (op.plain_text && plain_running_) {
      plain_queue_.push_back(std::move(op));
      return;
    }
    submit(std::move(op));
  }

  void start_next_plain() {
    while (!plain_running_ && !plain_queue_.empty() && !gone_) {
      generate_op op = std::move(plain_queue_.front());
      plain_queue_.pop_front();
      if (server_->stopping) {
        refuse(op, error_code::cancelled, "the server is shutting down");
      } else {
        submit(std::move(op));
      }
    }
  }

  void submit(generate_op op) {
    const uint64_t key = next_key_++;
    request& r = requests_[key];
    r.id = op.id;
    r.plain = op.plain_text;
    r.stream = op.stream;
    r.submitted = clock::now();
    if (op.id) ids_[*op.id] = key;
    if (op.plain_text) plain_running_ = true;
    ++server_->outstanding;
    if (server_->metrics) server_->metrics->request_started();

    // The engine may call back from any thread: both callbacks hop onto the
    // io thread. on_done holds the connection until the request has ended and
    // hands that hold to the io thread, so the connection (its sockets and
    // timers) is never destroyed on an engine thread, where the io_context
    // may already be gone.
    generation_callbacks callbacks;
    asio::io_context& io = server_->io;
    callbacks.on_token = [weak = weak_from_this(), key, &io](std::string_view text, std::span<const int32_t> tokens) {
      asio::post(io, [weak, key, text = std::string(text), tokens = std::vector<int32_t>(tokens.begin(), tokens.end()),
                      at = clock::now()]() mutable {
        if (auto self = weak.lock()) self->on_token(key, std::move(text), std::move(tokens), at);
      });
    };
    callbacks.on_done = [self = shared_from_this(), key, &io](const generate_result& result) mutable {
      asio::post(io, [self = std::move(self), key, result] { self->on_done(key, result); });
    };
    try {
      r.handle = server_->engine.submit(op.request, std::move(callbacks));
    } catch (const std::exception& e) {
      // No callback will come: the request ends here.
      generate_result result;
      result.reason = finish_reason::error;
      result.error = error_code::internal;
      result.message = std::string("the engine cannot take requests: ") + e.what();
      on_done(key, result);
    }
  }

  void cancel(request& r) {
    if (r.cancelled) return;
    r.cancelled = true;
    server_->engine.cancel(r.handle);
  }

  void on_token(uint64_t key, std::string text, std::vector<int32_t> tokens, clock::time_point at) {
    auto it = requests_.find(key);
    if (it == requests_.end()) return;
    request& r = it->second;
    if (!tokens.empty()) {
      if (server_->metrics) {
        if (r.num_tokens == 0) {
          server_->metrics->first_token(seconds(at - r.submitted));
        } else {
          server_->metrics->tokens_after(seconds(at - r.last_token), int(tokens.size()));
        }
      }
      r.last_token = at;
      r.num_tokens += int32_t(tokens.size());
    }
    if (gone_) return;
    if (r.plain) {
      r.sent_text |= !text.empty();
      send(std::move(text));
    } else if (r.stream) {
      if (!text.empty() || !tokens.empty()) send(format_token(r.id, text, tokens));
    } else {
      r.text += text;
      r.tokens.insert(r.tokens.end(), tokens.begin(), tokens.end());
    }
  }

  void on_done(uint64_t key, const generate_result& result) {
    auto node = requests_.extract(key);
    if (node.empty()) return;
    request& r = node.mapped();
    if (r.id) ids_.erase(*r.id);
    if (r.plain) plain_running_ = false;
    --server_->outstanding;
    if (server_->metrics) server_->metrics->request_finished(result);
    log_finished(r, result);
    if (!gone_) {
      if (r.plain) {
        std::string tail = format_plain_final(result);
        // The error line follows the text on a new line, or stands alone.
        if (failed(result) && !r.sent_text) tail.erase(0, 1);
        send(std::move(tail));
      } else if (r.stream) {
        send(format_final(r.id, result));
      } else {
        send(format_final(r.id, result, completion{r.text, r.tokens}));
      }
    }
    start_next_plain();
    if (read_eof_ && idle()) close_when_flushed();
    server_->check_shutdown();
  }

  void log_finished(const request& r, const generate_result& result) {
    const log_level level =
        result.reason == finish_reason::error && result.error == error_code::internal ? log_level::error : log_level::info;
    if (!log::enabled(level)) return;
    std::string line = "request finished" + log::field("conn", double(number_)) + log::field("id", id_text(r.id));
    line += log::field("reason", outcome(result));
    line += log::field("prompt_tokens", result.usage.prompt_tokens) +
            log::field("cached_tokens", result.usage.cached_tokens) +
            log::field("completion_tokens", result.usage.completion_tokens) +
            log::field("queue_ms", result.timings.queue_ms) + log::field("ttft_ms", result.timings.ttft_ms) +
            log::field("per_token_ms", result.timings.per_token_ms) + log::field("total_ms", result.timings.total_ms);
    if (!result.message.empty() && failed(result)) line += log::field("message", result.message);
    log::write(level, line);
  }

  // -- writing --------------------------------------------------------------------

  void send(std::string data) {
    if (gone_ || data.empty()) return;
    unsent_bytes_ += data.size();
    if (unsent_bytes_ > size_t(server_->config.output_buffer_bytes)) {
      log::warn("client is not reading its replies; disconnecting" + log::field("conn", double(number_)) +
                log::field("peer", peer_) + log::field("unsent_bytes", double(unsent_bytes_)) +
                log::field("requests_cancelled", double(requests_.size())));
      return abort("output buffer full");
    }
    queue_.push_back(std::move(data));
    write();
  }

  void write() {
    if (write_pending_ || queue_.empty() || gone_) return;
    writing_.swap(queue_);
    queue_.clear();
    buffers_.clear();
    for (const auto& s : writing_) buffers_.emplace_back(asio::buffer(s));
    write_pending_ = true;
    asio::async_write(socket_, buffers_, [self = shared_from_this()](boost::system::error_code ec, size_t) {
      self->write_pending_ = false;
      for (const auto& s : self->writing_) self->unsent_bytes_ -= s.size();
      self->writing_.clear();
      if (ec) return self->abort(ec.message());
      self->write();
      self->maybe_close();
    });
  }

  // Once everything is written: our side closes for sending, and the socket
  // is closed when the client closes its side too (or after linger_time),
  // so the client reads the last lines before it sees the connection end.
  void maybe_close() {
    if (!closing_ || gone_ || lingering_ || write_pending_ || !queue_.empty()) return;
    lingering_ = true;
    boost::system::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    if (read_eof_ || ec) return abort("closed");
    linger_timer_.expires_after(linger_time);
    linger_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->abort("closed");
    });
  }

  const std::shared_ptr<line_server::state> server_;
  tcp::socket socket_;
  const uint64_t number_;
  const std::string peer_;
  line_splitter splitter_;
  asio::steady_timer linger_timer_;
  bool authenticated_;
  bool read_eof_ = false;  // the client closed its side; it may still read
  bool closing_ = false;   // no more lines are taken
  bool lingering_ = false; // our side is closed, waiting for the client's
  bool gone_ = false;      // closed: nothing more goes out

  // Output: lines queued, the batch being written, and the bytes of both.
  std::vector<std::string> queue_, writing_;
  std::vector<asio::const_buffer> buffers_;
  size_t unsent_bytes_ = 0;
  bool write_pending_ = false;

  // Generations in the engine, by key; their client ids; plain-text
  // prompts waiting for the one running to end.
  std::unordered_map<uint64_t, request> requests_;
  std::map<request_id, uint64_t> ids_;
  std::deque<generate_op> plain_queue_;
  bool plain_running_ = false;
  uint64_t next_key_ = 1;
};

// ============================================================================
// Server
// ============================================================================

void line_server::state::listen() {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(config.host, ec);
  if (ec) throw error("server.host: '" + config.host + "' is not an IP address");
  const tcp::endpoint endpoint(address, uint16_t(config.port));
  const std::string where = config.host + ":" + std::to_string(config.port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw error("cannot listen on " + where + ": " + ec.message());
}

void line_server::state::accept() {
  acceptor.async_accept([self = shared_from_this()](boost::system::error_code ec, tcp::socket socket) {
    if (!self->acceptor.is_open()) return;
    if (ec) {
      log::warn("cannot accept a connection: " + ec.message());
      self->retry_timer.expires_after(accept_retry);
      self->retry_timer.async_wait([self](boost::system::error_code ec) {
        if (!ec) self->accept();
      });
      return;
    }
    // Token lines are small and latency-bound: without this, Nagle's
    // algorithm holds each one back until the previous one is acknowledged
    // (~40 ms with delayed ACKs).
    socket.set_option(tcp::no_delay(true), ec);
    if (self->connections.size() >= size_t(self->config.max_connections)) {
      if (self->metrics) self->metrics->connection_refused();
      log::warn("connection refused: at server.max_connections" + log::field("peer", endpoint_text(socket)));
      auto c = std::make_shared<connection>(self, std::move(socket), 0);
      c->refuse(format_error(std::nullopt, error_code::overloaded,
                             "the server has " + std::to_string(self->config.max_connections) +
                                 " connections, its limit (server.max_connections)"));
    } else {
      const uint64_t number = self->next_connection++;
      auto c = std::make_shared<connection>(self, std::move(socket), number);
      self->connections.emplace(number, c);
      if (self->metrics) self->metrics->connection_opened();
      c->start();
    }
    self->accept();
  });
}

void line_server::state::connection_closed(uint64_t number) {
  if (connections.erase(number) && metrics) metrics->connection_closed();
  trim_when_idle();
  check_shutdown();
}

// NOTE: glibc keeps freed memory in its arenas (one per thread that
// allocated it: the io thread's connections and the engine's actors on
// CAF's threads), so after a burst of connections the
// daemon's resident memory would stay at the burst's high-water mark.
// malloc_trim returns the free pages of every arena; it runs at most once a
// second, and only when no request is in flight.
void line_server::state::trim_when_idle() {
#if defined(__GLIBC__)
  if (trim_pending || stopping) return;
  trim_pending = true;
  trim_timer.expires_after(std::chrono::seconds(1));
  trim_timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    self->trim_pending = false;
    if (ec) return;
    if (self->outstanding > 0) return self->trim_when_idle();
    malloc_trim(0);
  });
#endif
}

void line_server::state::begin_shutdown(std::function<void()> done) {
  if (stopping) {
    log::info("shutdown: cancelling the requests still running");
    return cancel_everything();
  }
  stopping = true;
  on_stopped = std::move(done);
  boost::system::error_code ec;
  acceptor.close(ec);
  retry_timer.cancel();
  trim_timer.cancel();
  log::info("shutting down" + log::field("requests_in_flight", double(outstanding)) +
            log::field("grace_s", config.shutdown_grace_s));
  grace_timer.expires_after(std::chrono::duration_cast<clock::duration>(
      std::chrono::duration<double>(config.shutdown_grace_s)));
  grace_timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec) return;
    if (self->outstanding > 0)
      log::info("shutdown grace is over: cancelling" + log::field("requests", double(self->outstanding)));
    self->cancel_everything();
  });
  check_shutdown();
}

void line_server::state::cancel_everything() {
  const auto open = connections; // cancel_all may close a connection
  for (const auto& [number, c] : open) c->cancel_all();
}

void line_server::state::check_shutdown() {
  if (!stopping) return;
  if (!closing_connections && outstanding == 0) {
    closing_connections = true;
    grace_timer.cancel();
    const auto open = connections;
    for (const auto& [number, c] : open) c->close_when_flushed();
    flush_timer.expires_after(flush_time);
    flush_timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec) return;
      const auto open = self->connections;
      for (const auto& [number, c] : open) c->abort("shutdown: replies not read in time");
    });
  }
  if (closing_connections && connections.empty() && on_stopped) {
    flush_timer.cancel();
    auto done = std::move(on_stopped);
    on_stopped = nullptr;
    log::info("stopped: every request ended");
    done();
  }
}

void line_server::state::close_all() {
  boost::system::error_code ec;
  acceptor.close(ec);
  retry_timer.cancel();
  grace_timer.cancel();
  flush_timer.cancel();
  trim_timer.cancel();
  on_stopped = nullptr;
  const auto open = connections;
  for (const auto& [number, c] : open) c->abort("server stopped");
  connections.clear();
}

line_server::line_server(asio::io_context& io, const server_config& config, const parse_limits& limits,
                         engine_port& engine, serving_metrics* metrics)
    : state_(std::make_shared<state>(io, config, limits, engine, metrics)) {
  state_->listen();
  state_->accept();
}

line_server::~line_server() { state_->close_all(); }

uint16_t line_server::port() const {
  boost::system::error_code ec;
  return state_->acceptor.local_endpoint(ec).port();
}

void line_server::shutdown(std::function<void()> on_stopped) { state_->begin_shutdown(std::move(on_stopped)); }

void line_server::set_system_prompts(std::vector<std::string> names) {
  state_->limits.system_prompts = std::move(names);
}

std::map<std::string, double> line_server::stats() const {
  return {{"connections", double(state_->connections.size())},
          {"requests_in_flight", double(state_->outstanding)},
          {"requests_total", double(state_->requests_total)}};
}

} // namespace kvactor::net
