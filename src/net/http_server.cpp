#include "net/http_server.h"

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <charconv>
#include <cstring>

#include "common/json.h"
#include "common/log.h"
#include "common/metrics.h"
#include "net/http1.h"
#include "net/socket_io.h"

namespace switchboard::net {

using tcp = asio::ip::tcp;

namespace {
constexpr auto kNothrow = asio::as_tuple(asio::use_awaitable);
// A client that stops reading a stream for this long is considered gone.
constexpr auto kStreamWriteTimeout = std::chrono::seconds(60);
// A connection's read buffer starts this large (a chat request with its head fits) and grows for
// large heads and bodies; it shrinks back when a request leaves it empty.
constexpr size_t kReadChunk = 4 * 1024;
constexpr size_t kBodyReadChunk = 64 * 1024;

// Reads what the client sends (at least one byte) into `buffer`, growing it up to `limit`.
asio::awaitable<boost::system::error_code> read_more(beast::tcp_stream& stream,
                                                     http1::ReadBuffer& buffer, size_t want,
                                                     size_t limit) {
  auto room = buffer.prepare(want, limit);
  if (room.empty()) co_return http::error::header_limit;
  auto [ec, n] = co_await stream.async_read_some(asio::buffer(room.data(), room.size()), kNothrow);
  buffer.commit(n);
  co_return ec;
}

// The Beast request handlers work with, from a parsed head (field storage is Beast's own).
void fill_request(const http1::Head& head, Request& req) {
  const http::verb verb = http::string_to_verb({head.method.data(), head.method.size()});
  if (verb == http::verb::unknown) {
    req.method_string({head.method.data(), head.method.size()});
  } else {
    req.method(verb);
  }
  req.target({head.target.data(), head.target.size()});
  req.version(static_cast<unsigned>(head.version));
  for (const auto& f : head.fields)
    req.insert(beast::string_view(f.name.data(), f.name.size()),
               beast::string_view(f.value.data(), f.value.size()));
}
}  // namespace

bool split_host_port(const std::string& listen, std::string& host, uint16_t& port) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return false;
  host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  try {
    int p = std::stoi(listen.substr(colon + 1));
    if (p < 0 || p > 65535) return false;
    port = static_cast<uint16_t>(p);
  } catch (...) {
    return false;
  }
  return true;
}

Response json_response(http::status status, std::string body, unsigned version, bool keep_alive) {
  Response res{status, version};
  res.set(http::field::content_type, "application/json");
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  return res;
}

Response error_response(http::status status, std::string_view message, std::string_view type,
                        std::string_view code, unsigned version, bool keep_alive) {
  std::string body = "{\"error\":{\"message\":" + json::quote(message) +
                     ",\"type\":" + json::quote(type) + ",\"code\":" + json::quote(code) + "}}";
  return json_response(status, std::move(body), version, keep_alive);
}

namespace {
// Bytes a header line may not carry: CR and LF would end it (response splitting), NUL and the
// other controls but HTAB are invalid in field values (RFC 9110 5.5).
bool header_byte_ok(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 0x20 && u != 0x7f) || u == '\t';
}
}  // namespace

void append_header(std::string& out, std::string_view name, std::string_view value) {
  // One resize and a copy (this runs for every header of every answer).
  const size_t at = out.size();
  out.resize(at + name.size() + value.size() + 4);
  char* p = out.data() + at;
  std::memcpy(p, name.data(), name.size());
  p += name.size();
  *p++ = ':';
  *p++ = ' ';
  // Values are checked where they are written, whatever their source: one unchecked value would
  // let a client or an upstream add header lines of its own.
  for (char c : value) *p++ = header_byte_ok(c) ? c : ' ';
  *p++ = '\r';
  *p = '\n';
}

namespace {
constexpr std::string_view kLastChunk = "0\r\n\r\n";

// Up to a head, one chunk ("<size>\r\n", data, "\r\n") and the last chunk, for one write;
// unused slots stay empty buffers (no allocation per write).
struct ChunkWrite {
  std::array<asio::const_buffer, 5> bufs{};
  size_t used = 0;
  char size_line[24];

  void add(asio::const_buffer b) { bufs[used++] = b; }
  void add_chunk(std::string_view data) {
    if (data.empty()) return;
    char* end = std::to_chars(size_line, size_line + sizeof(size_line) - 2, data.size(), 16).ptr;
    *end++ = '\r';
    *end++ = '\n';
    add(asio::buffer(size_line, size_t(end - size_line)));
    add(asio::buffer(data));
    add(asio::buffer("\r\n", 2));
  }
};
}  // namespace

asio::awaitable<bool> write_stream_head(Exchange& ex, http::status status,
                                        std::string_view header_lines, std::string_view first_chunk,
                                        bool last) {
  std::string head;
  head.reserve(160 + header_lines.size());
  head += "HTTP/1.1 ";
  char num[8];
  head.append(num,
              size_t(std::to_chars(num, num + sizeof num, static_cast<int>(status)).ptr - num));
  head += ' ';
  const auto reason = http::obsolete_reason(status);
  head.append(reason.data(), reason.size());
  head +=
      "\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
      "Transfer-Encoding: chunked\r\n";
  head.append(header_lines);
  if (!ex.request.keep_alive()) head += "Connection: close\r\n";
  head += "\r\n";
  ex.stream.expires_after(kStreamWriteTimeout);
  ex.written = true;
  ChunkWrite w;
  w.add(asio::buffer(head));
  w.add_chunk(first_chunk);
  if (last) w.add(asio::buffer(kLastChunk));
  auto [ec, n] = co_await asio::async_write(ex.stream, w.bufs, kNothrow);
  co_return !ec;
}

asio::awaitable<bool> write_chunk(Exchange& ex, std::string_view data, bool last) {
  if (data.empty() && !last) co_return true;
  ChunkWrite w;
  w.add_chunk(data);
  if (last) w.add(asio::buffer(kLastChunk));
  ex.stream.expires_after(kStreamWriteTimeout);
  auto [ec, n] = co_await asio::async_write(ex.stream, w.bufs, kNothrow);
  co_return !ec;
}

asio::awaitable<bool> finish_chunks(Exchange& ex) {
  ex.stream.expires_after(kStreamWriteTimeout);
  auto [ec, n] = co_await asio::async_write(ex.stream, asio::buffer(kLastChunk), kNothrow);
  co_return !ec;
}

namespace {
prometheus::Counter& accept_errors() {
  static auto& c = metrics::counter_family("switchboard_gateway_accept_errors_total",
                                           "Failed accepts (e.g. out of file descriptors)")
                       .Add({});
  return c;
}

prometheus::Counter& unhandled_errors() {
  static auto& c = metrics::counter_family("switchboard_gateway_unhandled_errors_total",
                                           "Errors that escaped a request handler")
                       .Add({});
  return c;
}
}  // namespace

HttpServer::HttpServer(ServerConfig limits, Handler handler)
    : limits_(limits), handler_(std::move(handler)) {
  unhandled_errors();  // the series exists (at 0) from the start
}

HttpServer::~HttpServer() {
  stop(Millis(0));
}

Status HttpServer::start(const std::string& listen, int threads) {
  std::string host;
  uint16_t port = 0;
  if (!split_host_port(listen, host, port))
    return Status::invalid_argument("bad listen address '" + listen + "'");
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return Status::invalid_argument("bad listen host '" + host + "': " + ec.message());
  for (int i = 0; i < threads; ++i) {
    // One thread runs this context and every socket on it is used from that thread only, so the
    // reactor's per-socket locking can go (scheduler and registration locks stay: other threads
    // post to it, e.g. the key pool's waiter callbacks).
    auto ctx = std::make_unique<asio::io_context>(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO);
    auto acc = std::make_unique<tcp::acceptor>(*ctx);
    tcp::endpoint ep(addr, port);
    acc->open(ep.protocol(), ec);
    if (!ec) acc->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) {
      int one = 1;
      if (::setsockopt(acc->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        return Status::io_error("SO_REUSEPORT: " + std::string(strerror(errno)));
      }
    }
    if (!ec) acc->bind(ep, ec);
    if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return Status::io_error("cannot listen on " + listen + ": " + ec.message());
    if (i == 0) port = acc->local_endpoint().port();  // the next acceptors share the chosen port
    contexts_.push_back(std::move(ctx));
    acceptors_.push_back(std::move(acc));
  }
  port_ = port;
  if (contexts_hook_) {
    std::vector<asio::io_context*> all;
    for (auto& c : contexts_) all.push_back(c.get());
    contexts_hook_(all);
  }
  for (int i = 0; i < threads; ++i) {
    asio::co_spawn(*contexts_[i], accept_loop(i), asio::detached);
    threads_.emplace_back([this, i] {
      if (thread_init_) thread_init_(i, *contexts_[i]);
      while (true) {
        try {
          contexts_[i]->run();
          break;
        } catch (const std::exception& e) {
          // A handler escaped its coroutine: log it and keep the thread serving.
          log::error("server thread {}: unhandled error: {}", i, e.what());
        }
      }
      if (thread_exit_) thread_exit_(i);
    });
  }
  return Status();
}

void HttpServer::stop(Millis grace) {
  if (threads_.empty()) return;
  stopping_ = true;
  for (size_t i = 0; i < acceptors_.size(); ++i) {
    asio::post(*contexts_[i], [acc = acceptors_[i].get()] {
      boost::system::error_code ec;
      acc->close(ec);
    });
  }
  auto until = MonoClock::now() + grace;
  while (active_requests_.load() > 0 && MonoClock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (drained_) drained_();
  for (auto& ctx : contexts_) ctx->stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  acceptors_.clear();
  contexts_.clear();
}

asio::awaitable<void> HttpServer::accept_loop(int index) {
  auto& acc = *acceptors_[index];
  Millis backoff{0};
  while (!stopping_) {
    auto [ec, socket] = co_await acc.async_accept(kNothrow);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acc.is_open()) co_return;
      // EMFILE and friends: the pending connection stays in the backlog, so accepting again at
      // once fails again at once (a busy loop). Keep serving the connections we have, try again
      // after a growing pause, and say so once per episode.
      accept_errors().Increment();
      if (backoff == Millis(0)) {
        log::error("accept failed: {}; retrying with backoff while serving open connections",
                   ec.message());
        backoff = Millis(10);
      } else {
        backoff = std::min(backoff * 2, Millis(1000));
      }
      asio::steady_timer pause(acc.get_executor(), backoff);
      co_await pause.async_wait(kNothrow);
      continue;
    }
    if (backoff != Millis(0)) {
      log::info("accepting connections again");
      backoff = Millis(0);
    }
    // The connection's cancellation signal is bound to its coroutine (and owned by the
    // completion handler, so it lives exactly as long): a handler can be cancelled without a
    // coroutine of its own racing it.
    auto cancel = std::make_unique<asio::cancellation_signal>();
    auto& signal = *cancel;
    asio::co_spawn(acc.get_executor(), session(std::move(socket), index, signal),
                   asio::bind_cancellation_slot(
                       signal.slot(), [owner = std::move(cancel)](std::exception_ptr) {}));
  }
}

asio::awaitable<void> HttpServer::session(tcp::socket socket, int index,
                                          asio::cancellation_signal& cancel) {
  // A cancelled operation completes with operation_aborted rather than throwing: handlers
  // already handle errors as values.
  co_await asio::this_coro::throw_if_cancelled(false);
  open_connections_++;
  struct Guard {
    std::atomic<int64_t>& n;
    ~Guard() { n--; }
  } guard{open_connections_};
  boost::system::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  beast::tcp_stream stream(std::move(socket));
  http1::ReadBuffer buffer;  // unread bytes stay for the next request (pipelining)
  http1::Head head;
  http1::BodyReader body;
  std::string head_buffer;    // reused for every response head on this connection
  std::string extra_headers;  // lent to each request's Exchange, taken back after

  if (open_connections_.load() > limits_.max_connections) {
    auto res = error_response(http::status::service_unavailable, "too many open connections",
                              "server_error", "too_many_connections", 11, false);
    if (decorate_error_) decorate_error_(res);
    stream.expires_after(std::chrono::seconds(5));
    res.prepare_payload();
    co_await http::async_write(stream, res, kNothrow);
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    co_return;
  }

  const size_t max_head = static_cast<size_t>(std::max<int64_t>(limits_.max_header_bytes, 64));
  const uint64_t max_body = static_cast<uint64_t>(std::max<int64_t>(limits_.max_body_bytes, 0));
  auto refuse = [&](http::status status, std::string message,
                    std::string_view code) -> asio::awaitable<void> {
    auto err = error_response(status, message, "invalid_request_error", code, 11, false);
    if (decorate_error_) decorate_error_(err);
    stream.expires_after(std::chrono::seconds(5));
    err.prepare_payload();
    co_await http::async_write(stream, err, kNothrow);
  };
  using http1::Error;
  while (!stopping_) {
    // The whole head within the idle timeout (a head trickling in byte by byte must not hold the
    // connection for a request timeout); the body within the request timeout.
    size_t head_size = 0;
    size_t scanned = 0;
    Error perr = Error::kNone;
    bool timing_request = false;
    stream.expires_after(Millis(limits_.idle_timeout_ms));
    boost::system::error_code rec;
    while (true) {
      head_size = http1::parse_request_head(buffer.data(), max_head, head, perr, scanned);
      if (head_size > 0 || perr != Error::kNone) break;
      scanned = buffer.size();
      rec = co_await read_more(stream, buffer, kReadChunk, max_head);
      if (rec) break;
    }
    if (rec) break;  // closed, reset or timed out: nobody to answer
    if (perr == Error::kHeadTooLarge) {
      co_await refuse(http::status::request_header_fields_too_large, "request headers too large",
                      "headers_too_large");
      break;
    }
    if (perr != Error::kNone) {
      co_await refuse(http::status::bad_request,
                      std::string("malformed HTTP request: ") + http1::to_string(perr), "bad_http");
      break;
    }
    if (head.framing == http1::Framing::kLength && head.content_length > max_body) {
      co_await refuse(http::status::payload_too_large,
                      "request body exceeds " + std::to_string(limits_.max_body_bytes) + " bytes",
                      "body_too_large");
      break;
    }
    Request req;
    fill_request(head, req);
    if (head_check_) {
      // Refused from the head alone (a missing key): the body is never read nor buffered, and
      // the connection closes, as its unread body leaves it out of step.
      if (auto refusal = head_check_(req, stream.socket())) {
        refusal->keep_alive(false);
        if (decorate_error_) decorate_error_(*refusal);
        stream.expires_after(std::chrono::seconds(5));
        refusal->prepare_payload();
        co_await http::async_write(stream, *refusal, kNothrow);
        break;
      }
    }
    const bool expect_continue = head.expect_continue;
    body.start(head, max_body);
    buffer.consume(head_size);  // `head` points into the buffer: used up above
    // The body: what came with the head first, then reads until it is complete.
    std::string& content = req.body();
    if (body.remaining() > 0) content.reserve(static_cast<size_t>(body.remaining()));
    bool asked_to_continue = false;
    bool body_failed = false;
    while (true) {
      if (buffer.size() > 0) {
        Error berr;
        const size_t used = body.feed(buffer.data(), content, berr);
        if (berr == Error::kBodyTooLarge) {
          co_await refuse(
              http::status::payload_too_large,
              "request body exceeds " + std::to_string(limits_.max_body_bytes) + " bytes",
              "body_too_large");
          body_failed = true;
          break;
        }
        if (berr != Error::kNone) {
          co_await refuse(http::status::bad_request,
                          std::string("malformed HTTP request: ") + http1::to_string(berr),
                          "bad_http");
          body_failed = true;
          break;
        }
        buffer.consume(used);
      }
      if (body.done()) break;
      if (!timing_request) {
        timing_request = true;
        stream.expires_after(Millis(std::min(limits_.request_timeout_ms, limits_.body_timeout_ms)));
      }
      // A client that waits for permission before sending its body (Expect: 100-continue, as
      // curl and .NET do for larger bodies) is told to go on; otherwise it stalls for a second.
      // An oversized body was already refused above (Content-Length checked with the head).
      if (expect_continue && !asked_to_continue && buffer.size() == 0) {
        asked_to_continue = true;
        static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        auto [cec, cn] = co_await asio::async_write(
            stream, asio::buffer(kContinue.data(), kContinue.size()), kNothrow);
        if (cec) {
          body_failed = true;
          break;
        }
      }
      const auto want =
          static_cast<size_t>(std::clamp<uint64_t>(body.remaining(), kReadChunk, kBodyReadChunk));
      if (co_await read_more(stream, buffer, want, std::max(want, kBodyReadChunk))) {
        body_failed = true;  // closed inside the body, reset or timed out
        break;
      }
    }
    if (body_failed) break;
    buffer.shrink_if_empty(kReadChunk);

    // A previous request may have been cancelled (its client left, or so it seemed).
    if ((co_await asio::this_coro::cancellation_state).cancelled() != asio::cancellation_type::none)
      co_await asio::this_coro::reset_cancellation_state();
    Exchange ex{req, stream, Response{}, false, false, index, std::move(extra_headers), &cancel};
    ex.extra_headers.clear();
    stream.expires_never();  // the handler's own deadlines apply while it works
    active_requests_++;
    try {
      co_await handler_(ex);
    } catch (const std::exception& e) {
      // Never lose an error silently: the client gets a 500, the log says why, a counter counts it.
      unhandled_errors().Increment();
      log::error("unhandled error in request handler: {}", e.what());
      if (!ex.written) {
        ex.response = error_response(http::status::internal_server_error, "internal error",
                                     "server_error", "internal_error", req.version(), false);
        ex.extra_headers.clear();  // whatever the handler had set belongs to another answer
        if (decorate_error_) decorate_error_(ex.response);
      } else {
        ex.close = true;
      }
    }
    active_requests_--;
    if (!ex.written) {
      ex.response.version(req.version());
      if (!req.keep_alive() || stopping_) ex.response.keep_alive(false);
      // The head is formatted by hand: Beast's generic serializer costs more than the rest of a
      // small response's path.
      std::string& head = head_buffer;
      head.clear();
      head += ex.response.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
      const unsigned code = ex.response.result_int();
      char num[24];
      head.append(num, static_cast<size_t>(std::to_chars(num, num + sizeof num, code).ptr - num));
      head += ' ';
      auto reason = ex.response.reason();
      head.append(reason.data(), reason.size());
      head += "\r\n";
      for (const auto& f : ex.response) {
        if (f.name() == http::field::content_length) continue;  // ours, below
        append_header(head, {f.name_string().data(), f.name_string().size()},
                      {f.value().data(), f.value().size()});
      }
      head += ex.extra_headers;
      const bool bodyless = code < 200 || code == 204 || code == 304;
      if (bodyless) {
        ex.response.body().clear();
      } else {
        head += "Content-Length: ";
        head.append(num,
                    static_cast<size_t>(
                        std::to_chars(num, num + sizeof num, ex.response.body().size()).ptr - num));
        head += "\r\n";
      }
      head += "\r\n";
      std::array<asio::const_buffer, 2> bufs = {asio::buffer(head),
                                                asio::buffer(ex.response.body())};
      extra_headers = std::move(ex.extra_headers);
      auto [wec, wn] = co_await write_all(stream, stream.socket(), bufs, [&] {
        stream.expires_after(Millis(limits_.request_timeout_ms));
      });
      if (wec) break;
      if (!ex.response.keep_alive()) break;
    }
    if (ex.close || !req.keep_alive()) break;
  }
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

}  // namespace switchboard::net
