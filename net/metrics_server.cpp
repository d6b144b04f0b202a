#include <utility> // before Asio: GCC 12 in C++20 mode needs it first

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "net/metrics_server.h"

#include <chrono>
#include <thread>

#include "net/log.h"
#include "runtime/error.h"

namespace kvactor::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// A scraper that stalls longer than this (reading or writing) is dropped.
constexpr auto io_timeout = std::chrono::seconds(30);
constexpr size_t max_request_bytes = 16 * 1024;

// One scraper's connection: requests answered one after the other while it
// keeps the connection alive.
class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket socket, const std::function<std::string()>& render)
      : stream_(std::move(socket)), render_(render) {}

  void read() {
    parser_.emplace();
    parser_->header_limit(max_request_bytes);
    parser_->body_limit(max_request_bytes);
    stream_.expires_after(io_timeout);
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->close();
      self->answer(self->parser_->release());
    });
  }

 private:
  void answer(const http::request<http::string_body>& request) {
    auto response = std::make_shared<http::response<http::string_body>>();
    response->version(request.version());
    response->keep_alive(request.keep_alive());
    response->set(http::field::server, "kvactord");
    const std::string_view target(request.target().data(), request.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    if (path != "/metrics") {
      response->result(http::status::not_found);
      response->set(http::field::content_type, "text/plain; charset=utf-8");
      response->body() = "not found: metrics are at /metrics\n";
    } else if (request.method() != http::verb::get && request.method() != http::verb::head) {
      response->result(http::status::method_not_allowed);
      response->set(http::field::allow, "GET, HEAD");
      response->set(http::field::content_type, "text/plain; charset=utf-8");
      response->body() = "only GET\n";
    } else {
      try {
        response->body() = render_();
        response->result(http::status::ok);
        response->set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      } catch (const std::exception& e) {
        log::warn(std::string("metrics: cannot render: ") + e.what());
        response->result(http::status::internal_server_error);
        response->set(http::field::content_type, "text/plain; charset=utf-8");
        response->body() = std::string("cannot collect the metrics: ") + e.what() + "\n";
      }
    }
    response->prepare_payload();
    if (request.method() == http::verb::head) response->body().clear();
    stream_.expires_after(io_timeout);
    http::async_write(stream_, *response, [self = shared_from_this(), response](beast::error_code ec, size_t) {
      if (ec || !response->keep_alive()) return self->close();
      self->read();
    });
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  const std::function<std::string()>& render_;
};

} // namespace

struct metrics_server::impl {
  impl(std::function<std::string()> render) : render(std::move(render)) {}

  void accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (!acceptor.is_open()) return;
      if (!ec) std::make_shared<session>(std::move(socket), render)->read();
      accept();
    });
  }

  std::function<std::string()> render;
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  uint16_t port = 0;
  std::thread thread;
};

metrics_server::metrics_server(const std::string& host, int32_t port, std::function<std::string()> render)
    : impl_(std::make_unique<impl>(std::move(render))) {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) throw error("server.host: '" + host + "' is not an IP address");
  const tcp::endpoint endpoint(address, uint16_t(port));
  auto& a = impl_->acceptor;
  a.open(endpoint.protocol(), ec);
  if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw error("metrics: cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
  impl_->port = a.local_endpoint().port();
  impl_->accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
}

metrics_server::~metrics_server() {
  impl_->io.stop();
  impl_->thread.join();
}

uint16_t metrics_server::port() const { return impl_->port; }

} // namespace kvactor::net
