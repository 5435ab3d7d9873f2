// Provider quotas through a running gateway (issue 26): the standing in the answer's header, in
// /admin/quotas, /admin/models and /metrics; a critical provider behind the others of its layer,
// an exhausted one never called; the count read back after a restart.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "gateway_fixture.h"
#include "quota/quota.h"
#include "test_support.h"

namespace switchboard::gwtest {
namespace {

class ProviderQuotaTest : public GatewayTest {
 protected:
  // Provider `a` with `quota`, provider `b` without one; route `r` tries a's model first.
  void start_two(const std::string& quota) {
    auto& ma = add_mock();
    auto& mb = add_mock();
    a_ = &ma;
    b_ = &mb;
    start_gateway("providers:\n" + provider("a", ma, "[sk-a-secret-1]", "quota: " + quota) +
                  provider("b", mb, "[sk-b-secret-1]") +
                  "models:\n"
                  "  ma: { provider: a, cost: { input_per_mtok: 1, output_per_mtok: 2 } }\n"
                  "  mb: { provider: b }\n"
                  "routes:\n  r: { strategy: ordered, layers: [[ma, mb]] }\n");
  }

  boost::json::object quota_of(const std::string& provider) {
    auto v = parse_json(get(port_, "/admin/quotas").body);
    if (!v.is_object()) return {};
    for (const auto& q : v.as_object().at("quotas").as_array())
      if (q.as_object().at("provider").as_string() == provider) return q.as_object();
    return {};
  }

  gateway::MockProvider* a_ = nullptr;
  gateway::MockProvider* b_ = nullptr;
};

TEST_F(ProviderQuotaTest, StandingsShowAndRoutingDemotesThenSkipsTheProvider) {
  start_two("{ requests: 10, warning: 0.5, critical: 0.8 }");
  for (int i = 0; i < 4; ++i) {
    auto r = chat(chat_body("r"));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-switchboard-provider"), "a");
    EXPECT_FALSE(r.has("x-switchboard-quota"));  // healthy: no header
  }
  // The fifth call reaches half the quota: warning, said by the answer that reached it.
  auto r = chat(chat_body("r"));
  EXPECT_EQ(r.header("x-switchboard-provider"), "a");
  EXPECT_EQ(r.header("x-switchboard-quota"), "warning 50%");
  auto q = quota_of("a");
  ASSERT_FALSE(q.empty());
  EXPECT_EQ(q.at("status").as_string(), "warning");
  EXPECT_EQ(q.at("used").as_object().at("requests").to_number<int64_t>(), 5);
  EXPECT_EQ(q.at("limits").as_object().at("requests").to_number<int64_t>(), 10);
  EXPECT_EQ(q.at("period").as_string(), "month");
  EXPECT_TRUE(quota_of("b").empty());  // no quota, not listed
  const std::string metrics = get(port_, "/metrics").body;
  EXPECT_NE(metrics.find("switchboard_quota_used_ratio{provider=\"a\"} 0.5"), std::string::npos)
      << metrics.substr(0, 2000);
  EXPECT_NE(metrics.find("switchboard_quota_status{provider=\"a\",status=\"warning\"} 1"),
            std::string::npos);
  EXPECT_NE(get(port_, "/admin/models").body.find("\"quota\":\"warning 50%\""), std::string::npos);

  // Streams carry it in their head too.
  r = chat(chat_body("r", true));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-switchboard-quota"), "warning 50%");  // read before this call counted
  (void)chat(chat_body("r"));
  (void)chat(chat_body("r"));  // 8 of 10: critical
  EXPECT_EQ(quota_of("a").at("status").as_string(), "critical");

  // Critical: the route tries b first now; a is not called.
  const uint64_t a_calls = a_->stats().requests;
  r = chat(chat_body("r"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-switchboard-provider"), "b");
  EXPECT_FALSE(r.has("x-switchboard-quota"));  // b has none
  EXPECT_EQ(a_->stats().requests, a_calls);
  // Asked for by name, a still serves until the quota is used up.
  r = chat(chat_body("ma"));
  EXPECT_EQ(r.header("x-switchboard-quota"), "critical 90%");
  r = chat(chat_body("ma"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-switchboard-quota"), "exhausted 100%");

  // Exhausted: never called again this month; the route goes to b, the model alone is refused.
  const uint64_t at_limit = a_->stats().requests;
  r = chat(chat_body("r"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-switchboard-provider"), "b");
  r = chat(chat_body("ma"));
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_TRUE(is_openai_error(r.body));
  EXPECT_NE(r.body.find("quota_exhausted"), std::string::npos) << r.body;
  EXPECT_NE(error_message(r.body).find("provider 'a'"), std::string::npos) << r.body;
  // Retry-After: when the month ends (at most 31 days away).
  const int64_t retry = std::stoll(r.header("retry-after"));
  EXPECT_GT(retry, 0);
  EXPECT_LE(retry, 31 * 24 * 3600);
  r = chat(chat_body("a/anything"));  // provider/name outside the catalog: the same quota
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_EQ(a_->stats().requests, at_limit);
  EXPECT_EQ(quota_of("a").at("used").as_object().at("requests").to_number<int64_t>(), 10);
  // The plan that `route` would print says why.
  EXPECT_EQ(quota_of("a").at("status").as_string(), "exhausted");
}

TEST_F(ProviderQuotaTest, TokensAndSpendCountStreamsAndTheCountSurvivesARestart) {
  start_two("{ period: day, tokens: 1000000, usd: 1000 }");
  for (int i = 0; i < 3; ++i) {
    auto r = chat(chat_body("ma", i % 2 == 0));
    ASSERT_EQ(r.status, 200) << r.body;
  }
  auto q = quota_of("a");
  ASSERT_FALSE(q.empty());
  EXPECT_EQ(q.at("period").as_string(), "day");
  const auto used = q.at("used").as_object();
  EXPECT_EQ(used.at("requests").to_number<int64_t>(), 3);
  const int64_t tokens = used.at("tokens").to_number<int64_t>();
  EXPECT_GE(tokens, 3 * 16);  // at least the mock's 16 completion tokens each, streams included
  const double usd = used.at("usd").to_number<double>();
  EXPECT_GT(usd, 0);

  // Stopped (the store flushes) and started again on the same state: the day's count is back.
  gw_->stop(Millis(1000));
  gw_.reset();
  mocks_.clear();
  start_two("{ period: day, tokens: 1000000, usd: 1000 }");
  q = quota_of("a");
  ASSERT_FALSE(q.empty());
  EXPECT_EQ(q.at("used").as_object().at("requests").to_number<int64_t>(), 3);
  EXPECT_EQ(q.at("used").as_object().at("tokens").to_number<int64_t>(), tokens);
  EXPECT_NEAR(q.at("used").as_object().at("usd").to_number<double>(), usd, 1e-9);
  ASSERT_EQ(chat(chat_body("ma")).status, 200);
  EXPECT_EQ(quota_of("a").at("used").as_object().at("requests").to_number<int64_t>(), 4);
}

// With a cluster, the counts go to Redis (every 0.5 s) and come back with the other gateways':
// a count another gateway added there is this gateway's too.
TEST_F(ProviderQuotaTest, WithAClusterTheCountMeetsTheOtherGatewaysInRedis) {
  testsupport::RedisServer redis;
  auto& ma = add_mock();
  start_gateway("cluster: { redis: \"" + redis.url() +
                "\", connect_timeout_ms: 5000 }\nproviders:\n" +
                provider("a", ma, "[sk-a-secret-1]", "quota: { period: day, requests: 10 }") +
                "models:\n  ma: { provider: a }\n");
  for (int i = 0; i < 3; ++i) ASSERT_EQ(chat(chat_body("ma")).status, 200);
  const std::string key =
      "'sb:{#quota}:a:" + quota::period_at(QuotaPeriod::kDay, std::chrono::system_clock::now()).id +
      "'";
  ASSERT_TRUE(testsupport::wait_until([&] { return redis.cli("HGET " + key + " r") == "3"; }))
      << redis.cli("HGETALL " + key);
  // Another gateway served 6 more.
  EXPECT_EQ(redis.cli("HINCRBY " + key + " r 6"), "9");
  ASSERT_TRUE(testsupport::wait_until([&] {
    return quota_of("a").at("used").as_object().at("requests").to_number<int64_t>() == 9;
  }));
  EXPECT_EQ(quota_of("a").at("status").as_string(), "warning");  // 90%
  ASSERT_EQ(chat(chat_body("ma")).status, 200);                  // the tenth
  EXPECT_EQ(chat(chat_body("ma")).status, 429);
  EXPECT_EQ(ma.stats().requests, 4u);
}

}  // namespace
}  // namespace switchboard::gwtest
