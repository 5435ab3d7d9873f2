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

#include "net/egress.h"
#include "test_support.h"

namespace switchboard::net {
namespace {

using namespace std::chrono_literals;

// --- Certificates: a CA, a server certificate (127.0.0.1, localhost) and two client
// certificates it issued, and keys that belong to none of them. Made once per test binary. ---

struct Certs {
  testsupport::TempDir dir{"http-client-tls"};
  std::string ca, server_cert, server_key, client_a, client_a_key, client_b, client_b_key,
      other_key, rsa_key;
  Certs() {
    const std::string d = dir.path();
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ";
    auto issue = [&](const std::string& name, const std::string& cn, const std::string& ext) {
      return "openssl req" + ec + "-keyout " + d + "/" + name + ".key -out " + d + "/" + name +
             ".csr -subj /CN=" + cn + " && printf '" + ext + "' > " + d + "/" + name +
             ".ext && openssl x509 -req -in " + d + "/" + name + ".csr -CA " + d +
             "/ca.pem -CAkey " + d + "/ca.key -CAcreateserial -days 2 -out " + d + "/" + name +
             ".pem -extfile " + d + "/" + name + ".ext";
    };
    const std::string script =
        "set -e; openssl req -x509" + ec + "-keyout " + d + "/ca.key -out " + d +
        "/ca.pem -days 2 -subj /CN=switchboard-test-ca"
        " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        " && " +
        issue("server", "localhost",
              "subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n") +
        " && " + issue("client_a", "client-a", "extendedKeyUsage=clientAuth\\n") + " && " +
        issue("client_b", "client-b", "extendedKeyUsage=clientAuth\\n") +
        " && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out " + d +
        "/other.key && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out " + d +
        "/rsa.key";
    const std::string cmd = "(" + script + ") >" + d + "/openssl.log 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      std::ifstream log(d + "/openssl.log");
      std::string text((std::istreambuf_iterator<char>(log)), {});
      ADD_FAILURE() << "openssl failed:\n" << text;
      std::abort();
    }
    ca = d + "/ca.pem";
    server_cert = d + "/server.pem";
    server_key = d + "/server.key";
    client_a = d + "/client_a.pem";
    client_a_key = d + "/client_a.key";
    client_b = d + "/client_b.pem";
    client_b_key = d + "/client_b.key";
    other_key = d + "/other.key";
    rsa_key = d + "/rsa.key";
  }
};

const Certs& certs() {
  static Certs c;
  return c;
}

// --- A loopback server: a thread per connection, all stopped and joined with the object. ---

class Server {
 public:
  explicit Server(std::function<void(int)> handle) : handle_(std::move(handle)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      std::perror("test server");
      std::abort();
    }
    port_ = ntohs(addr.sin_port);
    accept_thread_ = std::thread([this] {
      while (true) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) {
          if (errno == EINTR) continue;
          return;  // shut down
        }
        std::lock_guard lock(mu_);
        if (stopping_) {
          ::close(c);
          return;
        }
        ++accepted_;
        conns_.push_back(c);
        threads_.emplace_back([this, c] { handle_(c); });
      }
    });
  }
  ~Server() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    ::shutdown(fd_, SHUT_RDWR);  // wakes accept()
    accept_thread_.join();
    {
      std::lock_guard lock(mu_);
      for (int c : conns_) ::shutdown(c, SHUT_RDWR);  // wakes handlers blocked on their socket
    }
    for (auto& t : threads_) t.join();
    for (int c : conns_) ::close(c);
    ::close(fd_);
  }
  int port() const { return port_; }
  int accepted() {
    std::lock_guard lock(mu_);
    return accepted_;
  }

 private:
  std::function<void(int)> handle_;
  int fd_ = -1;
  int port_ = 0;
  std::mutex mu_;
  bool stopping_ = false;
  int accepted_ = 0;
  std::vector<int> conns_;
  std::vector<std::thread> threads_;
  std::thread accept_thread_;
};

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads up to the end of a head; what came after it stays in `rest`. "" when the peer closed.
std::string read_head(int fd, std::string& rest) {
  std::string in;
  char buf[4096];
  while (in.find("\r\n\r\n") == std::string::npos && in.size() < 65536) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return {};
    in.append(buf, static_cast<size_t>(n));
  }
  const size_t end = in.find("\r\n\r\n") + 4;
  rest = in.substr(end);
  return in.substr(0, end);
}

size_t content_length(const std::string& head) {
  std::string lower = head;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const size_t at = lower.find("content-length:");
  return at == std::string::npos ? 0 : std::stoul(lower.substr(at + 15));
}

int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A forward proxy: CONNECT opens a tunnel to 127.0.0.1:<port> (or answers `refuse_status`);
// any other request (absolute form) it answers itself with "via proxy". It records every head.
class Proxy {
 public:
  std::atomic<int> refuse_status{0};  // e.g. 407: every request gets that answer

  int port() const { return server_.port(); }
  int connections() { return server_.accepted(); }
  std::vector<std::string> heads() {
    std::lock_guard lock(mu_);
    return heads_;
  }
  std::vector<std::string> request_lines() {
    std::vector<std::string> out;
    for (const auto& h : heads()) out.push_back(h.substr(0, h.find("\r\n")));
    return out;
  }

 private:
  void serve(int c) {
    std::string rest;
    const std::string head = read_head(c, rest);
    if (head.empty()) return;
    {
      std::lock_guard lock(mu_);
      heads_.push_back(head);
    }
    if (refuse_status != 0) {
      send_all(c, "HTTP/1.1 " + std::to_string(refuse_status) +
                      " Proxy Authentication Required\r\nProxy-Authenticate: Basic "
                      "realm=\"corp\"\r\nContent-Length: 0\r\n\r\n");
      ::shutdown(c, SHUT_RDWR);
      return;
    }
    if (head.rfind("CONNECT ", 0) != 0) {
      // Absolute form: answered here (a real proxy would forward it).
      const std::string body = "via proxy";
      send_all(c, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\nConnection: close\r\n\r\n" + body);
      ::shutdown(c, SHUT_RDWR);
      return;
    }
    const std::string target = head.substr(8, head.find(' ', 8) - 8);
    const std::string host = target.substr(0, target.rfind(':'));
    const int up = (host == "127.0.0.1" || host == "localhost")
                       ? connect_loopback(std::stoi(target.substr(target.rfind(':') + 1)))
                       : -1;
    if (up < 0) {
      send_all(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
      ::shutdown(c, SHUT_RDWR);
      return;
    }
    send_all(c, "HTTP/1.1 200 Connection established\r\n\r\n");
    if (!rest.empty()) send_all(up, rest);
    // Relay both ways until either side closes.
    char buf[16384];
    pollfd fds[2] = {{c, POLLIN, 0}, {up, POLLIN, 0}};
    bool open = true;
    while (open && ::poll(fds, 2, -1) > 0) {
      for (int i = 0; i < 2 && open; ++i) {
        if (fds[i].revents == 0) continue;
        const ssize_t n = ::recv(fds[i].fd, buf, sizeof buf, 0);
        open = n > 0 && send_all(fds[1 - i].fd, std::string_view(buf, static_cast<size_t>(n)));
      }
    }
    ::shutdown(c, SHUT_RDWR);
    ::close(up);
  }

  std::mutex mu_;
  std::vector<std::string> heads_;
  Server server_{[this](int c) { serve(c); }};  // last: stops before the members it uses go
};

// An HTTPS upstream (keep-alive): answers every request with "hello over tls". It asks for a
// client certificate issued by the test CA; with `require_client_cert`, it refuses handshakes
// without one. Records request lines and the client certificate's CN ("" for none) per request.
class TlsUpstream {
 public:
  explicit TlsUpstream(bool require_client_cert = false) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    const Certs& c = certs();
    if (SSL_CTX_use_certificate_chain_file(ctx_, c.server_cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx_, c.server_key.c_str(), SSL_FILETYPE_PEM) != 1) {
      ADD_FAILURE() << "test upstream cannot load its certificate";
    }
    // A client certificate is always asked for (and recorded), required only when told.
    SSL_CTX_load_verify_locations(ctx_, c.ca.c_str(), nullptr);
    SSL_CTX_set_verify(
        ctx_, SSL_VERIFY_PEER | (require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        nullptr);
    server_ = std::make_unique<Server>([this](int fd) { serve(fd); });
  }
  ~TlsUpstream() {
    server_.reset();  // joins the handlers before the context goes
    SSL_CTX_free(ctx_);
  }
  int port() const { return server_->port(); }
  int connections() { return server_->accepted(); }
  int handshakes_failed() { return failed_.load(); }
  std::vector<std::string> request_lines() {
    std::lock_guard lock(mu_);
    return lines_;
  }
  std::vector<std::string> client_names() {
    std::lock_guard lock(mu_);
    return client_names_;
  }

 private:
  void serve(int fd) {
    SSL* ssl = SSL_new(ctx_);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1) {
      ++failed_;
      ERR_clear_error();
      SSL_free(ssl);
      ::shutdown(fd, SHUT_RDWR);
      return;
    }
    std::string client;
    if (X509* peer = SSL_get1_peer_certificate(ssl)) {
      char cn[256] = {};
      X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
      client = cn;
      X509_free(peer);
    }
    std::string in;
    char buf[8192];
    while (true) {
      size_t end;
      while ((end = in.find("\r\n\r\n")) == std::string::npos ||
             in.size() < end + 4 + content_length(in.substr(0, end + 4))) {
        const int n = SSL_read(ssl, buf, sizeof buf);
        if (n <= 0) goto done;
        in.append(buf, static_cast<size_t>(n));
      }
      {
        std::lock_guard lock(mu_);
        lines_.push_back(in.substr(0, in.find("\r\n")));
        client_names_.push_back(client);
      }
      in.erase(0, end + 4 + content_length(in.substr(0, end + 4)));
      const std::string answer =
          "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nContent-Type: text/plain\r\n\r\nhello over tls";
      if (SSL_write(ssl, answer.data(), static_cast<int>(answer.size())) <= 0) break;
    }
  done:
    ERR_clear_error();
    SSL_free(ssl);
    ::shutdown(fd, SHUT_RDWR);
  }

  SSL_CTX* ctx_ = nullptr;
  std::atomic<int> failed_{0};
  std::mutex mu_;
  std::vector<std::string> lines_, client_names_;
  std::unique_ptr<Server> server_;
};

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
