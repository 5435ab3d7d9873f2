// Egress fixtures on real loopback sockets, for the HttpClient's tests and the gateway's: a
// forward proxy (blocking sockets, a thread per connection) that records every request head and
// tunnels CONNECT to loopback ports, TLS upstreams (blocking OpenSSL) whose certificates a test
// CA issued at test time with the openssl CLI, and the socket helpers they share.
// Thread-safety: each object serves on its own threads; the accessors are locked.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "test_support.h"

namespace switchboard::testsupport {

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
              "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:upstream.test\\nextendedKeyUsage="
              "serverAuth\\n") +
        " && " + issue("client_a", "client-a", "extendedKeyUsage=clientAuth\\n") + " && " +
        issue("client_b", "client-b", "extendedKeyUsage=clientAuth\\n") +
        " && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out " + d +
        "/other.key && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out " + d +
        "/rsa.key";
    const std::string cmd = "(" + script + ") >" + d + "/openssl.log 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      std::ifstream log(d + "/openssl.log");
      std::string text((std::istreambuf_iterator<char>(log)), {});
      std::fprintf(stderr, "openssl failed:\n%s\n", text.c_str());
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

inline const Certs& certs() {
  static Certs c;
  return c;
}

// --- A loopback server: a thread per connection, all stopped and joined with the object. ---

class Server {
 public:
  explicit Server(std::function<void(int)> handle) : handle_(std::move(handle)) {
    // OpenSSL writes with write(2): a peer that went away must fail the write, not end the test
    // binary.
    ::signal(SIGPIPE, SIG_IGN);
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

inline bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads up to the end of a head; what came after it stays in `rest`. "" when the peer closed.
inline std::string read_head(int fd, std::string& rest) {
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

inline size_t content_length(const std::string& head) {
  std::string lower = head;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const size_t at = lower.find("content-length:");
  return at == std::string::npos ? 0 : std::stoul(lower.substr(at + 15));
}

inline int connect_loopback(int port) {
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

// A forward proxy: CONNECT opens a tunnel to 127.0.0.1:<port> (or answers `refuse_status`); the
// name upstream.test (in the server certificate too) is this machine for it alone, so that a
// client that resolved names itself could not reach it;
// any other request (absolute form) it answers itself with "via proxy". It records every head.
class Proxy {
 public:
  std::atomic<int> refuse_status{0};  // e.g. 407: every request gets that answer
  // Absolute-form requests to http://127.0.0.1:<port> are forwarded there (else answered "via
  // proxy" by the proxy itself).
  std::atomic<bool> forward_plain{false};

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
    if (head.rfind("CONNECT ", 0) != 0 && forward_plain) {
      // Absolute form to http://127.0.0.1:<port>/...: forwarded in origin form.
      const size_t sp = head.find(' ');
      const std::string url = head.substr(sp + 1, head.find(' ', sp + 1) - sp - 1);
      const std::string prefix = "http://127.0.0.1:";
      const size_t path = url.find('/', prefix.size());
      const int up = url.rfind(prefix, 0) == 0 && path != std::string::npos
                         ? connect_loopback(std::stoi(url.substr(prefix.size())))
                         : -1;
      if (up < 0) {
        send_all(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        ::shutdown(c, SHUT_RDWR);
        return;
      }
      send_all(up, head.substr(0, sp + 1) + url.substr(path) + head.substr(head.find(' ', sp + 1)));
      if (!rest.empty()) send_all(up, rest);
      relay(c, up);
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
    const int up = (host == "127.0.0.1" || host == "localhost" || host == "upstream.test")
                       ? connect_loopback(std::stoi(target.substr(target.rfind(':') + 1)))
                       : -1;
    if (up < 0) {
      send_all(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
      ::shutdown(c, SHUT_RDWR);
      return;
    }
    send_all(c, "HTTP/1.1 200 Connection established\r\n\r\n");
    if (!rest.empty()) send_all(up, rest);
    relay(c, up);
  }

  // Relays both ways until either side closes; closes `up`.
  static void relay(int c, int up) {
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
  static constexpr const char* kHello =
      "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nContent-Type: text/plain\r\n\r\nhello over tls";
  // `answer`: the whole HTTP response sent for every request (keep-alive framing).
  explicit TlsUpstream(bool require_client_cert = false, std::string answer = kHello)
      : answer_(std::move(answer)) {
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
      if (SSL_write(ssl, answer_.data(), static_cast<int>(answer_.size())) <= 0) break;
    }
  done:
    ERR_clear_error();
    SSL_free(ssl);
    ::shutdown(fd, SHUT_RDWR);
  }

  const std::string answer_;
  SSL_CTX* ctx_ = nullptr;
  std::atomic<int> failed_{0};
  std::mutex mu_;
  std::vector<std::string> lines_, client_names_;
  std::unique_ptr<Server> server_;
};

}  // namespace switchboard::testsupport
