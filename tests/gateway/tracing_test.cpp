// Issue 29: OpenTelemetry traces. A recording collector and a recording upstream: the caller's
// trace is continued, the upstream request carries the traceparent of our attempt's span, and the
// spans reach the collector in OTLP JSON with the GenAI attributes.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <map>
#include <string>

#include "gateway_fixture.h"

namespace switchboard::gwtest {
namespace {

constexpr const char* kTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr const char* kCallerSpan = "00f067aa0ba902b7";

std::string json_answer() {
  const std::string body =
      R"({"id":"c1","object":"chat.completion","created":1,"model":"up-f","choices":[{"index":0,)"
      R"("message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],)"
      R"("usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}})";
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

const char* kCollectorAnswer =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
    "Connection: close\r\n\r\n{}";

// The value of header `name` (lowercase) in a raw request, or "".
std::string header_of(const std::string& request, const std::string& name) {
  const std::string l = lower(request);
  auto at = l.find("\r\n" + name + ":");
  if (at == std::string::npos) return "";
  at += name.size() + 3;
  auto end = request.find("\r\n", at);
  std::string v = request.substr(at, end - at);
  while (!v.empty() && v.front() == ' ') v.erase(v.begin());
  return v;
}

std::map<std::string, std::string> string_attributes(const boost::json::object& span) {
  std::map<std::string, std::string> out;
  for (const auto& a : span.at("attributes").as_array()) {
    const auto& v = a.at("value").as_object();
    std::string s = v.contains("stringValue") ? std::string(v.at("stringValue").as_string())
                    : v.contains("intValue")  ? std::string(v.at("intValue").as_string())
                                              : boost::json::serialize(v);
    out[std::string(a.at("key").as_string())] = s;
  }
  return out;
}

class TracingTest : public GatewayTest {};

TEST_F(TracingTest, TheCallersTraceIsContinuedAndTheUpstreamCarriesOurAttempt) {
  FakeUpstream collector(kCollectorAnswer);
  FakeUpstream upstream(json_answer());
  start_gateway(
      "telemetry: { otlp_endpoint: \"http://127.0.0.1:" + std::to_string(collector.port()) +
      "/\", service_name: sb-test }\n"
      "providers:\n" +
      provider_at("pf", upstream.port(), "[sk-fake-1]") +
      "models:\n  mf: { provider: pf, upstream: up-f }\n");
  const std::string parent = std::string("00-") + kTrace + "-" + kCallerSpan + "-01";
  auto r = chat(chat_body("mf"), {{"traceparent", parent}});
  ASSERT_EQ(r.status, 200) << r.body;

  // Upstream: our trace, a span of ours (not the caller's), sampled.
  const std::string sent = header_of(upstream.last_request(), "traceparent");
  ASSERT_EQ(sent.size(), 55u) << upstream.last_request();
  EXPECT_EQ(sent.substr(0, 36), std::string("00-") + kTrace + "-");
  const std::string attempt_span = sent.substr(36, 16);
  EXPECT_NE(attempt_span, kCallerSpan);
  EXPECT_EQ(sent.substr(52), "-01");

  ASSERT_TRUE(eventually([&] { return collector.requests() >= 1; }, std::chrono::seconds(10)));
  const std::string post = collector.last_request();
  EXPECT_EQ(post.rfind("POST /v1/traces HTTP/1.1", 0), 0u) << post.substr(0, 200);
  auto doc = boost::json::parse(post.substr(post.find("\r\n\r\n") + 4));
  const auto& rs = doc.at("resourceSpans").as_array().at(0).as_object();
  EXPECT_EQ(rs.at("resource").at("attributes").as_array().at(0).at("value").at("stringValue"),
            "sb-test");
  const auto& spans = rs.at("scopeSpans").as_array().at(0).at("spans").as_array();
  const boost::json::object* server = nullptr;
  const boost::json::object* client = nullptr;
  for (const auto& s : spans) {
    EXPECT_EQ(s.at("traceId").as_string(), kTrace);
    if (s.at("kind").as_int64() == 2) server = &s.as_object();
    if (s.at("kind").as_int64() == 3) client = &s.as_object();
  }
  ASSERT_TRUE(server && client) << post;
  EXPECT_EQ(server->at("parentSpanId").as_string(), kCallerSpan);
  EXPECT_EQ(server->at("name").as_string(), "chat mf");
  EXPECT_EQ(client->at("spanId").as_string(), attempt_span);
  EXPECT_EQ(client->at("parentSpanId").as_string(), server->at("spanId").as_string());
  EXPECT_EQ(client->at("name").as_string(), "chat up-f");
  auto sa = string_attributes(*server);
  EXPECT_EQ(sa["gen_ai.operation.name"], "chat");
  EXPECT_EQ(sa["gen_ai.request.model"], "mf");
  EXPECT_EQ(sa["gen_ai.response.model"], "mf");
  EXPECT_EQ(sa["gen_ai.usage.input_tokens"], "7");
  EXPECT_EQ(sa["gen_ai.usage.output_tokens"], "3");
  EXPECT_EQ(sa["switchboard.attempts"], "1");
  EXPECT_EQ(sa["switchboard.request_id"], r.header("x-switchboard-request-id"));
  auto ca = string_attributes(*client);
  EXPECT_EQ(ca["gen_ai.request.model"], "up-f");
  EXPECT_EQ(ca["gen_ai.system"], "openai");
  EXPECT_EQ(ca["switchboard.key_id"], "pf#1");
  EXPECT_EQ(ca["switchboard.provider"], "pf");
  EXPECT_EQ(ca["http.response.status_code"], "200");
  // The key's secret is nowhere in the spans.
  EXPECT_EQ(post.find("sk-fake-1"), std::string::npos);
}

TEST_F(TracingTest, WithoutTelemetryTheCallersTraceparentGoesOnAndAForgedOneDoesNot) {
  FakeUpstream upstream(json_answer());
  start_gateway("providers:\n" + provider_at("pf", upstream.port(), "[sk-fake-1]") +
                "models:\n  mf: { provider: pf, upstream: up-f }\n");
  const std::string parent = std::string("00-") + kTrace + "-" + kCallerSpan + "-01";
  ASSERT_EQ(chat(chat_body("mf"), {{"traceparent", parent}}).status, 200);
  EXPECT_EQ(header_of(upstream.last_request(), "traceparent"), parent);
  // Not a traceparent: nothing is passed on (the header is the client's bytes).
  ASSERT_EQ(chat(chat_body("mf"), {{"traceparent", "00-x-y-01; evil=1"}}).status, 200);
  EXPECT_EQ(header_of(upstream.last_request(), "traceparent"), "");
}

}  // namespace
}  // namespace switchboard::gwtest
