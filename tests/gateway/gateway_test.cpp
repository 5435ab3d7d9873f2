// Gateway integration tests: a real Gateway and MockProvider upstreams on 127.0.0.1, talked to
// over real sockets (DESIGN.md "HTTP API" and issue 7's request path).
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gateway_fixture.h"
#include "net/http_client.h"

namespace switchboard::gwtest {
namespace {

using namespace std::chrono_literals;
using gateway::MockProvider;

// Two providers, one model each, and route `r` trying ma first, then mb.
std::string two_layer_config(const MockProvider& a, const MockProvider& b,
                             const std::string& extra_sections = {},
                             const std::string& provider_extra = {}) {
  return extra_sections + "providers:\n" + provider("pa", a, "[sk-test-a-1]", provider_extra) +
         provider("pb", b, "[sk-test-b-1]", provider_extra) +
         "models:\n"
         "  ma: { provider: pa, upstream: up-a }\n"
         "  mb: { provider: pb, upstream: up-b }\n"
         "routes:\n"
         "  r: { strategy: ordered, layers: [[ma], [mb]] }\n";
}

MockScenario script(std::vector<MockScriptStep> steps) {
  MockScenario s;
  s.script = std::move(steps);
  return s;
}

MockScriptStep step(int status, int times = 1) {
  MockScriptStep s;
  s.status = status;
  s.times = times;
  return s;
}

// Every response carries the x-switchboard-* headers (DESIGN.md), also when no attempt was made:
// a request id, empty model, provider and key, no attempts.
template <typename R>
void expect_no_attempt_headers(const R& r) {
  EXPECT_EQ(r.header("x-switchboard-request-id").rfind("sb-", 0), 0u) << r.raw.substr(0, 400);
  for (const char* h : {"x-switchboard-model", "x-switchboard-provider", "x-switchboard-key"}) {
    EXPECT_TRUE(r.has(h)) << h;
    EXPECT_EQ(r.header(h), "") << h;
  }
  EXPECT_EQ(r.header("x-switchboard-attempts"), "0");
  EXPECT_EQ(r.header("x-switchboard-layer"), "0");
  EXPECT_TRUE(r.has("x-switchboard-overhead-us"));
}

// ---- 1. non-stream round trip ------------------------------------------------------------------

TEST_F(GatewayTest, NonStreamRoundTripCarriesEveryHeader) {
  auto& a = add_mock();
  start_gateway("providers:\n" + provider("pa", a, "[sk-very-secret-a1]") +
                "models:\n  ma: { provider: pa, upstream: up-a }\n");
  auto r = chat(chat_body("ma", false, "\"custom_passthrough\":{\"x\":1}"));
  ASSERT_TRUE(r.transport_ok) << r.error;
  ASSERT_EQ(r.status, 200) << r.body;

  auto v = parse_json(r.body);
  ASSERT_TRUE(v.is_object()) << r.body;
  const auto& o = v.as_object();
  EXPECT_EQ(o.at("object").as_string(), "chat.completion");
  // The mock echoes the model it was sent: the gateway rewrote it to the upstream name.
  EXPECT_EQ(o.at("model").as_string(), "up-a");
  const auto& msg = o.at("choices").as_array().at(0).as_object().at("message").as_object();
  EXPECT_EQ(msg.at("content").as_string(), "correct answer from up-a");
  EXPECT_TRUE(o.at("usage").is_object());

  EXPECT_EQ(r.header("x-switchboard-request-id").rfind("sb-", 0), 0u)
      << r.header("x-switchboard-request-id");
  EXPECT_EQ(r.header("x-switchboard-model"), "ma");
  EXPECT_EQ(r.header("x-switchboard-provider"), "pa");
  EXPECT_EQ(r.header("x-switchboard-key"), "pa#1");
  EXPECT_EQ(r.header("x-switchboard-attempts"), "1");
  EXPECT_EQ(r.header("x-switchboard-layer"), "0");
  ASSERT_TRUE(r.has("x-switchboard-overhead-us"));
  const std::string overhead = r.header("x-switchboard-overhead-us");
  ASSERT_FALSE(overhead.empty());
  EXPECT_EQ(overhead.find_first_not_of("0123456789"), std::string::npos) << overhead;
  // The secret never leaves the gateway towards the client.
  EXPECT_EQ(r.raw.find("sk-very-secret-a1"), std::string::npos);
  EXPECT_EQ(a.stats().requests, 1u);

  // Two requests get distinct ids.
  auto r2 = chat(chat_body("ma"));
  ASSERT_EQ(r2.status, 200);
  EXPECT_NE(r2.header("x-switchboard-request-id"), r.header("x-switchboard-request-id"));
}

// ---- 2. stream round trip ----------------------------------------------------------------------

TEST_F(GatewayTest, StreamRoundTripRelaysEventsAndUsageOnlyWhenAsked) {
  MockScenario s;
  s.chunks = 4;
  auto& a = add_mock(s);
  start_gateway("providers:\n" + provider("pa", a) +
                "models:\n  ma: { provider: pa, upstream: up-a }\n");

  auto r = chat(chat_body("ma", true));
  ASSERT_TRUE(r.transport_ok) << r.error;
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.header("content-type").find("text/event-stream"), std::string::npos);
  EXPECT_TRUE(r.chunked);
  EXPECT_TRUE(r.chunked_complete);
  EXPECT_EQ(r.header("x-switchboard-model"), "ma");
  EXPECT_EQ(r.header("x-switchboard-provider"), "pa");
  EXPECT_EQ(r.header("x-switchboard-key"), "pa#1");
  EXPECT_EQ(r.header("x-switchboard-attempts"), "1");
  EXPECT_EQ(r.header("x-switchboard-layer"), "0");
  EXPECT_TRUE(r.has("x-switchboard-request-id"));
  EXPECT_TRUE(r.has("x-switchboard-overhead-us"));

  auto events = r.sse_data();
  ASSERT_GE(events.size(), 3u) << r.body;
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(std::count(events.begin(), events.end(), "[DONE]"), 1);
  EXPECT_EQ(stream_text(r), "correct answer from up-a more more more");
  for (const auto& e : events) {
    if (e == "[DONE]") continue;
    auto v = parse_json(e);
    ASSERT_TRUE(v.is_object()) << e;
    auto* u = v.as_object().if_contains("usage");
    // The gateway asked the upstream for usage for its own accounting; the client did not.
    EXPECT_TRUE(!u || u->is_null()) << "usage chunk relayed to a client that did not ask: " << e;
  }

  auto r2 = chat(chat_body("ma", true, "\"stream_options\":{\"include_usage\":true}"));
  ASSERT_EQ(r2.status, 200) << r2.body;
  auto events2 = r2.sse_data();
  ASSERT_FALSE(events2.empty());
  EXPECT_EQ(events2.back(), "[DONE]");
  bool usage_seen = false;
  for (const auto& e : events2) {
    auto v = parse_json(e);
    if (!v.is_object()) continue;
    auto* u = v.as_object().if_contains("usage");
    if (u && u->is_object()) {
      usage_seen = true;
      EXPECT_GT(u->as_object().at("total_tokens").to_number<int64_t>(), 0);
    }
  }
  EXPECT_TRUE(usage_seen) << r2.body;
  EXPECT_EQ(a.stats().requests, 2u);
}

// ---- 3. 429 → another key ----------------------------------------------------------------------

TEST_F(GatewayTest, ScriptedRateLimitMovesToAnotherKey) {
  MockScriptStep s429 = step(429);
  s429.retry_after_ms = 30000;
  auto& a = add_mock(script({s429}));
  start_gateway("providers:\n" + provider("pa", a, "[sk-a-1, sk-a-2]") +
                "models:\n  ma: { provider: pa }\n");

  auto r = chat(chat_body("ma"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-attempts"), "2");
  EXPECT_EQ(r.header("x-switchboard-layer"), "0");
  const std::string served = r.header("x-switchboard-key");
  ASSERT_TRUE(served == "pa#1" || served == "pa#2") << served;
  const std::string limited = served == "pa#1" ? "pa#2" : "pa#1";

  auto st = a.stats();
  EXPECT_EQ(st.requests, 2u);
  EXPECT_EQ(st.by_status[429], 1u);
  EXPECT_EQ(st.by_status[200], 1u);

  // The 429'd key is cooling for about retry_after_ms; the serving key is not.
  auto cooled = [&](const std::string& id) {
    auto k = admin_key(id);
    if (!k.is_object()) return int64_t(-1);
    const auto& ko = k.as_object();
    int64_t ms = ko.at("cooldown_remaining_ms").to_number<int64_t>();
    for (const auto& mc : ko.at("model_cooldowns").as_array())
      ms = std::max(ms, mc.as_object().at("remaining_ms").to_number<int64_t>());
    return ms;
  };
  EXPECT_GT(cooled(limited), 20000);
  EXPECT_EQ(cooled(served), 0);

  // While it cools, requests keep going to the other key without touching the limited one.
  for (int i = 0; i < 3; ++i) {
    auto ri = chat(chat_body("ma"));
    ASSERT_EQ(ri.status, 200) << ri.body;
    EXPECT_EQ(ri.header("x-switchboard-key"), served);
    EXPECT_EQ(ri.header("x-switchboard-attempts"), "1");
  }
  EXPECT_EQ(a.stats().by_status[429], 1u);
}

TEST_F(GatewayTest, PerKeyRpmLimitRotatesSessionToOtherKey) {
  MockScenario s;
  s.rpm = 1;  // per API key, enforced by the mock with real 429s
  auto& a = add_mock(s);
  start_gateway("retry: { wait_for_key_ms: 50 }\nproviders:\n" +
                provider("pa", a, "[sk-a-1, sk-a-2]") + "models:\n  ma: { provider: pa }\n");
  const Headers session = {{"x-switchboard-session", "conversation-1"}};
  auto r1 = chat(chat_body("ma"), session);
  ASSERT_EQ(r1.status, 200) << r1.body;
  auto r2 = chat(chat_body("ma"), session);
  ASSERT_EQ(r2.status, 200) << r2.body;
  // The first key used up its minute: the conversation moved to the other key, whatever told
  // the gateway (the rate-limit headers of the first answer or the 429 of the second request).
  EXPECT_NE(r1.header("x-switchboard-key"), r2.header("x-switchboard-key"));
  EXPECT_EQ(a.stats().by_status[200], 2u);
}

// ---- 4. 500 → next layer -----------------------------------------------------------------------

TEST_F(GatewayTest, ServerErrorFallsBackToNextLayer) {
  auto& a = add_mock(script({step(500)}));
  auto& b = add_mock();
  start_gateway(two_layer_config(a, b));
  auto r = chat(chat_body("r"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-provider"), "pb");
  EXPECT_EQ(r.header("x-switchboard-model"), "mb");
  EXPECT_EQ(r.header("x-switchboard-key"), "pb#1");
  EXPECT_EQ(r.header("x-switchboard-layer"), "1");
  EXPECT_EQ(r.header("x-switchboard-attempts"), "2");
  EXPECT_NE(r.body.find("answer from up-b"), std::string::npos) << r.body;
  EXPECT_EQ(a.stats().by_status[500], 1u);
  EXPECT_EQ(b.stats().requests, 1u);

  // The failure belonged to that request only: the next one starts at layer 0 again.
  auto r2 = chat(chat_body("r"));
  ASSERT_EQ(r2.status, 200) << r2.body;
  EXPECT_EQ(r2.header("x-switchboard-provider"), "pa");
  EXPECT_EQ(r2.header("x-switchboard-layer"), "0");
}

// ---- 5. open breaker skipped -------------------------------------------------------------------

TEST_F(GatewayTest, OpenBreakerIsSkippedWithoutCallingTheProvider) {
  MockScenario failing;
  failing.error_rate = 1.0;
  failing.error_status = 500;
  auto& a = add_mock(failing);
  auto& b = add_mock();
  start_gateway(two_layer_config(
      a, b,
      "breaker: { window: 4, min_calls: 2, failure_rate: 0.5, open_ms: 60000, max_open_ms: "
      "60000 }\n"));
  for (int i = 0; i < 2; ++i) {
    auto r = chat(chat_body("r"));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-switchboard-provider"), "pb");
  }
  ASSERT_EQ(a.stats().requests, 2u);

  auto br = get(port_, "/admin/breakers");
  ASSERT_EQ(br.status, 200);
  EXPECT_NE(br.body.find("\"open\""), std::string::npos) << br.body;

  auto fallbacks = [this] {
    const std::string text = get(port_, "/metrics").body;
    const std::string name = "\nswitchboard_gateway_fallbacks_total ";
    auto pos = text.find(name);
    return pos == std::string::npos ? -1.0 : std::stod(text.substr(pos + name.size()));
  };
  const double fallbacks_before = fallbacks();
  for (int i = 0; i < 3; ++i) {
    auto r = chat(chat_body("r"));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-switchboard-provider"), "pb");
    EXPECT_EQ(r.header("x-switchboard-attempts"), "1") << "the open breaker cost an attempt";
    // Issue 18: the primary layer was skipped for its open breaker, so the fallback answered:
    // the header (and the fallback count, the access log and the feedback ledger) say layer 1.
    EXPECT_EQ(r.header("x-switchboard-layer"), "1") << "a skipped layer must count";
  }
  EXPECT_EQ(fallbacks() - fallbacks_before, 3.0);
  EXPECT_EQ(a.stats().requests, 2u) << "a provider behind an open breaker was called";
  EXPECT_EQ(b.stats().requests, 5u);
}

// ---- 6. stream failover before the first chunk -------------------------------------------------

TEST_F(GatewayTest, StreamFailsOverInvisiblyBeforeFirstChunk) {
  auto& a = add_mock(script({step(500)}));
  auto& b = add_mock();
  start_gateway(two_layer_config(a, b));
  auto r = chat(chat_body("r", true));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-provider"), "pb");
  EXPECT_EQ(r.header("x-switchboard-layer"), "1");
  EXPECT_EQ(r.header("x-switchboard-attempts"), "2");
  EXPECT_TRUE(r.chunked_complete);
  auto events = r.sse_data();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(r.body.find("error"), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("up-a"), std::string::npos) << r.body;
  EXPECT_EQ(stream_text(r), "correct answer from up-b more more more");
  EXPECT_EQ(a.stats().by_status[500], 1u);
}

TEST_F(GatewayTest, StreamFailsOverWhenUpstreamCutsBeforeContent) {
  // A stream cut before any content (chunks: 0 → the cut comes right after the role chunk) is
  // still invisible to the client.
  MockScenario cut = script({});
  MockScriptStep drop;
  drop.drop_mid_stream = true;
  cut.script = {drop};
  cut.chunks = 1;  // the drop happens at chunk index chunks/2 = 0: before any content
  auto& a = add_mock(cut);
  auto& b = add_mock();
  start_gateway(two_layer_config(a, b));
  auto r = chat(chat_body("r", true));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-provider"), "pb");
  auto events = r.sse_data();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(r.body.find("\"error\""), std::string::npos) << r.body;
  EXPECT_EQ(a.stats().streams_dropped, 1u);
}

// ---- 7. mid-stream cut -------------------------------------------------------------------------

TEST_F(GatewayTest, MidStreamCutEndsWithErrorEventAndNoDone) {
  MockScenario cut;
  MockScriptStep drop;
  drop.drop_mid_stream = true;
  cut.script = {drop};
  cut.chunks = 4;
  cut.chunk_delay_ms = 20;
  auto& a = add_mock(cut);
  auto& b = add_mock();
  start_gateway(two_layer_config(a, b));
  auto r = chat(chat_body("r", true));
  ASSERT_TRUE(r.transport_ok) << r.error;
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-provider"), "pa");
  // Content that was relayed before the cut.
  EXPECT_NE(stream_text(r).find("correct answer from up-a"), std::string::npos) << r.body;
  auto events = r.sse_data();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(std::count(events.begin(), events.end(), "[DONE]"), 0) << r.body;
  auto last = parse_json(events.back());
  ASSERT_TRUE(last.is_object()) << events.back();
  EXPECT_TRUE(last.as_object().contains("error")) << events.back();
  EXPECT_EQ(a.stats().streams_dropped, 1u);
  // Once the client has content, there is no failover: the second layer is never called.
  EXPECT_EQ(b.stats().requests, 0u);
}

// ---- 8. client disconnect cancels upstream -----------------------------------------------------

TEST_F(GatewayTest, ClientDisconnectCancelsUpstreamAndReleasesLease) {
  MockScenario slow;
  slow.latency_ms = 2000;
  auto& a = add_mock(slow);
  start_gateway("providers:\n" + provider("pa", a) + "models:\n  ma: { provider: pa }\n");

  for (bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "stream" : "non-stream");
    const uint64_t answered_before = a.stats().by_status[200];
    int fd = connect_to(port_, 5s);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(
        send_all(fd, format_request("POST", "/v1/chat/completions", chat_body("ma", stream), {})));
    // The request holds a lease while the upstream call is under way.
    ASSERT_TRUE(eventually([&] { return key_in_flight("pa#1") == 1; }, 1500ms));
    ::close(fd);
    // The lease is released well before the slow upstream would have answered: the gateway
    // cancelled the call rather than waiting for it.
    EXPECT_TRUE(eventually([&] { return key_in_flight("pa#1") == 0; }, 1500ms));
    EXPECT_EQ(a.stats().by_status[200], answered_before)
        << "the lease outlived the upstream call instead of being cancelled";
  }
  // And the gateway still serves.
  MockScenario fast;
  a.set_scenario(fast);
  auto r = chat(chat_body("ma"));
  EXPECT_EQ(r.status, 200) << r.body;
  auto m = get(port_, "/metrics");
  EXPECT_NE(m.body.find("status=\"cancelled\""), std::string::npos);
}

// ---- 9. every 4xx ------------------------------------------------------------------------------

TEST_F(GatewayTest, BadRequestsGetClear400s) {
  auto& a = add_mock();
  start_gateway("providers:\n" + provider("pa", a) + "models:\n  ma: { provider: pa }\n");
  struct Case {
    std::string body;
    std::string field;  // the message names it
  };
  const std::vector<Case> cases = {
      {"{not json", "JSON"},
      {"[1,2,3]", "object"},
      {R"({"messages":[{"role":"user","content":"x"}]})", "'model'"},
      {R"({"model":42,"messages":[{"role":"user","content":"x"}]})", "'model'"},
      {R"({"model":"ma"})", "'messages'"},
      {R"({"model":"ma","messages":[]})", "'messages'"},
      {R"({"model":"ma","messages":"hi"})", "'messages'"},
      {R"({"model":"ma","messages":["hi"]})", "messages[0]"},
      {R"({"model":"ma","messages":[{"content":"x"}]})", "messages[0].role"},
      {R"({"model":"ma","messages":[{"role":"user","content":"x"},{"role":"user","content":5}]})",
       "messages[1].content"},
      {R"({"model":"ma","messages":[{"role":"user","content":"x"}],"stream":"yes"})", "'stream'"},
      {R"({"model":"ma","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"})",
       "'max_tokens'"},
      {R"({"model":"ma","messages":[{"role":"user","content":"x"}],"max_tokens":0})",
       "'max_tokens'"},
      {R"({"model":"ma","messages":[{"role":"user","content":"x"}],"temperature":"hot"})",
       "'temperature'"},
      {R"({"model":"ma","messages":[{"role":"user","content":"x"}],"stream_options":1})",
       "'stream_options'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.body);
    auto r = chat(c.body);
    ASSERT_TRUE(r.transport_ok) << r.error;
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_TRUE(is_openai_error(r.body));
    EXPECT_NE(error_message(r.body).find(c.field), std::string::npos) << r.body;
    expect_no_attempt_headers(r);
  }
  EXPECT_EQ(a.stats().requests, 0u) << "an invalid request reached the upstream";
}

TEST_F(GatewayTest, UnknownModelIs404) {
  auto& a = add_mock();
  start_gateway("providers:\n" + provider("pa", a) + "models:\n  ma: { provider: pa }\n");
  auto r = chat(chat_body("no-such-model"));
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_TRUE(is_openai_error(r.body));
  EXPECT_NE(error_message(r.body).find("no-such-model"), std::string::npos) << r.body;
  EXPECT_EQ(a.stats().requests, 0u);
}

TEST_F(GatewayTest, OversizedBodyIs413AndServerKeepsServing) {
  auto& a = add_mock();
  start_gateway("server: { max_body_bytes: 2048 }\nproviders:\n" + provider("pa", a) +
                "models:\n  ma: { provider: pa }\n");
  std::string big = "{\"model\":\"ma\",\"messages\":[{\"role\":\"user\",\"content\":\"" +
                    std::string(8000, 'x') + "\"}]}";
  auto r = chat(big);
  ASSERT_TRUE(r.transport_ok) << r.error;
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_TRUE(is_openai_error(r.body));
  expect_no_attempt_headers(r);
  EXPECT_EQ(a.stats().requests, 0u);
  auto ok = chat(chat_body("ma"));
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST_F(GatewayTest, GatewayKeysAreRequiredWhenConfigured) {
  auto& a = add_mock();
  start_gateway("auth: { gateway_keys: [gw-client-secret-1, gw-client-secret-2] }\nproviders:\n" +
                provider("pa", a) + "models:\n  ma: { provider: pa }\n");
  auto missing = chat(chat_body("ma"));
  EXPECT_EQ(missing.status, 401) << missing.body;
  EXPECT_TRUE(is_openai_error(missing.body));
  auto wrong = chat(chat_body("ma"), {{"Authorization", "Bearer gw-client-secret-3"}});
  EXPECT_EQ(wrong.status, 401) << wrong.body;
  EXPECT_TRUE(is_openai_error(wrong.body));
  EXPECT_EQ(wrong.raw.find("gw-client-secret-1"), std::string::npos);
  auto models = get(port_, "/v1/models");
  EXPECT_EQ(models.status, 401) << models.body;
  EXPECT_EQ(a.stats().requests, 0u);

  auto ok = chat(chat_body("ma"), {{"Authorization", "Bearer gw-client-secret-2"}});
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(a.stats().requests, 1u);
  // Probes stay open.
  EXPECT_EQ(get(port_, "/healthz").status, 200);
}

TEST_F(GatewayTest, RateLimitedEverywhereIs429WithRetryAfter) {
  MockScenario s;
  s.rpm = 1;
  auto& a = add_mock(s);
  start_gateway("retry: { wait_for_key_ms: 100 }\nproviders:\n" +
                provider("pa", a, "[sk-a-1, sk-a-2]") + "models:\n  ma: { provider: pa }\n");
  ASSERT_EQ(chat(chat_body("ma")).status, 200);
  ASSERT_EQ(chat(chat_body("ma")).status, 200);
  auto t0 = std::chrono::steady_clock::now();
  auto r = chat(chat_body("ma"));
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(r.status, 429) << r.body;
  EXPECT_TRUE(is_openai_error(r.body));
  ASSERT_TRUE(r.has("retry-after"));
  int retry_after = std::atoi(r.header("retry-after").c_str());
  // Both keys used their minute: the earliest one frees up in about a minute, not sooner.
  EXPECT_GE(retry_after, 30) << r.header("retry-after");
  EXPECT_LE(retry_after, 75) << r.header("retry-after");
  EXPECT_LT(took, 5s) << "waited beyond wait_for_key_ms";
  EXPECT_EQ(a.stats().by_status[200], 2u);
}

TEST_F(GatewayTest, UpstreamClientErrorPassesThroughWithoutFailover) {
  auto& a = add_mock(script({step(400)}));
  auto& b = add_mock();
  start_gateway(two_layer_config(a, b));
  auto r = chat(chat_body("r"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(is_openai_error(r.body));
  EXPECT_NE(r.body.find("scripted"), std::string::npos) << "not the upstream's own error body";
  EXPECT_EQ(r.header("x-switchboard-provider"), "pa");
  EXPECT_EQ(a.stats().requests, 1u);
  EXPECT_EQ(b.stats().requests, 0u) << "a client error was retried on another model";
}

// ---- 10. 502 / 504 after every layer failed ----------------------------------------------------

TEST_F(GatewayTest, EveryLayerFailingIs502) {
  MockScenario failing;
  failing.error_rate = 1.0;
  failing.error_status = 500;
  auto& a = add_mock(failing);
  auto& b = add_mock(failing);
  start_gateway(two_layer_config(a, b));
  auto r = chat(chat_body("r"));
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_TRUE(is_openai_error(r.body));
  EXPECT_TRUE(r.has("x-switchboard-request-id"));
  // The headers name the last attempt that failed.
  EXPECT_EQ(r.header("x-switchboard-attempts"), "2");
  EXPECT_EQ(r.header("x-switchboard-layer"), "1");
  EXPECT_EQ(r.header("x-switchboard-model"), "mb");
  EXPECT_EQ(r.header("x-switchboard-provider"), "pb");
  EXPECT_EQ(r.header("x-switchboard-key"), "pb#1");
  EXPECT_FALSE(r.header("x-switchboard-overhead-us").empty());
  EXPECT_EQ(a.stats().by_status[500], 1u);
  EXPECT_EQ(b.stats().by_status[500], 1u);

  auto rs = chat(chat_body("r", true));
  EXPECT_EQ(rs.status, 502) << rs.body;
  EXPECT_TRUE(is_openai_error(rs.body));
}

TEST_F(GatewayTest, EveryLayerHangingIs504) {
  MockScriptStep hang;
  hang.hang = true;
  hang.times = 10;
  auto& a = add_mock(script({hang}));
  auto& b = add_mock(script({hang}));
  start_gateway(two_layer_config(a, b, "", "timeout_ms: 300"));
  auto t0 = std::chrono::steady_clock::now();
  auto r = chat(chat_body("r"));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_TRUE(is_openai_error(r.body));
  EXPECT_EQ(a.stats().requests, 1u);
  EXPECT_EQ(b.stats().requests, 1u);
  EXPECT_GE(took, 550ms);  // each layer got its full timeout
  EXPECT_LT(took, 5s);
}

// ---- 11. invalid UTF-8 -------------------------------------------------------------------------

TEST_F(GatewayTest, InvalidUtf8Is400AndServerKeepsServing) {
  auto& a = add_mock();
  start_gateway("providers:\n" + provider("pa", a) + "models:\n  ma: { provider: pa }\n");
  for (std::string bad : {std::string("\xff\xfe"), std::string("\xc3"), std::string("\xed\xa0\x80"),
                          std::string("ok\x80ok")}) {
    std::string body =
        "{\"model\":\"ma\",\"messages\":[{\"role\":\"user\",\"content\":\"" + bad + "\"}]}";
    auto r = chat(body);
    ASSERT_TRUE(r.transport_ok) << r.error;
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_TRUE(is_openai_error(r.body));
  }
  // Invalid UTF-8 in the model name too.
  auto r = chat("{\"model\":\"m\xff\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(a.stats().requests, 0u);
  auto ok = chat(chat_body("ma"));
  EXPECT_EQ(ok.status, 200) << ok.body;
}

// ---- 12. models, probes, metrics ---------------------------------------------------------------

TEST_F(GatewayTest, ModelsHealthAndMetrics) {
  auto& a = add_mock();
  auto& b = add_mock();
  start_gateway(two_layer_config(a, b));
  auto m = get(port_, "/v1/models");
  ASSERT_EQ(m.status, 200) << m.body;
  auto v = parse_json(m.body);
  ASSERT_TRUE(v.is_object()) << m.body;
  EXPECT_EQ(v.as_object().at("object").as_string(), "list");
  std::vector<std::string> ids;
  for (const auto& d : v.as_object().at("data").as_array()) {
    EXPECT_EQ(d.as_object().at("object").as_string(), "model");
    ids.emplace_back(d.as_object().at("id").as_string());
  }
  for (const char* want : {"r", "ma", "mb"})
    EXPECT_NE(std::find(ids.begin(), ids.end(), want), ids.end()) << want << " in " << m.body;

  EXPECT_EQ(get(port_, "/healthz").status, 200);
  EXPECT_EQ(get(port_, "/readyz").status, 200);
  ASSERT_EQ(chat(chat_body("r")).status, 200);
  auto metrics = get(port_, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.header("content-type").find("text/plain"), std::string::npos);
  EXPECT_NE(metrics.body.find("switchboard_gateway_requests_total"), std::string::npos);
  EXPECT_NE(metrics.body.find("route=\"r\""), std::string::npos);
  // Secrets never reach the metrics.
  EXPECT_EQ(metrics.body.find("sk-test-a-1"), std::string::npos);

  auto nf = get(port_, "/no/such/path");
  EXPECT_EQ(nf.status, 404);
  EXPECT_TRUE(is_openai_error(nf.body));
}

// Keep-alive: several requests on one connection, as SDKs do.
TEST_F(GatewayTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  auto& a = add_mock();
  start_gateway("providers:\n" + provider("pa", a) + "models:\n  ma: { provider: pa }\n");
  int fd = connect_to(port_, 5s);
  ASSERT_GE(fd, 0);
  std::string body = chat_body("ma");
  std::string req =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
      "application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  std::string last =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
      "Content-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(send_all(fd, req));
    // Read one response (content-length framed).
    std::string got;
    char buf[8192];
    while (true) {
      auto end = got.find("\r\n\r\n");
      if (end != std::string::npos) {
        auto cl = lower(got).find("content-length:");
        ASSERT_NE(cl, std::string::npos) << got;
        size_t n = std::stoul(got.substr(cl + 15));
        if (got.size() >= end + 4 + n) break;
      }
      ssize_t k = ::recv(fd, buf, sizeof(buf), 0);
      ASSERT_GT(k, 0) << "connection closed after " << i << " responses";
      got.append(buf, size_t(k));
    }
    EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got;
  }
  ASSERT_TRUE(send_all(fd, last));
  auto r = parse_response(read_to_eof(fd));
  ::close(fd);
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(a.stats().requests, 3u);
}

}  // namespace
}  // namespace switchboard::gwtest

namespace switchboard::gwtest {
namespace {

using namespace std::chrono_literals;
using gateway::MockProvider;

std::string fake_then_mock(const FakeUpstream& fake, const MockProvider& b) {
  return "providers:\n" + provider_at("pf", fake.port(), "[sk-fake-1]") +
         provider("pb", b, "[sk-test-b-1]") +
         "models:\n"
         "  mf: { provider: pf, upstream: up-f }\n"
         "  mb: { provider: pb, upstream: up-b }\n"
         "routes:\n"
         "  r: { strategy: ordered, layers: [[mf], [mb]] }\n";
}

// ---- streams the mock cannot produce -----------------------------------------------------------

TEST_F(GatewayTest, UpstreamStreamEndingEarlyWithoutDoneEndsWithErrorEvent) {
  // The upstream sends content, then ends its response properly (last chunk) but without
  // [DONE]: a truncated answer, which the client must not mistake for a complete one.
  FakeUpstream fake(sse_response({content_chunk("partial"), content_chunk(" answer")}));
  auto& b = add_mock();
  start_gateway(fake_then_mock(fake, b));
  auto r = chat(chat_body("r", true));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(stream_text(r), "partial answer");
  auto events = r.sse_data();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(std::count(events.begin(), events.end(), "[DONE]"), 0) << r.body;
  auto last = parse_json(events.back());
  ASSERT_TRUE(last.is_object()) << r.body;
  EXPECT_TRUE(last.as_object().contains("error")) << r.body;
  EXPECT_EQ(b.stats().requests, 0u);
  // The gateway asked the upstream for usage (for accounting) and sent the upstream model name.
  const std::string upstream_req = fake.last_request();
  EXPECT_NE(upstream_req.find("\"include_usage\":true"), std::string::npos) << upstream_req;
  EXPECT_NE(upstream_req.find("\"model\":\"up-f\""), std::string::npos) << upstream_req;
  EXPECT_NE(upstream_req.find("Bearer sk-fake-1"), std::string::npos) << upstream_req;
}

TEST_F(GatewayTest, UpstreamErrorEventBeforeContentFailsOver) {
  FakeUpstream fake(sse_response(
      {R"({"error":{"message":"overloaded","type":"server_error","code":"overloaded"}})"}));
  auto& b = add_mock();
  start_gateway(fake_then_mock(fake, b));
  auto r = chat(chat_body("r", true));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-provider"), "pb");
  EXPECT_EQ(r.header("x-switchboard-layer"), "1");
  EXPECT_EQ(r.body.find("overloaded"), std::string::npos) << r.body;
  auto events = r.sse_data();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(fake.requests(), 1);
}

TEST_F(GatewayTest, EmptyStreamStillCarriesEveryHeader) {
  // An answer without content (a role chunk, then [DONE]) is relayed as it is, with the same
  // x-switchboard-* headers as any other response.
  FakeUpstream fake(sse_response(
      {R"({"id":"c1","object":"chat.completion.chunk","model":"fake","choices":[{"index":0,"delta":{"role":"assistant"}}]})",
       "[DONE]"}));
  auto& b = add_mock();
  start_gateway(fake_then_mock(fake, b));
  auto r = chat(chat_body("r", true));
  ASSERT_EQ(r.status, 200) << r.body;
  for (const char* h : {"x-switchboard-request-id", "x-switchboard-model", "x-switchboard-provider",
                        "x-switchboard-key", "x-switchboard-attempts", "x-switchboard-layer",
                        "x-switchboard-overhead-us"})
    EXPECT_TRUE(r.has(h)) << h;
  EXPECT_EQ(r.header("x-switchboard-provider"), "pf");
  auto events = r.sse_data();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_TRUE(r.chunked_complete);
  EXPECT_EQ(b.stats().requests, 0u);
}

// ---- client leaving in the middle of a relayed stream ------------------------------------------

TEST_F(GatewayTest, ClientLeavingMidStreamCancelsUpstream) {
  MockScenario slow;
  slow.chunks = 20;
  slow.chunk_delay_ms = 150;  // a 3 s stream
  auto& a = add_mock(slow);
  start_gateway("providers:\n" + provider("pa", a) + "models:\n  ma: { provider: pa }\n");
  int fd = connect_to(port_, 5s);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(
      send_all(fd, format_request("POST", "/v1/chat/completions", chat_body("ma", true), {})));
  // Wait for the first relayed content, then leave.
  std::string got;
  char buf[4096];
  while (got.find("correct answer") == std::string::npos) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    ASSERT_GT(n, 0) << got;
    got.append(buf, size_t(n));
  }
  EXPECT_EQ(key_in_flight("pa#1"), 1);
  auto left = std::chrono::steady_clock::now();
  ::close(fd);
  ASSERT_TRUE(eventually([&] { return key_in_flight("pa#1") == 0; }, 2s));
  // Long before the upstream stream would have ended by itself.
  EXPECT_LT(std::chrono::steady_clock::now() - left, 1500ms);
}

// ---- invariant 1 through the gateway -----------------------------------------------------------

TEST_F(GatewayTest, ConcurrentRequestsNeverExceedKeyConcurrency) {
  MockScenario s;
  s.latency_ms = 60;
  s.max_concurrent = 1;  // the mock answers 429 to a second concurrent request on a key
  auto& a = add_mock(s);
  start_gateway("providers:\n" +
                provider("pa", a, "[sk-a-1, sk-a-2]", "limits: { max_concurrent: 1 }") +
                "models:\n  ma: { provider: pa }\n");
  constexpr int kClients = 6;
  std::vector<int> statuses(kClients, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i)
    threads.emplace_back([&, i] { statuses[size_t(i)] = chat(chat_body("ma")).status; });
  for (auto& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) EXPECT_EQ(statuses[size_t(i)], 200) << "client " << i;
  auto st = a.stats();
  EXPECT_EQ(st.max_in_flight_per_key, 1);
  EXPECT_EQ(st.by_status[429], 0u) << "the gateway sent more than max_concurrent on a key";
  EXPECT_EQ(st.by_status[200], uint64_t(kClients));
  EXPECT_EQ(key_in_flight("pa#1"), 0);
  EXPECT_EQ(key_in_flight("pa#2"), 0);
}

// ---- HTTP details real clients depend on ------------------------------------------------------

TEST_F(GatewayTest, ExpectContinueIsAnsweredBeforeTheBody) {
  auto& a = add_mock();
  start_gateway("server: { max_body_bytes: 4096 }\nproviders:\n" + provider("pa", a) +
                "models:\n  ma: { provider: pa }\n");
  const std::string body = chat_body("ma");
  auto head = [](size_t length) {
    return "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           "Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: " +
           std::to_string(length) + "\r\n\r\n";
  };
  {
    // Headers only: the gateway must invite the body (curl would otherwise stall a second).
    int fd = connect_to(port_, 3s);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, head(body.size())));
    std::string got;
    char buf[1024];
    while (got.find("\r\n\r\n") == std::string::npos) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      ASSERT_GT(n, 0) << "no 100 Continue before the body was sent";
      got.append(buf, size_t(n));
    }
    EXPECT_EQ(got.rfind("HTTP/1.1 100 Continue\r\n\r\n", 0), 0u) << got;
    ASSERT_TRUE(send_all(fd, body));
    got += read_to_eof(fd);
    ::close(fd);
    auto r = parse_response(got.substr(got.find("\r\n\r\n") + 4));
    EXPECT_EQ(r.status, 200) << got;
  }
  {
    // An oversized body is refused at once, without inviting it.
    int fd = connect_to(port_, 3s);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, head(100000)));
    auto r = parse_response(read_to_eof(fd));
    ::close(fd);
    EXPECT_EQ(r.status, 413) << r.raw;
    EXPECT_TRUE(is_openai_error(r.body));
  }
  EXPECT_EQ(a.stats().requests, 1u);
}

TEST_F(GatewayTest, TruncatedNonStreamAnswerFailsOver) {
  // The upstream promises 500 bytes and closes after a few: never relayed as an answer.
  FakeUpstream fake(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
      "{\"id\":\"x\",\"choices\":[");
  auto& b = add_mock();
  start_gateway(fake_then_mock(fake, b));
  auto r = chat(chat_body("r"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-provider"), "pb");
  EXPECT_EQ(r.header("x-switchboard-layer"), "1");
  EXPECT_NE(r.body.find("answer from up-b"), std::string::npos) << r.body;
  EXPECT_EQ(fake.requests(), 1);
}

TEST_F(GatewayTest, WrongMethodAndBadRoutingHeaders) {
  auto& a = add_mock();
  start_gateway("providers:\n" + provider("pa", a, "[sk-admin-visible-secret]") +
                "models:\n  ma: { provider: pa }\n");
  auto g = get(port_, "/v1/chat/completions");
  EXPECT_EQ(g.status, 405) << g.body;
  EXPECT_TRUE(is_openai_error(g.body));
  auto h = chat(chat_body("ma"), {{"x-switchboard-complexity", "extreme"}});
  EXPECT_EQ(h.status, 400) << h.body;
  EXPECT_NE(error_message(h.body).find("x-switchboard-complexity"), std::string::npos) << h.body;
  EXPECT_EQ(a.stats().requests, 0u);
  // The admin API shows key ids and fingerprints, never the secret.
  auto keys = get(port_, "/admin/keys");
  ASSERT_EQ(keys.status, 200);
  EXPECT_NE(keys.body.find("pa#1"), std::string::npos);
  EXPECT_EQ(keys.body.find("sk-admin-visible-secret"), std::string::npos) << keys.body;
}

// ---- Anthropic translation through the gateway (recorded Messages API answers) -----------------

std::string anthropic_config(const FakeUpstream& fake, const MockProvider& b) {
  return "providers:\n"
         "  ant:\n    kind: anthropic\n    base_url: http://127.0.0.1:" +
         std::to_string(fake.port()) + "/v1\n    keys: [sk-ant-test-1]\n" +
         provider("pb", b, "[sk-test-b-1]") +
         "models:\n"
         "  claude: { provider: ant, upstream: claude-sonnet-4-20250514 }\n"
         "  mb: { provider: pb, upstream: up-b }\n"
         "routes:\n"
         "  r: { strategy: ordered, layers: [[claude], [mb]] }\n";
}

const char* kToolRequest =
    R"({"model":"claude","max_tokens":300,"messages":[)"
    R"({"role":"system","content":"Be brief."},)"
    R"({"role":"user","content":"Weather in Paris?"}],)"
    R"("tools":[{"type":"function","function":{"name":"get_weather","parameters":)"
    R"({"type":"object","properties":{"city":{"type":"string"}}}}}])";

TEST_F(GatewayTest, AnthropicNonStreamIsTranslatedBothWays) {
  std::string json = read_fixture("anthropic_response_tool_use.json");
  ASSERT_FALSE(json.empty());
  FakeUpstream fake("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                    std::to_string(json.size()) + "\r\n\r\n" + json);
  auto& b = add_mock();
  start_gateway(anthropic_config(fake, b));
  auto r = chat(std::string(kToolRequest) + "}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-provider"), "ant");
  EXPECT_EQ(r.header("x-switchboard-key"), "ant#1");

  // What went upstream: the Messages API, the key in x-api-key, the system prompt lifted out.
  const std::string up = fake.last_request();
  EXPECT_EQ(up.rfind("POST /v1/messages ", 0), 0u) << up;
  EXPECT_NE(lower(up).find("x-api-key: sk-ant-test-1"), std::string::npos) << up;
  EXPECT_NE(lower(up).find("anthropic-version:"), std::string::npos) << up;
  auto body = parse_json(up.substr(up.find("\r\n\r\n") + 4));
  ASSERT_TRUE(body.is_object()) << up;
  const auto& bo = body.as_object();
  EXPECT_EQ(bo.at("model").as_string(), "claude-sonnet-4-20250514");
  EXPECT_EQ(bo.at("max_tokens").to_number<int64_t>(), 300);
  ASSERT_TRUE(bo.contains("system")) << up;
  EXPECT_NE(boost::json::serialize(bo.at("system")).find("Be brief."), std::string::npos);
  for (const auto& m : bo.at("messages").as_array())
    EXPECT_NE(m.as_object().at("role").as_string(), "system") << up;
  EXPECT_EQ(bo.at("tools").as_array().at(0).as_object().at("name").as_string(), "get_weather");

  // What came back: OpenAI's shape.
  auto v = parse_json(r.body);
  ASSERT_TRUE(v.is_object()) << r.body;
  const auto& o = v.as_object();
  EXPECT_EQ(o.at("object").as_string(), "chat.completion");
  EXPECT_EQ(o.at("model").as_string(), "claude");
  const auto& choice = o.at("choices").as_array().at(0).as_object();
  EXPECT_EQ(choice.at("finish_reason").as_string(), "tool_calls");
  const auto& msg = choice.at("message").as_object();
  EXPECT_EQ(msg.at("content").as_string(), "I'll check the weather in Paris for you.");
  const auto& call = msg.at("tool_calls").as_array().at(0).as_object();
  EXPECT_EQ(call.at("id").as_string(), "toolu_01A09q90qw90lq917835lq9");
  EXPECT_EQ(call.at("function").as_object().at("name").as_string(), "get_weather");
  auto args = parse_json(std::string(call.at("function").as_object().at("arguments").as_string()));
  EXPECT_EQ(args.as_object().at("city").as_string(), "Paris");
  const auto& usage = o.at("usage").as_object();
  EXPECT_EQ(usage.at("prompt_tokens").to_number<int64_t>(), 600);
  EXPECT_EQ(usage.at("completion_tokens").to_number<int64_t>(), 91);
  EXPECT_EQ(b.stats().requests, 0u);
}

TEST_F(GatewayTest, AnthropicStreamIsTranslatedToOpenAIChunks) {
  std::string sse = read_fixture("anthropic_stream.sse");
  ASSERT_FALSE(sse.empty());
  std::string resp =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
  // Several chunks, split at arbitrary points (not at event boundaries).
  for (size_t pos = 0; pos < sse.size(); pos += 97) {
    std::string part = sse.substr(pos, 97);
    char size[24];
    std::snprintf(size, sizeof(size), "%zx\r\n", part.size());
    resp += size + part + "\r\n";
  }
  resp += "0\r\n\r\n";
  FakeUpstream fake(resp);
  auto& b = add_mock();
  start_gateway(anthropic_config(fake, b));
  auto r = chat(std::string(kToolRequest) +
                R"(,"stream":true,"stream_options":{"include_usage":true}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-provider"), "ant");
  auto events = r.sse_data();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(stream_text(r), "Okay, let's check the \"weather\"\nfor Paris.");
  std::string finish, tool_names, tool_args;
  bool usage_seen = false;
  for (const auto& e : events) {
    auto v = parse_json(e);
    if (!v.is_object()) continue;
    const auto& o = v.as_object();
    EXPECT_EQ(o.at("object").as_string(), "chat.completion.chunk") << e;
    if (auto* u = o.if_contains("usage"); u && u->is_object()) {
      usage_seen = true;
      EXPECT_EQ(u->as_object().at("completion_tokens").to_number<int64_t>(), 89) << e;
    }
    for (const auto& c : o.at("choices").as_array()) {
      const auto& co = c.as_object();
      if (auto* f = co.if_contains("finish_reason"); f && f->is_string())
        finish = std::string(f->as_string());
      auto* d = co.if_contains("delta");
      if (!d || !d->is_object()) continue;
      auto* tc = d->as_object().if_contains("tool_calls");
      if (!tc || !tc->is_array()) continue;
      for (const auto& t : tc->as_array()) {
        auto* fn = t.as_object().if_contains("function");
        if (!fn || !fn->is_object()) continue;
        if (auto* n = fn->as_object().if_contains("name"); n && n->is_string())
          tool_names += std::string(n->as_string()) + ",";
        if (auto* a = fn->as_object().if_contains("arguments"); a && a->is_string())
          tool_args += a->as_string();
      }
    }
  }
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(tool_names, "get_weather,get_time,");
  EXPECT_NE(tool_args.find("{\"city\": \"Paris\"}"), std::string::npos) << tool_args;
  EXPECT_TRUE(usage_seen);
  const std::string up = fake.last_request();
  auto body = parse_json(up.substr(up.find("\r\n\r\n") + 4));
  ASSERT_TRUE(body.is_object()) << up;
  EXPECT_TRUE(body.as_object().at("stream").as_bool());
}

TEST_F(GatewayTest, AnthropicOverloadedFailsOverAndClientErrorsAreTranslated) {
  {
    std::string err =
        R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})";
    FakeUpstream fake(
        "HTTP/1.1 529 Overloaded\r\nContent-Type: application/json\r\n"
        "Content-Length: " +
        std::to_string(err.size()) + "\r\n\r\n" + err);
    auto& b = add_mock();
    start_gateway(anthropic_config(fake, b));
    auto r = chat(chat_body("r"));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-switchboard-provider"), "pb");
    EXPECT_EQ(r.header("x-switchboard-layer"), "1");
    EXPECT_EQ(fake.requests(), 1);
    gw_->stop(Millis(0));
    gw_.reset();
  }
  {
    std::string err =
        R"({"type":"error","error":{"type":"invalid_request_error","message":"messages: text content blocks must be non-empty"}})";
    FakeUpstream fake(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
        "Content-Length: " +
        std::to_string(err.size()) + "\r\n\r\n" + err);
    auto& b = add_mock();
    start_gateway(anthropic_config(fake, b));
    auto r = chat(chat_body("r"));
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_TRUE(is_openai_error(r.body));
    EXPECT_NE(error_message(r.body).find("text content blocks must be non-empty"),
              std::string::npos)
        << r.body;
    EXPECT_EQ(b.stats().requests, 0u);
  }
}

// ---- breaker recovery, budgets, attempts ------------------------------------------------------

TEST_F(GatewayTest, OpenBreakerLetsAProbeThroughAndRecovers) {
  MockScenario failing;
  failing.error_rate = 1.0;
  auto& a = add_mock(failing);
  auto& b = add_mock();
  start_gateway(two_layer_config(a, b,
                                 "breaker: { window: 4, min_calls: 2, failure_rate: 0.5, "
                                 "open_ms: 200, max_open_ms: 200, half_open_probes: 1 }\n"));
  for (int i = 0; i < 2; ++i) ASSERT_EQ(chat(chat_body("r")).status, 200);
  ASSERT_EQ(a.stats().requests, 2u);
  a.set_scenario(MockScenario{});  // the provider recovers
  // While open, requests go to the second layer; after open_ms a probe reaches the first
  // provider, succeeds, and closes the breaker.
  ASSERT_TRUE(eventually(
      [&] {
        auto r = chat(chat_body("r"));
        return r.status == 200 && r.header("x-switchboard-provider") == "pa";
      },
      5s));
  for (int i = 0; i < 3; ++i) {
    auto r = chat(chat_body("r"));
    EXPECT_EQ(r.header("x-switchboard-provider"), "pa");
    EXPECT_EQ(r.header("x-switchboard-layer"), "0");
  }
}

TEST_F(GatewayTest, MaxAttemptsBoundsTheUpstreamCalls) {
  MockScenario failing;
  failing.error_rate = 1.0;
  auto& a = add_mock(failing);
  start_gateway("retry: { max_attempts: 2 }\nproviders:\n" + provider("pa", a) +
                "models:\n"
                "  m1: { provider: pa }\n  m2: { provider: pa }\n  m3: { provider: pa }\n"
                "  m4: { provider: pa }\n"
                "routes:\n  r: { strategy: ordered, layers: [[m1], [m2], [m3], [m4]] }\n");
  auto r = chat(chat_body("r"));
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_TRUE(is_openai_error(r.body));
  EXPECT_EQ(a.stats().requests, 2u);
}

TEST_F(GatewayTest, BudgetBoundsTheWholeRequest) {
  MockScriptStep hang;
  hang.hang = true;
  hang.times = 10;
  auto& a = add_mock(script({hang}));
  auto& b = add_mock(script({hang}));
  // Each provider would wait 10 s; the request's budget is 400 ms in total.
  start_gateway(two_layer_config(a, b, "retry: { budget_ms: 400 }\n", "timeout_ms: 10000"));
  auto t0 = std::chrono::steady_clock::now();
  auto r = chat(chat_body("r"));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_TRUE(is_openai_error(r.body));
  EXPECT_LT(took, 3s);
  EXPECT_EQ(b.stats().requests, 0u) << "an attempt started after the budget was spent";
}

// ---- waiting for a key --------------------------------------------------------------------------

TEST_F(GatewayTest, RequestsWaitForAKeyWithinWaitForKeyMs) {
  MockScenario slow;
  slow.latency_ms = 150;
  auto& a = add_mock(slow);
  start_gateway("retry: { wait_for_key_ms: 5000 }\nproviders:\n" +
                provider("pqueue", a, "[sk-q-1]", "limits: { max_concurrent: 1 }") +
                "models:\n  ma: { provider: pqueue }\n");
  std::vector<int> statuses(3, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i)
    threads.emplace_back([&, i] { statuses[size_t(i)] = chat(chat_body("ma")).status; });
  for (auto& t : threads) t.join();
  for (int s : statuses) EXPECT_EQ(s, 200);
  EXPECT_EQ(a.stats().max_in_flight_per_key, 1);
  EXPECT_EQ(a.stats().requests, 3u);
}

TEST_F(GatewayTest, ClientLeavingWhileWaitingForAKeyNeverReachesUpstream) {
  MockScenario slow;
  slow.latency_ms = 600;
  auto& a = add_mock(slow);
  // A provider name of its own: its metrics series start at zero in this process.
  start_gateway("retry: { wait_for_key_ms: 5000 }\nproviders:\n" +
                provider("pwaitleave", a, "[sk-w-1]", "limits: { max_concurrent: 1 }") +
                "models:\n  ma: { provider: pwaitleave }\n");
  // The number of failed key acquisitions on this provider (the metric is process-wide).
  auto unavailable = [&] {
    const std::string series =
        "switchboard_keys_acquire_unavailable_total{provider=\"pwaitleave\"} ";
    auto m = get(port_, "/metrics");
    auto pos = m.body.find(series);
    return pos == std::string::npos ? -1.0 : std::atof(m.body.c_str() + pos + series.size());
  };
  const double before = unavailable();
  std::jthread holder([&] { EXPECT_EQ(chat(chat_body("ma")).status, 200); });
  ASSERT_TRUE(eventually([&] { return key_in_flight("pwaitleave#1") == 1; }, 2s));
  int fd = connect_to(port_, 5s);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, format_request("POST", "/v1/chat/completions", chat_body("ma"), {})));
  // The second request found no free key and is waiting for one.
  ASSERT_TRUE(eventually([&] { return unavailable() >= before + 1; }, 2s));
  ::close(fd);
  holder.join();
  // A third request gets the key without delay; the one that left never reached the upstream.
  auto r = chat(chat_body("ma"));
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-attempts"), "1");
  EXPECT_TRUE(eventually([&] { return key_in_flight("pwaitleave#1") == 0; }, 2s));
  EXPECT_EQ(a.stats().requests, 2u) << "a request whose client had left was sent upstream";
}

// ---- HTTP-level limits --------------------------------------------------------------------------

TEST_F(GatewayTest, MalformedHttpAndHugeHeadersAreRefusedAndServingContinues) {
  auto& a = add_mock();
  start_gateway("server: { max_header_bytes: 2048 }\nproviders:\n" + provider("pa", a) +
                "models:\n  ma: { provider: pa }\n");
  {
    int fd = connect_to(port_, 3s);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "THIS IS NOT HTTP\r\n\r\n"));
    auto r = parse_response(read_to_eof(fd));
    ::close(fd);
    EXPECT_EQ(r.status, 400) << r.raw;
    expect_no_attempt_headers(r);
  }
  {
    auto r = chat(chat_body("ma"), {{"x-padding", std::string(8000, 'p')}});
    EXPECT_EQ(r.status, 431) << r.raw.substr(0, 200);
    EXPECT_TRUE(is_openai_error(r.body));
    expect_no_attempt_headers(r);
  }
  EXPECT_EQ(a.stats().requests, 0u);
  EXPECT_EQ(chat(chat_body("ma")).status, 200);
}

// Requests written back to back on one connection are answered in order (bytes of the next
// request that arrive with the current one are kept), and framing that two parsers could read
// differently is refused rather than guessed at.
TEST_F(GatewayTest, PipelinedRequestsAndAmbiguousFraming) {
  auto& a = add_mock();
  start_gateway("providers:\n" + provider("pa", a) + "models:\n  ma: { provider: pa }\n");
  {
    const std::string body = chat_body("ma");
    const std::string one =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
        "application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    int fd = connect_to(port_, 3s);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, one + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + one +
                                 "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    std::string raw = read_to_eof(fd);
    ::close(fd);
    size_t pos = 0;
    std::vector<int> codes;
    while ((pos = raw.find("HTTP/1.1 ", pos)) != std::string::npos) {
      codes.push_back(std::atoi(raw.c_str() + pos + 9));
      pos += 9;
    }
    EXPECT_EQ(codes, (std::vector<int>{200, 200, 200, 200})) << raw.substr(0, 400);
    EXPECT_NE(raw.find("\"status\":\"ok\""), std::string::npos);
  }
  for (const char* framing : {"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                              "Content-Length: 5\r\nContent-Length: 6\r\n",
                              "Transfer-Encoding: gzip\r\n", "Content-Length: 5x\r\n"}) {
    int fd = connect_to(port_, 3s);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, std::string("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n") +
                                 framing + "\r\n0\r\n\r\n"));
    auto r = parse_response(read_to_eof(fd));
    ::close(fd);
    EXPECT_EQ(r.status, 400) << framing << r.raw;
    EXPECT_TRUE(is_openai_error(r.body)) << r.body;
  }
  EXPECT_EQ(a.stats().requests, 2u);
}

TEST_F(GatewayTest, ConnectionsBeyondMaxConnectionsGet503) {
  auto& a = add_mock();
  start_gateway("server: { max_connections: 2, threads: 1 }\nproviders:\n" + provider("pa", a) +
                "models:\n  ma: { provider: pa }\n");
  int c1 = connect_to(port_, 3s);
  int c2 = connect_to(port_, 3s);
  ASSERT_GE(c1, 0);
  ASSERT_GE(c2, 0);
  // Both held connections are accepted once a request on each has been answered.
  for (int fd : {c1, c2}) {
    std::string req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_TRUE(send_all(fd, req));
    char buf[1024];
    ASSERT_GT(::recv(fd, buf, sizeof(buf), 0), 0);
  }
  auto r = get(port_, "/healthz");
  EXPECT_EQ(r.status, 503) << r.raw;
  expect_no_attempt_headers(r);
  EXPECT_TRUE(is_openai_error(r.body));
  ::close(c1);
  ::close(c2);
  EXPECT_TRUE(eventually([&] { return get(port_, "/healthz").status == 200; }, 3s));
}

// ---- graceful stop ------------------------------------------------------------------------------

TEST_F(GatewayTest, StopDrainsInFlightRequests) {
  MockScenario slow;
  slow.latency_ms = 300;
  auto& a = add_mock(slow);
  start_gateway("providers:\n" + provider("pa", a) + "models:\n  ma: { provider: pa }\n");
  HttpResult result;
  std::jthread client([&] { result = chat(chat_body("ma")); });
  // The upstream has the request (a monotonic signal, unlike a gauge that could be missed).
  ASSERT_TRUE(eventually([&] { return a.stats().requests == 1; }, 2s));
  gw_->stop(Millis(5000));
  client.join();
  EXPECT_EQ(result.status, 200) << result.error << result.body;
  EXPECT_EQ(a.stats().by_status[200], 1u);
  // No longer accepting.
  EXPECT_FALSE(get(port_, "/healthz").transport_ok);
}

// A slow answer (long enough for the client-disconnect watch to start) on a keep-alive
// connection, stream and non-stream: each response arrives without the client sending anything
// more, and the connection serves the next request.
TEST_F(GatewayTest, KeepAliveAfterSlowRequestsAndStreams) {
  MockScenario slow;
  slow.latency_ms = 120;
  auto& a = add_mock(slow);
  start_gateway("providers:\n" + provider("pa", a) + "models:\n  ma: { provider: pa }\n");
  int fd = connect_to(port_, 5s);
  ASSERT_GE(fd, 0);
  auto send_req = [&](bool stream) {
    std::string body = chat_body("ma", stream);
    return send_all(fd,
                    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                    "application/json\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n" + body);
  };
  auto read_response = [&](bool stream) {
    std::string got;
    char buf[8192];
    while (true) {
      auto end = got.find("\r\n\r\n");
      if (end != std::string::npos) {
        if (stream) {
          if (got.find("\r\n0\r\n\r\n", end) != std::string::npos) break;
        } else {
          auto cl = lower(got).find("content-length:");
          if (cl != std::string::npos && got.size() >= end + 4 + std::stoul(got.substr(cl + 15)))
            break;
        }
      }
      ssize_t k = ::recv(fd, buf, sizeof(buf), 0);
      if (k <= 0) return std::string("<connection ended: ") + got + ">";
      got.append(buf, size_t(k));
    }
    return got;
  };
  for (bool stream : {false, true, false, true}) {
    SCOPED_TRACE(stream ? "stream" : "non-stream");
    ASSERT_TRUE(send_req(stream));
    std::string got = read_response(stream);
    ASSERT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got;
    if (stream) {
      EXPECT_NE(got.find("data: [DONE]"), std::string::npos) << got;
    }
  }
  ::close(fd);
  EXPECT_EQ(a.stats().requests, 4u);
}

TEST_F(GatewayTest, GatewaySideRpmLimitAnswers429WithoutCallingUpstream) {
  auto& a = add_mock();
  start_gateway("retry: { wait_for_key_ms: 50 }\nproviders:\n" +
                provider("pa", a, "[sk-a-1]", "limits: { rpm: 1 }") +
                "models:\n  ma: { provider: pa }\n");
  ASSERT_EQ(chat(chat_body("ma")).status, 200);
  auto r = chat(chat_body("ma"));
  ASSERT_EQ(r.status, 429) << r.body;
  EXPECT_TRUE(is_openai_error(r.body));
  int retry_after = std::atoi(r.header("retry-after").c_str());
  EXPECT_GE(retry_after, 30) << r.header("retry-after");
  EXPECT_LE(retry_after, 61) << r.header("retry-after");
  EXPECT_EQ(a.stats().requests, 1u) << "the gateway sent a request beyond the key's rpm";
}

TEST_F(GatewayTest, BodyIsForwardedUntouchedExceptTheModel) {
  std::string answer = R"({"id":"x","object":"chat.completion","created":1,"model":"m",)"
                       R"("choices":[{"index":0,"message":{"role":"assistant","content":"hi"},)"
                       R"("finish_reason":"stop"}],"usage":{"prompt_tokens":1,)"
                       R"("completion_tokens":1,"total_tokens":2}})";
  FakeUpstream fake("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                    std::to_string(answer.size()) + "\r\n\r\n" + answer);
  auto& b = add_mock();
  start_gateway(fake_then_mock(fake, b));
  // Unknown fields, a nested "model" before the top-level one, escapes and non-ASCII text.
  const std::string sent =
      R"({"metadata":{"model":"nested-keep","note":"a \"quoted\" }{ string"},)"
      R"("messages":[{"role":"user","content":"h\u00e9llo \u2603 \"model\":\"x\""}],)"
      R"("model":"r","logit_bias":{"50256":-100},"seed":7,"response_format":{"type":"json_object"}})";
  auto r = chat(sent);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, answer);  // the upstream's bytes, as they came
  const std::string up = fake.last_request();
  auto got = parse_json(up.substr(up.find("\r\n\r\n") + 4));
  auto want = parse_json(sent);
  ASSERT_TRUE(got.is_object()) << up;
  EXPECT_EQ(got.as_object().at("model").as_string(), "up-f");
  got.as_object().erase("model");
  want.as_object().erase("model");
  EXPECT_EQ(got, want) << up;
}

// The model the gateway chose is the only one the upstream can read: a key written with escapes
// is still rewritten, and a repeated "model" is refused rather than forwarded ambiguous.
TEST_F(GatewayTest, TheUpstreamReadsOnlyTheChosenModel) {
  std::string answer = R"({"id":"x","object":"chat.completion","created":1,"model":"m",)"
                       R"("choices":[{"index":0,"message":{"role":"assistant","content":"hi"},)"
                       R"("finish_reason":"stop"}]})";
  FakeUpstream fake("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                    std::to_string(answer.size()) + "\r\n\r\n" + answer);
  auto& b = add_mock();
  start_gateway(fake_then_mock(fake, b));
  auto escaped = chat(R"({"mod\u0065l":"r","messages":[{"role":"user","content":"hi"}],"seed":7})");
  ASSERT_EQ(escaped.status, 200) << escaped.body;
  const std::string up = fake.last_request();
  const std::string up_body = up.substr(up.find("\r\n\r\n") + 4);
  auto got = parse_json(up_body);
  ASSERT_TRUE(got.is_object()) << up;
  EXPECT_EQ(got.as_object().size(), 3u) << up_body;  // model, messages, seed: one model
  EXPECT_EQ(got.as_object().at("model").as_string(), "up-f");
  EXPECT_EQ(got.as_object().at("seed").as_int64(), 7);
  EXPECT_EQ(up_body.find("\"r\""), std::string::npos) << up_body;

  const int before = fake.requests();
  for (const char* twice :
       {R"({"model":"r","messages":[{"role":"user","content":"hi"}],"model":"mb"})",
        R"({"model":"r","messages":[{"role":"user","content":"hi"}],"mod\u0065l":"r"})"}) {
    auto r = chat(twice);
    EXPECT_EQ(r.status, 400) << twice;
    EXPECT_NE(r.body.find("'model' must appear only once"), std::string::npos) << r.body;
  }
  EXPECT_EQ(fake.requests(), before);
  EXPECT_EQ(b.stats().requests, 0u);
}

// Usage is accounted from the stream even when the client's stream_options decline it, and the
// client still does not get it.
TEST_F(GatewayTest, StreamUsageIsRequestedUpstreamWhateverTheClientsStreamOptions) {
  const std::string usage_chunk =
      R"({"id":"c1","object":"chat.completion.chunk","model":"fake","choices":[],)"
      R"("usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}})";
  FakeUpstream fake(sse_response({content_chunk("hello"), usage_chunk, "[DONE]"}));
  auto& b = add_mock();
  start_gateway(fake_then_mock(fake, b));
  for (const std::string options : {R"("stream_options":{"include_usage":false})",
                                    R"("stream_options":null)", R"("stream_options":{})"}) {
    SCOPED_TRACE(options);
    auto r = chat(chat_body("r", true, options));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(stream_text(r), "hello");
    EXPECT_EQ(r.body.find("\"usage\""), std::string::npos) << r.body;
    EXPECT_EQ(r.sse_data().back(), "[DONE]");
    const std::string up = fake.last_request();
    auto body = parse_json(up.substr(up.find("\r\n\r\n") + 4));
    ASSERT_TRUE(body.is_object()) << up;
    const auto& bo = body.as_object();
    EXPECT_EQ(bo.at("model").as_string(), "up-f");
    ASSERT_TRUE(bo.at("stream_options").is_object()) << up;
    EXPECT_EQ(bo.at("stream_options").as_object().at("include_usage"), true) << up;
  }
  // A model key written with escapes (the body is rebuilt from its document): the same.
  for (const std::string& options : {std::string(), std::string(R"(,"stream_options":null)")}) {
    SCOPED_TRACE(options);
    auto r = chat(R"({"m\u006fdel":"r","stream":true,"messages":[{"role":"user","content":"x"}])" +
                  options + "}");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(stream_text(r), "hello");
    EXPECT_EQ(r.body.find("\"usage\""), std::string::npos) << r.body;
    const std::string up = fake.last_request();
    auto body = parse_json(up.substr(up.find("\r\n\r\n") + 4));
    ASSERT_TRUE(body.is_object()) << up;
    const auto& bo = body.as_object();
    EXPECT_EQ(bo.size(), 4u) << up;  // model, stream, messages, stream_options
    EXPECT_EQ(bo.at("model").as_string(), "up-f");
    EXPECT_EQ(bo.at("stream"), true);
    ASSERT_TRUE(bo.at("stream_options").is_object()) << up;
    EXPECT_EQ(bo.at("stream_options").as_object().at("include_usage"), true) << up;
  }
}

TEST_F(GatewayTest, RevokedKeyIsRetiredAndAnotherKeyServes) {
  MockScenario s;
  s.invalid_keys = {"sk-revoked"};
  auto& a = add_mock(s);
  start_gateway("providers:\n" + provider("pa", a, "[sk-revoked, sk-good]") +
                "models:\n  ma: { provider: pa }\n");
  for (int i = 0; i < 4; ++i) {
    auto r = chat(chat_body("ma"));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-switchboard-key"), "pa#2");
  }
  // At most one request ever met the revoked key; it is marked dead in the admin API.
  EXPECT_LE(a.stats().by_status[401], 1u);
  auto dead = admin_key("pa#1");
  ASSERT_TRUE(dead.is_object());
  if (a.stats().by_status[401] == 1) {
    EXPECT_EQ(dead.as_object().at("state").as_string(), "dead");
  }
  // With the disable/enable admin API, an operator can take the good key out too: then nothing
  // can serve, and the client gets an OpenAI-shaped error, not a hang.
  // Key ids contain '#', which a URL carries as %23 (curl and every HTTP library would cut a
  // raw '#' off as a fragment).
  auto dis = post(port_, "/admin/keys/pa%232/disable", "");
  ASSERT_EQ(dis.status, 200) << dis.body;
  EXPECT_EQ(admin_key("pa#2").as_object().at("state").as_string(), "disabled");
  auto r = chat(chat_body("ma"));
  EXPECT_GE(r.status, 500) << r.body;
  EXPECT_TRUE(is_openai_error(r.body));
  ASSERT_EQ(post(port_, "/admin/keys/pa%232/enable", "").status, 200);
  EXPECT_EQ(post(port_, "/admin/keys/pa%239/enable", "").status, 404);
  EXPECT_EQ(chat(chat_body("ma")).status, 200);
}

TEST_F(GatewayTest, ChunkedRequestBodiesHttp10AndIdleTimeout) {
  auto& a = add_mock();
  start_gateway("server: { idle_timeout_ms: 300 }\nproviders:\n" + provider("pa", a) +
                "models:\n  ma: { provider: pa }\n");
  {
    // A chunked request body (streaming HTTP clients send these), split mid-JSON.
    const std::string body = chat_body("ma");
    const size_t half = body.size() / 2;
    char l1[24], l2[24];
    std::snprintf(l1, sizeof(l1), "%zx\r\n", half);
    std::snprintf(l2, sizeof(l2), "%zx\r\n", body.size() - half);
    std::string req =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
        "application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
        std::string(l1) + body.substr(0, half) + "\r\n" + l2 + body.substr(half) + "\r\n0\r\n\r\n";
    int fd = connect_to(port_, 3s);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, req));
    auto r = parse_response(read_to_eof(fd));
    ::close(fd);
    EXPECT_EQ(r.status, 200) << r.raw;
  }
  {
    // HTTP/1.0: answered in kind, and the connection closes after the response.
    const std::string body = chat_body("ma");
    int fd = connect_to(port_, 3s);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd,
                         "POST /v1/chat/completions HTTP/1.0\r\nContent-Type: "
                         "application/json\r\nContent-Length: " +
                             std::to_string(body.size()) + "\r\n\r\n" + body));
    std::string raw = read_to_eof(fd);  // returns only because the server closed
    ::close(fd);
    EXPECT_EQ(raw.rfind("HTTP/1.0 200", 0), 0u) << raw;
  }
  {
    // An idle keep-alive connection is closed by the server after idle_timeout_ms.
    int fd = connect_to(port_, 5s);
    ASSERT_GE(fd, 0);
    auto t0 = std::chrono::steady_clock::now();
    char buf[64];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    auto took = std::chrono::steady_clock::now() - t0;
    ::close(fd);
    EXPECT_EQ(n, 0) << "expected the server to close the idle connection";
    EXPECT_LT(took, 4s);
  }
  EXPECT_EQ(a.stats().requests, 2u);
}

// Invariant 4: each request owns its fallback plan. One request's failure, among concurrent
// ones, moves that request alone to the next layer.
TEST_F(GatewayTest, OneRequestsFailureNeverMovesConcurrentRequests) {
  MockScenario s = script({step(500)});
  s.latency_ms = 80;  // the requests overlap
  auto& a = add_mock(s);
  auto& b = add_mock();
  start_gateway(two_layer_config(a, b));
  constexpr int kClients = 8;
  std::vector<HttpResult> results(kClients);
  {
    std::vector<std::jthread> threads;
    for (int i = 0; i < kClients; ++i)
      threads.emplace_back([&, i] { results[size_t(i)] = chat(chat_body("r")); });
  }
  int layer0 = 0, layer1 = 0;
  for (const auto& r : results) {
    ASSERT_EQ(r.status, 200) << r.body;
    if (r.header("x-switchboard-layer") == "0") {
      ++layer0;
      EXPECT_EQ(r.header("x-switchboard-provider"), "pa");
      EXPECT_EQ(r.header("x-switchboard-attempts"), "1");
    } else {
      ++layer1;
      EXPECT_EQ(r.header("x-switchboard-provider"), "pb");
      EXPECT_EQ(r.header("x-switchboard-attempts"), "2");
    }
  }
  EXPECT_EQ(layer1, 1);
  EXPECT_EQ(layer0, kClients - 1);
  EXPECT_EQ(b.stats().requests, 1u);
}

TEST_F(GatewayTest, SessionHeaderKeepsAConversationOnOneKey) {
  auto& a = add_mock();
  start_gateway("providers:\n" + provider("pa", a, "[sk-a-1, sk-a-2, sk-a-3]") +
                "models:\n  ma: { provider: pa }\n");
  for (const std::string session : {"conv-a", "conv-b"}) {
    SCOPED_TRACE(session);
    std::string first;
    for (int i = 0; i < 4; ++i) {
      auto r = chat(chat_body("ma"), {{"x-switchboard-session", session}});
      ASSERT_EQ(r.status, 200) << r.body;
      if (i == 0) first = r.header("x-switchboard-key");
      EXPECT_EQ(r.header("x-switchboard-key"), first);
    }
  }
  // Without a session, requests spread over the keys.
  std::set<std::string> used;
  for (int i = 0; i < 6; ++i) used.insert(chat(chat_body("ma")).header("x-switchboard-key"));
  EXPECT_GE(used.size(), 2u);
}

}  // namespace
}  // namespace switchboard::gwtest

namespace switchboard::gwtest {
namespace {

// A keep-alive upstream that answers every request on a connection and counts connections.
class KeepAliveUpstream {
 public:
  uint16_t port() const { return server_.port(); }
  int connections() const { return connections_.load(); }

 private:
  void serve(int c) {
    connections_++;
    std::string in;
    char buf[4096];
    while (!server_.stopping()) {
      if (size_t n = complete_request_size(in); n > 0) {
        in.erase(0, n);
        if (!send_all(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) break;
        continue;
      }
      pollfd pc{c, POLLIN, 0};
      if (::poll(&pc, 1, 20) <= 0) continue;
      ssize_t k = ::recv(c, buf, sizeof(buf), 0);
      if (k <= 0) break;
      in.append(buf, size_t(k));
    }
    ::close(c);
  }

  std::atomic<int> connections_{0};
  LoopbackServer server_{[this](int c) { serve(c); }};  // last: stops before the counter goes
};

int connections_for(size_t max_requests_per_connection, int requests) {
  KeepAliveUpstream up;
  boost::asio::io_context ctx;
  net::HttpClientOptions options;
  options.max_requests_per_connection = max_requests_per_connection;
  net::HttpClient client(ctx.get_executor(), options);
  int ok = 0;
  boost::asio::co_spawn(
      ctx,
      [&]() -> boost::asio::awaitable<void> {
        for (int i = 0; i < requests; ++i) {
          net::HttpRequest req;
          req.url = "http://127.0.0.1:" + std::to_string(up.port()) + "/v1/x";
          req.body = "{}";
          req.deadline = MonoClock::now() + 10s;
          net::HttpResponse res;
          auto st = co_await client.fetch(req, res);
          if (st.ok() && res.head.status == 200 && res.body == "ok") ++ok;
        }
      },
      boost::asio::detached);
  ctx.run();
  EXPECT_EQ(ok, requests);
  return up.connections();
}

// Upstream connections are reused, and retired after max_requests_per_connection responses (so
// that load spreads again over an upstream's processes or backends, and DNS changes are seen).
TEST(HttpClientPool, ConnectionsAreRetiredAfterMaxRequests) {
  EXPECT_EQ(connections_for(3, 7), 3);  // 3 + 3 + 1
  EXPECT_EQ(connections_for(3, 6), 2);
  EXPECT_EQ(connections_for(0, 7), 1);  // 0: never retired
  EXPECT_EQ(connections_for(1, 4), 4);
}

}  // namespace
}  // namespace switchboard::gwtest
