#include <utility> // before Asio: GCC 12 in C++20 mode needs it first

#include <boost/asio.hpp>

#include "tools/bench/control_client.h"

#include <thread>

#include <boost/json.hpp>

#include "runtime/error.h"

namespace kvactor::bench {

namespace asio = boost::asio;
namespace json = boost::json;
using tcp = asio::ip::tcp;

struct control_client::io {
  asio::io_context context;
  tcp::socket socket{context};
  std::string buffer;

  // Runs the pending operation until it completes or `limit` passes.
  bool run_for(std::chrono::milliseconds limit) {
    context.restart();
    context.run_for(limit);
    if (context.stopped()) return true;
    socket.cancel();
    context.run(); // let the cancelled handlers finish
    return false;
  }
};

namespace {

double number_at(const json::object& o, std::string_view key, const std::string& where) {
  const auto* v = o.if_contains(key);
  if (!v || !v->is_number()) throw error(where + ": the reply has no number '" + std::string(key) + "'");
  return v->to_number<double>();
}

} // namespace

bool is_idle(const daemon_stats& stats) {
  auto get = [&](const char* key) {
    const auto it = stats.find(key);
    return it == stats.end() ? 0.0 : it->second;
  };
  return get("requests_running") == 0 && get("requests_waiting") == 0 &&
         get("kv_pages_used") == get("kv_pages_pinned");
}

control_client::control_client(const std::string& host, uint16_t port, std::chrono::milliseconds limit)
    : io_(std::make_unique<io>()), where_(host + ":" + std::to_string(port)), limit_(limit) {
  boost::system::error_code ec;
  tcp::resolver resolver(io_->context);
  const auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) throw error("cannot resolve " + where_ + ": " + ec.message());
  asio::async_connect(io_->socket, endpoints, [&](boost::system::error_code e, const tcp::endpoint&) { ec = e; });
  if (!io_->run_for(limit_)) throw error("cannot connect to " + where_ + ": no answer");
  if (ec) throw error("cannot connect to " + where_ + ": " + ec.message());
}

control_client::~control_client() = default;

std::string control_client::ask(const std::string& line) {
  boost::system::error_code ec;
  asio::async_write(io_->socket, asio::buffer(line + "\n"), [&](boost::system::error_code e, size_t) { ec = e; });
  if (!io_->run_for(limit_) || ec) throw error(where_ + ": cannot send " + line);
  size_t n = 0;
  asio::async_read_until(io_->socket, asio::dynamic_buffer(io_->buffer), '\n',
                         [&](boost::system::error_code e, size_t k) { ec = e, n = k; });
  if (!io_->run_for(limit_)) throw error(where_ + ": no reply to " + line);
  if (ec) throw error(where_ + ": connection lost waiting for the reply to " + line + ": " + ec.message());
  std::string reply = io_->buffer.substr(0, n - 1);
  io_->buffer.erase(0, n);
  return reply;
}

model_facts control_client::models() {
  const std::string reply = ask(R"({"op":"models"})");
  try {
    const json::value doc = json::parse(reply);
    const auto& list = doc.as_object().at("models").as_array();
    if (list.empty()) throw error("no models");
    const auto& m = list.front().as_object();
    model_facts facts;
    facts.name = json::value_to<std::string>(m.at("name"));
    facts.architecture = json::value_to<std::string>(m.at("architecture"));
    facts.vocab_size = int32_t(number_at(m, "vocab_size", where_));
    facts.max_context = int32_t(number_at(m, "max_context", where_));
    return facts;
  } catch (const std::exception& e) {
    throw error(where_ + ": unexpected reply to models: " + reply + " (" + e.what() + ")");
  }
}

daemon_stats control_client::stats() {
  const std::string reply = ask(R"({"op":"stats"})");
  try {
    daemon_stats out;
    const json::value doc = json::parse(reply);
    for (const auto& [key, value] : doc.as_object().at("stats").as_object())
      out[std::string(key)] = value.to_number<double>();
    return out;
  } catch (const std::exception& e) {
    throw error(where_ + ": unexpected reply to stats: " + reply + " (" + e.what() + ")");
  }
}

bool control_client::healthy() {
  try {
    const auto reply = json::parse(ask(R"({"op":"health"})"));
    const auto* status = reply.as_object().if_contains("status");
    return status && status->is_string() && status->as_string() == "ok";
  } catch (const std::exception&) {
    return false;
  }
}

idle_wait control_client::wait_idle(double timeout_s) {
  const auto start = std::chrono::steady_clock::now();
  idle_wait w;
  for (;;) {
    w.last = stats();
    w.waited_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if ((w.idle = is_idle(w.last)) || w.waited_s >= timeout_s) return w;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

} // namespace kvactor::bench
