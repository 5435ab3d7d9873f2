// Shared key limits over a real Redis (a private redis-server per test): several Cluster
// instances stand for several gateways, each with its own io_context threads and connections.
#include "cluster/cluster.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "test_support.h"

namespace switchboard::cluster {
namespace {

namespace ts = switchboard::testsupport;
constexpr auto kNothrow = boost::asio::as_tuple(boost::asio::use_awaitable);

ClusterConfig cluster_config(const ts::RedisServer& redis, int64_t ttl_ms = 15000) {
  ClusterConfig c;
  c.redis = redis.url();
  c.redis_host = "127.0.0.1";
  c.redis_port = redis.port();
  c.lease_ttl_ms = ttl_ms;
  c.connect_timeout_ms = 1000;
  c.command_timeout_ms = 2000;
  return c;
}

// One "gateway": `threads` io_contexts, each run by its own thread, and a Cluster on them.
class FakeGateway {
 public:
  FakeGateway(const ClusterConfig& config, int threads = 2,
              std::function<void(const std::string&)> breaker_listener = nullptr)
      : cluster_(config) {
    if (breaker_listener) cluster_.set_breaker_listener(std::move(breaker_listener));
    std::vector<asio::io_context*> raw;
    for (int i = 0; i < threads; ++i) {
      ctxs_.push_back(std::make_unique<asio::io_context>(1));
      guards_.emplace_back(asio::make_work_guard(*ctxs_.back()));
      raw.push_back(ctxs_.back().get());
    }
    for (auto& c : ctxs_) threads_.emplace_back([ctx = c.get()] { ctx->run(); });
    cluster_.start(raw);
    EXPECT_TRUE(ts::wait_until([this] { return cluster_.all_up(); }));
  }
  ~FakeGateway() { shutdown(); }

  // Stops like a drained gateway (leases still held are left to expire), then the threads.
  void shutdown() {
    if (stopped_) return;
    stopped_ = true;
    cluster_.stop();
    guards_.clear();
    for (auto& c : ctxs_) c->stop();
    for (auto& t : threads_) t.join();
  }

  Cluster& cluster() { return cluster_; }
  asio::io_context& ctx(size_t i) { return *ctxs_[i % ctxs_.size()]; }

  // Runs `fn` (a coroutine) on context i and waits for its result.
  template <typename T>
  T run(size_t i, std::function<asio::awaitable<T>()> fn) {
    std::promise<T> p;
    auto f = p.get_future();
    asio::co_spawn(ctx(i), fn(), [&p](std::exception_ptr e, T v) {
      if (e)
        p.set_exception(e);
      else
        p.set_value(std::move(v));
    });
    return f.get();
  }

 private:
  Cluster cluster_;
  std::vector<std::unique_ptr<asio::io_context>> ctxs_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
  std::vector<std::thread> threads_;
  bool stopped_ = false;
};

RateLimits limits(int64_t max_concurrent, int64_t rpm = 0, int64_t tpm = 0) {
  RateLimits l;
  l.max_concurrent = max_concurrent;
  l.rpm = rpm;
  l.tpm = tpm;
  return l;
}

// Candidate lists (outside the coroutines: GCC 12 rejects braced lists of string literals
// inside them).
const std::vector<std::string_view> kKey1 = {"p#1"};
const std::vector<std::string_view> kKeys2 = {"p#1", "p#2"};
const std::vector<std::string_view> kKeys3 = {"p#1", "p#2", "p#3"};

ReserveRequest request(const RateLimits& l, const std::vector<std::string_view>& keys,
                       std::string_view model = "m", int64_t est = 10) {
  ReserveRequest r;
  r.provider = "p";
  r.limits = &l;
  r.candidates = keys;
  r.model = model;
  r.estimated_tokens = est;
  return r;
}

// What a test coroutine reports about one reservation (the Reservation itself stays behind,
// held or settled by the coroutine).
struct Seen {
  ReserveResult::Status status = ReserveResult::Status::kUnavailable;
  keys::NoKeyReason reason = keys::NoKeyReason::kNoUsableKey;
  std::optional<Nanos> retry_in;
  std::string key;
};

Seen seen(const ReserveResult& r) {
  return Seen{r.status, r.reason, r.retry_in,
              r.status == ReserveResult::Status::kGranted ? r.reservation.key_id() : ""};
}

asio::awaitable<void> pause(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  (void)co_await t.async_wait(kNothrow);
}

TEST(ClusterTest, FourGatewaysNeverExceedAKeysConcurrencyAndUseEverySlot) {
  ts::RedisServer redis;
  const RateLimits l = limits(2);
  std::vector<std::unique_ptr<FakeGateway>> gws;
  for (int i = 0; i < 4; ++i) gws.push_back(std::make_unique<FakeGateway>(cluster_config(redis)));

  std::mutex mu;
  std::map<std::string, int> in_flight;
  std::map<std::string, int> peak;
  std::atomic<int> done{0};
  std::atomic<int> refused{0};
  constexpr int kWorkers = 48;  // 8x the 6 slots
  constexpr int kEach = 6;
  std::vector<std::future<void>> finished;
  for (int w = 0; w < kWorkers; ++w) {
    FakeGateway& gw = *gws[w % 4];
    auto p = std::make_shared<std::promise<void>>();
    finished.push_back(p->get_future());
    asio::co_spawn(
        gw.ctx(w),
        [&, w]() -> asio::awaitable<void> {
          for (int n = 0; n < kEach; ++n) {
            for (int round = 0;; ++round) {
              ReserveResult r = co_await gw.cluster().reserve(request(l, kKeys3));
              if (r.status == ReserveResult::Status::kGranted) {
                const std::string key = r.reservation.key_id();
                {
                  std::lock_guard g(mu);
                  peak[key] = std::max(peak[key], ++in_flight[key]);
                }
                co_await pause(std::chrono::milliseconds(1 + w % 3));  // the upstream call
                {
                  std::lock_guard g(mu);
                  --in_flight[key];
                }
                keys::EndReport report;
                report.request_counted = true;
                report.tokens_counted = 10;
                r.reservation.settle(report);
                done++;
                break;
              }
              if (r.status != ReserveResult::Status::kFull || round > 10000) {
                ADD_FAILURE() << "redis did not answer, or the worker never got a slot";
                co_return;
              }
              EXPECT_EQ(r.reason, keys::NoKeyReason::kConcurrency);
              refused++;
              co_await gw.cluster().wait_release("p", MonoClock::now() + std::chrono::seconds(2));
            }
          }
        },
        [p](std::exception_ptr) { p->set_value(); });
  }
  for (auto& f : finished)
    ASSERT_EQ(f.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_EQ(done.load(), kWorkers * kEach);
  EXPECT_GT(refused.load(), 0) << "8x the slots must have made some wait";
  for (const auto& [key, n] : peak) EXPECT_LE(n, 2) << key;
  EXPECT_EQ(peak.size(), 3u) << "every key was used";
  EXPECT_EQ(redis.cli("ZCARD 'sb:{p}:p#1:l'"), "0") << "every lease ended";
}

TEST(ClusterTest, RequestsPerMinuteAreExactAcrossGatewaysAndRefusalsSayWhen) {
  ts::RedisServer redis;
  const RateLimits l = limits(0, 5);
  std::vector<std::unique_ptr<FakeGateway>> gws;
  for (int i = 0; i < 3; ++i) gws.push_back(std::make_unique<FakeGateway>(cluster_config(redis)));
  std::atomic<int> granted{0};
  std::vector<std::future<Seen>> results;
  for (int i = 0; i < 30; ++i) {
    FakeGateway* gw = gws[i % 3].get();
    results.push_back(std::async(std::launch::async, [gw, &l, i, &granted] {
      return gw->run<Seen>(i, [gw, &l, &granted]() -> asio::awaitable<Seen> {
        ReserveResult r = co_await gw->cluster().reserve(request(l, kKeys2));
        if (r.status == ReserveResult::Status::kGranted) {
          granted++;
          keys::EndReport report;
          report.request_counted = true;
          report.tokens_counted = 10;
          r.reservation.settle(report);
        }
        co_return seen(r);
      });
    }));
  }
  int refused = 0;
  for (auto& f : results) {
    Seen s = f.get();
    if (s.status == ReserveResult::Status::kGranted) continue;
    ASSERT_EQ(s.status, ReserveResult::Status::kFull);
    EXPECT_EQ(s.reason, keys::NoKeyReason::kMinuteWindow);
    ASSERT_TRUE(s.retry_in.has_value());
    EXPECT_GT(*s.retry_in, std::chrono::seconds(55));
    EXPECT_LE(*s.retry_in, std::chrono::milliseconds(60100));
    refused++;
  }
  EXPECT_EQ(granted.load(), 10) << "2 keys x 5 rpm, whichever gateway asked";
  EXPECT_EQ(refused, 20);
}

TEST(ClusterTest, SettlingReplacesTheEstimateWithTheRealUsage) {
  ts::RedisServer redis;
  FakeGateway a(cluster_config(redis));
  FakeGateway b(cluster_config(redis));
  const RateLimits l = limits(0, 0, 1000);
  auto reserve_800 = [&l](FakeGateway& gw, std::shared_ptr<Reservation> keep) {
    return gw.run<Seen>(0, [&gw, &l, keep]() -> asio::awaitable<Seen> {
      ReserveResult r = co_await gw.cluster().reserve(request(l, kKey1, "m", 800));
      Seen s = seen(r);
      if (keep) *keep = std::move(r.reservation);
      co_return s;
    });
  };
  auto first = std::make_shared<Reservation>();
  ASSERT_EQ(reserve_800(a, first).status, ReserveResult::Status::kGranted);
  Seen second = reserve_800(b, nullptr);
  EXPECT_EQ(second.status, ReserveResult::Status::kFull);
  EXPECT_EQ(second.reason, keys::NoKeyReason::kMinuteWindow);
  // The first used 100 tokens, not 800: now there is room for another 800.
  keys::EndReport report;
  report.request_counted = true;
  report.tokens_counted = 100;
  first->settle(report);
  ASSERT_TRUE(ts::wait_until([&] { return redis.cli("HGET 'sb:{p}:p#1:m' t") == "100"; }));
  EXPECT_EQ(reserve_800(b, nullptr).status, ReserveResult::Status::kGranted);
  // Too large for the window at all: never.
  Seen huge = b.run<Seen>(0, [&b, &l]() -> asio::awaitable<Seen> {
    co_return seen(co_await b.cluster().reserve(request(l, kKey1, "m", 5000)));
  });
  EXPECT_EQ(huge.status, ReserveResult::Status::kFull);
  EXPECT_EQ(huge.reason, keys::NoKeyReason::kTooLarge);
}

TEST(ClusterTest, ACooldownAndADisableReachEveryGateway) {
  ts::RedisServer redis;
  FakeGateway a(cluster_config(redis));
  FakeGateway b(cluster_config(redis));
  const RateLimits l = limits(4);
  auto try_on = [&l](FakeGateway& gw, std::string_view model) {
    return gw.run<Seen>(1, [&gw, &l, model]() -> asio::awaitable<Seen> {
      co_return seen(co_await gw.cluster().reserve(request(l, kKey1, model)));
    });
  };
  // Gateway a's answer on p#1 for model m was a 429 with a 60 s wait.
  Seen got = a.run<Seen>(0, [&a, &l]() -> asio::awaitable<Seen> {
    ReserveResult r = co_await a.cluster().reserve(request(l, kKey1, "m"));
    Seen s = seen(r);
    keys::EndReport report;
    report.request_counted = true;
    report.cooldown = std::chrono::seconds(60);
    report.cooldown_model = "m";
    r.reservation.settle(report);
    co_return s;
  });
  ASSERT_EQ(got.status, ReserveResult::Status::kGranted);
  ASSERT_TRUE(ts::wait_until([&] { return !redis.cli("HGET 'sb:{p}:p#1:cd' m:m").empty(); }));
  Seen m = try_on(b, "m");
  EXPECT_EQ(m.status, ReserveResult::Status::kFull);
  EXPECT_EQ(m.reason, keys::NoKeyReason::kCooling);
  ASSERT_TRUE(m.retry_in.has_value());
  EXPECT_GT(*m.retry_in, std::chrono::seconds(55));
  EXPECT_EQ(try_on(b, "other").status, ReserveResult::Status::kGranted) << "only model m cools";

  a.cluster().set_disabled("p", "p#1", true);
  ASSERT_TRUE(ts::wait_until([&] { return redis.cli("EXISTS 'sb:{p}:p#1:off'") == "1"; }));
  Seen off = try_on(b, "other");
  EXPECT_EQ(off.status, ReserveResult::Status::kFull);
  EXPECT_EQ(off.reason, keys::NoKeyReason::kNoUsableKey);
  a.cluster().set_disabled("p", "p#1", false);
  ASSERT_TRUE(ts::wait_until([&] { return redis.cli("EXISTS 'sb:{p}:p#1:off'") == "0"; }));
  EXPECT_EQ(try_on(b, "other").status, ReserveResult::Status::kGranted);
}

TEST(ClusterTest, ADeadGatewaysSlotsReturnAfterTheLeaseTtl) {
  ts::RedisServer redis;
  constexpr int64_t kTtl = 400;
  const RateLimits l = limits(2);
  auto dead = std::make_unique<FakeGateway>(cluster_config(redis, kTtl));
  FakeGateway alive(cluster_config(redis, kTtl));
  // The doomed gateway takes both slots and keeps them (its requests never end) ...
  auto held = std::make_shared<std::vector<Reservation>>();
  for (int i = 0; i < 2; ++i) {
    Seen s = dead->run<Seen>(0, [&dead, &l, held]() -> asio::awaitable<Seen> {
      ReserveResult r = co_await dead->cluster().reserve(request(l, kKey1));
      Seen out = seen(r);
      held->push_back(std::move(r.reservation));
      co_return out;
    });
    ASSERT_EQ(s.status, ReserveResult::Status::kGranted);
  }
  // ... while it lives, renewal keeps them past the TTL.
  std::this_thread::sleep_for(std::chrono::milliseconds(3 * kTtl));
  auto attempt = [&] {
    return alive.run<Seen>(0, [&alive, &l]() -> asio::awaitable<Seen> {
      ReserveResult r = co_await alive.cluster().reserve(request(l, kKey1));
      co_return seen(r);
    });
  };
  Seen blocked = attempt();
  ASSERT_EQ(blocked.status, ReserveResult::Status::kFull);
  EXPECT_EQ(blocked.reason, keys::NoKeyReason::kConcurrency);
  ASSERT_TRUE(blocked.retry_in.has_value());
  EXPECT_LE(*blocked.retry_in, std::chrono::milliseconds(kTtl));
  // Then it dies without ending them (no settle, no renewal).
  dead->shutdown();
  const auto died = std::chrono::steady_clock::now();
  held.reset();  // settling after stop does nothing: the leases stay in Redis
  Seen back;
  ASSERT_TRUE(ts::wait_until(
      [&] {
        back = attempt();
        return back.status == ReserveResult::Status::kGranted;
      },
      std::chrono::milliseconds(kTtl * 5)));
  EXPECT_LE(std::chrono::steady_clock::now() - died, std::chrono::milliseconds(kTtl + 300));
}

TEST(ClusterTest, RedisKilledAndRestartedIsUnavailableThenExactAgain) {
  ts::RedisServer redis;
  const RateLimits l = limits(1);
  FakeGateway gw(cluster_config(redis));
  auto attempt = [&] {
    return gw.run<Seen>(0, [&gw, &l]() -> asio::awaitable<Seen> {
      ReserveResult r = co_await gw.cluster().reserve(request(l, kKey1));
      co_return seen(r);  // settled as cancelled on return
    });
  };
  ASSERT_EQ(attempt().status, ReserveResult::Status::kGranted);
  redis.kill();
  ASSERT_TRUE(ts::wait_until([&] { return !gw.cluster().all_up(); }));
  EXPECT_EQ(attempt().status, ReserveResult::Status::kUnavailable);
  redis.start();  // empty: nothing of before survives (no persistence)
  ASSERT_TRUE(ts::wait_until([&] { return gw.cluster().all_up(); }, std::chrono::seconds(15)));
  // The scripts are loaded again and the single slot is exact again.
  auto first = std::make_shared<Reservation>();
  Seen a = gw.run<Seen>(1, [&gw, &l, first]() -> asio::awaitable<Seen> {
    ReserveResult r = co_await gw.cluster().reserve(request(l, kKey1));
    Seen s = seen(r);
    *first = std::move(r.reservation);
    co_return s;
  });
  EXPECT_EQ(a.status, ReserveResult::Status::kGranted);
  Seen b = attempt();
  EXPECT_EQ(b.status, ReserveResult::Status::kFull);
  EXPECT_EQ(b.reason, keys::NoKeyReason::kConcurrency);
}

TEST(ClusterTest, ABreakerOpeningReachesEveryGateway) {
  ts::RedisServer redis;
  std::mutex mu;
  std::vector<std::string> heard_a, heard_b;
  FakeGateway a(cluster_config(redis), 2, [&](const std::string& t) {
    std::lock_guard g(mu);
    heard_a.push_back(t);
  });
  FakeGateway b(cluster_config(redis), 2, [&](const std::string& t) {
    std::lock_guard g(mu);
    heard_b.push_back(t);
  });
  a.cluster().publish_breaker_open("model:p/m");
  ASSERT_TRUE(ts::wait_until([&] {
    std::lock_guard g(mu);
    return heard_a.size() == 1 && heard_b.size() == 1;
  }));
  std::lock_guard g(mu);
  EXPECT_EQ(heard_b.front(), "model:p/m");
  EXPECT_EQ(heard_a.front(), "model:p/m")
      << "its own announcement too (a no-op for an open breaker)";
}

TEST(ClusterTest, AFlushedScriptCacheIsReloaded) {
  ts::RedisServer redis;
  FakeGateway gw(cluster_config(redis));
  const RateLimits l = limits(1);
  ASSERT_EQ(redis.cli("SCRIPT FLUSH"), "OK");
  Seen s = gw.run<Seen>(0, [&gw, &l]() -> asio::awaitable<Seen> {
    co_return seen(co_await gw.cluster().reserve(request(l, kKey1)));
  });
  EXPECT_EQ(s.status, ReserveResult::Status::kGranted);
}

// Model names can come from clients (provider/anything): a key's shared per-model cooldowns are
// bounded, ended ones make room, and past the bound a new model's cooldown stays local rather
// than cooling the whole key.
TEST(ClusterTest, PerModelCooldownsInRedisAreBounded) {
  ts::RedisServer redis;
  FakeGateway gw(cluster_config(redis));
  const RateLimits l = limits(0);
  auto cool = [&](int from, int to, std::chrono::milliseconds wait) {
    return gw.run<int>(0, [&gw, &l, from, to, wait]() -> asio::awaitable<int> {
      int granted = 0;
      for (int i = from; i < to; ++i) {
        const std::string model = "client-model-" + std::to_string(i);
        ReserveResult r = co_await gw.cluster().reserve(request(l, kKey1, model));
        if (r.status != ReserveResult::Status::kGranted) continue;
        granted++;
        keys::EndReport report;
        report.request_counted = true;
        report.cooldown = wait;
        report.cooldown_model = model;
        r.reservation.settle(report);
      }
      co_return granted;
    });
  };
  const std::string hash = "'sb:{p}:p#1:cd'";
  ASSERT_EQ(cool(0, 4100, std::chrono::seconds(60)), 4100);
  ASSERT_TRUE(
      ts::wait_until([&] { return redis.cli("HEXISTS " + hash + " m:client-model-4095") == "1"; }));
  EXPECT_EQ(redis.cli("HLEN " + hash), "4096");
  EXPECT_EQ(redis.cli("HEXISTS " + hash + " m:client-model-4099"), "0");
  EXPECT_EQ(redis.cli("HEXISTS " + hash + " '*'"), "0") << "never escalated to the whole key";
  // Cooldowns that ended make room for new ones.
  redis.cli("DEL " + hash + " 'sb:{p}:p#1:cdp'");  // and the once-a-second scan mark
  ASSERT_EQ(cool(0, 4096, std::chrono::milliseconds(1)), 4096);
  ASSERT_TRUE(ts::wait_until([&] { return redis.cli("HLEN " + hash) == "4096"; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // Redis' clock passes them
  ASSERT_EQ(cool(5000, 5001, std::chrono::seconds(60)), 1);
  ASSERT_TRUE(
      ts::wait_until([&] { return redis.cli("HEXISTS " + hash + " m:client-model-5000") == "1"; }));
  EXPECT_EQ(redis.cli("HLEN " + hash), "1");
}

// ---- client-key budgets

BudgetRequest budget_request(double estimate, double budget = 1.0, double seed = 0) {
  BudgetRequest r;
  r.name = "team";
  r.estimate_usd = estimate;
  r.budget_usd = budget;
  r.seed_spend_usd = seed;
  return r;
}

// Holds are kept by the test (a vector per gateway) until it settles them.
using Holds = std::vector<BudgetHold>;
BudgetResult::Status hold_budget(FakeGateway& gw, Holds& holds, BudgetRequest rq) {
  return gw.run<BudgetResult::Status>(0,
                                      [&gw, &holds, rq]() -> asio::awaitable<BudgetResult::Status> {
                                        BudgetResult r = co_await gw.cluster().reserve_budget(rq);
                                        if (r.status == BudgetResult::Status::kGranted)
                                          holds.push_back(std::move(r.hold));
                                        co_return r.status;
                                      });
}

TEST(ClusterTest, ABudgetCountsEveryGatewaysHoldsAndSpend) {
  ts::RedisServer redis;
  FakeGateway a(cluster_config(redis));
  FakeGateway b(cluster_config(redis));
  Holds ha, hb;
  using S = BudgetResult::Status;
  EXPECT_EQ(hold_budget(a, ha, budget_request(0.4)), S::kGranted);
  EXPECT_EQ(hold_budget(b, hb, budget_request(0.4)), S::kGranted);
  EXPECT_EQ(hold_budget(a, ha, budget_request(0.4)), S::kNoRoom) << "0.8 held of 1.0";
  EXPECT_EQ(hold_budget(b, hb, budget_request(0.2)), S::kGranted) << "exactly what is left";
  hb.back().settle(0);     // an attempt that failed costs nothing
  ha.front().settle(0.5);  // more than its estimate: the real cost counts
  ASSERT_TRUE(
      ts::wait_until([&] { return redis.cli("HGET 'sb:{#budget}:team' s") == "500000000"; }));
  EXPECT_EQ(hold_budget(a, ha, budget_request(0.2)), S::kNoRoom) << "0.5 spent, 0.4 held";
  hb.front().settle(0.5);
  ASSERT_TRUE(
      ts::wait_until([&] { return redis.cli("HGET 'sb:{#budget}:team' s") == "1000000000"; }));
  EXPECT_EQ(hold_budget(b, hb, budget_request(0.01)), S::kSpent);
  EXPECT_EQ(redis.cli("ZCARD 'sb:{#budget}:team:l'"), "0") << "every hold ended";
}

// Spend Redis could not be told of (a request admitted on the local share while it was away, a
// settle that failed) reaches the month's spend with the key's next admission, once.
TEST(ClusterTest, UnsyncedSpendReachesRedisWithTheNextAdmission) {
  ts::RedisServer redis;
  FakeGateway a(cluster_config(redis));
  Holds holds;
  using S = BudgetResult::Status;
  ASSERT_EQ(hold_budget(a, holds, budget_request(0.1)), S::kGranted);
  holds.back().settle(0);
  a.cluster().add_unsynced_spend("team", 0.3);
  ASSERT_EQ(hold_budget(a, holds, budget_request(0.1)), S::kGranted);
  EXPECT_EQ(redis.cli("HGET 'sb:{#budget}:team' s"), "300000000");
  EXPECT_EQ(hold_budget(a, holds, budget_request(0.65)), S::kNoRoom) << "0.3 spent + 0.1 held";
  EXPECT_EQ(redis.cli("HGET 'sb:{#budget}:team' s"), "300000000") << "counted once";
}

TEST(ClusterTest, ConcurrentHoldsFromFourGatewaysNeverOverspend) {
  ts::RedisServer redis;
  std::vector<std::unique_ptr<FakeGateway>> gws;
  for (int i = 0; i < 4; ++i) gws.push_back(std::make_unique<FakeGateway>(cluster_config(redis)));
  std::atomic<int> granted{0};
  std::atomic<int> refused{0};
  std::vector<std::future<void>> finished;
  for (int w = 0; w < 32; ++w) {
    FakeGateway& gw = *gws[w % 4];
    auto p = std::make_shared<std::promise<void>>();
    finished.push_back(p->get_future());
    asio::co_spawn(
        gw.ctx(w),
        [&, w]() -> asio::awaitable<void> {
          for (int n = 0; n < 5; ++n) {
            BudgetResult r = co_await gw.cluster().reserve_budget(budget_request(0.1, 2.0));
            if (r.status == BudgetResult::Status::kUnavailable) ADD_FAILURE() << "no answer";
            if (r.status != BudgetResult::Status::kGranted) {
              refused++;
              continue;
            }
            granted++;
            co_await pause(std::chrono::milliseconds(1 + w % 3));
            r.hold.settle(0.1);
          }
        },
        [p](std::exception_ptr) { p->set_value(); });
  }
  for (auto& f : finished) f.wait();
  // 160 attempts of $0.10 on $2.00: exactly 20 fit, whichever gateway and whenever.
  EXPECT_EQ(granted.load(), 20);
  EXPECT_EQ(refused.load(), 140);
  ASSERT_TRUE(
      ts::wait_until([&] { return redis.cli("HGET 'sb:{#budget}:team' s") == "2000000000"; }));
}

TEST(ClusterTest, ADeadGatewaysBudgetHoldsExpireAndAnEmptyRedisStartsFromTheSeed) {
  ts::RedisServer redis;
  constexpr int64_t kTtl = 400;
  auto dead = std::make_unique<FakeGateway>(cluster_config(redis, kTtl));
  FakeGateway alive(cluster_config(redis, kTtl));
  Holds hd, ha;
  using S = BudgetResult::Status;
  // The first use starts from the spend the asking gateway knows of (its store): 0.3.
  ASSERT_EQ(hold_budget(*dead, hd, budget_request(0.6, 1.0, 0.3)), S::kGranted);
  EXPECT_EQ(redis.cli("HGET 'sb:{#budget}:team' s"), "300000000");
  EXPECT_EQ(hold_budget(alive, ha, budget_request(0.2, 1.0, 0.9)), S::kNoRoom)
      << "the seed counts only when Redis has no spend";
  dead->shutdown();  // dies holding 0.6
  const auto died = std::chrono::steady_clock::now();
  hd.clear();
  ASSERT_TRUE(
      ts::wait_until([&] { return hold_budget(alive, ha, budget_request(0.2)) == S::kGranted; },
                     std::chrono::milliseconds(kTtl * 5)));
  EXPECT_LE(std::chrono::steady_clock::now() - died, std::chrono::milliseconds(kTtl + 300));
}

}  // namespace
}  // namespace switchboard::cluster
