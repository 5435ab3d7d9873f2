// HttpServer: the Beast HTTP/1.1 server under both the gateway and the mock provider.
//
// One io_context per thread, each with its own acceptor on the same port (SO_REUSEPORT), so a
// connection and everything its requests do stay on one thread. Keep-alive, and the limits of
// `ServerConfig`: body size (413), header size (431), idle and request-read timeouts, and the
// maximum number of open connections (beyond it new connections get 503 and are closed).
// Errors are answered in OpenAI's shape {"error":{"message","type","code"}}.
//
// Used by the gateway (its handlers see it through gateway/http.h) and the mock provider;
// includes Beast.
// Thread-safety: start/stop from one controlling thread; handlers run on the connection's thread.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/status.h"

namespace switchboard::net {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// One request on a connection. A handler either fills `response` (written by the server), or
// writes to `stream` itself (streaming) and sets `written`, or sets `close` to end the connection.
// The server adds Content-Length itself (the body's size; none for 1xx, 204 and 304).
struct Exchange {
  Request& request;
  beast::tcp_stream& stream;
  Response response;
  bool written = false;
  bool close = false;
  int thread_index = 0;
  // More header lines for `response`, already formatted ("name: value\r\n" each): the hot path's
  // own headers, without an allocation per field as Beast's field list takes.
  std::string extra_headers;
  // Emitting it (terminal) cancels whatever asynchronous operation the handler is waiting on:
  // the way to stop a handler whose client left. That operation completes with
  // operation_aborted; later ones complete normally unless the handler turned throw-if-cancelled
  // on (the server turns it off; the chat handler turns it on for its call). Reset per request.
  asio::cancellation_signal* cancel = nullptr;
};

// Appends "name: value\r\n" to `out`.
void append_header(std::string& out, std::string_view name, std::string_view value);

using Handler = std::function<asio::awaitable<void>(Exchange&)>;

// {"error":{"message":…,"type":…,"code":…}} with the given status.
Response error_response(http::status status, std::string_view message, std::string_view type,
                        std::string_view code, unsigned version = 11, bool keep_alive = true);
Response json_response(http::status status, std::string body, unsigned version = 11,
                       bool keep_alive = true);

// Streaming responses (SSE): a chunked head, then chunks, then the terminating chunk. Each returns
// false when the client is gone (the caller then cancels its upstream work). The head may carry
// the first chunk, and a chunk the terminating one (`last`), in the same write: a stream that
// arrives in one read leaves in one write. `header_lines` are more header lines, already
// formatted by append_header.
asio::awaitable<bool> write_stream_head(Exchange& ex, http::status status,
                                        std::string_view header_lines,
                                        std::string_view first_chunk = {}, bool last = false);
asio::awaitable<bool> write_chunk(Exchange& ex, std::string_view data, bool last = false);
asio::awaitable<bool> finish_chunks(Exchange& ex);

class HttpServer {
 public:
  HttpServer(ServerConfig limits, Handler handler);
  ~HttpServer();

  // Run on each server thread before it serves / after it stopped serving (per-thread state such
  // as upstream clients lives and dies with its thread and its io_context).
  void set_thread_hooks(std::function<void(int, asio::io_context&)> init,
                        std::function<void(int)> exit) {
    thread_init_ = std::move(init);
    thread_exit_ = std::move(exit);
  }
  // Called on every answer the server makes itself (malformed HTTP, a head or body over its
  // limit, too many connections, a handler that threw), to add the application's own headers.
  // Set before start.
  void set_error_decorator(std::function<void(Response&)> decorate) {
    decorate_error_ = std::move(decorate);
  }
  // Called with each request's head before its body is read: a response refuses the request
  // there (the server sends it and closes the connection), so a client without a key cannot make
  // the server buffer a body. Set before start.
  using HeadCheck =
      std::function<std::optional<Response>(const Request&, const asio::ip::tcp::socket&)>;
  void set_head_check(HeadCheck check) { head_check_ = std::move(check); }
  // Called by start() with every io_context once they exist, before any thread runs them (so
  // before the first connection is accepted). Set before start.
  void set_contexts_hook(std::function<void(const std::vector<asio::io_context*>&)> hook) {
    contexts_hook_ = std::move(hook);
  }
  // Called by stop() once the open requests finished (or the grace ran out), while the threads
  // still run: what must still use their io_contexts shuts down here. Set before start.
  void set_drained_hook(std::function<void()> hook) { drained_ = std::move(hook); }
  // Binds `threads` acceptors on host:port (port 0 picks one) and starts the threads.
  Status start(const std::string& listen, int threads);
  // Stops accepting; open connections finish their current request (up to `grace`), then the
  // threads stop and are joined.
  void stop(Millis grace);
  uint16_t port() const { return port_; }
  int threads() const { return int(contexts_.size()); }
  asio::io_context& context(int i) { return *contexts_[i]; }
  int64_t open_connections() const { return open_connections_.load(); }
  int64_t active_requests() const { return active_requests_.load(); }

 private:
  asio::awaitable<void> accept_loop(int index);
  asio::awaitable<void> session(asio::ip::tcp::socket socket, int index,
                                asio::cancellation_signal& cancel);

  ServerConfig limits_;
  Handler handler_;
  std::function<void(int, asio::io_context&)> thread_init_;
  std::function<void(int)> thread_exit_;
  std::function<void(Response&)> decorate_error_;
  std::function<void()> drained_;
  std::function<void(const std::vector<asio::io_context*>&)> contexts_hook_;
  HeadCheck head_check_;
  uint16_t port_ = 0;
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> acceptors_;
  std::vector<std::thread> threads_;
  std::atomic<int64_t> open_connections_{0};
  std::atomic<int64_t> active_requests_{0};
  std::atomic<bool> stopping_{false};
};

// "host:port" → (host, port); false when malformed.
bool split_host_port(const std::string& listen, std::string& host, uint16_t& port);

}  // namespace switchboard::net
