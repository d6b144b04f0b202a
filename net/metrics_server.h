#pragma once
// Serves GET /metrics over HTTP/1.1 (Boost.Beast) on its own thread, so a
// scrape never waits for the line protocol's io thread, nor the other way
// round. Other paths get 404, other methods 405.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace kvactor::net {

class metrics_server {
 public:
  // Listens on host:port (port 0: a free one) and answers each scrape with
  // what `render` returns (500 with the message when it throws). Throws
  // kvactor::error when it cannot listen.
  metrics_server(const std::string& host, int32_t port, std::function<std::string()> render);
  // Stops serving and joins the thread.
  ~metrics_server();
  metrics_server(const metrics_server&) = delete;
  metrics_server& operator=(const metrics_server&) = delete;

  uint16_t port() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace kvactor::net
