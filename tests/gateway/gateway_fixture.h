// Fixture for the gateway integration tests: MockProvider upstreams and a Gateway on 127.0.0.1
// with ephemeral ports, state in a fresh temporary directory.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/log.h"
#include "gateway/gateway.h"
#include "gateway/mock_provider.h"
#include "test_http.h"

namespace switchboard::gwtest {

inline boost::json::value parse_json(const std::string& s) {
  boost::system::error_code ec;
  auto v = boost::json::parse(s, ec);
  if (ec) return boost::json::value();
  return v;
}

// The OpenAI error shape {"error":{"message","type","code"}}.
inline ::testing::AssertionResult is_openai_error(const std::string& body) {
  auto v = parse_json(body);
  if (!v.is_object()) return ::testing::AssertionFailure() << "not a JSON object: " << body;
  auto* e = v.as_object().if_contains("error");
  if (!e || !e->is_object()) return ::testing::AssertionFailure() << "no 'error' object: " << body;
  const auto& eo = e->as_object();
  for (const char* f : {"message", "type", "code"}) {
    auto* x = eo.if_contains(f);
    if (!x || !x->is_string())
      return ::testing::AssertionFailure() << "error." << f << " missing or not a string: " << body;
  }
  if (eo.at("message").as_string().empty())
    return ::testing::AssertionFailure() << "empty error message: " << body;
  return ::testing::AssertionSuccess();
}

inline std::string error_message(const std::string& body) {
  auto v = parse_json(body);
  if (!v.is_object()) return {};
  auto* e = v.as_object().if_contains("error");
  if (!e || !e->is_object()) return {};
  auto* m = e->as_object().if_contains("message");
  return m && m->is_string() ? std::string(m->as_string()) : std::string();
}

inline std::string chat_body(const std::string& model, bool stream = false,
                             const std::string& extra = {}) {
  std::string b =
      "{\"model\":\"" + model + "\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]";
  if (stream) b += ",\"stream\":true";
  if (!extra.empty()) b += "," + extra;
  return b + "}";
}

#ifdef UPSTREAM_FIXTURES
// A recorded upstream answer from tests/upstream/fixtures.
inline std::string read_fixture(const std::string& name) {
  std::ifstream in(std::string(UPSTREAM_FIXTURES) + "/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
#endif

// The concatenated delta contents of a relayed SSE stream.
inline std::string stream_text(const HttpResult& r) {
  std::string text;
  for (const auto& d : r.sse_data()) {
    auto v = parse_json(d);
    if (!v.is_object()) continue;
    auto* ch = v.as_object().if_contains("choices");
    if (!ch || !ch->is_array()) continue;
    for (const auto& c : ch->as_array()) {
      if (!c.is_object()) continue;
      auto* delta = c.as_object().if_contains("delta");
      if (!delta || !delta->is_object()) continue;
      auto* content = delta->as_object().if_contains("content");
      if (content && content->is_string()) text += content->as_string();
    }
  }
  return text;
}

// A `kind: openai` provider entry (under `providers:`) pointing at 127.0.0.1:port.
inline std::string provider_at(const std::string& name, uint16_t port,
                               const std::string& keys = "[sk-test-secret-1]",
                               const std::string& extra = {}) {
  std::string s = "  " + name +
                  ":\n    kind: openai\n    base_url: http://127.0.0.1:" + std::to_string(port) +
                  "/v1\n    keys: " + keys + "\n";
  if (!extra.empty()) s += "    " + extra + "\n";
  return s;
}

// A whole HTTP answer of an OpenAI-format upstream: a chat completion saying `text` (model
// up-model, 11 + 3 tokens), on a connection that closes after it unless `keep_alive`.
inline std::string chat_completion_answer(const std::string& text, bool keep_alive = false) {
  const std::string body =
      R"({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"up-model",)"
      R"("choices":[{"index":0,"message":{"role":"assistant","content":")" +
      text +
      R"("},"finish_reason":"stop"}],)"
      R"("usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}})";
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + (keep_alive ? "" : "\r\nConnection: close") + "\r\n\r\n" +
         body;
}

// The same, pointing at `mock`.
inline std::string provider(const std::string& name, const gateway::MockProvider& mock,
                            const std::string& keys = "[sk-test-secret-1]",
                            const std::string& extra = {}) {
  return provider_at(name, mock.port(), keys, extra);
}

class GatewayTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { log::init("error", log::Format::kText); }

  void SetUp() override {
    char tmpl[] = "/tmp/switchboard-gwtest-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }

  void TearDown() override {
    if (gw_) gw_->stop(Millis(0));
    gw_.reset();
    for (auto& m : mocks_) m->stop();
    mocks_.clear();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  bool access_log_ = false;  // the gateway's access log (log.access_log), before start_gateway

  gateway::MockProvider& add_mock(MockScenario scenario = {}) {
    auto m = std::make_unique<gateway::MockProvider>(std::move(scenario));
    auto st = m->start("127.0.0.1:0", 1);
    EXPECT_TRUE(st.ok()) << st.message();
    mocks_.push_back(std::move(m));
    return *mocks_.back();
  }

  // Loads `yaml` (with state and log sections added) and starts a gateway on an ephemeral port.
  void start_gateway(const std::string& yaml) {
    std::string full =
        "state: { path: " + (dir_ / "state.db").string() +
        ", batch_ms: 5 }\nlog: { level: error, access_log: " + (access_log_ ? "true" : "false") +
        " }\n" + yaml;
    auto load = load_config_string(full, "test.yaml", Environment::from_map({}));
    ASSERT_TRUE(load.ok()) << (load.errors.empty() ? std::string("no config")
                                                   : load.errors.front().to_string())
                           << "\n"
                           << full;
    config_ = std::make_shared<const Config>(std::move(*load.config));
    gateway::GatewayOptions options;
    options.listen = "127.0.0.1:0";
    auto gw = gateway::Gateway::create(config_, options);
    ASSERT_TRUE(gw.ok()) << gw.status().message();
    gw_ = std::move(gw.value());
    auto st = gw_->start();
    ASSERT_TRUE(st.ok()) << st.message();
    port_ = gw_->port();
    ASSERT_NE(port_, 0);
  }

  HttpResult chat(const std::string& body, const Headers& headers = {}) {
    return post(port_, "/v1/chat/completions", body, headers);
  }

  // One key's entry in GET /admin/keys, or null.
  boost::json::value admin_key(const std::string& id) {
    auto r = get(port_, "/admin/keys");
    if (r.status != 200) return {};
    auto v = parse_json(r.body);
    if (!v.is_object()) return {};
    for (const auto& k : v.as_object().at("keys").as_array()) {
      if (k.as_object().at("id").as_string() == id) return k;
    }
    return {};
  }

  int64_t key_in_flight(const std::string& id) {
    auto k = admin_key(id);
    if (!k.is_object()) return -1;
    return k.as_object().at("in_flight").to_number<int64_t>();
  }

  std::filesystem::path dir_;
  std::vector<std::unique_ptr<gateway::MockProvider>> mocks_;
  std::shared_ptr<const Config> config_;
  std::unique_ptr<gateway::Gateway> gw_;
  uint16_t port_ = 0;
};

}  // namespace switchboard::gwtest
