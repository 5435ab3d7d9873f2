#include "net/egress.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace switchboard::net {

namespace {

char lower(char c) {
  return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (lower(s[i]) != lower(prefix[i])) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool valid_port(std::string_view p) {
  if (p.empty() || p.size() > 5) return false;
  int v = 0;
  for (char c : p) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  return v >= 1 && v <= 65535;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return false;
    const int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

// An IP address in network byte order: 4 bytes (v4) or 16 (v6).
struct IpAddr {
  int family = 0;  // AF_INET, AF_INET6, or 0 for "not an address"
  std::array<unsigned char, 16> bytes{};
  size_t size() const { return family == AF_INET ? 4 : 16; }
};

IpAddr parse_ip(std::string_view s) {
  IpAddr a;
  if (s.empty() || s.size() >= 64) return a;
  char buf[64];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  if (::inet_pton(AF_INET, buf, a.bytes.data()) == 1) {
    a.family = AF_INET;
  } else if (::inet_pton(AF_INET6, buf, a.bytes.data()) == 1) {
    a.family = AF_INET6;
  }
  return a;
}

bool prefix_equal(const IpAddr& a, const IpAddr& b, int bits) {
  const int whole = bits / 8, rest = bits % 8;
  if (std::memcmp(a.bytes.data(), b.bytes.data(), static_cast<size_t>(whole)) != 0) return false;
  if (rest == 0) return true;
  const auto mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (a.bytes[static_cast<size_t>(whole)] & mask) ==
         (b.bytes[static_cast<size_t>(whole)] & mask);
}

// An IP host against an entry "addr" or "addr/bits".
bool ip_entry_matches(const IpAddr& host, std::string_view entry) {
  const size_t slash = entry.find('/');
  const IpAddr net = parse_ip(entry.substr(0, slash));
  if (net.family == 0 || net.family != host.family) return false;
  int bits = static_cast<int>(net.size() * 8);
  if (slash != std::string_view::npos) {
    const std::string_view b = entry.substr(slash + 1);
    if (b.empty() || b.size() > 3) return false;
    int v = 0;
    for (char c : b) {
      if (c < '0' || c > '9') return false;
      v = v * 10 + (c - '0');
    }
    if (v > bits) return false;
    bits = v;
  }
  return prefix_equal(host, net, bits);
}

// The OpenSSL errors queued since the last clear, as one line ("" when none); clears them.
std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    const char* reason = ERR_reason_error_string(e);
    if (reason == nullptr) {
      ERR_error_string_n(e, buf, sizeof buf);
      reason = buf;
    }
    if (out.find(reason) != std::string::npos) continue;  // the same reason from each layer
    if (!out.empty()) out += "; ";
    out += reason;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

Status readable(const char* field, const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return Status::invalid_argument(std::string("tls.") + field + ": cannot read " + path + ": " +
                                    std::strerror(errno));
  }
  std::fclose(f);
  return {};
}

// Never prompt on the terminal for a passphrase (OpenSSL's default for an encrypted key): the
// gateway has no terminal, and a blocked reload would hang. No passphrase: loading fails.
int no_passphrase(char*, int, int, void*) {
  return 0;
}

}  // namespace

Result<ProxyUrl> parse_proxy_url(std::string_view url) {
  const std::string_view kShape = "expected http://[user:password@]host:port";
  for (char c : url) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f)
      return Status::invalid_argument("proxy URL contains a space or control character");
  }
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos)
    return Status::invalid_argument("proxy URL has no scheme: " + std::string(kShape));
  if (!starts_with_nocase(url, "http://")) {
    return Status::invalid_argument("proxy scheme " + to_lower(url.substr(0, scheme_end)) +
                                    ":// is not supported: only http:// proxies (" +
                                    std::string(kShape) + ")");
  }
  std::string_view rest = url.substr(7);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find_first_of("/?#") != std::string_view::npos)
    return Status::invalid_argument("proxy URL has a path: " + std::string(kShape));
  ProxyUrl p;
  if (const size_t at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    const size_t colon = userinfo.find(':');
    if (!percent_decode(userinfo.substr(0, colon), p.user) ||
        (colon != std::string_view::npos &&
         !percent_decode(userinfo.substr(colon + 1), p.password))) {
      return Status::invalid_argument("proxy URL has a bad %-escape in its user or password");
    }
    p.has_credentials = true;
    rest = rest.substr(at + 1);
  }
  std::string_view host, port;
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string_view::npos)
      return Status::invalid_argument("proxy URL has an unclosed [ in its host");
    host = rest.substr(1, close - 1);
    if (parse_ip(host).family != AF_INET6)
      return Status::invalid_argument("proxy host [" + std::string(host) +
                                      "] is not an IPv6 address");
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':')
        return Status::invalid_argument("proxy URL: " + std::string(kShape));
      port = rest.substr(close + 2);
    }
  } else {
    const size_t colon = rest.rfind(':');
    host = rest.substr(0, colon);
    if (colon != std::string_view::npos) port = rest.substr(colon + 1);
    for (char c : host) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_')
        return Status::invalid_argument("proxy host " + std::string(host) + " is not a host name");
    }
  }
  if (host.empty())
    return Status::invalid_argument("proxy URL has no host: " + std::string(kShape));
  if (port.empty())
    return Status::invalid_argument("proxy URL has no port (e.g. http://proxy.example:3128)");
  if (!valid_port(port))
    return Status::invalid_argument("proxy port " + std::string(port) + " is not a port (1-65535)");
  p.host = to_lower(host);
  p.port = std::string(port);
  return p;
}

Status check_proxy_url(std::string_view url) {
  auto p = parse_proxy_url(url);
  return p.ok() ? Status() : p.status();
}

std::string proxy_authorization(const ProxyUrl& proxy) {
  if (!proxy.has_credentials) return {};
  const std::string plain = proxy.user + ":" + proxy.password;
  std::string out((plain.size() + 2) / 3 * 4 + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(plain.data()),
                                static_cast<int>(plain.size()));
  out.resize(static_cast<size_t>(n));
  return "Basic " + out;
}

ProxyEnv ProxyEnv::from_environment() {
  // curl's order: the lowercase variable first; an empty value counts as unset.
  auto read = [](const char* lower_name, const char* upper_name) {
    for (const char* name : {lower_name, upper_name}) {
      const char* v = std::getenv(name);
      if (v != nullptr && *v != '\0') return std::string(v);
    }
    return std::string();
  };
  ProxyEnv env;
  env.http_proxy = read("http_proxy", "HTTP_PROXY");
  env.https_proxy = read("https_proxy", "HTTPS_PROXY");
  env.no_proxy = read("no_proxy", "NO_PROXY");
  return env;
}

bool no_proxy_matches(std::string_view host_in, std::string_view port, std::string_view no_proxy) {
  if (!host_in.empty() && host_in.front() == '[' && host_in.back() == ']')
    host_in = host_in.substr(1, host_in.size() - 2);
  std::string host = to_lower(host_in);
  while (!host.empty() && host.back() == '.') host.pop_back();  // "example.com." is example.com
  if (host.empty()) return false;
  const IpAddr host_ip = parse_ip(host);

  size_t start = 0;
  while (start <= no_proxy.size()) {
    size_t comma = no_proxy.find(',', start);
    if (comma == std::string_view::npos) comma = no_proxy.size();
    const std::string_view raw = trim(no_proxy.substr(start, comma - start));
    start = comma + 1;
    if (raw.empty()) continue;
    if (raw == "*") return true;
    std::string entry = to_lower(raw);
    std::string entry_port;
    if (entry.front() == '[') {  // [v6] or [v6]:port
      const size_t close = entry.find(']');
      if (close == std::string::npos) continue;
      if (close + 1 < entry.size()) {
        if (entry[close + 1] != ':') continue;
        entry_port = entry.substr(close + 2);
      }
      entry = entry.substr(1, close - 1);
    } else if (std::count(entry.begin(), entry.end(), ':') == 1) {  // name:port or v4:port
      const size_t colon = entry.find(':');
      entry_port = entry.substr(colon + 1);
      entry.resize(colon);
    }  // two colons or more: a bare IPv6 address (or CIDR), which has no port
    if (!entry_port.empty() && entry_port != port) continue;
    if (host_ip.family != 0) {
      if (ip_entry_matches(host_ip, entry)) return true;
      continue;
    }
    // A name: the entry's domain itself or any name under it ("*.example.com" read as
    // ".example.com", as several tools accept).
    std::string_view domain = entry;
    if (domain.starts_with("*.")) domain.remove_prefix(1);
    while (!domain.empty() && domain.front() == '.') domain.remove_prefix(1);
    while (!domain.empty() && domain.back() == '.') domain.remove_suffix(1);
    if (domain.empty()) continue;
    if (host == domain) return true;
    if (host.size() > domain.size() && host.ends_with(domain) &&
        host[host.size() - domain.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

std::string proxy_for(std::string_view url, const ProxyEnv& env) {
  bool tls = false;
  std::string_view rest;
  if (starts_with_nocase(url, "https://")) {
    tls = true;
    rest = url.substr(8);
  } else if (starts_with_nocase(url, "http://")) {
    rest = url.substr(7);
  } else {
    return {};
  }
  const std::string_view proxy = trim(tls ? env.https_proxy : env.http_proxy);
  if (proxy.empty()) return {};
  std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (const size_t at = authority.rfind('@'); at != std::string_view::npos)
    authority = authority.substr(at + 1);
  std::string_view host, port;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return {};
    host = authority.substr(1, close - 1);
    if (close + 2 <= authority.size()) port = authority.substr(close + 2);
  } else {
    const size_t colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (host.empty()) return {};
  if (port.empty()) port = tls ? "443" : "80";
  if (no_proxy_matches(host, port, env.no_proxy)) return {};
  if (proxy.find("://") == std::string_view::npos) return "http://" + std::string(proxy);
  return std::string(proxy);
}

Status apply_tls_options(ssl_ctx_st* ctx, const TlsOptions& o) {
  if (o.client_cert.empty() != o.client_key.empty()) {
    return Status::invalid_argument(o.client_cert.empty() ? "tls.client_key needs tls.client_cert"
                                                          : "tls.client_cert needs tls.client_key");
  }
  SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
  ERR_clear_error();
  if (!o.ca_file.empty()) {
    if (Status st = readable("ca_file", o.ca_file); !st.ok()) return st;
    if (SSL_CTX_load_verify_locations(ctx, o.ca_file.c_str(), nullptr) != 1) {
      return Status::invalid_argument("tls.ca_file: " + o.ca_file +
                                      " holds no usable PEM certificate: " + openssl_errors());
    }
  }
  if (!o.client_cert.empty()) {
    if (Status st = readable("client_cert", o.client_cert); !st.ok()) return st;
    if (Status st = readable("client_key", o.client_key); !st.ok()) return st;
    if (SSL_CTX_use_certificate_chain_file(ctx, o.client_cert.c_str()) != 1) {
      return Status::invalid_argument("tls.client_cert: " + o.client_cert +
                                      " holds no usable PEM certificate: " + openssl_errors());
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, o.client_key.c_str(), SSL_FILETYPE_PEM) != 1) {
      // A key that loads but is not the certificate's fails here too (key values mismatch).
      const unsigned long e = ERR_peek_last_error();
      const bool mismatch =
          ERR_GET_LIB(e) == ERR_LIB_X509 && (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
                                             ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH);
      const bool encrypted =
          ERR_GET_LIB(e) == ERR_LIB_PEM && (ERR_GET_REASON(e) == PEM_R_BAD_PASSWORD_READ ||
                                            ERR_GET_REASON(e) == PEM_R_PROBLEMS_GETTING_PASSWORD);
      const std::string why = openssl_errors();
      if (mismatch) return Status::invalid_argument("tls.client_key does not match client_cert");
      return Status::invalid_argument(
          "tls.client_key: " + o.client_key + " holds no usable PEM private key" +
          (encrypted ? " (encrypted keys are not supported)" : "") + ": " + why);
    }
    // A key of another type than the certificate's loads into its own slot: only this check
    // sees that the pair does not go together.
    if (SSL_CTX_check_private_key(ctx) != 1) {
      ERR_clear_error();
      return Status::invalid_argument("tls.client_key does not match client_cert");
    }
  }
  return {};
}

Status check_tls_options(const TlsOptions& options) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                        &SSL_CTX_free);
  if (!ctx) return Status::internal("cannot create a TLS context: " + openssl_errors());
  return apply_tls_options(ctx.get(), options);
}

}  // namespace switchboard::net
