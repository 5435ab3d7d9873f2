// Anthropic's Messages API through a running gateway (issue 23): the same routing, keys and
// headers as chat completions, answers and streams in Anthropic's shape over an OpenAI-format
// upstream, errors with the types Anthropic's SDKs map, and an Anthropic upstream behind it.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gateway_fixture.h"

namespace switchboard::gwtest {
namespace {

constexpr const char* kKey = "sk-client-messages-0001";

std::string messages_body(const std::string& model, bool stream = false,
                          const std::string& extra = {}) {
  std::string b = "{\"model\":\"" + model +
                  "\",\"max_tokens\":200,\"system\":[{\"type\":\"text\",\"text\":\"Be brief.\"}],"
                  "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
                  "\"hello there\"}]}]";
  if (stream) b += ",\"stream\":true";
  if (!extra.empty()) b += "," + extra;
  return b + "}";
}

// The Anthropic error shape, with its type.
std::string anthropic_error_type(const std::string& body) {
  auto v = parse_json(body);
  if (!v.is_object() || !v.as_object().contains("type") || v.as_object().at("type") != "error")
    return "not an Anthropic error: " + body;
  return std::string(v.as_object().at("error").as_object().at("type").as_string());
}

class MessagesApiTest : public GatewayTest {
 protected:
  void start_openai_upstream() {
    auto& m = add_mock();
    start_gateway("auth: { gateway_keys: [{ key: " + std::string(kKey) +
                  ", name: team, routes: [auto, cheap] }] }\n"
                  "providers:\n" +
                  provider("up", m) +
                  "models:\n"
                  "  cheap: { provider: up, cost: { input_per_mtok: 1, output_per_mtok: 2 } }\n"
                  "  other: { provider: up }\n"
                  "routes:\n  auto: { strategy: ordered, layers: [[cheap]] }\n");
  }
  HttpResult messages(const std::string& body, const Headers& headers = {{"x-api-key", kKey}}) {
    return post(port_, "/v1/messages", body, headers);
  }
};

TEST_F(MessagesApiTest, AMessageOverAnOpenAiUpstreamComesBackInAnthropicsShape) {
  start_openai_upstream();
  auto r = messages(messages_body("auto"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-model"), "cheap");
  EXPECT_EQ(r.header("x-switchboard-provider"), "up");
  EXPECT_FALSE(r.header("x-switchboard-request-id").empty());
  auto v = parse_json(r.body);
  ASSERT_TRUE(v.is_object()) << r.body;
  const auto& o = v.as_object();
  EXPECT_EQ(o.at("type"), "message");
  EXPECT_EQ(o.at("role"), "assistant");
  EXPECT_EQ(o.at("model"), "auto");
  EXPECT_EQ(std::string(o.at("id").as_string()).rfind("msg_", 0), 0u);
  const auto& content = o.at("content").as_array();
  ASSERT_EQ(content.size(), 1u);
  EXPECT_EQ(content[0].as_object().at("type"), "text");
  EXPECT_FALSE(content[0].as_object().at("text").as_string().empty());
  EXPECT_EQ(o.at("stop_reason"), "end_turn");
  EXPECT_GT(o.at("usage").as_object().at("output_tokens").to_number<int64_t>(), 0);
  EXPECT_GT(o.at("usage").as_object().at("input_tokens").to_number<int64_t>(), 0);
  // The key may come as a Bearer token too.
  r = messages(messages_body("auto"), {{"Authorization", std::string("Bearer ") + kKey}});
  EXPECT_EQ(r.status, 200) << r.body;
  // The request was counted like a chat completion: the provider's usage is in the metrics.
  EXPECT_NE(get(port_, "/metrics").body.find("model=\"cheap\""), std::string::npos);
}

TEST_F(MessagesApiTest, AStreamIsAnthropicsEventSequence) {
  start_openai_upstream();
  auto r = messages(messages_body("auto", true));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.header("content-type").find("text/event-stream"), std::string::npos);
  std::vector<std::string> names;
  std::string text;
  std::istringstream lines(r.body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("event: ", 0) == 0) names.push_back(line.substr(7));
    if (line.rfind("data: ", 0) != 0) continue;
    auto v = parse_json(line.substr(6));
    ASSERT_TRUE(v.is_object()) << line;
    const auto& o = v.as_object();
    if (o.at("type") == "content_block_delta")
      text += std::string(o.at("delta").as_object().at("text").as_string());
    if (o.at("type") == "message_delta") {
      EXPECT_EQ(o.at("delta").as_object().at("stop_reason"), "end_turn");
      EXPECT_GT(o.at("usage").as_object().at("output_tokens").to_number<int64_t>(), 0);
    }
  }
  ASSERT_GE(names.size(), 5u) << r.body;
  EXPECT_EQ(names.front(), "message_start");
  EXPECT_EQ(names[1], "ping");  // as Anthropic's own streams begin
  EXPECT_EQ(names[2], "content_block_start");
  EXPECT_EQ(names[names.size() - 3], "content_block_stop");
  EXPECT_EQ(names[names.size() - 2], "message_delta");
  EXPECT_EQ(names.back(), "message_stop");
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);  // OpenAI's marker is not Anthropic's
}

TEST_F(MessagesApiTest, ErrorsHaveAnthropicsTypesAndStatuses) {
  start_openai_upstream();
  auto r = messages(messages_body("auto"), {});
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(anthropic_error_type(r.body), "authentication_error");
  r = messages(messages_body("auto"), {{"x-api-key", "sk-wrong"}});
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(anthropic_error_type(r.body), "authentication_error");
  r = messages(messages_body("nope"));
  EXPECT_EQ(r.status, 403);  // the key's routes come first: it may not use an unknown name
  EXPECT_EQ(anthropic_error_type(r.body), "permission_error");
  r = messages(messages_body("other"));
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(anthropic_error_type(r.body), "permission_error");
  r = messages(R"({"model":"auto","messages":[{"role":"user","content":"hi"}]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(anthropic_error_type(r.body), "invalid_request_error");
  EXPECT_NE(r.body.find("max_tokens"), std::string::npos) << r.body;
  r = messages("{not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(anthropic_error_type(r.body), "invalid_request_error");
}

TEST_F(MessagesApiTest, UnknownModelsAre404AndCountTokensEstimates) {
  auto& m = add_mock();
  start_gateway("providers:\n" + provider("up", m) + "models:\n  cheap: { provider: up }\n");
  auto r = post(port_, "/v1/messages", messages_body("nope"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(anthropic_error_type(r.body), "not_found_error");
  r = post(port_, "/v1/messages/count_tokens",
           R"({"model":"cheap","messages":[{"role":"user","content":")" + std::string(400, 'x') +
               R"("}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  const int64_t n = parse_json(r.body).as_object().at("input_tokens").to_number<int64_t>();
  EXPECT_GE(n, 100);  // ~4 bytes a token
  EXPECT_LE(n, 200);
  r = post(port_, "/v1/messages/count_tokens", R"({"model":"nope","messages":[]})");
  EXPECT_EQ(r.status, 400);
  r = post(port_, "/v1/messages/count_tokens",
           R"({"model":"nope","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(m.stats().requests, 0u);
  // Everything else is a 404 that says what this gateway serves.
  r = post(port_, "/v1/completions", "{}");
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("/v1/messages"), std::string::npos) << r.body;
}

// Behind it an Anthropic provider: the client's body, version and beta flags reach it as they
// came, and its answer comes back as it came (nothing lost to a translation and back).
TEST_F(MessagesApiTest, AnAnthropicUpstreamGetsTheClientsHeadersAndItsAnswerComesBack) {
  const std::string json = read_fixture("anthropic_response_tool_use.json");
  ASSERT_FALSE(json.empty());
  FakeUpstream fake("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                    std::to_string(json.size()) + "\r\n\r\n" + json);
  start_gateway("providers:\n  ant:\n    kind: anthropic\n    base_url: http://127.0.0.1:" +
                std::to_string(fake.port()) +
                "/v1\n    keys: [sk-ant-test-1]\n"
                "models:\n  claude: { provider: ant, upstream: claude-sonnet-4-20250514 }\n");
  auto r =
      post(port_, "/v1/messages",
           messages_body("claude", false,
                         R"("tools":[{"name":"get_weather","input_schema":{"type":"object"}}])"),
           {{"anthropic-version", "2023-06-01"}, {"anthropic-beta", "tools-2024-04-04"}});
  ASSERT_EQ(r.status, 200) << r.body;
  std::string up = fake.last_request();
  EXPECT_NE(lower(up).find("anthropic-beta: tools-2024-04-04"), std::string::npos) << up;
  // The attack: the client's own key must not reach the provider, and an oversized beta header
  // is not passed on (the provider gets its configured key only).
  auto hostile = post(
      port_, "/v1/messages", messages_body("claude"),
      {{"x-api-key", "sk-client-secret-must-stay"}, {"anthropic-beta", std::string(2000, 'b')}});
  ASSERT_EQ(hostile.status, 200) << hostile.body;
  const std::string up2 = fake.last_request();
  EXPECT_EQ(up2.find("sk-client-secret-must-stay"), std::string::npos) << up2;
  EXPECT_EQ(lower(up2).find("anthropic-beta"), std::string::npos) << up2.substr(0, 600);
  EXPECT_NE(up2.find("sk-ant-test-1"), std::string::npos);
  EXPECT_NE(lower(up).find("anthropic-version: 2023-06-01"), std::string::npos) << up;
  // The client's own body went up, only the model renamed: its system blocks are still blocks.
  auto sent = parse_json(up.substr(up.find("\r\n\r\n") + 4));
  ASSERT_TRUE(sent.is_object()) << up;
  EXPECT_EQ(sent.as_object().at("model"), "claude-sonnet-4-20250514");
  EXPECT_TRUE(sent.as_object().at("system").is_array()) << up;
  EXPECT_EQ(sent.as_object().at("tools").as_array()[0].as_object().at("name"), "get_weather");
  // The provider's answer as it came (two text blocks stay two, its usage with the cache).
  EXPECT_EQ(parse_json(r.body), parse_json(json)) << r.body;
  EXPECT_EQ(r.header("x-switchboard-provider"), "ant");
}

// A stream from an Anthropic provider reaches an Anthropic client as it came: every event (pings
// included), in order, named as the provider named them.
TEST_F(MessagesApiTest, AnAnthropicProvidersStreamIsRelayedAsItCame) {
  const std::string sse = read_fixture("anthropic_stream.sse");
  ASSERT_FALSE(sse.empty());
  FakeUpstream fake("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " +
                    std::to_string(sse.size()) + "\r\n\r\n" + sse);
  start_gateway("providers:\n  ant:\n    kind: anthropic\n    base_url: http://127.0.0.1:" +
                std::to_string(fake.port()) +
                "/v1\n    keys: [sk-ant-test-1]\n"
                "models:\n  claude: { provider: ant, upstream: claude-sonnet-4-20250514 }\n");
  auto r = post(port_, "/v1/messages", messages_body("claude", true));
  ASSERT_EQ(r.status, 200) << r.body;
  auto names = [](const std::string& body) {
    std::vector<std::string> out;
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);)
      if (line.rfind("event:", 0) == 0) out.push_back(line.substr(line.find_first_not_of(' ', 6)));
    return out;
  };
  const auto want = names(sse), got = names(r.body);
  EXPECT_EQ(got, want) << r.body;
  EXPECT_NE(r.body.find("toolu_01T1x1fJ34qAmk2tNTrN7Up6"), std::string::npos);
  EXPECT_NE(r.body.find("\"input_tokens\":472"), std::string::npos) << r.body;
}

}  // namespace
}  // namespace switchboard::gwtest
