// Provider egress through a running gateway (issue 28): a forward proxy that sees the upstream
// traffic (a CONNECT tunnel for https, absolute form for http), the environment's HTTPS_PROXY
// with loopback servers exempt, a corporate CA, mutual TLS, and TLS profiles refused at start.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>

#include "egress_fixtures.h"
#include "gateway_fixture.h"

namespace switchboard::gwtest {
namespace {

using testsupport::certs;
using testsupport::Proxy;
using testsupport::TlsUpstream;

// Sets (or clears) an environment variable for one test, restoring it after.
class EnvVar {
 public:
  EnvVar(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~EnvVar() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string https_provider(const std::string& host, int port, const std::string& extra) {
  return "providers:\n  up:\n    kind: openai\n    base_url: https://" + host + ":" +
         std::to_string(port) + "/v1\n    keys: [sk-egress-secret-1]\n" + extra +
         "models:\n  m: { provider: up, upstream: up-model }\n";
}

bool has_line(const std::vector<std::string>& lines, const std::string& line) {
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

class ProviderEgressTest : public GatewayTest {};

TEST_F(ProviderEgressTest, HttpsGoesThroughTheConfiguredProxyTunnelWithTheCorporateCa) {
  TlsUpstream up(false, chat_completion_answer("through the tunnel", true));
  Proxy proxy;
  start_gateway(
      https_provider("127.0.0.1", up.port(),
                     "    proxy: http://ops:s3cret@127.0.0.1:" + std::to_string(proxy.port()) +
                         "\n    tls: { ca_file: " + certs().ca + " }\n"));
  auto r = chat(chat_body("m"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("through the tunnel"), std::string::npos);
  const auto heads = proxy.heads();
  ASSERT_EQ(heads.size(), 1u);
  const std::string target = "127.0.0.1:" + std::to_string(up.port());
  EXPECT_EQ(heads[0].rfind("CONNECT " + target + " HTTP/1.1\r\n", 0), 0u) << heads[0];
  EXPECT_NE(heads[0].find("\r\nProxy-Authorization: Basic b3BzOnMzY3JldA==\r\n"), std::string::npos)
      << heads[0];
  // The key travels inside the tunnel, never in the proxy's view.
  EXPECT_EQ(heads[0].find("sk-egress-secret-1"), std::string::npos);
  EXPECT_TRUE(has_line(up.request_lines(), "POST /v1/chat/completions HTTP/1.1"));

  // The Responses API takes the same path.
  auto resp = post(port_, "/v1/responses", R"({"model":"m","input":"hi"})");
  ASSERT_EQ(resp.status, 200) << resp.body;
  EXPECT_NE(resp.body.find("through the tunnel"), std::string::npos);
  EXPECT_EQ(up.request_lines().size(), 2u);
}

TEST_F(ProviderEgressTest, WithoutTheCorporateCaTheUpstreamIsNotTrusted) {
  TlsUpstream up(false, chat_completion_answer("never seen", true));
  Proxy proxy;
  start_gateway(
      "retry: { max_attempts: 1 }\n" +
      https_provider("127.0.0.1", up.port(),
                     "    proxy: http://127.0.0.1:" + std::to_string(proxy.port()) + "\n"));
  auto r = chat(chat_body("m"));
  EXPECT_GE(r.status, 500) << r.body;
  EXPECT_EQ(proxy.heads().size(), 1u);  // the tunnel was asked for
  EXPECT_TRUE(up.request_lines().empty());
  EXPECT_EQ(r.body.find("never seen"), std::string::npos);
}

TEST_F(ProviderEgressTest, HttpGoesToTheProxyInAbsoluteForm) {
  FakeUpstream up(chat_completion_answer("forwarded", true));
  Proxy proxy;
  proxy.forward_plain = true;
  start_gateway("providers:\n" +
                provider_at("up", up.port(), "[sk-egress-secret-1]",
                            "proxy: http://127.0.0.1:" + std::to_string(proxy.port())) +
                "models:\n  m: { provider: up, upstream: up-model }\n");
  auto r = chat(chat_body("m"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("forwarded"), std::string::npos);
  ASSERT_EQ(proxy.request_lines().size(), 1u);
  EXPECT_EQ(proxy.request_lines()[0],
            "POST http://127.0.0.1:" + std::to_string(up.port()) + "/v1/chat/completions HTTP/1.1");
  EXPECT_EQ(up.last_request().rfind("POST /v1/chat/completions HTTP/1.1\r\n", 0), 0u);
}

TEST_F(ProviderEgressTest, TheEnvironmentsProxyServesRemoteHostsButNotThisMachine) {
  TlsUpstream up(false, chat_completion_answer("via the environment", true));
  Proxy proxy;
  EnvVar https_proxy("HTTPS_PROXY", "http://127.0.0.1:" + std::to_string(proxy.port()));
  EnvVar no_proxy("NO_PROXY", "internal.corp");
  // upstream.test resolves nowhere: only the proxy knows it, so a 200 proves the tunnel.
  start_gateway(
      https_provider("upstream.test", up.port(), "    tls: { ca_file: " + certs().ca + " }\n"));
  auto r = chat(chat_body("m"));
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(proxy.request_lines().size(), 1u);
  EXPECT_EQ(proxy.request_lines()[0],
            "CONNECT upstream.test:" + std::to_string(up.port()) + " HTTP/1.1");
  gw_->stop(Millis(0));
  gw_.reset();

  // A local model server is reached directly whatever the environment says.
  start_gateway(
      https_provider("127.0.0.1", up.port(), "    tls: { ca_file: " + certs().ca + " }\n"));
  auto local = chat(chat_body("m"));
  ASSERT_EQ(local.status, 200) << local.body;
  EXPECT_EQ(proxy.request_lines().size(), 1u);  // nothing more
  EXPECT_EQ(up.request_lines().size(), 2u);

  // `proxy: none` opts a remote provider out of the environment's proxy.
  gw_->stop(Millis(0));
  gw_.reset();
  start_gateway("retry: { max_attempts: 1 }\n" +
                https_provider("upstream.test", up.port(),
                               "    proxy: none\n    tls: { ca_file: " + certs().ca + " }\n"));
  auto direct = chat(chat_body("m"));
  EXPECT_GE(direct.status, 500) << direct.body;  // upstream.test does not resolve
  EXPECT_EQ(proxy.request_lines().size(), 1u);
}

TEST_F(ProviderEgressTest, MutualTlsPresentsTheConfiguredClientCertificate) {
  TlsUpstream up(/*require_client_cert=*/true, chat_completion_answer("mutual", true));
  start_gateway(https_provider("127.0.0.1", up.port(),
                               "    tls: { ca_file: " + certs().ca +
                                   ", client_cert: " + certs().client_a +
                                   ", client_key: " + certs().client_a_key + " }\n"));
  auto r = chat(chat_body("m"));
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(up.client_names().size(), 1u);
  EXPECT_EQ(up.client_names()[0], "client-a");
}

TEST_F(ProviderEgressTest, ABadTlsProfileOrProxyIsRefusedAtStartWithTheProviderNamed) {
  struct Case {
    std::string extra, expect;
  };
  const std::vector<Case> cases = {
      {"    tls: { client_cert: " + certs().client_a + ", client_key: " + certs().other_key +
           " }\n",
       "client_key"},
      {"    tls: { ca_file: " + certs().client_a_key + " }\n", "ca_file"},
  };
  for (const auto& c : cases) {
    std::string yaml = "state: { path: " + (dir_ / "state.db").string() + " }\n" +
                       https_provider("127.0.0.1", 1, c.extra);
    auto load = load_config_string(yaml, "test.yaml", Environment::from_map({}));
    ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
    auto config = std::make_shared<const Config>(std::move(*load.config));
    gateway::GatewayOptions options;
    options.listen = "127.0.0.1:0";
    auto gw = gateway::Gateway::create(config, options);
    ASSERT_FALSE(gw.ok()) << c.extra;
    EXPECT_NE(gw.status().message().find("provider up"), std::string::npos)
        << gw.status().message();
    EXPECT_NE(gw.status().message().find(c.expect), std::string::npos) << gw.status().message();
  }
  // An environment proxy the gateway cannot use is an error too, not a silent direct call.
  EnvVar https_proxy("HTTPS_PROXY", "socks5://127.0.0.1:1080");
  auto load = load_config_string(https_provider("upstream.test", 1, ""), "test.yaml",
                                 Environment::from_map({}));
  ASSERT_TRUE(load.ok());
  gateway::GatewayOptions options;
  options.listen = "127.0.0.1:0";
  auto gw =
      gateway::Gateway::create(std::make_shared<const Config>(std::move(*load.config)), options);
  ASSERT_FALSE(gw.ok());
  EXPECT_NE(gw.status().message().find("environment"), std::string::npos) << gw.status().message();
}

}  // namespace
}  // namespace switchboard::gwtest
