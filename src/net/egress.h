// Egress as enterprises run it: forward proxies (explicit or from HTTPS_PROXY/NO_PROXY) and TLS
// profiles (a corporate CA, a client certificate), as plain values and checks.
//
// The HttpClient (http_client.h) applies them per request; configuration validates them at
// startup with check_proxy_url and check_tls_options, which report what an operator can fix
// (the field, the file, the reason). Nothing here knows Asio or Beast, so logic modules and the
// logic-only builds may use it; check_tls_options and apply_tls_options use OpenSSL directly.
//
// Thread-safety: pure functions over values, except ProxyEnv::from_environment (reads the
// process environment: call it at startup or reload, not while another thread runs setenv).
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX, so that this header needs no OpenSSL include

namespace switchboard::net {

// --- Forward proxies ---

// A parsed proxy URL, http://[user:password@]host:port[/]. User and password are
// percent-decoded; `host` has no brackets (an IPv6 literal is "::1").
struct ProxyUrl {
  std::string host;
  std::string port;
  std::string user;
  std::string password;
  bool has_credentials = false;  // userinfo was present (even "user:" with an empty password)
};

// Parses `url`. Only http:// proxies (the tunnel itself is plain TCP; TLS to the proxy is not
// supported); a host and a port are required (no silent default port). Messages never repeat
// the password.
Result<ProxyUrl> parse_proxy_url(std::string_view url);
// parse_proxy_url's verdict alone, for config validation.
Status check_proxy_url(std::string_view url);
// "Basic base64(user:password)", the Proxy-Authorization value; "" without credentials.
std::string proxy_authorization(const ProxyUrl& proxy);

// The proxy settings of the environment, as curl reads them.
struct ProxyEnv {
  std::string http_proxy;   // for http:// targets
  std::string https_proxy;  // for https:// targets
  std::string no_proxy;     // hosts reached directly
  // HTTPS_PROXY/https_proxy, HTTP_PROXY/http_proxy, NO_PROXY/no_proxy; the lowercase variable
  // wins when both are set (as in curl). Values are taken as they are (see proxy_for).
  static ProxyEnv from_environment();
};

// The proxy that a request to `url` should go through under `env`, or "" for a direct
// connection (no proxy for its scheme, a NO_PROXY match, or a URL that does not parse). A proxy
// value without a scheme ("proxy.corp:3128") is returned as http://proxy.corp:3128, as curl
// reads it; any other value is returned unchanged, for the client (or check_proxy_url) to refuse.
std::string proxy_for(std::string_view url, const ProxyEnv& env);

// Whether `host` (lowercase or not; IPv6 without brackets) on `port` is exempt under the
// NO_PROXY list `no_proxy`, with curl's semantics: comma-separated entries, whitespace trimmed;
// `*` alone matches every host; a name entry matches the host itself or any subdomain (a
// leading dot is optional: "example.com" and ".example.com" both match "example.com" and
// "api.example.com"); an entry's ":port" restricts it to that port ("[v6]:port" for IPv6); an
// IP host matches only IP entries, exactly or by CIDR ("10.0.0.0/8", "::1/128").
bool no_proxy_matches(std::string_view host, std::string_view port, std::string_view no_proxy);

// --- TLS profiles ---

// Per-request TLS settings beyond the default (the system trust store, no client certificate).
// All paths name PEM files; each is optional, but client_cert and client_key go together.
struct TlsOptions {
  std::string ca_file;      // trust anchors added to the system store (a corporate CA)
  std::string client_cert;  // a certificate chain presented to the server (mutual TLS)
  std::string client_key;   // its private key (unencrypted: nothing could type a passphrase)
  bool empty() const { return ca_file.empty() && client_cert.empty() && client_key.empty(); }
  bool operator==(const TlsOptions&) const = default;
};

// Loads `options` into a fresh context, as the HttpClient will: ok, or what is wrong
// ("tls.ca_file: cannot read /x: No such file or directory", "tls.client_key does not match
// client_cert"...). For configuration checks at startup and reload.
Status check_tls_options(const TlsOptions& options);

// Adds `options` to an OpenSSL client context that already trusts the system store: the CA
// file's certificates as further trust anchors, the client certificate chain and key (checked
// to match). Used by the HttpClient and by check_tls_options, so that both read the files alike.
Status apply_tls_options(ssl_ctx_st* ctx, const TlsOptions& options);

}  // namespace switchboard::net
