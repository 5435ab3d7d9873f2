// Hot reload of a provider's keys: state and in-flight leases move with the keys that stay.
#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <thread>

#include "keys/keys.h"
#include "test_util.h"

namespace switchboard::keys {
namespace {

using testing::make_provider;

Outcome rate_limited_for(int seconds) {
  Outcome o;
  o.status = OutcomeClass::kRateLimited;
  o.headers = {{"retry-after", std::to_string(seconds)}};
  return o;
}

TEST(KeyPoolReloadTest, StayingKeysKeepCooldownsAndInFlightLeases) {
  ManualClock clock;
  RateLimits limits;
  limits.max_concurrent = 1;
  CooldownConfig cd;
  cd.jitter = 0;
  ProviderConfig before = make_provider("p", 2, limits, cd);  // p#1, p#2
  KeyPool old_pool(before, clock);

  auto a = old_pool.acquire("m", 10);
  auto b = old_pool.acquire("m", 10);
  ASSERT_TRUE(a.ok() && b.ok());
  Lease cooled = a.take_lease();
  Lease busy = b.take_lease();
  const std::string cooled_id = cooled.key_id();
  const std::string busy_secret = busy.secret();
  cooled.complete(rate_limited_for(30));  // that key (for model m) cools for 30 s

  // The new configuration drops nothing, adds a key, and reorders: secrets identify keys.
  ProviderConfig after = before;
  std::swap(after.keys[0].secret, after.keys[1].secret);
  KeyConfig extra;
  extra.id = "p#3";
  extra.secret = "sk-test-secret-p-3";
  after.keys.push_back(extra);
  auto pool = old_pool.reconfigured(after, clock);

  // The busy key is still at max_concurrent in the new pool, the cooled one still cools: only
  // the new key can serve now.
  auto c = pool->acquire("m", 10);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.lease().key_id(), "p#3");
  auto d = pool->acquire("m", 10);
  EXPECT_FALSE(d.ok());
  // The old pool's lease ends in the new pool and frees its key there.
  busy.complete(Outcome{});
  auto e = pool->acquire("m", 10);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e.lease().secret(), busy_secret);
  // The cooldown survives the reload and ends when it was due.
  auto snap = pool->snapshot();
  bool cooling = false;
  for (const auto& k : snap) {
    for (const auto& mc : k.model_cooldowns)
      cooling |= mc.model == "m" && mc.remaining > Millis(29000);
  }
  EXPECT_TRUE(cooling);
  (void)cooled_id;
}

TEST(KeyPoolReloadTest, RemovedKeysFinishTheirLeasesInTheOldPool) {
  ManualClock clock;
  ProviderConfig before = make_provider("p", 2);
  KeyPool old_pool(before, clock);
  auto a = old_pool.acquire("m", 10);
  auto b = old_pool.acquire("m", 10);
  ASSERT_TRUE(a.ok() && b.ok());
  Lease la = a.take_lease();
  Lease lb = b.take_lease();
  ProviderConfig after = before;
  after.keys.pop_back();  // p#2 removed
  auto pool = old_pool.reconfigured(after, clock);
  ASSERT_EQ(pool->size(), 1u);
  // Whichever lease held the removed key ends in the old pool without touching the new one.
  EXPECT_TRUE(la.complete(Outcome{}));
  EXPECT_TRUE(lb.complete(Outcome{}));
  auto snap = pool->snapshot();
  ASSERT_EQ(snap.size(), 1u);
  EXPECT_EQ(snap[0].in_flight, 0);
}

// A reload that failed after handing a pool over (its new pool was never published) leaves the
// published pool forwarding: the next reload must take the keys' state from where it lives now.
TEST(KeyPoolReloadTest, ReloadAfterAnAbandonedHandOverTakesTheLiveState) {
  ManualClock clock;
  RateLimits limits;
  limits.max_concurrent = 1;
  const ProviderConfig cfg = make_provider("p", 1, limits);
  KeyPool published(cfg, clock);
  auto abandoned = published.reconfigured(cfg, clock);
  abandoned.reset();  // the failed snapshot is dropped; `published` still forwards to its core
  auto first = published.acquire("m", 0);  // granted by the abandoned pool's core
  ASSERT_TRUE(first.ok());
  Lease held = first.take_lease();

  auto next = published.reconfigured(cfg, clock);
  auto second = next->acquire("m", 0);
  ASSERT_FALSE(second.ok()) << "the in-flight lease must count in the new pool";
  EXPECT_EQ(second.no_key().reason, NoKeyReason::kConcurrency);
  EXPECT_TRUE(held.complete(Outcome{}));  // ends in the new pool, freeing the key there
  EXPECT_TRUE(next->acquire("m", 0).ok());
}

// A wait forwarded to the new pool can be withdrawn through the old one.
TEST(KeyPoolReloadTest, CancelFollowsAForwardedWait) {
  ManualClock clock;
  ManualScheduler sched;
  RateLimits limits;
  limits.max_concurrent = 1;
  const ProviderConfig cfg = make_provider("p", 1, limits);
  KeyPool old_pool(cfg, clock, {.scheduler = &sched});
  auto pool = old_pool.reconfigured(cfg, clock, {.scheduler = &sched});
  Lease held = pool->acquire("m", 0).take_lease();
  std::optional<NoKeyReason> got;
  const WaitId id = old_pool.wait_async({"m", 0, MonoTime::max(), ""}, [&](AcquireResult r) {
    got = r.ok() ? std::nullopt : std::optional(r.no_key().reason);
  });
  EXPECT_EQ(pool->waiting(), 1u);
  EXPECT_TRUE(old_pool.cancel_wait(id));
  EXPECT_EQ(got, NoKeyReason::kCancelled);
  EXPECT_EQ(pool->waiting(), 0u);
  EXPECT_FALSE(old_pool.cancel_wait(id));
}

TEST(KeyPoolReloadTest, OldPoolForwardsNewAcquisitions) {
  ManualClock clock;
  RateLimits limits;
  limits.max_concurrent = 1;
  ProviderConfig cfg = make_provider("p", 1, limits);
  KeyPool old_pool(cfg, clock);
  auto pool = old_pool.reconfigured(cfg, clock);
  // A request that planned against the old configuration still gets a lease, from the new pool,
  // and the new pool's concurrency limit sees it.
  auto a = old_pool.acquire("m", 1);
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(pool->acquire("m", 1).ok());
  a.lease().complete(Outcome{});
  EXPECT_TRUE(pool->acquire("m", 1).ok());
}

TEST(KeyPoolReloadTest, DisabledAndDeadMarksSurvive) {
  ManualClock clock;
  ProviderConfig cfg = make_provider("p", 2);
  KeyPool old_pool(cfg, clock);
  ASSERT_TRUE(old_pool.disable("p#1").ok());
  auto a = old_pool.acquire("m", 1);
  ASSERT_TRUE(a.ok());
  Outcome dead;
  dead.status = OutcomeClass::kAuthFailed;
  a.lease().complete(dead);  // p#2 revoked
  auto pool = old_pool.reconfigured(cfg, clock);
  EXPECT_FALSE(pool->acquire("m", 1).ok());
  auto snap = pool->snapshot();
  EXPECT_EQ(snap[0].state, KeyState::kDisabled);
  EXPECT_EQ(snap[1].state, KeyState::kDead);
}

// Reloads racing with acquire/complete on many threads never let a key exceed max_concurrent:
// in-flight leases move with their key (TSan runs this too).
TEST(KeyPoolReloadTest, ConcurrentReloadsKeepConcurrencyLimits) {
  ManualClock clock;
  RateLimits limits;
  limits.max_concurrent = 1;
  ProviderConfig cfg = make_provider("p", 1, limits);
  std::vector<std::unique_ptr<KeyPool>> generations;  // every pool outlives its leases
  generations.push_back(std::make_unique<KeyPool>(cfg, clock));
  std::atomic<KeyPool*> current{generations.back().get()};
  std::atomic<int> active{0}, max_active{0}, granted{0};
  std::atomic<bool> stop{false};
  bool stalled = false;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        auto r = current.load()->acquire("m", 1);
        if (!r.ok()) continue;
        int now = ++active;
        int seen = max_active.load();
        while (now > seen && !max_active.compare_exchange_weak(seen, now)) {
        }
        granted++;
        --active;
        r.lease().complete(Outcome{});
      }
    });
  }
  for (int i = 0; i < 50; ++i) {
    // Bounded: a leaked in-flight count would starve the workers, and that must fail, not hang.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (granted.load() < (i + 1) * 20 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
    if (granted.load() < (i + 1) * 20) {
      stalled = true;  // fails below, after the workers are joined
      break;
    }
    generations.push_back(current.load()->reconfigured(cfg, clock));
    current.store(generations.back().get());
  }
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_FALSE(stalled) << "no progress after a reload: an in-flight count leaked";
  EXPECT_EQ(max_active.load(), 1);
  EXPECT_GE(granted.load(), 1000);
  auto snap = current.load()->snapshot();
  EXPECT_EQ(snap[0].in_flight, 0);
  // Destroy newest first: older pools forward into newer ones.
  while (!generations.empty()) generations.pop_back();
}

}  // namespace
}  // namespace switchboard::keys
