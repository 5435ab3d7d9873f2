#include "net/http_client.h"

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <charconv>
#include <ctime>
#include <deque>
#include <unordered_map>

#include "net/http1.h"
#include "net/socket_io.h"

namespace switchboard::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

struct Conn;
using Pool = std::deque<std::unique_ptr<Conn>>;  // idle connections to one origin

namespace {

constexpr auto kNothrow = asio::as_tuple(asio::use_awaitable);
// Bytes read at a time. Each pooled connection keeps one such buffer, so it is sized for memory
// (a thousand upstream connections) more than for the rare large answer.
constexpr size_t kReadChunk = 4 * 1024;
// The largest response head accepted (the buffer grows this far for it, then shrinks back).
constexpr size_t kMaxHead = 64 * 1024;

struct Origin {
  bool tls = false;
  std::string host;
  std::string port;
  std::string target;
  std::string key;               // "scheme://host:port": the connection pool's key
  mutable Pool* pool = nullptr;  // that pool, once looked up (pools live as long as the client)
};

bool parse_url(std::string_view url, Origin& o) {
  // Spaces and control characters would break the request line (or add lines to the head).
  for (char c : url) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return false;
  }
  std::string_view rest;
  if (url.rfind("https://", 0) == 0) {
    o.tls = true;
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else {
    return false;
  }
  size_t slash = rest.find('/');
  std::string_view hostport = rest.substr(0, slash);
  o.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  // No user info: "http://allowed.example@other/" must not read as a request to either host.
  if (hostport.empty() || hostport.find('@') != std::string_view::npos) return false;
  if (hostport.front() == '[') {  // [v6]:port
    size_t close = hostport.find(']');
    if (close == std::string_view::npos) return false;
    o.host = std::string(hostport.substr(1, close - 1));
    o.port = close + 2 <= hostport.size() ? std::string(hostport.substr(close + 2)) : "";
  } else {
    size_t colon = hostport.rfind(':');
    o.host = std::string(hostport.substr(0, colon));
    o.port = colon == std::string_view::npos ? "" : std::string(hostport.substr(colon + 1));
  }
  if (o.port.empty()) o.port = o.tls ? "443" : "80";
  o.key = (o.tls ? "https://" : "http://") + o.host + ":" + o.port;
  return !o.host.empty();
}

// Timers cannot take MonoTime::max(): such a deadline ("none") becomes a day, which is "no
// deadline" for an HTTP exchange. Real deadlines (now plus a timeout) are far below the bound, so
// the usual case reads no clock.
MonoTime clamp_deadline(MonoTime d) {
  if (d.time_since_epoch() < MonoTime::duration::max() / 2) return d;
  return MonoClock::now() + std::chrono::hours(24);
}

// Idle-connection bookkeeping needs no precision (timeouts of seconds): the coarse clock (a few
// milliseconds) costs a fraction of a precise reading. Same epoch as steady_clock on Linux.
MonoTime coarse_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return MonoTime(std::chrono::duration_cast<MonoTime::duration>(
      std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
}

TransportStatus from_ec(const boost::system::error_code& ec, TransportError otherwise) {
  if (ec == beast::error::timeout) {
    return TransportStatus::fail(otherwise == TransportError::kConnectFailed
                                     ? TransportError::kConnectTimeout
                                     : TransportError::kReadTimeout,
                                 "upstream timed out");
  }
  if (ec == asio::error::operation_aborted)
    return TransportStatus::fail(TransportError::kCancelled, "cancelled");
  if (ec == http::error::end_of_stream || ec == asio::error::eof ||
      ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
      ec == http::error::partial_message) {
    return TransportStatus::fail(TransportError::kReset,
                                 "upstream closed the connection: " + ec.message());
  }
  if (ec.category() == asio::error::get_ssl_category() || ec == ssl::error::stream_truncated) {
    return TransportStatus::fail(TransportError::kTlsFailed, "TLS: " + ec.message());
  }
  if (ec.category() == http::make_error_code(http::error::bad_version).category()) {
    return TransportStatus::fail(TransportError::kProtocolError,
                                 "bad HTTP from upstream: " + ec.message());
  }
  return TransportStatus::fail(otherwise, ec.message());
}

}  // namespace

struct Conn {
  std::unique_ptr<beast::tcp_stream> plain;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> secure;
  http1::ReadBuffer buffer;  // reused for every response on this connection
  http1::Head head;          // the last response's head (its field list keeps its capacity)
  std::string request_head;  // the last request's head (formatted in place, capacity kept)
  Pool* pool = nullptr;      // where the connection goes back to
  MonoTime idle_since{};
  size_t responses = 0;  // complete responses read on this connection

  beast::tcp_stream& lowest() { return secure ? secure->next_layer() : *plain; }
  void close() {
    boost::system::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().socket().close(ec);
  }
};

// Runs `op(stream)` on whichever stream the connection has (both give the same awaitable type).
template <typename Op>
auto on_stream(Conn& c, Op&& op) {
  if (c.secure) return op(*c.secure);
  return op(*c.plain);
}

// Reads what the connection has (at least one byte) into its buffer, within `deadline`.
asio::awaitable<boost::system::error_code> read_more(Conn& c, MonoTime deadline, size_t limit) {
  auto room = c.buffer.prepare(kReadChunk, limit);
  if (room.empty()) co_return http::error::header_limit;
  c.lowest().expires_at(clamp_deadline(deadline));
  auto [ec, n] = co_await on_stream(c, [&](auto& stream) {
    return stream.async_read_some(asio::buffer(room.data(), room.size()), kNothrow);
  });
  c.buffer.commit(n);
  co_return ec;
}

struct HttpClient::Impl {
  asio::any_io_executor ex;
  HttpClientOptions options;
  ssl::context tls{ssl::context::tls_client};
  std::unordered_map<std::string, Pool> idle;  // never erased: Origin and Conn point into it
  struct DnsEntry {
    std::vector<tcp::endpoint> endpoints;
    MonoTime expires;
  };
  std::unordered_map<std::string, DnsEntry> dns;
  // Parsed URLs: a provider's endpoint is the same string request after request.
  struct UrlHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // Shared, so a request keeps its entry while it waits even if the cache is cleared meanwhile.
  std::unordered_map<std::string, std::shared_ptr<const Origin>, UrlHash, std::equal_to<>> origins;
  static constexpr size_t kMaxOrigins = 1024;  // workflow http steps may name any URL

  std::shared_ptr<const Origin> origin(const std::string& url) {
    if (auto it = origins.find(std::string_view(url)); it != origins.end()) return it->second;
    auto o = std::make_shared<Origin>();
    if (!parse_url(url, *o)) return nullptr;
    if (origins.size() >= kMaxOrigins) origins.clear();
    origins.emplace(url, o);
    return o;
  }

  Impl(asio::any_io_executor e, HttpClientOptions o) : ex(std::move(e)), options(o) {
    tls.set_default_verify_paths();
    tls.set_verify_mode(ssl::verify_peer);
  }

  Pool& pool_of(const Origin& o) {
    if (o.pool == nullptr) o.pool = &idle[o.key];
    return *o.pool;
  }

  std::unique_ptr<Conn> take_idle(const Origin& origin) {
    Pool& q = pool_of(origin);
    if (q.empty()) return nullptr;
    auto now = coarse_now();
    while (!q.empty()) {
      auto c = std::move(q.back());
      q.pop_back();
      if (now - c->idle_since < options.idle_timeout) return c;
      c->close();
    }
    return nullptr;
  }

  void release(std::unique_ptr<Conn> c) {
    auto& q = *c->pool;
    const size_t cap = options.max_requests_per_connection;
    if (q.size() >= options.max_idle_per_origin || (cap > 0 && ++c->responses >= cap)) {
      c->close();
      return;
    }
    c->idle_since = coarse_now();
    q.push_back(std::move(c));
  }

  asio::awaitable<TransportStatus> connect(const Origin& o, MonoTime deadline,
                                           const AddressFilter& allow_address,
                                           std::unique_ptr<Conn>& out) {
    std::string dns_key = o.host + ":" + o.port;
    std::vector<tcp::endpoint> endpoints;
    auto now = MonoClock::now();
    if (auto it = dns.find(dns_key); it != dns.end() && it->second.expires > now) {
      endpoints = it->second.endpoints;
    } else {
      tcp::resolver resolver(ex);
      auto [ec, results] = co_await resolver.async_resolve(o.host, o.port, kNothrow);
      if (ec)
        co_return TransportStatus::fail(TransportError::kDnsFailed,
                                        "resolving " + o.host + ": " + ec.message());
      for (const auto& r : results) endpoints.push_back(r.endpoint());
      dns[dns_key] = DnsEntry{endpoints, now + options.dns_ttl};
    }
    if (allow_address) {
      // Checked on the addresses actually connected to, not the host's text: a name that
      // resolves to a private address (or is rebound to one) is refused all the same.
      const size_t before = endpoints.size();
      std::erase_if(endpoints, [&](const tcp::endpoint& e) { return !allow_address(e.address()); });
      if (endpoints.empty()) {
        co_return TransportStatus::fail(
            TransportError::kConnectFailed,
            o.host + " resolves to " + (before == 1 ? "an address" : "addresses") +
                " this request may not reach (loopback, private or reserved)");
      }
    }
    auto c = std::make_unique<Conn>();
    c->pool = &pool_of(o);
    if (o.tls) {
      c->secure = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ex, tls);
    } else {
      c->plain = std::make_unique<beast::tcp_stream>(ex);
    }
    c->lowest().expires_at(clamp_deadline(deadline));
    auto [ec, ep] = co_await c->lowest().async_connect(endpoints, kNothrow);
    if (ec) {
      dns.erase(dns_key);  // a dead address should not stay cached
      auto st = from_ec(ec, TransportError::kConnectFailed);
      if (st.error == TransportError::kReset || st.error == TransportError::kProtocolError)
        st.error = TransportError::kConnectFailed;
      st.message = "connecting to " + o.host + ":" + o.port + ": " + st.message;
      co_return st;
    }
    c->lowest().socket().set_option(tcp::no_delay(true));
    if (o.tls) {
      if (!SSL_set_tlsext_host_name(c->secure->native_handle(), o.host.c_str())) {
        co_return TransportStatus::fail(TransportError::kTlsFailed, "cannot set SNI host name");
      }
      c->secure->set_verify_callback(ssl::host_name_verification(o.host));
      auto [hec] = co_await c->secure->async_handshake(ssl::stream_base::client, kNothrow);
      if (hec)
        co_return TransportStatus::fail(TransportError::kTlsFailed,
                                        "TLS handshake with " + o.host + ": " + hec.message());
    }
    out = std::move(c);
    co_return TransportStatus{};
  }
};

struct HttpStream::Impl {
  HttpClient::Impl* client = nullptr;
  std::unique_ptr<Conn> conn;
  http1::BodyReader body;
  bool keep_alive = false;
  HttpResponseHead head;
  MonoTime deadline;
  bool finished = false;

  void drop_connection() {
    conn->close();
    conn.reset();
  }
};

std::string_view HttpResponseHead::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k.size() == name.size() && std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return v;
    }
  }
  return {};
}

HttpStream::HttpStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpStream::~HttpStream() {
  if (impl_ && impl_->conn) impl_->conn->close();  // unfinished: never reuse
}

const HttpResponseHead& HttpStream::head() const {
  return impl_->head;
}

void HttpStream::cancel() {
  if (impl_->conn) impl_->conn->close();
}

asio::awaitable<TransportStatus> HttpStream::read_some(std::string& out, bool& done) {
  done = false;
  Impl& s = *impl_;
  if (s.finished || !s.conn) {
    done = true;
    co_return TransportStatus{};
  }
  while (true) {
    if (s.body.done()) {
      s.finished = true;
      done = true;
      // Bytes beyond the response would be a protocol violation: such a connection is not reused.
      if (s.keep_alive && s.conn->buffer.size() == 0) {
        s.conn->buffer.shrink_if_empty(kReadChunk);
        s.client->release(std::move(s.conn));
      } else {
        s.drop_connection();
      }
      co_return TransportStatus{};
    }
    if (s.conn->buffer.size() > 0) {
      // Bytes that came with the head or with the last read: decode them before waiting.
      const size_t before = out.size();
      http1::Error e;
      const size_t used = s.body.feed(s.conn->buffer.data(), out, e);
      if (e != http1::Error::kNone) {
        s.drop_connection();
        co_return TransportStatus::fail(
            TransportError::kProtocolError,
            std::string("bad HTTP from upstream: ") + http1::to_string(e));
      }
      s.conn->buffer.consume(used);
      if (s.body.done()) continue;  // hands back the connection, with these bytes
      if (out.size() > before) co_return TransportStatus{};
    }
    const auto ec = co_await read_more(*s.conn, s.deadline, kReadChunk);
    // Only a clean close ends a body that runs to the close: a TLS connection cut without
    // close_notify (stream_truncated) may have lost the end of the answer.
    if (ec == asio::error::eof) {
      if (s.body.on_eof() == http1::Error::kNone) {  // a body that runs to the close
        s.keep_alive = false;
        continue;
      }
    }
    if (ec) {
      s.drop_connection();
      co_return from_ec(ec, TransportError::kReset);
    }
  }
}

HttpClient::HttpClient(asio::any_io_executor executor, HttpClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(executor), options)) {}

HttpClient::~HttpClient() {
  for (auto& [origin, q] : impl_->idle)
    for (auto& c : q) c->close();
}

size_t HttpClient::idle_connections() const {
  size_t n = 0;
  for (const auto& [o, q] : impl_->idle) n += q.size();
  return n;
}

asio::awaitable<TransportStatus> HttpClient::start(const HttpRequest& request,
                                                   std::unique_ptr<HttpStream>& stream) {
  const std::shared_ptr<const Origin> parsed = impl_->origin(request.url);
  if (parsed == nullptr) {
    co_return TransportStatus::fail(TransportError::kConnectFailed, "bad upstream URL");
  }
  const Origin& origin = *parsed;
  auto has_line_break = [](std::string_view v) {
    for (char c : v)
      if (c == '\r' || c == '\n') return true;
    return false;
  };
  for (const auto& [k, v] : request.headers) {
    if (has_line_break(k) || has_line_break(v)) {
      co_return TransportStatus::fail(TransportError::kProtocolError,
                                      "header contains a line break");
    }
  }
  // The request head is formatted by hand (cheaper than Beast's serializer) into the
  // connection's own buffer; the body is sent from the caller's buffer without a copy.
  auto format_head = [&](std::string& head) {
    head.clear();
    head += request.method;
    head += ' ';
    head += origin.target;
    head += " HTTP/1.1\r\nHost: ";
    head += origin.host;
    if (origin.port != (origin.tls ? "443" : "80")) {
      head += ':';
      head += origin.port;
    }
    head += "\r\n";
    for (const auto& [k, v] : request.headers) {
      head += k;
      head += ": ";
      head += v;
      head += "\r\n";
    }
    head += "Content-Length: ";
    char num[24];
    head.append(num, static_cast<size_t>(
                         std::to_chars(num, num + sizeof num, request.body.size()).ptr - num));
    head += "\r\n\r\n";
  };

  for (int attempt = 0; attempt < 2; ++attempt) {
    // A filtered request never reuses a pooled connection: it may have been opened unfiltered.
    std::unique_ptr<Conn> conn = request.allow_address ? nullptr : impl_->take_idle(origin);
    const bool reused = conn != nullptr;
    if (!conn) {
      auto st = co_await impl_->connect(origin, request.deadline, request.allow_address, conn);
      if (!st.ok()) co_return st;
    }
    format_head(conn->request_head);
    std::array<asio::const_buffer, 2> req_bufs = {asio::buffer(conn->request_head),
                                                  asio::buffer(request.body)};
    auto arm_timeout = [&] { conn->lowest().expires_at(clamp_deadline(request.deadline)); };
    if (conn->secure) arm_timeout();
    auto [wec, wn] = conn->secure ? co_await asio::async_write(*conn->secure, req_bufs, kNothrow)
                                  : co_await write_all(*conn->plain, conn->plain->socket(),
                                                       req_bufs, arm_timeout);
    if (wec) {
      conn->close();
      auto st = from_ec(wec, TransportError::kReset);
      if (reused && st.error == TransportError::kReset) continue;  // stale pooled connection
      co_return st;
    }
    // The head: interim (1xx) answers are skipped; the first final one is the response.
    http1::Head& parsed = conn->head;
    size_t scanned = 0;
    bool got_any = false, retry = false;
    TransportStatus failed;
    while (true) {
      http1::Error perr;
      const size_t n =
          http1::parse_response_head(conn->buffer.data(), kMaxHead, parsed, perr, scanned);
      if (n > 0 && parsed.status == 101) {  // an upgrade we never asked for: not HTTP any more
        perr = http1::Error::kBadStartLine;
      } else if (n > 0 && parsed.status < 200) {
        conn->buffer.consume(n);
        scanned = 0;
        continue;
      }
      if (n > 0 && perr == http1::Error::kNone) {
        auto impl = std::make_unique<HttpStream::Impl>();
        impl->client = impl_.get();
        impl->deadline = request.deadline;
        impl->head.status = parsed.status;
        impl->head.headers.reserve(parsed.fields.size());
        for (const auto& f : parsed.fields) impl->head.headers.emplace_back(f.name, f.value);
        impl->keep_alive = parsed.keep_alive;
        impl->body.start(parsed);
        conn->buffer.consume(n);  // after the copy: `parsed` points into the buffer
        impl->conn = std::move(conn);
        stream.reset(new HttpStream(std::move(impl)));
        co_return TransportStatus{};
      }
      if (perr != http1::Error::kNone) {
        failed =
            TransportStatus::fail(TransportError::kProtocolError,
                                  std::string("bad HTTP from upstream: ") + http1::to_string(perr));
        break;
      }
      scanned = conn->buffer.size();
      const auto rec = co_await read_more(*conn, request.deadline, kMaxHead);
      if (rec) {
        failed = from_ec(rec, TransportError::kReset);
        // A pooled connection the upstream had closed before it saw this request: once more
        // on a new one.
        retry = reused && failed.error == TransportError::kReset && !got_any &&
                conn->buffer.size() == 0;
        break;
      }
      got_any = true;
    }
    conn->close();
    if (retry) continue;
    co_return failed;
  }
  co_return TransportStatus::fail(TransportError::kReset, "upstream closed the connection");
}

asio::awaitable<TransportStatus> HttpClient::fetch(const HttpRequest& request,
                                                   HttpResponse& response) {
  std::unique_ptr<HttpStream> stream;
  auto st = co_await start(request, stream);
  if (!st.ok()) co_return st;
  response.head = stream->head();
  response.body.clear();
  bool done = false;
  while (!done) {
    st = co_await stream->read_some(response.body, done);
    if (!st.ok()) co_return st;
    if (response.body.size() > impl_->options.max_response_bytes) {
      stream->cancel();
      co_return TransportStatus::fail(TransportError::kProtocolError,
                                      "upstream response too large");
    }
  }
  co_return TransportStatus{};
}

}  // namespace switchboard::net
