#include "net/http_client.h"

#include <sys/stat.h>

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
// The largest answer head a proxy may give to CONNECT (it carries a status and a few fields).
constexpr size_t kMaxProxyHead = 16 * 1024;

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

// host:port as a request line or Host field writes it: an IPv6 literal in brackets.
std::string authority(const std::string& host, const std::string& port) {
  if (host.find(':') == std::string::npos) return host + ":" + port;
  return "[" + host + "]:" + port;
}

bool is_ip_literal(const std::string& host) {
  boost::system::error_code ec;
  (void)asio::ip::make_address(host, ec);
  return !ec;
}

// A request's proxy, parsed once per distinct URL.
struct Proxy {
  ProxyUrl url;
  std::string authorization;  // the Proxy-Authorization value, "" without credentials
  std::string shown;          // host:port, for messages (never the credentials)
};

// A TLS profile's context, cached by content. Connections hold the context they were made with,
// so a reloaded profile never pulls one from under a live connection.
struct TlsProfile {
  TlsOptions options;
  std::shared_ptr<ssl::context> context;
  MonoTime checked{};                       // when the files' times were last compared
  std::array<struct timespec, 3> mtimes{};  // ca_file, client_cert, client_key
};

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
  std::shared_ptr<ssl::context> tls_context;  // first: outlives the stream made with it
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
// `below_tls`: from the TCP stream under a TLS stream (a proxy's answer to CONNECT).
asio::awaitable<boost::system::error_code> read_more(Conn& c, MonoTime deadline, size_t limit,
                                                     bool below_tls = false) {
  auto room = c.buffer.prepare(kReadChunk, limit);
  if (room.empty()) co_return http::error::header_limit;
  c.lowest().expires_at(clamp_deadline(deadline));
  auto [ec, n] =
      below_tls
          ? co_await c.lowest().async_read_some(asio::buffer(room.data(), room.size()), kNothrow)
          : co_await on_stream(c, [&](auto& stream) {
              return stream.async_read_some(asio::buffer(room.data(), room.size()), kNothrow);
            });
  c.buffer.commit(n);
  co_return ec;
}

// How one request leaves: through which proxy, with which TLS context, into which pool.
struct Egress {
  std::shared_ptr<const Proxy> proxy;         // null: direct
  std::shared_ptr<ssl::context> tls_context;  // null: the client's default context
  Pool* pool = nullptr;
};

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
  std::unordered_map<std::string, std::shared_ptr<const Proxy>, UrlHash, std::equal_to<>> proxies;
  static constexpr size_t kMaxProxies = 64;  // one per provider, in practice
  // Few (one per provider that sets tls), compared by content: a linear scan costs less than
  // building a key.
  std::vector<std::unique_ptr<TlsProfile>> profiles;
  static constexpr size_t kMaxProfiles = 32;

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

  Result<std::shared_ptr<const Proxy>> proxy(const std::string& url) {
    if (auto it = proxies.find(std::string_view(url)); it != proxies.end()) return it->second;
    auto parsed = parse_proxy_url(url);
    if (!parsed.ok()) return parsed.status();
    auto p = std::make_shared<Proxy>();
    p->url = std::move(parsed.value());
    p->authorization = proxy_authorization(p->url);
    p->shown = authority(p->url.host, p->url.port);
    if (proxies.size() >= kMaxProxies) proxies.clear();
    proxies.emplace(url, p);
    return std::shared_ptr<const Proxy>(std::move(p));
  }

  static std::array<struct timespec, 3> file_times(const TlsOptions& o) {
    std::array<struct timespec, 3> out{};
    const std::string* paths[] = {&o.ca_file, &o.client_cert, &o.client_key};
    for (size_t i = 0; i < 3; ++i) {
      struct stat st {};
      if (!paths[i]->empty() && ::stat(paths[i]->c_str(), &st) == 0) out[i] = st.st_mtim;
    }
    return out;
  }

  static bool same_times(const std::array<struct timespec, 3>& a,
                         const std::array<struct timespec, 3>& b) {
    for (size_t i = 0; i < 3; ++i)
      if (a[i].tv_sec != b[i].tv_sec || a[i].tv_nsec != b[i].tv_nsec) return false;
    return true;
  }

  static Result<std::shared_ptr<ssl::context>> load_profile(const TlsOptions& o) {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
    ctx->set_default_verify_paths();
    ctx->set_verify_mode(ssl::verify_peer);
    if (Status st = apply_tls_options(ctx->native_handle(), o); !st.ok()) return st;
    return ctx;
  }

  // The context for a TLS profile, loaded on first use. A profile whose files changed is
  // reloaded; when the new files do not load, the last good context stays (a half-written
  // certificate must not take an upstream down), and they are tried again at the next check.
  Result<std::shared_ptr<ssl::context>> tls_context(const TlsOptions& o) {
    const MonoTime now = coarse_now();
    for (auto& p : profiles) {
      if (!(p->options == o)) continue;
      if (now - p->checked >= options.tls_profile_recheck) {
        p->checked = now;
        auto times = file_times(o);
        if (!same_times(times, p->mtimes)) {
          if (auto fresh = load_profile(o); fresh.ok()) {
            p->context = std::move(fresh.value());
            p->mtimes = times;
          }
        }
      }
      return p->context;
    }
    auto times = file_times(o);
    auto loaded = load_profile(o);
    if (!loaded.ok()) return loaded.status();
    if (profiles.size() >= kMaxProfiles) profiles.clear();
    auto p = std::make_unique<TlsProfile>();
    p->options = o;
    p->context = loaded.value();
    p->checked = now;
    p->mtimes = times;
    profiles.push_back(std::move(p));
    return std::move(loaded.value());
  }

  // Where `request` goes: proxy, TLS context and pool (the origin's own pool when direct and
  // with the default context, a pool of its own for each proxy and profile otherwise).
  TransportStatus egress(const HttpRequest& request, const Origin& o, Egress& out) {
    std::string key;
    // A filtered request connects directly: the filter must see the addresses connected to.
    if (!request.proxy.empty() && !request.allow_address) {
      auto p = proxy(request.proxy);
      if (!p.ok())
        return TransportStatus::fail(TransportError::kConnectFailed,
                                     "bad proxy URL: " + p.status().message());
      out.proxy = std::move(p.value());
      key += request.proxy;
    }
    if (o.tls && request.tls && !request.tls->empty()) {
      auto ctx = tls_context(*request.tls);
      if (!ctx.ok())
        return TransportStatus::fail(TransportError::kTlsFailed, ctx.status().message());
      out.tls_context = std::move(ctx.value());
      // By content, not by context: a reloaded profile keeps reusing its pool.
      const TlsOptions& t = *request.tls;
      key += '\n';
      key += t.ca_file;
      key += '\n';
      key += t.client_cert;
      key += '\n';
      key += t.client_key;
    }
    if (key.empty()) {
      out.pool = &pool_of(o);
    } else {
      // Separated from the origin's key by a character no URL holds.
      out.pool = &idle[o.key + '\n' + key];
    }
    return {};
  }

  std::unique_ptr<Conn> take_idle(Pool& q) {
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

  asio::awaitable<TransportStatus> connect(const Origin& o, const Egress& route, MonoTime deadline,
                                           const AddressFilter& allow_address,
                                           std::unique_ptr<Conn>& out) {
    // The TCP connection goes to the proxy when there is one, else to the origin.
    const Proxy* proxy = route.proxy.get();
    const std::string& host = proxy ? proxy->url.host : o.host;
    const std::string& port = proxy ? proxy->url.port : o.port;
    const std::string what = proxy ? "proxy " + proxy->shown : authority(o.host, o.port);
    std::string dns_key = host + ":" + port;
    std::vector<tcp::endpoint> endpoints;
    auto now = MonoClock::now();
    if (auto it = dns.find(dns_key); it != dns.end() && it->second.expires > now) {
      endpoints = it->second.endpoints;
    } else {
      tcp::resolver resolver(ex);
      auto [ec, results] = co_await resolver.async_resolve(host, port, kNothrow);
      if (ec)
        co_return TransportStatus::fail(
            TransportError::kDnsFailed,
            "resolving " + (proxy ? "proxy " + host : host) + ": " + ec.message());
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
    c->pool = route.pool;
    if (o.tls) {
      c->tls_context = route.tls_context;
      c->secure = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(
          ex, c->tls_context ? *c->tls_context : tls);
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
      st.message = "connecting to " + what + ": " + st.message;
      co_return st;
    }
    c->lowest().socket().set_option(tcp::no_delay(true));
    if (proxy && o.tls) {
      auto st = co_await open_tunnel(*c, o, *proxy, deadline);
      if (!st.ok()) {
        c->close();
        co_return st;
      }
    }
    if (o.tls) {
      // SNI carries names only (RFC 6066): an IP literal is verified against the certificate's
      // IP addresses without it.
      if (!is_ip_literal(o.host) &&
          !SSL_set_tlsext_host_name(c->secure->native_handle(), o.host.c_str())) {
        co_return TransportStatus::fail(TransportError::kTlsFailed, "cannot set SNI host name");
      }
      // The origin's name, also through a tunnel: the proxy's certificate is never the one
      // that counts.
      c->secure->set_verify_callback(ssl::host_name_verification(o.host));
      auto [hec] = co_await c->secure->async_handshake(ssl::stream_base::client, kNothrow);
      if (hec)
        co_return TransportStatus::fail(TransportError::kTlsFailed,
                                        "TLS handshake with " + o.host +
                                            (proxy ? " via proxy " + proxy->shown : "") + ": " +
                                            hec.message());
    }
    out = std::move(c);
    co_return TransportStatus{};
  }

  // CONNECT host:port through the proxy `c` is connected to, on the TCP stream under its TLS
  // stream; ok once the proxy answered 2xx (the tunnel then carries the TLS handshake).
  asio::awaitable<TransportStatus> open_tunnel(Conn& c, const Origin& o, const Proxy& proxy,
                                               MonoTime deadline) {
    const std::string target = authority(o.host, o.port);
    std::string& head = c.request_head;
    head.clear();
    head += "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n";
    if (!proxy.authorization.empty())
      head += "Proxy-Authorization: " + proxy.authorization + "\r\n";
    head += "\r\n";
    auto arm_timeout = [&] { c.lowest().expires_at(clamp_deadline(deadline)); };
    auto [wec, wn] =
        co_await write_all(c.lowest(), c.lowest().socket(),
                           std::array<asio::const_buffer, 1>{asio::buffer(head)}, arm_timeout);
    if (wec) {
      auto st = from_ec(wec, TransportError::kConnectFailed);
      st.error = TransportError::kConnectFailed;
      st.message = "sending CONNECT to proxy " + proxy.shown + ": " + st.message;
      co_return st;
    }
    size_t scanned = 0;
    while (true) {
      http1::Error perr = http1::Error::kNone;
      const size_t n =
          http1::parse_response_head(c.buffer.data(), kMaxProxyHead, c.head, perr, scanned);
      if (perr != http1::Error::kNone) {
        co_return TransportStatus::fail(
            TransportError::kProtocolError,
            "bad answer from proxy " + proxy.shown + " to CONNECT: " + http1::to_string(perr));
      }
      if (n > 0 && c.head.status < 200) {  // interim answers: wait for the final one
        c.buffer.consume(n);
        scanned = 0;
        continue;
      }
      if (n > 0) {
        const int status = c.head.status;
        const std::string reason(c.head.reason);
        c.buffer.consume(n);
        if (status < 200 || status > 299) {
          co_return TransportStatus::fail(
              TransportError::kConnectFailed,
              "proxy " + proxy.shown + " refused CONNECT: " + std::to_string(status) +
                  (reason.empty() ? "" : " " + reason) + " (tunnel to " + target + ")");
        }
        // The origin speaks first only after our ClientHello: bytes here are not TLS of ours.
        if (c.buffer.size() > 0) {
          co_return TransportStatus::fail(
              TransportError::kProtocolError,
              "proxy " + proxy.shown + " sent data after its answer to CONNECT");
        }
        c.buffer.shrink_if_empty(kReadChunk);
        co_return TransportStatus{};
      }
      scanned = c.buffer.size();
      const auto rec = co_await read_more(c, deadline, kMaxProxyHead, /*below_tls=*/true);
      if (rec == http::error::header_limit) {
        co_return TransportStatus::fail(TransportError::kProtocolError,
                                        "proxy " + proxy.shown + ": answer to CONNECT too large");
      }
      if (rec) {
        auto st = from_ec(rec, TransportError::kConnectFailed);
        if (st.error == TransportError::kReset || st.error == TransportError::kReadTimeout)
          st.error = st.error == TransportError::kReset ? TransportError::kConnectFailed
                                                        : TransportError::kConnectTimeout;
        st.message = "proxy " + proxy.shown + " during CONNECT: " + st.message;
        co_return st;
      }
    }
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
  Egress route;
  if (auto st = impl_->egress(request, origin, route); !st.ok()) co_return st;
  // Plain HTTP through a proxy: the request goes to the proxy in absolute form (the URL, which
  // parse_url found free of spaces and line breaks), with the proxy's credentials.
  const Proxy* via = origin.tls ? nullptr : route.proxy.get();
  const bool v6 = origin.host.find(':') != std::string::npos;
  // The request head is formatted by hand (cheaper than Beast's serializer) into the
  // connection's own buffer; the body is sent from the caller's buffer without a copy.
  auto format_head = [&](std::string& head) {
    head.clear();
    head += request.method;
    head += ' ';
    head += via ? std::string_view(request.url) : std::string_view(origin.target);
    head += " HTTP/1.1\r\nHost: ";
    if (v6) head += '[';
    head += origin.host;
    if (v6) head += ']';
    if (origin.port != (origin.tls ? "443" : "80")) {
      head += ':';
      head += origin.port;
    }
    head += "\r\n";
    if (via && !via->authorization.empty()) {
      head += "Proxy-Authorization: ";
      head += via->authorization;
      head += "\r\n";
    }
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
    std::unique_ptr<Conn> conn = request.allow_address ? nullptr : impl_->take_idle(*route.pool);
    const bool reused = conn != nullptr;
    if (!conn) {
      auto st =
          co_await impl_->connect(origin, route, request.deadline, request.allow_address, conn);
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
      if (n > 0 && perr == http1::Error::kNone && via && parsed.status == 407) {
        // Only a proxy answers 407: the origin never saw the request.
        failed = TransportStatus::fail(
            TransportError::kConnectFailed,
            "proxy " + via->shown + " refused the request: 407 " + std::string(parsed.reason));
        break;
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
