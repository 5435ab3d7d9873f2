// HttpClient: pooled HTTP/1.1 client for upstream providers (plain TCP and TLS).
//
// One HttpClient per io_context thread: its connection pools, DNS cache and TLS context are owned
// by that thread, so nothing here takes a lock (DESIGN.md: a request never crosses threads).
// Connections are kept alive and reused per origin (scheme, host, port), bounded per origin;
// idle ones older than `idle_timeout` are closed on reuse, and each is retired after
// `max_requests_per_connection` responses. DNS answers are cached for `dns_ttl`.
// HTTPS verifies the certificate chain against the system store and the host name (SNI set for
// names, not for IP literals).
//
// Egress (net/egress.h): a request may name a forward proxy (`proxy`) and a TLS profile (`tls`).
// An https:// target goes through a CONNECT tunnel, inside which TLS is negotiated and verified
// with the origin (SNI, certificate and host name are the origin's, never the proxy's); an
// http:// target is sent to the proxy in absolute form. The proxy's name is resolved and cached
// like any host. A TLS profile's ssl::context is built once per distinct profile and cached (a
// bounded number per client; its files are re-read when their modification time changes, checked
// at most every `tls_profile_recheck`, so that a rotated client certificate is picked up). Pooled
// connections are keyed by origin, proxy and TLS profile: a connection is reused only by requests
// that would have opened the same one.
//
// Every operation has a deadline; a timeout fails it with a DeadlineExceeded status. Cancelling a
// stream (or destroying it) closes its connection: an unfinished response is never reused.
//
// Thread-safety: not thread-safe. Use an HttpClient and its streams only from the thread running
// its executor.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/outcome.h"
#include "common/status.h"
#include "net/egress.h"

namespace switchboard::net {

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// Decides whether a request may connect to an address (resolved, before connecting).
using AddressFilter = std::function<bool(const boost::asio::ip::address&)>;

struct HttpRequest {
  std::string method = "POST";
  std::string url;  // http://host[:port]/path or https://… (no user info, no spaces)
  HttpHeaders headers;
  std::string body;
  MonoTime deadline = MonoTime::max();  // for connect, write, and each read
  // When set, only the resolved addresses it allows are connected to (none allowed: the request
  // fails with kConnectFailed), and no pooled connection is reused. Redirects are never followed.
  // `proxy` is then ignored: the filter judges the addresses actually connected to, which a
  // proxy would hide (workflow http steps with SSRF filtering always connect directly).
  AddressFilter allow_address;
  // "" = direct; else http://[user:password@]host:port (user and password percent-encoded; see
  // parse_proxy_url). An unusable value fails the request (kConnectFailed), as does a proxy that
  // refuses: a CONNECT answered with anything but 2xx, or a 407 to an absolute-form request
  // (the message names the proxy's status, e.g. "proxy 10.0.0.1:3128 refused CONNECT: 407").
  std::string proxy;
  // For https:// targets (ignored for http://). Null or empty = the system trust store and no
  // client certificate. A profile whose files cannot be loaded fails the request with kTlsFailed
  // (check_tls_options says why at startup).
  std::shared_ptr<const TlsOptions> tls;
};

struct HttpResponseHead {
  int status = 0;
  HttpHeaders headers;
  std::string_view header(std::string_view name) const;  // case-insensitive; "" when absent
};

// The outcome of a transport operation; when failed, `error` says why (see classify_transport).
struct TransportStatus {
  bool failed = false;
  TransportError error = TransportError::kReset;
  std::string message;
  bool ok() const { return !failed; }
  static TransportStatus fail(TransportError e, std::string m) { return {true, e, std::move(m)}; }
};

class HttpClient;

// A response whose head has arrived; read_some the body until `done`.
class HttpStream {
 public:
  ~HttpStream();
  const HttpResponseHead& head() const;
  // Appends the next body bytes to `out` (at least one byte unless `done`); sets `done` at the
  // end of the body, after which the connection goes back to the pool when it can be reused.
  boost::asio::awaitable<TransportStatus> read_some(std::string& out, bool& done);
  // Closes the connection; pending reads fail with kCancelled.
  void cancel();

 private:
  friend class HttpClient;
  struct Impl;
  explicit HttpStream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct HttpResponse {
  HttpResponseHead head;
  std::string body;
};

struct HttpClientOptions {
  size_t max_idle_per_origin = 64;
  Millis idle_timeout{60000};
  Millis dns_ttl{60000};
  size_t max_response_bytes = 64 << 20;
  // A connection is closed after this many responses (0 = never), as nginx's upstream
  // keepalive_requests (1000) does: a connection pinned to one upstream process or backend
  // behind a load balancer for ever keeps an unlucky spread of load, and never follows a
  // changed DNS answer.
  size_t max_requests_per_connection = 1000;
  // How often a TLS profile's files are checked for a change (modification time) when it is
  // used; a changed profile is reloaded for new connections (0: at every new use).
  Millis tls_profile_recheck{30000};
};

class HttpClient {
 public:
  HttpClient(boost::asio::any_io_executor executor, HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Connects (or reuses a pooled connection), sends the request and reads the response head.
  // A pooled connection that turns out to be closed is replaced once, transparently.
  boost::asio::awaitable<TransportStatus> start(const HttpRequest& request,
                                                std::unique_ptr<HttpStream>& stream);
  // The whole response (bounded by max_response_bytes).
  boost::asio::awaitable<TransportStatus> fetch(const HttpRequest& request, HttpResponse& response);

  size_t idle_connections() const;

 private:
  friend class HttpStream;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace switchboard::net
