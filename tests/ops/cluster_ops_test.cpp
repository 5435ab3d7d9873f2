// Several `switchboard serve` processes on one private Redis (issue 21): they share every key's
// limits as one gateway would, a killed gateway's slots come back after the lease TTL, and Redis
// dying mid-load crashes nothing and leaves no key stuck.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <fstream>
#include <list>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "gateway_fixture.h"
#include "quota/quota.h"
#include "serve_process.h"
#include "test_support.h"

namespace switchboard::gwtest {
namespace {

using testsupport::RedisServer;
using testsupport::wait_until;

// Serving, and joined to the cluster: requests before Redis answers would use the local share
// (exact counts need every gateway on the shared one; a loaded machine may take a while).
bool joined(ServeProcess& g) {
  if (!g.ready()) return false;
  if (wait_until(
          [&] {
            return get(g.port(), "/readyz").body.find("\"redis\":\"up\"") != std::string::npos;
          },
          std::chrono::seconds(20)))
    return true;
  std::fprintf(stderr, "not joined: /readyz says %s\n", get(g.port(), "/readyz").body.c_str());
  return false;
}

class ClusterOpsTest : public GatewayTest {
 protected:
  // One provider `up` on `mock` with three keys, model `m`, and the cluster section.
  std::string write_config(
      const gateway::MockProvider& mock, const RedisServer& redis, const std::string& limits,
      const std::string& cluster_extra = {},
      const std::string& retry = "{ wait_for_key_ms: 20000, budget_ms: 60000 }",
      const std::string& keys = "[sk-a-secret-1, sk-b-secret-2, sk-c-secret-3]") {
    const std::string cfg = (dir_ / ("serve-" + std::to_string(configs_++) + ".yaml")).string();
    std::ofstream f(cfg);
    f << "state: { path: " << (dir_ / ("state-" + std::to_string(configs_) + ".db")).string()
      << " }\n"
      << "log: { level: warn, access_log: false }\n"
      << "server: { threads: 2 }\n"
      << "retry: " << retry << "\n"
      << "cluster: { redis: \"" << redis.url()
      << "\", connect_timeout_ms: 5000, command_timeout_ms: 5000" << cluster_extra << " }\n"
      << "providers:\n"
      << provider("up", mock, keys, "limits: " + limits) << "models:\n  m: { provider: up }\n";
    return cfg;
  }
  std::string log_path(int i) const {
    return (dir_ / ("serve-" + std::to_string(i) + ".log")).string();
  }
  int configs_ = 0;
};

TEST_F(ClusterOpsTest, FourGatewaysKeepEveryKeyUnderItsConcurrencyWithoutA429) {
  RedisServer redis;
  MockScenario sc;
  sc.latency_ms = 30;
  sc.chunks = 4;
  sc.chunk_delay_ms = 5;
  sc.max_concurrent = 2;  // the upstream refuses a third request on a key with a 429
  auto& mock = add_mock(sc);
  const std::string cfg =
      write_config(mock, redis, "{ max_concurrent: 2 }", ", expected_gateways: 4");
  std::vector<std::unique_ptr<ServeProcess>> gws;
  for (int i = 0; i < 4; ++i) gws.push_back(std::make_unique<ServeProcess>(cfg, log_path(i)));
  for (auto& g : gws) ASSERT_TRUE(joined(*g));
  for (auto& g : gws)
    ASSERT_TRUE(wait_until([&] {
      return get(g->port(), "/readyz").body.find("\"redis\":\"up\"") != std::string::npos;
    }));

  constexpr int kClients = 48;  // 8x the 6 slots
  constexpr int kEach = 4;
  std::atomic<int> ok{0};
  std::vector<std::string> failures(kClients);
  std::vector<std::jthread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int n = 0; n < kEach; ++n) {
        const bool stream = (c + n) % 2 == 0;
        auto r = post(gws[size_t(c % 4)]->port(), "/v1/chat/completions", chat_body("m", stream));
        if (r.status == 200 && (!stream || stream_text(r).size() > 0)) {
          ok++;
        } else {
          failures[size_t(c)] = std::to_string(r.status) + " " + r.body;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  for (const auto& f : failures) EXPECT_TRUE(f.empty()) << f;
  EXPECT_EQ(ok.load(), kClients * kEach);
  const auto stats = mock.stats();
  EXPECT_LE(stats.max_in_flight_per_key, 2) << "a key had more requests in flight than allowed";
  EXPECT_EQ(stats.max_in_flight_per_key, 2) << "the slots were used";
  EXPECT_EQ(stats.by_status.count(429), 0u) << "the upstream never had to refuse";
  EXPECT_EQ(stats.requests, uint64_t(kClients * kEach));
  for (const char* key : {"up#1", "up#2", "up#3"})
    EXPECT_EQ(redis.cli(std::string("ZCARD 'sb:{up}:") + key + ":l'"), "0") << key;
}

TEST_F(ClusterOpsTest, AKeysRpmHoldsAcrossGatewaysAndRefusalsCarryRetryAfter) {
  RedisServer redis;
  auto& mock = add_mock();
  const std::string cfg =
      write_config(mock, redis, "{ rpm: 5 }", ", expected_gateways: 4",
                   "{ wait_for_key_ms: 0, budget_ms: 60000 }", "[sk-a-secret-1, sk-b-secret-2]");
  std::vector<std::unique_ptr<ServeProcess>> gws;
  for (int i = 0; i < 4; ++i) gws.push_back(std::make_unique<ServeProcess>(cfg, log_path(i)));
  for (auto& g : gws) ASSERT_TRUE(joined(*g));
  std::atomic<int> ok{0}, limited{0}, other{0};
  std::vector<std::jthread> clients;
  for (int c = 0; c < 40; ++c) {  // 4x the 10 requests the two keys allow this minute
    clients.emplace_back([&, c] {
      auto r = post(gws[size_t(c % 4)]->port(), "/v1/chat/completions", chat_body("m"));
      if (r.status == 200) {
        ok++;
      } else if (r.status == 429 && !r.header("retry-after").empty() &&
                 std::stoi(r.header("retry-after")) >= 1 &&
                 std::stoi(r.header("retry-after")) <= 61) {
        limited++;
      } else {
        other++;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 10) << "every request the keys allow, and no more";
  EXPECT_EQ(limited.load(), 30);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(mock.stats().requests, 10u);
}

TEST_F(ClusterOpsTest, AKilledGatewaysSlotsReturnWithinTheLeaseTtl) {
  RedisServer redis;
  MockScenario slow;
  slow.latency_ms = 60000;
  auto& mock = add_mock(slow);
  constexpr int kTtl = 1500;
  const std::string cfg =
      write_config(mock, redis, "{ max_concurrent: 2 }", ", lease_ttl_ms: " + std::to_string(kTtl),
                   "{ wait_for_key_ms: 20000, budget_ms: 60000 }", "[sk-a-secret-1]");
  ServeProcess doomed(cfg, log_path(0));
  ServeProcess other(cfg, log_path(1));
  ASSERT_TRUE(joined(doomed));
  ASSERT_TRUE(joined(other));
  // The doomed gateway holds both slots of the only key (its upstream calls hang).
  std::vector<std::jthread> hung;
  for (int i = 0; i < 2; ++i)
    hung.emplace_back([&] { (void)post(doomed.port(), "/v1/chat/completions", chat_body("m")); });
  ASSERT_TRUE(wait_until([&] { return redis.cli("ZCARD 'sb:{up}:up#1:l'") == "2"; }));
  // Renewal keeps them while it lives.
  std::this_thread::sleep_for(std::chrono::milliseconds(2 * kTtl));
  EXPECT_EQ(redis.cli("ZCARD 'sb:{up}:up#1:l'"), "2");
  mock.set_scenario(MockScenario{});  // from now on the upstream answers at once
  doomed.kill9();
  const auto died = std::chrono::steady_clock::now();
  auto r = post(other.port(), "/v1/chat/completions", chat_body("m"));
  const auto waited = std::chrono::steady_clock::now() - died;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_LE(waited, std::chrono::milliseconds(kTtl + 1000)) << "the slots came back within the TTL";
  for (auto& t : hung) t.join();
}

TEST_F(ClusterOpsTest, RedisKilledMidLoadCrashesNothingAndSharingResumes) {
  RedisServer redis;
  MockScenario sc;
  sc.latency_ms = 5;
  sc.max_concurrent = 2;
  auto& mock = add_mock(sc);
  const std::string cfg = write_config(mock, redis, "{ max_concurrent: 2 }",
                                       ", expected_gateways: 2, lease_ttl_ms: 2000");
  ServeProcess a(cfg, log_path(0));
  ServeProcess b(cfg, log_path(1));
  ASSERT_TRUE(joined(a));
  ASSERT_TRUE(joined(b));
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::string last_failure;
  std::mutex mu;
  std::vector<std::jthread> load;
  struct StopLoad {  // destroyed before `load` joins: an early ASSERT return ends the loops too
    std::atomic<bool>& stop;
    ~StopLoad() { stop = true; }
  } stop_load{stop};
  for (int c = 0; c < 12; ++c) {
    load.emplace_back([&, c] {
      while (!stop) {
        auto r = post((c % 2 ? a : b).port(), "/v1/chat/completions", chat_body("m", c % 3 == 0));
        if (r.status == 200) {
          ok++;
        } else {
          failed++;
          std::lock_guard g(mu);
          last_failure = std::to_string(r.status) + " " + r.body;
        }
      }
    });
  }
  ASSERT_TRUE(wait_until([&] { return ok.load() > 100; }));
  redis.kill();
  ASSERT_TRUE(wait_until([&] {
    return get(a.port(), "/readyz").body.find("\"redis\":\"down\"") != std::string::npos;
  }));
  const int before = ok.load();
  ASSERT_TRUE(wait_until([&] { return ok.load() > before + 100; })) << "serving on local limits";
  redis.start();
  for (ServeProcess* g : {&a, &b})
    ASSERT_TRUE(wait_until(
        [&] {
          return get(g->port(), "/readyz").body.find("\"redis\":\"up\"") != std::string::npos;
        },
        std::chrono::seconds(15)));
  ASSERT_TRUE(wait_until([&] { return redis.cli("ZCARD 'sb:{up}:up#1:l'") != "0"; }))
      << "leases are taken in Redis again";
  stop = true;
  for (auto& t : load) t.join();
  EXPECT_EQ(failed.load(), 0) << last_failure;
  // Exact again once rejoined (the outage's local leases have ended): a burst at 8x the slots.
  mock.reset_stats();
  std::vector<std::jthread> burst;
  std::atomic<int> burst_ok{0};
  for (int c = 0; c < 48; ++c) {
    burst.emplace_back([&, c] {
      for (int n = 0; n < 3; ++n)
        burst_ok +=
            post((c % 2 ? a : b).port(), "/v1/chat/completions", chat_body("m")).status == 200;
    });
  }
  for (auto& t : burst) t.join();
  EXPECT_EQ(burst_ok.load(), 48 * 3);
  EXPECT_LE(mock.stats().max_in_flight_per_key, 2);
  EXPECT_EQ(mock.stats().by_status.count(429), 0u);
  // Nothing stuck: every lease ended, and both gateways serve at once.
  for (const char* key : {"up#1", "up#2", "up#3"})
    EXPECT_TRUE(wait_until([&] {
      return redis.cli(std::string("ZCARD 'sb:{up}:") + key + ":l'") == "0";
    })) << key;
  EXPECT_EQ(post(a.port(), "/v1/chat/completions", chat_body("m")).status, 200);
  EXPECT_EQ(post(b.port(), "/v1/chat/completions", chat_body("m")).status, 200);
}

// The state of breaker `target` in a gateway's /admin/breakers ("" when it has none).
std::string breaker_state(uint16_t port, const std::string& target) {
  auto v = parse_json(get(port, "/admin/breakers").body);
  if (!v.is_object()) return "";
  for (const auto& b : v.as_object().at("breakers").as_array())
    if (b.as_object().at("target").as_string() == target)
      return std::string(b.as_object().at("state").as_string());
  return "";
}

TEST_F(ClusterOpsTest, ABreakerThatOpensInOneGatewayOpensInAll) {
  RedisServer redis;
  MockScenario failing;
  failing.error_rate = 1.0;  // every answer a 500
  auto& mock = add_mock(failing);
  std::string cfg = write_config(mock, redis, "{ max_concurrent: 4 }", "",
                                 "{ max_attempts: 1, wait_for_key_ms: 1000, budget_ms: 60000 }");
  {
    std::ofstream f(cfg, std::ios::app);
    f << "breaker: { window: 4, min_calls: 2, failure_rate: 0.5, open_ms: 60000 }\n";
  }
  ServeProcess a(cfg, log_path(0));
  ServeProcess b(cfg, log_path(1));
  ASSERT_TRUE(joined(a));
  ASSERT_TRUE(joined(b));
  // B has seen the provider (its breakers exist) but nothing failed there.
  mock.set_scenario(MockScenario{});
  ASSERT_EQ(post(b.port(), "/v1/chat/completions", chat_body("m")).status, 200);
  EXPECT_EQ(breaker_state(b.port(), "provider:up"), "closed");
  mock.set_scenario(failing);
  for (int i = 0; i < 4 && breaker_state(a.port(), "provider:up") != "open"; ++i)
    (void)post(a.port(), "/v1/chat/completions", chat_body("m"));
  ASSERT_EQ(breaker_state(a.port(), "provider:up"), "open");
  ASSERT_TRUE(wait_until([&] { return breaker_state(b.port(), "provider:up") == "open"; }))
      << "B opened it without a single failure of its own";
  // B no longer sends anything to the failing provider.
  const uint64_t sent = mock.stats().requests;
  auto r = post(b.port(), "/v1/chat/completions", chat_body("m"));
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(mock.stats().requests, sent);
}

TEST_F(ClusterOpsTest, AClientKeysRpmHoldsAcrossGateways) {
  RedisServer redis;
  auto& mock = add_mock();
  std::string cfg = write_config(mock, redis, "{ max_concurrent: 8 }", ", expected_gateways: 2");
  {
    std::ofstream f(cfg, std::ios::app);
    f << "auth: { gateway_keys: [{ key: sk-client-team-0001, name: team, rpm: 3 }] }\n";
  }
  ServeProcess a(cfg, log_path(0));
  ServeProcess b(cfg, log_path(1));
  ASSERT_TRUE(joined(a));
  ASSERT_TRUE(joined(b));
  const Headers auth = {{"Authorization", "Bearer sk-client-team-0001"}};
  int ok = 0, limited = 0;
  for (int i = 0; i < 8; ++i) {
    auto r = post((i % 2 ? a : b).port(), "/v1/chat/completions", chat_body("m"), auth);
    if (r.status == 200) {
      ok++;
    } else {
      EXPECT_EQ(r.status, 429) << r.body;
      EXPECT_NE(r.body.find("limited to 3 requests per minute"), std::string::npos) << r.body;
      const int wait = std::stoi(r.header("retry-after"));
      EXPECT_GE(wait, 50);
      EXPECT_LE(wait, 61);
      limited++;
    }
  }
  EXPECT_EQ(ok, 3) << "3 per minute for the key, whichever gateway it calls";
  EXPECT_EQ(limited, 5);
  EXPECT_EQ(mock.stats().requests, 3u);
}

TEST_F(ClusterOpsTest, AClientKeysMonthlyBudgetHoldsAcrossGateways) {
  RedisServer redis;
  MockScenario wordy;
  wordy.completion_tokens = 250;
  auto& mock = add_mock(wordy);
  std::string cfg = write_config(mock, redis, "{ max_concurrent: 8 }", ", expected_gateways: 2");
  {
    // One request holds up to ~$0.027 (prompt + max_tokens 260 at $100/Mtok) and spends ~$0.026:
    // $0.06 pays for two, whichever gateway serves them (each alone would admit two).
    std::ofstream f(cfg, std::ios::app);
    f << "  dear: { provider: up, cost: { input_per_mtok: 100, output_per_mtok: 100 } }\n"
      << "auth: { gateway_keys: [{ key: sk-client-team-0001, name: team, "
         "monthly_budget_usd: 0.06 }] }\n";
  }
  ServeProcess a(cfg, log_path(0));
  ServeProcess b(cfg, log_path(1));
  ASSERT_TRUE(joined(a));
  ASSERT_TRUE(joined(b));
  const Headers auth = {{"Authorization", "Bearer sk-client-team-0001"}};
  const std::string body = chat_body("dear", false, "\"max_tokens\":260");
  int ok = 0;
  for (int i = 0; i < 6; ++i) {
    auto r = post((i % 2 ? b : a).port(), "/v1/chat/completions", body, auth);
    if (r.status == 200) {
      ok++;
    } else {
      EXPECT_EQ(r.status, 429) << r.body;
      EXPECT_NE(r.body.find("monthly budget of $0.06"), std::string::npos) << r.body;
      EXPECT_FALSE(r.header("retry-after").empty());
    }
  }
  EXPECT_EQ(ok, 2) << "the month's spend is the gateways' together";
  EXPECT_EQ(mock.stats().requests, 2u);
  // The shared month counts both requests' real cost (nano-USD), and no hold is left.
  ASSERT_TRUE(wait_until([&] { return redis.cli("ZCARD 'sb:{#budget}:team:l'") == "0"; }));
  const double spent = std::stod(redis.cli("HGET 'sb:{#budget}:team' s")) / 1e9;
  EXPECT_GT(spent, 0.05);
  EXPECT_LT(spent, 0.06);
  // Redis gone: each gateway keeps to its share of what was left when Redis last answered
  // (nothing here), not to its own spend alone.
  redis.kill();
  for (auto* g : {&a, &b}) {
    ASSERT_TRUE(wait_until([&] {
      return get(g->port(), "/readyz").body.find("\"redis\":\"down\"") != std::string::npos;
    }));
    auto r = post(g->port(), "/v1/chat/completions", body, auth);
    EXPECT_EQ(r.status, 429) << r.body;
  }
  EXPECT_EQ(mock.stats().requests, 2u);
}

// A provider quota is one quota for every gateway of the cluster: what each serves meets in
// Redis, so once the gateways together used it up none calls the provider again; a Redis that
// lost the count (FLUSHALL) gets it back from what the gateways had counted.
TEST_F(ClusterOpsTest, AProviderQuotaIsSharedByTheGateways) {
  RedisServer redis;
  auto& mock = add_mock();
  std::string cfg =
      write_config(mock, redis, "{ max_concurrent: 8 }\n    quota: { period: day, requests: 10 }");
  ServeProcess a(cfg, log_path(0));
  ServeProcess b(cfg, log_path(1));
  ASSERT_TRUE(joined(a));
  ASSERT_TRUE(joined(b));
  auto used = [](ServeProcess& g) -> int64_t {
    auto v = parse_json(get(g.port(), "/admin/quotas").body);
    if (!v.is_object() || v.as_object().at("quotas").as_array().empty()) return -1;
    return v.as_object()
        .at("quotas")
        .as_array()[0]
        .as_object()
        .at("used")
        .as_object()
        .at("requests")
        .to_number<int64_t>();
  };
  // 6 through A, 4 through B: neither alone reached the quota.
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(post((i < 6 ? a : b).port(), "/v1/chat/completions", chat_body("m")).status, 200);
  for (ServeProcess* g : {&a, &b})
    ASSERT_TRUE(wait_until([&] { return used(*g) == 10; })) << used(*g);
  const std::string key = "'sb:{#quota}:up:" +
                          quota::period_at(QuotaPeriod::kDay, std::chrono::system_clock::now()).id +
                          "'";
  EXPECT_EQ(redis.cli("HGET " + key + " r"), "10");
  EXPECT_EQ(mock.stats().requests, 10u);
  for (ServeProcess* g : {&a, &b}) {
    auto r = post(g->port(), "/v1/chat/completions", chat_body("m"));
    EXPECT_EQ(r.status, 429) << r.body;
    EXPECT_NE(r.body.find("quota_exhausted"), std::string::npos) << r.body;
  }
  EXPECT_EQ(mock.stats().requests, 10u);
  // The operator's tables say the same.
  auto cli = [&](const std::string& view) {
    std::string out;
    const std::string cmd = std::string(SWITCHBOARD_BINARY) + " " + view +
                            " --url http://127.0.0.1:" + std::to_string(b.port());
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
      char buf[512];
      for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
      ::pclose(p);
    }
    return out;
  };
  const std::string quotas = cli("quotas");
  EXPECT_NE(quotas.find("RESETS_AT"), std::string::npos) << quotas;
  EXPECT_NE(quotas.find("exhausted"), std::string::npos) << quotas;
  EXPECT_NE(cli("models").find("exhausted 100%"), std::string::npos) << cli("models");
  // Redis forgets everything: the next round puts back what the gateways counted.
  EXPECT_EQ(redis.cli("FLUSHALL"), "OK");
  ASSERT_TRUE(wait_until([&] { return redis.cli("HGET " + key + " r") == "10"; }))
      << redis.cli("HGETALL " + key);
  EXPECT_EQ(used(a), 10);
  EXPECT_EQ(used(b), 10);
}

// The posteriors learned in one gateway reach the others within seconds (they route on the same
// evidence), while each keeps its own statistics (latency, spend, request counts).
TEST_F(ClusterOpsTest, WhatOneGatewayLearnsTheOthersLearnToo) {
  RedisServer redis;
  auto& mock = add_mock();
  const std::string cfg = write_config(mock, redis, "{ max_concurrent: 8 }");
  ServeProcess a(cfg, log_path(0));
  ServeProcess b(cfg, log_path(1));
  ASSERT_TRUE(joined(a));
  ASSERT_TRUE(joined(b));
  const Headers coding = {{"x-switchboard-category", "coding"}};
  for (int i = 0; i < 12; ++i)
    ASSERT_EQ(post(a.port(), "/v1/chat/completions", chat_body("m"), coding).status, 200);
  const std::string want = "\"category\":\"coding\",\"model\":\"m\"";
  std::string models;
  ASSERT_TRUE(wait_until(
      [&] {
        models = get(b.port(), "/admin/models").body;
        const size_t at = models.find(want);
        return at != std::string::npos && models.find("\"outcomes\":12", at) < models.find('}', at);
      },
      std::chrono::seconds(10)))
      << models;
  EXPECT_NE(models.find("\"requests\":0"), std::string::npos) << "B served none: " << models;
  // And back: B's evidence reaches A, which does not count its own twice.
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(post(b.port(), "/v1/chat/completions", chat_body("m"), coding).status, 200);
  ASSERT_TRUE(wait_until(
      [&] {
        models = get(a.port(), "/admin/models").body;
        const size_t at = models.find(want);
        return at != std::string::npos && models.find("\"outcomes\":15", at) < models.find('}', at);
      },
      std::chrono::seconds(10)))
      << models;
  EXPECT_NE(models.find("\"requests\":12"), std::string::npos) << models;
}

// Issue 22 (first part): gateways on one PostgreSQL database keep one record. A client key's
// monthly spend recorded by one gateway binds another that starts later (no Redis here), and each
// gateway's rows carry its node name.
TEST_F(ClusterOpsTest, GatewaysOnOnePostgresDatabaseShareTheRecordAndTheSpend) {
  testsupport::PostgresServer pg;
  MockScenario wordy;
  wordy.completion_tokens = 250;
  auto& mock = add_mock(wordy);
  auto config = [&](const std::string& node) {
    const std::string cfg = (dir_ / ("pg-" + node + ".yaml")).string();
    std::ofstream f(cfg);
    f << "state: { backend: postgres, url: \"" << pg.url() << "\", node: " << node
      << ", path: " << (dir_ / ("wf-" + node + ".db")).string() << " }\n"
      << "log: { level: warn, access_log: false }\n"
      << "server: { threads: 2 }\n"
      << "providers:\n"
      << provider("up", mock)
      << "models:\n  dear: { provider: up, cost: { input_per_mtok: 100, output_per_mtok: 100 } "
         "}\n"
      << "auth: { gateway_keys: [{ key: sk-client-team-0001, name: team, monthly_budget_usd: "
         "0.04 }] }\n";
    return cfg;
  };
  const Headers auth = {{"Authorization", "Bearer sk-client-team-0001"}};
  const std::string body = chat_body("dear", false, "\"max_tokens\":260");
  {
    ServeProcess a(config("gw-a"), log_path(0));
    ASSERT_TRUE(a.ready());
    auto r = post(a.port(), "/v1/chat/completions", body, auth);
    ASSERT_EQ(r.status, 200) << r.body;
    ASSERT_TRUE(a.terminate());  // drains its store
  }
  EXPECT_EQ(pg.psql("SELECT count(*) FROM outcomes WHERE node = 'gw-a'"), "1");
  EXPECT_EQ(pg.psql("SELECT count(*) FROM usage WHERE gateway_key = 'team'"), "1");
  ServeProcess b(config("gw-b"), log_path(1));
  ASSERT_TRUE(b.ready());
  auto broke = post(b.port(), "/v1/chat/completions", body, auth);
  EXPECT_EQ(broke.status, 429) << "gw-a's spend counts in gw-b: " << broke.body;
  EXPECT_NE(broke.body.find("budget"), std::string::npos) << broke.body;
  EXPECT_EQ(mock.stats().requests, 1u);
}

// The target of the acceptance test's http steps: each connection on its own thread (steps of
// several runs call at once), each call held `delay` before its 200 answer, and every call
// recorded by path ("/<run>/<step>") with when it started.
class StepServer {
 public:
  explicit StepServer(std::chrono::milliseconds delay) : delay_(delay) {
    server_.emplace([this](int c) {
      std::lock_guard lock(mu_);
      handlers_.emplace_back([this, c] { serve(c); });
    });
  }
  ~StepServer() {
    server_.reset();  // no more connections: then every handler can be joined
    for (auto& t : handlers_) t.join();
  }
  uint16_t port() const { return server_->port(); }

  struct Call {
    std::chrono::steady_clock::time_point started;
  };
  std::map<std::string, std::vector<Call>> calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }
  size_t total() const {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const auto& [path, c] : calls_) n += c.size();
    return n;
  }
  // Paths that had two calls in flight at once.
  std::vector<std::string> overlaps() const {
    std::lock_guard lock(mu_);
    return overlaps_;
  }

 private:
  void serve(int c) {
    timeval tv{5, 0};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    const std::string req = read_request(c);
    const size_t sp = req.find(' ');
    const std::string path =
        sp == std::string::npos ? "" : req.substr(sp + 1, req.find(' ', sp + 1) - sp - 1);
    {
      std::lock_guard lock(mu_);
      calls_[path].push_back({std::chrono::steady_clock::now()});
      if (in_flight_[path]++ > 0) overlaps_.push_back(path);
    }
    std::this_thread::sleep_for(delay_);
    const std::string body = "{\"ok\":true}";
    const std::string res =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    (void)::send(c, res.data(), res.size(), MSG_NOSIGNAL);
    ::close(c);
    std::lock_guard lock(mu_);
    --in_flight_[path];
  }

  std::chrono::milliseconds delay_;
  mutable std::mutex mu_;
  std::list<std::thread> handlers_;
  std::map<std::string, std::vector<Call>> calls_;
  std::map<std::string, int> in_flight_;
  std::vector<std::string> overlaps_;
  std::optional<LoopbackServer> server_;  // last: its thread uses the members above
};

// Issue 22's acceptance: two gateways on one PostgreSQL database; ten runs of four http steps,
// submitted to both (more than either runs at once, so runs wait in the shared queue and go to
// whichever gateway has a place); one gateway is killed -9 mid-run. The other finishes every run
// within the lease and a few seconds; no step ran twice while both were alive (the claim and the
// fences); no step completed before the kill is called again; only a step the dead gateway was
// executing may be called a second time, after the kill.
TEST_F(ClusterOpsTest, TwoGatewaysOnPostgresFinishEveryRunWhenOneIsKilled) {
  testsupport::PostgresServer pg;
  StepServer steps(std::chrono::milliseconds(300));
  auto& mock = add_mock();
  constexpr int kLeaseMs = 3000;
  auto config = [&](const std::string& node) {
    const std::string cfg = (dir_ / ("wf-" + node + ".yaml")).string();
    std::ofstream f(cfg);
    f << "state: { backend: postgres, url: \"" << pg.url() << "\", node: " << node << " }\n"
      << "log: { level: info, access_log: false }\n"
      << "server: { threads: 2 }\n"
      << "workflows: { lease_ms: " << kLeaseMs << ", max_concurrent_runs: 3, http_allow: "
      << "['http://127.0.0.1:" << steps.port() << "/'] }\n"
      << "providers:\n"
      << provider("up", mock) << "models:\n  m: { provider: up }\n";
    return cfg;
  };
  ServeProcess a(config("gw-a"), log_path(0));
  ServeProcess b(config("gw-b"), log_path(1));
  ASSERT_TRUE(a.ready() && b.ready());

  std::string def = "name: four\nsteps:\n";
  for (int i = 1; i <= 4; ++i) {
    def += "  - { id: s" + std::to_string(i) + ", kind: http, input: { method: GET, url: " +
           "'http://127.0.0.1:" + std::to_string(steps.port()) + "/${run.id}/s" +
           std::to_string(i) + "' } }\n";
  }
  boost::json::object submit;
  submit["definition"] = def;
  const std::string body = boost::json::serialize(submit);
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) {
    auto r = post(i % 2 ? b.port() : a.port(), "/v1/workflows/runs", body);
    ASSERT_EQ(r.status, 201) << r.body;
    ids.push_back(boost::json::parse(r.body).at("id").as_string().c_str());
  }
  // Both gateways are mid-run: A holds runs, and some of their steps completed.
  const std::string owned_by_a = "owner LIKE '%:" + std::to_string(a.pid()) + ":%'";
  ASSERT_TRUE(wait_until(
      [&] {
        return steps.total() >= 8 &&
               pg.psql("SELECT count(*) FROM workflow_runs WHERE status = 'running' AND " +
                       owned_by_a) != "0";
      },
      std::chrono::seconds(30)))
      << "the gateways never got going: " << steps.total() << " step calls";
  const pid_t a_pid = a.pid();
  a.kill9();
  const auto killed = std::chrono::steady_clock::now();
  const std::string orphans =
      pg.psql("SELECT count(*) FROM workflow_runs WHERE status <> 'completed' AND " + owned_by_a);
  EXPECT_NE(orphans, "0");
  // What was recorded completed at the kill (A's last words included) is never called again.
  std::vector<std::string> completed_at_kill;
  {
    std::istringstream rows(pg.psql(
        "SELECT '/' || run_id || '/' || step_id FROM workflow_steps WHERE status = 'completed'"));
    for (std::string line; std::getline(rows, line);)
      if (!line.empty()) completed_at_kill.push_back(line);
  }
  EXPECT_FALSE(completed_at_kill.empty());

  // B finishes everything: its own runs, the queue, and A's runs once their lease lapsed.
  EXPECT_TRUE(wait_until(
      [&] {
        return pg.psql("SELECT count(*) FROM workflow_runs WHERE status = 'completed'") == "10";
      },
      std::chrono::milliseconds(kLeaseMs) + std::chrono::seconds(25)))
      << pg.psql("SELECT id, status, owner, error FROM workflow_runs");
  const auto finished_in = std::chrono::steady_clock::now() - killed;
  std::cout << "after the kill, the other gateway finished every run in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(finished_in).count() << " ms ("
            << orphans << " runs were the killed gateway's)\n";

  EXPECT_TRUE(steps.overlaps().empty()) << "a step ran twice at once: " << steps.overlaps()[0];
  const auto calls = steps.calls();
  for (const std::string& id : ids) {
    for (int i = 1; i <= 4; ++i) {
      const std::string path = "/" + id + "/s" + std::to_string(i);
      auto it = calls.find(path);
      ASSERT_NE(it, calls.end()) << path << " was never called";
      const auto& c = it->second;
      ASSERT_LE(c.size(), 2u) << path << " was called " << c.size() << " times";
      if (c.size() == 2) {
        // Only a step the killed gateway was executing: its first call before the kill, the
        // retry after it.
        EXPECT_LT(c[0].started, killed) << path << " ran twice while both gateways were alive";
        EXPECT_GT(c[1].started, killed) << path << " ran twice while both gateways were alive";
      }
    }
    EXPECT_EQ(pg.psql("SELECT count(*) FROM workflow_steps WHERE status = 'completed' AND "
                      "run_id = '" +
                      id + "'"),
              "4");
  }
  for (const std::string& path : completed_at_kill)
    EXPECT_EQ(calls.at(path).size(), 1u) << path << " was completed at the kill and ran again";
  size_t retried = 0;
  for (const auto& [path, c] : calls) retried += c.size() == 2;
  EXPECT_LE(retried, 3u) << "more steps ran again than the killed gateway was executing";
  // The CLI reads the same runs from the database.
  std::string listed;
  if (FILE* p = ::popen(
          (std::string(SWITCHBOARD_BINARY) + " workflow list --json --db '" + pg.url() + "' 2>&1")
              .c_str(),
          "r")) {
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) listed.append(buf, n);
    ::pclose(p);
  }
  for (const std::string& id : ids)
    EXPECT_NE(listed.find(id), std::string::npos) << "workflow list --db: " << listed;
  // B took A's runs over (the claim's audit event names the previous owner).
  EXPECT_NE(pg.psql("SELECT count(*) FROM workflow_events WHERE type = 'run_claimed' AND "
                    "detail LIKE '%previous owner %:" +
                    std::to_string(a_pid) + ":%'"),
            "0");
}

}  // namespace
}  // namespace switchboard::gwtest
