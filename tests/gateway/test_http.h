// A small blocking HTTP/1.1 client over POSIX sockets for the gateway tests: one request per
// connection (Connection: close), the response read to EOF, chunked bodies decoded, and a raw
// mode for tests that need to hold or drop a connection themselves.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace switchboard::gwtest {

using Headers = std::vector<std::pair<std::string, std::string>>;

inline std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

struct HttpResult {
  bool transport_ok = false;  // a complete status line and header block arrived
  std::string error;
  int status = 0;
  std::multimap<std::string, std::string> headers;  // names in lower case
  bool chunked = false;
  bool chunked_complete = false;  // the terminating 0-size chunk arrived
  std::string body;               // de-chunked
  std::string raw;                // everything received

  bool has(const std::string& name) const { return headers.count(lower(name)) > 0; }
  std::string header(const std::string& name) const {
    auto it = headers.find(lower(name));
    return it == headers.end() ? std::string() : it->second;
  }
  // The `data:` payloads of the SSE events in the body, in order.
  std::vector<std::string> sse_data() const {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < body.size()) {
      size_t eol = body.find('\n', pos);
      std::string line = body.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
      pos = eol == std::string::npos ? body.size() : eol + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.rfind("data:", 0) == 0) {
        std::string d = line.substr(5);
        if (!d.empty() && d.front() == ' ') d.erase(0, 1);
        out.push_back(d);
      }
    }
    return out;
  }
};

// Decodes a chunked body; `complete` says whether the last chunk arrived.
inline std::string dechunk(const std::string& in, bool& complete) {
  std::string out;
  complete = false;
  size_t pos = 0;
  while (pos < in.size()) {
    size_t eol = in.find("\r\n", pos);
    if (eol == std::string::npos) break;
    size_t n = 0;
    try {
      n = std::stoul(in.substr(pos, eol - pos), nullptr, 16);
    } catch (...) {
      break;
    }
    pos = eol + 2;
    if (n == 0) {
      complete = true;
      break;
    }
    if (pos + n > in.size()) {
      out.append(in, pos, std::string::npos);
      break;
    }
    out.append(in, pos, n);
    pos += n + 2;
  }
  return out;
}

inline HttpResult parse_response(std::string raw) {
  HttpResult r;
  r.raw = std::move(raw);
  size_t end = r.raw.find("\r\n\r\n");
  if (end == std::string::npos) {
    r.error = "no complete response head (" + std::to_string(r.raw.size()) + " bytes)";
    return r;
  }
  std::string head = r.raw.substr(0, end);
  size_t eol = head.find("\r\n");
  std::string status_line = head.substr(0, eol);
  if (status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12) {
    r.error = "bad status line: " + status_line;
    return r;
  }
  r.status = std::atoi(status_line.c_str() + 9);
  size_t pos = eol == std::string::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    size_t e = head.find("\r\n", pos);
    std::string line = head.substr(pos, e == std::string::npos ? std::string::npos : e - pos);
    pos = e == std::string::npos ? head.size() : e + 2;
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string v = line.substr(colon + 1);
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    r.headers.emplace(lower(line.substr(0, colon)), v);
  }
  std::string body = r.raw.substr(end + 4);
  r.chunked = lower(r.header("transfer-encoding")).find("chunked") != std::string::npos;
  if (r.chunked) {
    r.body = dechunk(body, r.chunked_complete);
  } else {
    r.body = std::move(body);
  }
  r.transport_ok = true;
  return r;
}

// A connected socket to 127.0.0.1:port, or -1.
inline int connect_to(uint16_t port, std::chrono::milliseconds timeout) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval tv{};
  tv.tv_sec = timeout.count() / 1000;
  tv.tv_usec = (timeout.count() % 1000) * 1000;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

inline bool send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

inline std::string format_request(const std::string& method, const std::string& target,
                                  const std::string& body, const Headers& headers) {
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  bool has_type = false;
  for (const auto& [k, v] : headers) {
    req += k + ": " + v + "\r\n";
    has_type |= lower(k) == "content-type";
  }
  if (method != "GET" || !body.empty()) {
    if (!has_type) req += "Content-Type: application/json\r\n";
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  req += "\r\n";
  req += body;
  return req;
}

// Reads until EOF (or error/timeout). Returns what arrived.
inline std::string read_to_eof(int fd) {
  std::string out;
  char buf[16384];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  return out;
}

inline HttpResult request(uint16_t port, const std::string& method, const std::string& target,
                          const std::string& body = {}, const Headers& headers = {},
                          std::chrono::milliseconds timeout = std::chrono::seconds(15)) {
  int fd = connect_to(port, timeout);
  if (fd < 0) {
    HttpResult r;
    r.error = "connect failed: " + std::string(std::strerror(errno));
    return r;
  }
  bool sent = send_all(fd, format_request(method, target, body, headers));
  std::string raw = read_to_eof(fd);
  ::close(fd);
  HttpResult r = parse_response(std::move(raw));
  if (!sent && r.error.empty() && !r.transport_ok) r.error = "send failed";
  return r;
}

inline HttpResult post(uint16_t port, const std::string& target, const std::string& body,
                       const Headers& headers = {}) {
  return request(port, "POST", target, body, headers);
}

inline HttpResult get(uint16_t port, const std::string& target, const Headers& headers = {}) {
  return request(port, "GET", target, {}, headers);
}

// Polls `cond` until it holds or `limit` passes; true when it held.
inline bool eventually(const std::function<bool()>& cond,
                       std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (true) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace switchboard::gwtest

namespace switchboard::gwtest {

// A server thread on 127.0.0.1 (a port the kernel chose) that hands each accepted connection to
// `on_connection`, one at a time; the handler closes it. `stopping()` tells handlers to return.
class LoopbackServer {
 public:
  explicit LoopbackServer(std::function<void(int)> on_connection)
      : on_connection_(std::move(on_connection)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(fd_, 16) != 0) {
      ::close(fd_);
      fd_ = -1;
      return;
    }
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 20) <= 0) continue;
        int c = ::accept(fd_, nullptr, nullptr);
        if (c >= 0) on_connection_(c);
      }
    });
  }
  ~LoopbackServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }
  uint16_t port() const { return port_; }
  bool stopping() const { return stop_; }

 private:
  std::function<void(int)> on_connection_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The size of the first complete request in `in` (head and Content-Length body), or 0.
inline size_t complete_request_size(const std::string& in) {
  auto end = in.find("\r\n\r\n");
  if (end == std::string::npos) return 0;
  auto cl = lower(in.substr(0, end)).find("content-length:");
  size_t n = cl == std::string::npos ? 0 : std::stoul(in.substr(cl + 15));
  return in.size() >= end + 4 + n ? end + 4 + n : 0;
}

// Reads one whole request (head and Content-Length body) from `c`; what arrived when the peer
// stopped sending otherwise.
inline std::string read_request(int c) {
  std::string req;
  char buf[8192];
  while (complete_request_size(req) == 0) {
    ssize_t k = ::recv(c, buf, sizeof(buf), 0);
    if (k <= 0) break;
    req.append(buf, size_t(k));
  }
  return req;
}

// A hand-rolled upstream for answers the MockProvider cannot give (streams that end cleanly but
// early, empty streams, error events in a stream): every connection gets `response` verbatim
// after its request was read, then the connection is closed.
class FakeUpstream {
 public:
  explicit FakeUpstream(std::string response)
      : response_(std::move(response)), server_([this](int c) { serve(c); }) {}
  uint16_t port() const { return server_.port(); }
  int requests() const { return requests_.load(); }
  std::string last_request() {
    std::lock_guard lock(mu_);
    return last_request_;
  }

 private:
  void serve(int c) {
    timeval tv{2, 0};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    std::string req = read_request(c);
    char buf[8192];
    {
      std::lock_guard lock(mu_);
      last_request_ = req;
    }
    requests_++;
    send_all(c, response_);
    ::shutdown(c, SHUT_WR);
    // Give the peer a moment to close first, so that nothing we sent is lost to a reset; a
    // peer that keeps the connection for reuse finds it closed on its next request.
    pollfd pc{c, POLLIN, 0};
    while (::poll(&pc, 1, 100) > 0 && ::recv(c, buf, sizeof(buf), 0) > 0) {
    }
    ::close(c);
  }

  std::string response_;
  std::atomic<int> requests_{0};
  std::mutex mu_;
  std::string last_request_;
  LoopbackServer server_;  // last: its thread stops before the members it uses go
};

// An SSE response with the given events, each a `data:` payload, chunked and properly ended.
inline std::string sse_response(const std::vector<std::string>& data) {
  std::string out =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
      "Connection: close\r\n\r\n";
  for (const auto& d : data) {
    std::string ev = "data: " + d + "\n\n";
    char size[24];
    std::snprintf(size, sizeof(size), "%zx\r\n", ev.size());
    out += size + ev + "\r\n";
  }
  return out + "0\r\n\r\n";
}

inline std::string content_chunk(const std::string& text) {
  return R"({"id":"c1","object":"chat.completion.chunk","model":"fake","choices":[{"index":0,"delta":{"content":")" +
         text + R"("},"finish_reason":null}]})";
}

}  // namespace switchboard::gwtest
