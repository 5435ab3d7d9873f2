// HttpClient egress on real loopback sockets: a CONNECT proxy written here (blocking sockets, a
// thread per connection) that records what it was asked, TLS upstreams (blocking OpenSSL) whose
// certificates a test CA issued at test time with the openssl CLI, and mutual TLS.
#include "net/http_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "egress_fixtures.h"
#include "net/egress.h"
#include "test_support.h"

namespace switchboard::net {
namespace {

using namespace std::chrono_literals;
using testsupport::certs;
using testsupport::Certs;
using testsupport::Proxy;
using testsupport::TlsUpstream;

// The client under test, on an io_context run by the test thread one request at a time (its
// pooled connections stay between requests).
class Client {
 public:
  explicit Client(HttpClientOptions options = {}) : client_(ctx_.get_executor(), options) {}

  TransportStatus fetch(HttpRequest req, HttpResponse& res) {
    req.deadline = MonoClock::now() + 20s;
    TransportStatus out = TransportStatus::fail(TransportError::kCancelled, "never ran");
    boost::asio::co_spawn(
        ctx_, [&]() -> boost::asio::awaitable<void> { out = co_await client_.fetch(req, res); },
        boost::asio::detached);
    ctx_.restart();
    ctx_.run();
    return out;
  }
  size_t idle() const { return client_.idle_connections(); }

 private:
  boost::asio::io_context ctx_;
  HttpClient client_;
};

std::shared_ptr<const TlsOptions> tls(std::string ca, std::string cert = {}, std::string key = {}) {
  return std::make_shared<const TlsOptions>(
      TlsOptions{std::move(ca), std::move(cert), std::move(key)});
}

HttpRequest request(std::string url, std::string proxy = {},
                    std::shared_ptr<const TlsOptions> profile = {}) {
  HttpRequest r;
  r.url = std::move(url);
  r.body = R"({"model":"m"})";
  r.headers = {{"content-type", "application/json"}};
  r.proxy = std::move(proxy);
  r.tls = std::move(profile);
  return r;
}

std::string loopback(int port) {
  return "127.0.0.1:" + std::to_string(port);
}

// (a) https through a CONNECT tunnel: the proxy is asked for the origin, TLS is verified against
// the origin's certificate with the test CA, the body arrives, the tunnel is reused.
TEST(HttpClientEgress, HttpsGoesThroughAConnectTunnelVerifiedAgainstTheOrigin) {
  TlsUpstream up;
  Proxy proxy;
  Client client;
  const std::string url = "https://" + loopback(up.port()) + "/v1/chat/completions";
  const std::string via = "http://user:p%40ss@" + loopback(proxy.port());
  HttpResponse res;
  auto st = client.fetch(request(url, via, tls(certs().ca)), res);
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_EQ(res.head.status, 200);
  EXPECT_EQ(res.body, "hello over tls");
  ASSERT_EQ(proxy.heads().size(), 1u);
  const std::string head = proxy.heads()[0];
  EXPECT_EQ(proxy.request_lines()[0], "CONNECT " + loopback(up.port()) + " HTTP/1.1");
  EXPECT_NE(head.find("\r\nHost: " + loopback(up.port()) + "\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nProxy-Authorization: Basic dXNlcjpwQHNz\r\n"), std::string::npos)
      << head;  // user:p@ss
  // Inside the tunnel the origin gets an ordinary origin-form request, without the proxy's
  // credentials.
  ASSERT_EQ(up.request_lines().size(), 1u);
  EXPECT_EQ(up.request_lines()[0], "POST /v1/chat/completions HTTP/1.1");

  // The tunnel is pooled and reused by the same egress.
  res = {};
  st = client.fetch(request(url, via, tls(certs().ca)), res);
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_EQ(res.body, "hello over tls");
  EXPECT_EQ(proxy.connections(), 1);
  EXPECT_EQ(up.connections(), 1);
  EXPECT_EQ(up.request_lines().size(), 2u);
}

TEST(HttpClientEgress, TunnelledTlsWithoutTheCaFailsVerification) {
  TlsUpstream up;
  Proxy proxy;
  Client client;
  HttpResponse res;
  auto st = client.fetch(
      request("https://" + loopback(up.port()) + "/v1/x", "http://" + loopback(proxy.port())), res);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error, TransportError::kTlsFailed) << st.message;
  EXPECT_NE(st.message.find("certificate verify failed"), std::string::npos) << st.message;
  EXPECT_NE(st.message.find("via proxy " + loopback(proxy.port())), std::string::npos)
      << st.message;
  EXPECT_EQ(proxy.request_lines(),
            std::vector<std::string>{"CONNECT " + loopback(up.port()) + " HTTP/1.1"});
  EXPECT_TRUE(up.request_lines().empty());
}

// Without a proxy too, the profile's CA is what makes the test CA's certificate trusted.
TEST(HttpClientEgress, CaFileAddsATrustAnchor) {
  TlsUpstream up;
  Client client;
  HttpResponse res;
  const std::string url = "https://" + loopback(up.port()) + "/v1/x";
  auto st = client.fetch(request(url), res);
  EXPECT_EQ(st.error, TransportError::kTlsFailed) << st.message;
  st = client.fetch(request(url, "", tls(certs().ca)), res);
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_EQ(res.body, "hello over tls");
  // Host verification against the origin's name: "localhost" is on the certificate too.
  st = client.fetch(
      request("https://localhost:" + std::to_string(up.port()) + "/v1/x", "", tls(certs().ca)),
      res);
  if (!st.ok()) {
    // localhost may resolve to ::1 first, where nothing listens; 127.0.0.1 was then tried.
    EXPECT_NE(st.error, TransportError::kTlsFailed) << st.message;
  }
}

// (b) plain http through the proxy: the request goes to the proxy in absolute form, with the
// proxy's credentials; the origin's port has no listener, so only the proxy could answer.
TEST(HttpClientEgress, HttpGoesToTheProxyInAbsoluteForm) {
  Proxy proxy;
  // A port bound but not listening: a direct connection would be refused.
  const int holder = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(holder, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::getsockname(holder, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int dead = ntohs(addr.sin_port);

  Client client;
  const std::string url = "http://" + loopback(dead) + "/v1/chat/completions?x=1";
  HttpResponse res;
  auto st = client.fetch(request(url, "http://ops:s%3Acret@" + loopback(proxy.port())), res);
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_EQ(res.body, "via proxy");
  ASSERT_EQ(proxy.heads().size(), 1u);
  const std::string head = proxy.heads()[0];
  EXPECT_EQ(proxy.request_lines()[0], "POST " + url + " HTTP/1.1");
  EXPECT_NE(head.find("\r\nHost: " + loopback(dead) + "\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nProxy-Authorization: Basic b3BzOnM6Y3JldA==\r\n"), std::string::npos)
      << head;  // ops:s:cret

  // The same request directly: refused, so the answer above came through the proxy.
  st = client.fetch(request(url), res);
  EXPECT_EQ(st.error, TransportError::kConnectFailed) << st.message;
  ::close(holder);
}

// (c) a proxy that wants other credentials: the request fails naming the proxy's status.
TEST(HttpClientEgress, AProxyRefusalFailsTheRequestWithItsStatus) {
  TlsUpstream up;
  Proxy proxy;
  proxy.refuse_status = 407;
  Client client;
  HttpResponse res;
  const std::string via = "http://" + loopback(proxy.port());
  auto st =
      client.fetch(request("https://" + loopback(up.port()) + "/v1/x", via, tls(certs().ca)), res);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error, TransportError::kConnectFailed);
  EXPECT_NE(st.message.find("refused CONNECT: 407"), std::string::npos) << st.message;
  EXPECT_EQ(up.connections(), 0);

  // Plain http: the 407 is the proxy's, never the origin's answer.
  st = client.fetch(request("http://" + loopback(up.port()) + "/v1/x", via), res);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message.find("407"), std::string::npos) << st.message;
  EXPECT_EQ(proxy.connections(), 2);
  EXPECT_EQ(client.idle(), 0u);
}

TEST(HttpClientEgress, BadProxyUrlsAndDeadProxiesFailClearly) {
  TlsUpstream up;
  Client client;
  HttpResponse res;
  const std::string url = "https://" + loopback(up.port()) + "/v1/x";
  auto st = client.fetch(request(url, "socks5://" + loopback(up.port()), tls(certs().ca)), res);
  EXPECT_EQ(st.error, TransportError::kConnectFailed);
  EXPECT_NE(st.message.find("bad proxy URL"), std::string::npos) << st.message;

  const int dead = testsupport::free_port();
  st = client.fetch(request(url, "http://" + loopback(dead), tls(certs().ca)), res);
  EXPECT_EQ(st.error, TransportError::kConnectFailed);
  EXPECT_NE(st.message.find("proxy " + loopback(dead)), std::string::npos) << st.message;
  EXPECT_EQ(up.connections(), 0);
}

// An SSRF-filtered request (workflow http steps) ignores the proxy: the filter judges the
// address actually connected to.
TEST(HttpClientEgress, AddressFilteredRequestsIgnoreTheProxy) {
  TlsUpstream up;
  Proxy proxy;
  Client client;
  HttpResponse res;
  auto req = request("https://" + loopback(up.port()) + "/v1/x", "http://" + loopback(proxy.port()),
                     tls(certs().ca));
  bool asked = false;
  req.allow_address = [&](const boost::asio::ip::address& a) {
    asked = true;
    return a.is_loopback();
  };
  auto st = client.fetch(req, res);
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_TRUE(asked);
  EXPECT_EQ(proxy.connections(), 0);
  EXPECT_EQ(up.connections(), 1);
}

// (d) an upstream that requires a client certificate.
TEST(HttpClientEgress, MutualTlsNeedsTheClientCertificate) {
  TlsUpstream up(/*require_client_cert=*/true);
  Client client;
  HttpResponse res;
  const std::string url = "https://" + loopback(up.port()) + "/v1/x";
  auto st = client.fetch(request(url, "", tls(certs().ca)), res);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(up.request_lines().empty());

  st = client.fetch(request(url, "", tls(certs().ca, certs().client_a, certs().client_a_key)), res);
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_EQ(res.body, "hello over tls");
  EXPECT_EQ(up.client_names(), std::vector<std::string>{"client-a"});

  // Through a tunnel as well.
  Proxy proxy;
  st = client.fetch(request(url, "http://" + loopback(proxy.port()),
                            tls(certs().ca, certs().client_b, certs().client_b_key)),
                    res);
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_EQ(up.client_names(), (std::vector<std::string>{"client-a", "client-b"}));
  EXPECT_EQ(proxy.connections(), 1);
}

// Pooled connections are reused only by requests with the same proxy and TLS profile.
TEST(HttpClientEgress, PooledConnectionsAreKeyedByProxyAndProfile) {
  TlsUpstream up;
  Proxy proxy;
  Client client;
  HttpResponse res;
  const std::string url = "https://" + loopback(up.port()) + "/v1/x";
  const std::string via = "http://" + loopback(proxy.port());
  auto ok = [&](HttpRequest r) {
    auto st = client.fetch(std::move(r), res);
    EXPECT_TRUE(st.ok()) << st.message;
  };
  ok(request(url, "", tls(certs().ca)));
  ok(request(url, "", tls(certs().ca)));  // equal content, another object: same profile
  EXPECT_EQ(up.connections(), 1);
  EXPECT_EQ(proxy.connections(), 0);

  ok(request(url, via, tls(certs().ca)));  // a direct connection is idle, but not this egress
  EXPECT_EQ(up.connections(), 2);
  EXPECT_EQ(proxy.connections(), 1);

  ok(request(url, "", tls(certs().ca, certs().client_a, certs().client_a_key)));
  EXPECT_EQ(up.connections(), 3);
  EXPECT_EQ(up.client_names().back(), "client-a");
  // Other proxy credentials: another tunnel.
  ok(request(url, "http://u:p@" + loopback(proxy.port()), tls(certs().ca)));
  EXPECT_EQ(proxy.connections(), 2);
  EXPECT_EQ(up.connections(), 4);
  EXPECT_EQ(client.idle(), 4u);

  // Each again: all reused.
  ok(request(url, "", tls(certs().ca)));
  ok(request(url, via, tls(certs().ca)));
  ok(request(url, "", tls(certs().ca, certs().client_a, certs().client_a_key)));
  ok(request(url, "http://u:p@" + loopback(proxy.port()), tls(certs().ca)));
  EXPECT_EQ(up.connections(), 4);
  EXPECT_EQ(proxy.connections(), 2);
  // The connection made with the client certificate served the mTLS requests, and only them.
  EXPECT_EQ(up.client_names(),
            (std::vector<std::string>{"", "", "", "client-a", "", "", "", "client-a", ""}));
}

// A rotated client certificate (same paths, new files) is used by the next new connection.
TEST(HttpClientEgress, ARotatedClientCertificateIsPickedUp) {
  testsupport::TempDir dir("rotate");
  const std::string cert = dir.file("client.pem"), key = dir.file("client.key");
  namespace fs = std::filesystem;
  fs::copy_file(certs().client_a, cert);
  fs::copy_file(certs().client_a_key, key);

  TlsUpstream up(/*require_client_cert=*/true);
  HttpClientOptions options;
  options.max_requests_per_connection = 1;  // every request on a new connection
  options.tls_profile_recheck = Millis(0);
  Client client(options);
  HttpResponse res;
  const std::string url = "https://" + loopback(up.port()) + "/v1/x";
  auto profile = tls(certs().ca, cert, key);
  auto st = client.fetch(request(url, "", profile), res);
  ASSERT_TRUE(st.ok()) << st.message;

  // Replaced in place; modification times set apart explicitly (file times are coarse).
  const auto before = fs::last_write_time(cert);
  fs::copy_file(certs().client_b, cert, fs::copy_options::overwrite_existing);
  fs::copy_file(certs().client_b_key, key, fs::copy_options::overwrite_existing);
  fs::last_write_time(cert, before + 10s);
  fs::last_write_time(key, before + 10s);
  st = client.fetch(request(url, "", profile), res);
  ASSERT_TRUE(st.ok()) << st.message;

  // A broken replacement keeps the last good certificate in use.
  std::ofstream(key, std::ios::trunc) << "not a key\n";
  fs::last_write_time(key, before + 20s);
  st = client.fetch(request(url, "", profile), res);
  ASSERT_TRUE(st.ok()) << st.message;
  EXPECT_EQ(up.client_names(), (std::vector<std::string>{"client-a", "client-b", "client-b"}));
}

// (e) the startup check, and the same errors from a request with such a profile.
TEST(CheckTlsOptions, ReportsWhatIsWrongWithAProfile) {
  const Certs& c = certs();
  EXPECT_TRUE(check_tls_options({c.ca, "", ""}).ok());
  EXPECT_TRUE(check_tls_options({"", c.client_a, c.client_a_key}).ok());
  Status st = check_tls_options({c.ca, c.client_a, c.client_a_key});
  EXPECT_TRUE(st.ok()) << st.message();

  st = check_tls_options({"/nonexistent/corp-ca.pem", "", ""});
  EXPECT_EQ(st.message(),
            "tls.ca_file: cannot read /nonexistent/corp-ca.pem: No such file or directory");
  st = check_tls_options({"", c.client_a, "/nonexistent/k.pem"});
  EXPECT_EQ(st.message(),
            "tls.client_key: cannot read /nonexistent/k.pem: No such file or directory");
  st = check_tls_options({"", c.client_a, c.other_key});
  EXPECT_EQ(st.message(), "tls.client_key does not match client_cert");
  st = check_tls_options({"", c.client_a, c.rsa_key});  // another key type
  EXPECT_EQ(st.message(), "tls.client_key does not match client_cert");
  st = check_tls_options({"", c.client_a, c.client_b_key});  // same CA, another certificate's
  EXPECT_EQ(st.message(), "tls.client_key does not match client_cert");
  st = check_tls_options({c.server_key, "", ""});  // a key is no CA certificate
  EXPECT_EQ(st.message().rfind("tls.ca_file: " + c.server_key + " holds no usable PEM", 0), 0u)
      << st.message();
  st = check_tls_options({"", c.client_a_key, c.client_a_key});
  EXPECT_EQ(st.message().rfind("tls.client_cert: ", 0), 0u) << st.message();
  st = check_tls_options({"", c.client_a, c.client_a});
  EXPECT_EQ(st.message().rfind("tls.client_key: ", 0), 0u) << st.message();

  // A request with a profile that does not load fails before connecting, with that message.
  TlsUpstream up;
  Client client;
  HttpResponse res;
  auto ts = client.fetch(
      request("https://" + loopback(up.port()) + "/v1/x", "", tls(c.ca, c.client_a, c.other_key)),
      res);
  EXPECT_EQ(ts.error, TransportError::kTlsFailed);
  EXPECT_EQ(ts.message, "tls.client_key does not match client_cert");
  EXPECT_EQ(up.connections(), 0);
}

}  // namespace
}  // namespace switchboard::net
