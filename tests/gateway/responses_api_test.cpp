// OpenAI's Responses API through a running gateway (issue 28): translated over chat-completions
// upstreams (whole and streamed), passed through to providers that have it, continued with
// previous_response_id (only by the client key that made it); GET /v1/models/{id}; and the
// providers teams have: Azure OpenAI, keyless local servers, per-provider headers.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gateway_fixture.h"

namespace switchboard::gwtest {
namespace {

constexpr const char* kTeamKey = "sk-client-responses-team";
constexpr const char* kOtherKey = "sk-client-responses-other";

Headers as(const char* key) {
  return {{"authorization", std::string("Bearer ") + key}};
}

// The events of a Responses stream: (event name, parsed data).
std::vector<std::pair<std::string, boost::json::value>> response_events(const std::string& body) {
  std::vector<std::pair<std::string, boost::json::value>> out;
  std::string event;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t eol = body.find('\n', pos);
    std::string line = body.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
    pos = eol == std::string::npos ? body.size() : eol + 1;
    if (line.rfind("event: ", 0) == 0) event = line.substr(7);
    if (line.rfind("data: ", 0) == 0) out.emplace_back(event, parse_json(line.substr(6)));
  }
  return out;
}

std::string output_text(const boost::json::value& response) {
  std::string text;
  for (const auto& item : response.at("output").as_array())
    if (item.at("type") == "message")
      for (const auto& part : item.at("content").as_array())
        if (part.at("type") == "output_text") text += part.at("text").as_string();
  return text;
}

class ResponsesApiTest : public GatewayTest {
 protected:
  std::string keys_section() {
    return std::string("auth: { gateway_keys: [{ key: ") + kTeamKey +
           ", name: team }, { key: " + kOtherKey + ", name: other, routes: [small] }] }\n";
  }
  void start_with_mock() {
    auto& m = add_mock();
    start_gateway(keys_section() + "providers:\n" + provider("up", m) +
                  "models:\n"
                  "  big: { provider: up, upstream: mock-big }\n"
                  "  small: { provider: up, upstream: mock-small }\n"
                  "routes:\n  auto: { strategy: ordered, layers: [[big], [small]] }\n");
  }
  HttpResult responses(const std::string& body, const Headers& headers = as(kTeamKey)) {
    return post(port_, "/v1/responses", body, headers);
  }
};

TEST_F(ResponsesApiTest, AStringInputOverAChatUpstreamIsAResponseObject) {
  start_with_mock();
  auto r = responses(
      R"({"model":"auto","input":"Say hello","instructions":"Be brief","temperature":0.5})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-model"), "big");
  EXPECT_EQ(r.header("x-switchboard-provider"), "up");
  EXPECT_FALSE(r.header("x-switchboard-request-id").empty());
  auto v = parse_json(r.body);
  ASSERT_TRUE(v.is_object()) << r.body;
  EXPECT_EQ(v.at("object"), "response");
  EXPECT_EQ(v.at("status"), "completed");
  EXPECT_EQ(v.at("model"), "auto");  // as the client named it
  EXPECT_EQ(v.at("instructions"), "Be brief");
  EXPECT_EQ(v.at("temperature").as_double(), 0.5);
  EXPECT_EQ(std::string(v.at("id").as_string()), "resp_" + r.header("x-switchboard-request-id"));
  EXPECT_NE(output_text(v).find("mock-big"), std::string::npos) << r.body;
  EXPECT_GT(v.at("usage").at("input_tokens").as_int64(), 0);
  EXPECT_GT(v.at("usage").at("output_tokens").as_int64(), 0);
}

TEST_F(ResponsesApiTest, AStreamIsTheResponsesEventSequence) {
  start_with_mock();
  auto r = responses(R"({"model":"small","input":[{"role":"user","content":[
      {"type":"input_text","text":"Stream please"}]}],"stream":true})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.header("content-type").find("text/event-stream"), std::string::npos);
  auto events = response_events(r.body);
  ASSERT_GE(events.size(), 8u) << r.body;
  EXPECT_EQ(events.front().first, "response.created");
  EXPECT_EQ(events.back().first, "response.completed");
  std::string deltas;
  int64_t seq = -1;
  for (const auto& [name, data] : events) {
    ASSERT_TRUE(data.is_object()) << name;
    EXPECT_EQ(data.at("type"), boost::json::value(name));
    EXPECT_EQ(data.at("sequence_number").as_int64(), seq + 1);
    seq = data.at("sequence_number").as_int64();
    if (name == "response.output_text.delta") deltas += data.at("delta").as_string();
  }
  const auto& final_response = events.back().second.at("response");
  EXPECT_EQ(final_response.at("status"), "completed");
  EXPECT_EQ(output_text(final_response), deltas);
  EXPECT_NE(deltas.find("mock-small"), std::string::npos);
  EXPECT_GT(final_response.at("usage").at("output_tokens").as_int64(), 0);
  EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);
}

TEST_F(ResponsesApiTest, PreviousResponseIdContinuesTheConversationForItsOwnerOnly) {
  FakeUpstream up(chat_completion_answer("the capital is Paris"));
  start_gateway(keys_section() + "providers:\n" + provider_at("up", up.port()) +
                "models:\n  small: { provider: up, upstream: up-model }\n");
  auto first = responses(R"({"model":"small","input":"What is the capital of France?"})");
  ASSERT_EQ(first.status, 200) << first.body;
  const std::string id(parse_json(first.body).at("id").as_string());

  auto second = responses(R"({"model":"small","previous_response_id":")" + id +
                          R"(","input":"And of Italy?","instructions":"Answer in one word"})");
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(parse_json(second.body).at("previous_response_id"), boost::json::value(id));
  // The upstream saw the whole conversation: instructions, the first question, the first
  // answer, the new question, in that order.
  const std::string sent = up.last_request();
  const auto body = parse_json(sent.substr(sent.find("\r\n\r\n") + 4));
  const auto& msgs = body.at("messages").as_array();
  ASSERT_EQ(msgs.size(), 4u) << sent;
  EXPECT_EQ(msgs[0].at("role"), "system");
  EXPECT_EQ(msgs[1].at("content"), "What is the capital of France?");
  EXPECT_EQ(msgs[2].at("role"), "assistant");
  EXPECT_EQ(msgs[2].at("content"), "the capital is Paris");
  EXPECT_EQ(msgs[3].at("content"), "And of Italy?");

  // Another client key cannot continue (or probe) it; an unknown id is refused the same way.
  for (const auto& [key, prev] : std::vector<std::pair<const char*, std::string>>{
           {kOtherKey, id}, {kTeamKey, "resp_does_not_exist"}}) {
    auto refused = responses(
        R"({"model":"small","previous_response_id":")" + prev + R"(","input":"x"})", as(key));
    EXPECT_EQ(refused.status, 400) << refused.body;
    EXPECT_TRUE(is_openai_error(refused.body));
    EXPECT_NE(refused.body.find("previous_response_not_found"), std::string::npos);
  }
  const int before = up.requests();
  // store: false is answered and not remembered.
  auto unstored = responses(R"({"model":"small","input":"forget me","store":false})");
  ASSERT_EQ(unstored.status, 200);
  const std::string unstored_id(parse_json(unstored.body).at("id").as_string());
  auto again =
      responses(R"({"model":"small","previous_response_id":")" + unstored_id + R"(","input":"x"})");
  EXPECT_EQ(again.status, 400) << again.body;
  EXPECT_EQ(up.requests(), before + 1);  // refused before anything was sent
}

TEST_F(ResponsesApiTest, AProviderWithTheResponsesApiGetsTheRequestAsItCame) {
  const std::string native =
      R"({"id":"resp_native_1","object":"response","status":"completed","model":"up-model",)"
      R"("output":[{"type":"message","id":"msg_1","role":"assistant","status":"completed",)"
      R"("content":[{"type":"output_text","text":"native answer","annotations":[]}]}],)"
      R"("usage":{"input_tokens":7,"output_tokens":2,"total_tokens":9}})";
  FakeUpstream up("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                  std::to_string(native.size()) + "\r\nConnection: close\r\n\r\n" + native);
  start_gateway(keys_section() + "providers:\n" +
                provider_at("up", up.port(), "[sk-test-secret-1]", "responses: native") +
                "models:\n  small: { provider: up, upstream: up-model }\n");
  auto r = responses(R"({"model":"small","input":"hi","tools":[{"type":"web_search"}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse_json(r.body), parse_json(native));
  const std::string sent = up.last_request();
  EXPECT_EQ(sent.rfind("POST /v1/responses ", 0), 0u) << sent;
  const auto body = parse_json(sent.substr(sent.find("\r\n\r\n") + 4));
  EXPECT_EQ(body.at("model"), "up-model");
  EXPECT_EQ(body.at("tools").at(0).at("type"), "web_search");  // nothing translated away

  // Its id continues a conversation like the gateway's own: the upstream gets the items.
  auto next =
      responses(R"({"model":"small","previous_response_id":"resp_native_1","input":"more"})");
  ASSERT_EQ(next.status, 200) << next.body;
  const std::string sent2 = up.last_request();
  const auto body2 = parse_json(sent2.substr(sent2.find("\r\n\r\n") + 4));
  EXPECT_FALSE(body2.as_object().contains("previous_response_id"));
  const auto& input = body2.at("input").as_array();
  ASSERT_EQ(input.size(), 3u) << sent2;
  EXPECT_EQ(input[1].at("content").at(0).at("text"), "native answer");
}

TEST_F(ResponsesApiTest, ANativeStreamIsRelayedAsItCame) {
  const std::vector<std::pair<std::string, std::string>> events = {
      {"response.created",
       R"({"type":"response.created","sequence_number":0,"response":{"id":"resp_n2","status":"in_progress","output":[]}})"},
      {"response.output_text.delta",
       R"({"type":"response.output_text.delta","sequence_number":1,"item_id":"m","output_index":0,"content_index":0,"delta":"hey"})"},
      {"response.completed",
       R"({"type":"response.completed","sequence_number":2,"response":{"id":"resp_n2","status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hey"}]}],"usage":{"input_tokens":3,"output_tokens":1}}})"}};
  std::string sse =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
      "Connection: close\r\n\r\n";
  for (const auto& [name, data] : events) {
    const std::string ev = "event: " + name + "\ndata: " + data + "\n\n";
    char size[24];
    std::snprintf(size, sizeof(size), "%zx\r\n", ev.size());
    sse += size + ev + "\r\n";
  }
  sse += "0\r\n\r\n";
  FakeUpstream up(sse);
  start_gateway(keys_section() + "providers:\n" +
                provider_at("up", up.port(), "[sk-test-secret-1]", "responses: native") +
                "models:\n  small: { provider: up, upstream: up-model }\n");
  auto r = responses(R"({"model":"small","input":"hi","stream":true})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto got = response_events(r.body);
  ASSERT_EQ(got.size(), 3u) << r.body;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, events[i].first);
    EXPECT_EQ(got[i].second, parse_json(events[i].second));
  }
}

TEST_F(ResponsesApiTest, BadRequestsAreClear400s) {
  start_with_mock();
  for (const char* body : {R"({"model":"auto"})", R"({"model":"auto","input":42})", R"(not json)",
                           R"({"model":"auto","input":"x","tools":[{"type":"web_search"}]})",
                           R"({"model":"auto","input":"x","background":true})",
                           R"({"model":"auto","input":[{"type":"item_reference","id":"x"}]})"}) {
    auto r = responses(body);
    EXPECT_EQ(r.status, 400) << body << " -> " << r.body;
    EXPECT_TRUE(is_openai_error(r.body)) << r.body;
  }
  // A built-in tool needs a provider with the Responses API: none of this route's has it.
  auto builtin = responses(R"({"model":"auto","input":"x","tools":[{"type":"web_search"}]})");
  EXPECT_NE(builtin.body.find("responses_unsupported"), std::string::npos) << builtin.body;
  EXPECT_NE(builtin.body.find("web_search"), std::string::npos) << builtin.body;
  auto unknown = responses(R"({"model":"nope","input":"x"})");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  auto forbidden = responses(R"({"model":"big","input":"x"})", as(kOtherKey));
  EXPECT_EQ(forbidden.status, 403) << forbidden.body;
  auto get_it = get(port_, "/v1/responses", as(kTeamKey));
  EXPECT_EQ(get_it.status, 405);
  auto no_key = post(port_, "/v1/responses", R"({"model":"auto","input":"x"})");
  EXPECT_EQ(no_key.status, 401);
}

TEST_F(ResponsesApiTest, ModelsRetrieveSeesWhatTheKeyMayUse) {
  start_with_mock();
  auto route = get(port_, "/v1/models/auto", as(kTeamKey));
  ASSERT_EQ(route.status, 200) << route.body;
  EXPECT_EQ(parse_json(route.body),
            parse_json(R"({"id":"auto","object":"model","created":0,"owned_by":"switchboard"})"));
  auto model = get(port_, "/v1/models/big", as(kTeamKey));
  ASSERT_EQ(model.status, 200);
  EXPECT_EQ(parse_json(model.body).at("owned_by"), "up");
  auto direct = get(port_, "/v1/models/up%2Fsome-upstream", as(kTeamKey));
  ASSERT_EQ(direct.status, 200) << direct.body;
  EXPECT_EQ(parse_json(direct.body).at("id"), "up/some-upstream");
  // A restricted key sees its own models only; others are as unknown as unknown ones.
  EXPECT_EQ(get(port_, "/v1/models/small", as(kOtherKey)).status, 200);
  for (const char* path : {"/v1/models/big", "/v1/models/nope"}) {
    auto r = get(port_, path, as(kOtherKey));
    EXPECT_EQ(r.status, 404) << path;
    EXPECT_TRUE(is_openai_error(r.body));
  }
}

TEST_F(ResponsesApiTest, AzureDeploymentsVersionsAndKeyHeader) {
  FakeUpstream up(chat_completion_answer("from azure"));
  start_gateway("providers:\n  az:\n    kind: azure\n    base_url: http://127.0.0.1:" +
                std::to_string(up.port()) +
                "/openai\n    api_version: 2025-01-01-preview\n    keys: [azure-secret-1]\n"
                "models:\n  gpt: { provider: az, upstream: my-gpt4o-deployment }\n");
  auto r = chat(chat_body("gpt"));
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string sent = up.last_request();
  EXPECT_EQ(sent.rfind("POST /openai/deployments/my-gpt4o-deployment/chat/completions"
                       "?api-version=2025-01-01-preview HTTP/1.1",
                       0),
            0u)
      << sent;
  EXPECT_NE(lower(sent).find("api-key: azure-secret-1\r\n"), std::string::npos) << sent;
  EXPECT_EQ(lower(sent).find("authorization:"), std::string::npos) << sent;
  // A deployment a client names is one escaped path segment.
  auto direct = chat(chat_body("az/../x?y"));
  ASSERT_EQ(direct.status, 200) << direct.body;
  EXPECT_EQ(up.last_request().rfind("POST /openai/deployments/..%2Fx%3Fy/chat/completions?", 0), 0u)
      << up.last_request();
}

TEST_F(ResponsesApiTest, AnAzure429SaysItsWaitInTheBodyAndTheKeyCoolsThatLong) {
  const std::string body =
      R"({"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under )"
      R"(Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current )"
      R"(OpenAI S0 pricing tier. Please retry after 37 seconds."}})";
  FakeUpstream up(
      "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  start_gateway(
      "retry: { wait_for_key_ms: 0 }\nproviders:\n  az:\n    kind: azure\n"
      "    base_url: http://127.0.0.1:" +
      std::to_string(up.port()) +
      "/openai\n    keys: [azure-secret-1]\n"
      "models:\n  gpt: { provider: az, upstream: dep }\n");
  auto r = chat(chat_body("gpt"));
  EXPECT_EQ(r.status, 429) << r.body;
  auto k = admin_key("az#1");
  ASSERT_TRUE(k.is_object());
  int64_t ms = k.at("cooldown_remaining_ms").to_number<int64_t>();
  for (const auto& mc : k.at("model_cooldowns").as_array())
    ms = std::max(ms, mc.at("remaining_ms").to_number<int64_t>());
  // 37 s and up to the default jitter of 20% on top (the default without a hint is shorter).
  EXPECT_GT(ms, 36000);
  EXPECT_LE(ms, 37000 * 1.2 + 500);
}

TEST_F(ResponsesApiTest, KeylessProvidersAndConfiguredHeaders) {
  FakeUpstream up(chat_completion_answer("local"));
  start_gateway("providers:\n" +
                provider_at("ollama", up.port(), "none",
                            "headers: { openai-organization: org-42, user-agent: corp-agent/1 }") +
                "models:\n  llama: { provider: ollama, upstream: llama3 }\n");
  auto r = chat(chat_body("llama"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-key"), "ollama#1");
  const std::string sent = lower(up.last_request());
  EXPECT_EQ(sent.find("authorization:"), std::string::npos) << sent;
  EXPECT_NE(sent.find("openai-organization: org-42\r\n"), std::string::npos) << sent;
  // The operator's header replaces the gateway's own, once.
  EXPECT_NE(sent.find("user-agent: corp-agent/1\r\n"), std::string::npos) << sent;
  EXPECT_EQ(sent.find("user-agent: switchboard"), std::string::npos) << sent;
}

}  // namespace
}  // namespace switchboard::gwtest
