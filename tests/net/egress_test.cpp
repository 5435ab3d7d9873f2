// Egress settings as pure logic: proxy URLs, the proxy for a URL under HTTPS_PROXY/NO_PROXY (with
// curl's semantics), and the environment reading.
#include "net/egress.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>

namespace switchboard::net {
namespace {

TEST(ProxyUrl, ParsesHostPortAndDecodesCredentials) {
  auto p = parse_proxy_url("http://us%40er:p%3Ass%25@Proxy.Corp:3128/");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->host, "proxy.corp");
  EXPECT_EQ(p->port, "3128");
  EXPECT_EQ(p->user, "us@er");
  EXPECT_EQ(p->password, "p:ss%");
  EXPECT_TRUE(p->has_credentials);

  auto v6 = parse_proxy_url("http://[::1]:8080");
  ASSERT_TRUE(v6.ok()) << v6.status().message();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, "8080");
  EXPECT_FALSE(v6->has_credentials);
  EXPECT_EQ(proxy_authorization(*v6), "");
}

TEST(ProxyUrl, AuthorizationIsBasicOfTheDecodedPair) {
  // RFC 7617's example.
  auto p = parse_proxy_url("http://Aladdin:open%20sesame@proxy:3128");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(proxy_authorization(*p), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
}

TEST(ProxyUrl, RefusesWhatTheClientCannotUseWithAClearMessage) {
  auto message = [](std::string_view url) {
    Status st = check_proxy_url(url);
    EXPECT_FALSE(st.ok()) << url;
    return st.message();
  };
  EXPECT_TRUE(check_proxy_url("http://proxy:3128").ok());
  EXPECT_TRUE(check_proxy_url("HTTP://10.0.0.1:80").ok());
  EXPECT_NE(message("https://proxy:3128").find("only http://"), std::string::npos);
  EXPECT_NE(message("socks5://proxy:1080").find("socks5"), std::string::npos);
  EXPECT_NE(message("proxy:3128").find("no scheme"), std::string::npos);
  EXPECT_NE(message("http://proxy").find("no port"), std::string::npos);
  EXPECT_NE(message("http://:3128").find("no host"), std::string::npos);
  EXPECT_NE(message("http://proxy:70000").find("70000"), std::string::npos);
  EXPECT_NE(message("http://proxy:3128/path").find("path"), std::string::npos);
  EXPECT_NE(message("http://pro xy:3128").find("space"), std::string::npos);
  EXPECT_NE(message("http://[::1:3128").find("["), std::string::npos);
  // A bad escape is reported without echoing the secret.
  const std::string m = message("http://user:s3cr%zzet@proxy:3128");
  EXPECT_NE(m.find("%-escape"), std::string::npos);
  EXPECT_EQ(m.find("s3cr"), std::string::npos);
}

ProxyEnv env(std::string no_proxy) {
  return ProxyEnv{"http://plain-proxy:3128", "http://tls-proxy:3128", std::move(no_proxy)};
}

TEST(ProxyFor, PicksTheProxyOfTheScheme) {
  EXPECT_EQ(proxy_for("https://api.openai.com/v1/chat", env("")), "http://tls-proxy:3128");
  EXPECT_EQ(proxy_for("http://api.openai.com/v1/chat", env("")), "http://plain-proxy:3128");
  EXPECT_EQ(proxy_for("HTTPS://API.openai.com", env("")), "http://tls-proxy:3128");
  EXPECT_EQ(proxy_for("https://api.openai.com", ProxyEnv{"http://p:1", "", ""}), "");
  EXPECT_EQ(proxy_for("ftp://x/", env("")), "");
  // A value without a scheme is an http proxy, as curl reads it.
  EXPECT_EQ(proxy_for("https://a.example", ProxyEnv{"", " corp-proxy:8080 ", ""}),
            "http://corp-proxy:8080");
}

bool direct(std::string_view url, std::string no_proxy) {
  return proxy_for(url, env(std::move(no_proxy))).empty();
}

TEST(ProxyFor, NoProxyMatchesDomainsAndTheirSubdomains) {
  for (const char* entry : {"example.com", ".example.com", "*.example.com", "EXAMPLE.com."}) {
    SCOPED_TRACE(entry);
    EXPECT_TRUE(direct("https://example.com/x", entry));
    EXPECT_TRUE(direct("https://api.example.com/x", entry));
    EXPECT_TRUE(direct("https://a.b.Example.COM./x", entry));
    EXPECT_FALSE(direct("https://badexample.com/x", entry));
    EXPECT_FALSE(direct("https://example.com.evil/x", entry));
  }
  EXPECT_TRUE(direct("https://anything.at.all/", "*"));
  EXPECT_TRUE(direct("https://anything.at.all/", " foo.com , * "));
  EXPECT_FALSE(direct("https://anything.at.all/", "*.*"));  // "*" only alone
  // Trimmed entries, empty ones skipped.
  EXPECT_TRUE(direct("https://svc.internal/", " foo.com ,, \tinternal\t,bar"));
  EXPECT_FALSE(direct("https://svc.internal/", ""));
  // User info in a URL is not its host.
  EXPECT_FALSE(direct("https://example.com@other.net/", "example.com"));
}

TEST(ProxyFor, NoProxyEntryPortRestrictsIt) {
  EXPECT_TRUE(direct("https://example.com:8443/", "example.com:8443"));
  EXPECT_FALSE(direct("https://example.com/", "example.com:8443"));  // 443
  EXPECT_TRUE(direct("https://example.com/", "example.com:443"));
  EXPECT_TRUE(direct("http://example.com/", "example.com:80"));
  EXPECT_TRUE(direct("http://10.1.2.3:8080/", "10.1.2.3:8080"));
  EXPECT_FALSE(direct("http://10.1.2.3:8081/", "10.1.2.3:8080"));
  EXPECT_TRUE(direct("http://[::1]:8080/", "[::1]:8080"));
  EXPECT_FALSE(direct("http://[::1]:8081/", "[::1]:8080"));
}

TEST(ProxyFor, NoProxyMatchesIpLiteralsExactlyOrByCidr) {
  EXPECT_TRUE(direct("https://10.1.2.3/", "10.1.2.3"));
  EXPECT_FALSE(direct("https://10.1.2.4/", "10.1.2.3"));
  // Not a name suffix: "0.1" is no domain of 10.0.0.1.
  EXPECT_FALSE(direct("https://10.0.0.1/", "0.1"));
  EXPECT_TRUE(direct("https://10.200.3.4/", "10.0.0.0/8"));
  EXPECT_FALSE(direct("https://11.0.0.1/", "10.0.0.0/8"));
  EXPECT_TRUE(direct("https://192.168.1.77/", "192.168.1.64/26"));
  EXPECT_FALSE(direct("https://192.168.1.128/", "192.168.1.64/26"));
  EXPECT_TRUE(direct("https://1.2.3.4/", "0.0.0.0/0"));
  EXPECT_TRUE(direct("https://[::1]/", "::1"));
  EXPECT_TRUE(direct("https://[::1]/", "::1/128"));
  EXPECT_FALSE(direct("https://[::2]/", "::1/128"));
  EXPECT_TRUE(direct("https://[fd12:3456::9]/", "fd00::/8"));
  EXPECT_FALSE(direct("https://[fe80::1]/", "fd00::/8"));
  // Families do not mix, bad prefixes match nothing, IP entries match no name.
  EXPECT_FALSE(direct("https://[::ffff:10.0.0.1]/", "10.0.0.0/8"));
  EXPECT_FALSE(direct("https://10.0.0.1/", "10.0.0.0/33"));
  EXPECT_FALSE(direct("https://localhost/", "127.0.0.1"));
  EXPECT_TRUE(no_proxy_matches("[::1]", "443", "::1"));
}

// Sets (or, with nullopt, unsets) variables for one test; restores them after.
class ScopedEnv {
 public:
  void set(const char* name, std::optional<std::string> value) {
    const char* old = std::getenv(name);
    saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
    apply(name, value);
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) apply(it->first, it->second);
  }

 private:
  static void apply(const char* name, const std::optional<std::string>& v) {
    if (v) {
      ::setenv(name, v->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  std::vector<std::pair<const char*, std::optional<std::string>>> saved_;
};

TEST(ProxyEnvTest, LowercaseWinsAndUppercaseIsTheFallback) {
  ScopedEnv e;
  e.set("https_proxy", "http://lower:1");
  e.set("HTTPS_PROXY", "http://upper:1");
  e.set("http_proxy", std::nullopt);
  e.set("HTTP_PROXY", "http://upper-plain:2");
  e.set("no_proxy", "");  // empty counts as unset
  e.set("NO_PROXY", "internal");
  const ProxyEnv env = ProxyEnv::from_environment();
  EXPECT_EQ(env.https_proxy, "http://lower:1");
  EXPECT_EQ(env.http_proxy, "http://upper-plain:2");
  EXPECT_EQ(env.no_proxy, "internal");
  EXPECT_EQ(proxy_for("https://x.internal/", env), "");
  EXPECT_EQ(proxy_for("https://x.external/", env), "http://lower:1");
}

TEST(ProxyEnvTest, NothingSetMeansDirect) {
  ScopedEnv e;
  for (const char* n :
       {"https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"})
    e.set(n, std::nullopt);
  const ProxyEnv env = ProxyEnv::from_environment();
  EXPECT_EQ(proxy_for("https://api.openai.com/v1", env), "");
  EXPECT_EQ(proxy_for("http://api.openai.com/v1", env), "");
}

TEST(TlsOptionsCheck, CertificateAndKeyGoTogether) {
  Status a = check_tls_options({.client_cert = "/nonexistent/cert.pem"});
  EXPECT_EQ(a.message(), "tls.client_cert needs tls.client_key");
  Status b = check_tls_options({.client_key = "/nonexistent/key.pem"});
  EXPECT_EQ(b.message(), "tls.client_key needs tls.client_cert");
  EXPECT_TRUE(check_tls_options({}).ok());
}

}  // namespace
}  // namespace switchboard::net
