#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <set>
#include <thread>

#include "test_util.h"

namespace switchboard::keys {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using testing::counter_value;
using testing::make_provider;

Outcome ok(int64_t tokens = -1) {
  Outcome o;
  o.latency = Millis(5);
  o.tokens_used = tokens;
  return o;
}
Outcome with_status(OutcomeClass c, HeaderList h = {}) {
  Outcome o;
  o.status = c;
  o.headers = std::move(h);
  return o;
}

TEST(KeyPool, LeaseGivesKeyAndReleasesOnComplete) {
  ManualClock clock;
  KeyPool pool(make_provider("lease", 2, {.max_concurrent = 1}), clock);
  auto r = pool.acquire("m", 10);
  ASSERT_TRUE(r.ok());
  Lease lease = r.take_lease();
  EXPECT_EQ(lease.key_id(), "lease#1");
  EXPECT_EQ(lease.secret(), "sk-test-secret-lease-1");
  EXPECT_EQ(lease.fingerprint().rfind("sha256:", 0), 0u);
  EXPECT_EQ(pool.inspect("lease#1")->in_flight, 1);
  EXPECT_TRUE(lease.complete(ok()));
  EXPECT_FALSE(lease.complete(ok()));  // ends exactly once
  EXPECT_FALSE(lease.active());
  EXPECT_EQ(pool.inspect("lease#1")->in_flight, 0);
  EXPECT_EQ(pool.inspect("lease#1")->leases_total, 1u);
}

TEST(KeyPool, DroppedLeaseIsCancelledAndReleasesEverything) {
  ManualClock clock;
  KeyPool pool(make_provider("drop", 1, {.rpm = 5, .tpm = 1000, .max_concurrent = 1}), clock);
  double before = counter_value("switchboard_keys_leases_total", "drop", "cancelled");
  {
    auto r = pool.acquire("m", 400);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(pool.inspect("drop#1")->minute.tokens, 400);
    EXPECT_FALSE(pool.acquire("m", 1).ok());  // concurrency 1
  }
  EXPECT_EQ(counter_value("switchboard_keys_leases_total", "drop", "cancelled"), before + 1);
  auto s = *pool.inspect("drop#1");
  EXPECT_EQ(s.in_flight, 0);
  EXPECT_EQ(s.minute.requests, 0);
  EXPECT_EQ(s.minute.tokens, 0);
  // Moving a lease moves the obligation: still exactly one end.
  before = counter_value("switchboard_keys_leases_total", "drop", "cancelled");
  {
    Lease a = pool.acquire("m", 1).take_lease();
    Lease b = std::move(a);
    EXPECT_FALSE(a.active());  // NOLINT(bugprone-use-after-move): checking the moved-from state
    EXPECT_TRUE(b.active());
  }
  EXPECT_EQ(counter_value("switchboard_keys_leases_total", "drop", "cancelled"), before + 1);
  EXPECT_EQ(pool.inspect("drop#1")->in_flight, 0);
}

TEST(KeyPool, MaxConcurrentIsNeverExceeded) {
  ManualClock clock;
  KeyPool pool(make_provider("conc", 2, {.max_concurrent = 2}), clock);
  std::vector<Lease> held;
  for (int i = 0; i < 4; ++i) {
    auto r = pool.acquire("m", 0);
    ASSERT_TRUE(r.ok()) << i;
    held.push_back(r.take_lease());
  }
  auto none = pool.acquire("m", 0);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.no_key().reason, NoKeyReason::kConcurrency);
  EXPECT_EQ(none.no_key().earliest, clock.now());
  for (const auto& s : pool.snapshot()) EXPECT_EQ(s.in_flight, 2);
  held[1].complete(ok());
  auto again = pool.acquire("m", 0);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.lease().key_id(), "conc#2");  // the only key with a free slot
}

TEST(KeyPool, RequestWindowIsExactAtTheMinuteBoundary) {
  ManualClock clock;  // monotonic time starts on a 100 ms boundary
  KeyPool pool(make_provider("rpm", 1, {.rpm = 2}), clock);
  const MonoTime t0 = clock.now();
  pool.acquire("m", 0).lease().complete(ok());
  clock.advance(seconds(30));
  pool.acquire("m", 0).lease().complete(ok());
  auto none = pool.acquire("m", 0);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.no_key().reason, NoKeyReason::kMinuteWindow);
  EXPECT_EQ(none.no_key().earliest, t0 + milliseconds(60'100));
  clock.advance(milliseconds(30'099));  // t0 + 60.099 s: the first request still counts
  EXPECT_FALSE(pool.acquire("m", 0).ok());
  clock.advance(milliseconds(1));  // t0 + 60.1 s
  auto r = pool.acquire("m", 0);
  ASSERT_TRUE(r.ok());
  r.lease().complete(ok());
  EXPECT_FALSE(pool.acquire("m", 0).ok());  // the second one still counts until t0 + 90.1 s
  EXPECT_EQ(pool.inspect("rpm#1")->minute.requests, 2);
}

TEST(KeyPool, TokenWindowReservesEstimateAndSettlesRealUsage) {
  ManualClock clock;
  KeyPool pool(make_provider("tpm", 1, {.tpm = 1000}), clock);
  Lease a = pool.acquire("m", 600).take_lease();
  auto none = pool.acquire("m", 600);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.no_key().reason, NoKeyReason::kMinuteWindow);
  a.complete(ok(300));  // real usage replaces the estimate
  EXPECT_EQ(pool.inspect("tpm#1")->minute.tokens, 300);
  Lease b = pool.acquire("m", 600).take_lease();
  EXPECT_EQ(pool.inspect("tpm#1")->minute.tokens, 900);
  b.complete(with_status(OutcomeClass::kServerError));  // failure releases the estimate
  auto s = *pool.inspect("tpm#1");
  EXPECT_EQ(s.minute.tokens, 300);
  EXPECT_EQ(s.minute.requests, 2);  // the provider saw it: the request still counts
  Lease c = pool.acquire("m", 100).take_lease();
  c.complete(with_status(OutcomeClass::kConnectionError));
  EXPECT_EQ(pool.inspect("tpm#1")->minute.requests, 2);  // never reached it: released
  auto big = pool.acquire("m", 1001);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.no_key().reason, NoKeyReason::kTooLarge);
  EXPECT_EQ(big.no_key().earliest, MonoTime::max());
}

// Records the exact cooldown deadlines the pool computes.
struct EndRecorder : PoolObserver {
  std::vector<EndEvent> ends;
  std::vector<GrantEvent> grants;
  void on_grant(const GrantEvent& e) override { grants.push_back(e); }
  void on_end(const EndEvent& e) override { ends.push_back(e); }
};

TEST(KeyPool, BackoffGrowsByMultiplierUpToTheCapWithJitterOnTop) {
  ManualClock clock;
  EndRecorder rec;
  KeyPool pool(
      make_provider("backoff", 1, {},
                    {.initial_ms = 1000, .multiplier = 2.0, .max_ms = 8000, .jitter = 0.2}),
      clock, {.rng_seed = 42, .observer = &rec});
  double cooldowns_before = counter_value("switchboard_keys_cooldowns_total", "backoff");
  auto run_429 = [&](int64_t base_ms) {
    auto r = pool.acquire("", 0);
    ASSERT_TRUE(r.ok());
    r.lease().complete(with_status(OutcomeClass::kRateLimited));
    const Nanos wait = rec.ends.back().key_cooldown_until - clock.now();
    EXPECT_GE(wait, milliseconds(base_ms));
    EXPECT_LE(wait, milliseconds(base_ms * 12 / 10));
    auto s = *pool.inspect("backoff#1");
    EXPECT_EQ(s.state, KeyState::kCooling);
    EXPECT_EQ(s.cooldown_reason, CooldownReason::kBackoff);
    auto none = pool.acquire("", 0);
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.no_key().reason, NoKeyReason::kCooling);
    EXPECT_EQ(none.no_key().earliest, rec.ends.back().key_cooldown_until);
    clock.advance(wait - Nanos(1));
    EXPECT_FALSE(pool.acquire("", 0).ok());  // not one nanosecond early
    clock.advance(Nanos(1));
  };
  for (int64_t base : {1000, 2000, 4000, 8000, 8000, 8000}) run_429(base);
  EXPECT_EQ(pool.inspect("backoff#1")->consecutive_failures, 6);
  pool.acquire("", 0).lease().complete(ok());  // success resets the streak
  EXPECT_EQ(pool.inspect("backoff#1")->consecutive_failures, 0);
  EXPECT_EQ(pool.inspect("backoff#1")->state, KeyState::kHealthy);
  run_429(1000);
  EXPECT_EQ(counter_value("switchboard_keys_cooldowns_total", "backoff"), cooldowns_before + 7);
}

TEST(KeyPool, JitterStaysWithinBoundsAndIsSpread) {
  ManualClock clock;
  EndRecorder rec;
  KeyPool pool(
      make_provider("jitter", 1, {},
                    {.initial_ms = 1000, .multiplier = 3.0, .max_ms = 60000, .jitter = 0.5}),
      clock, {.rng_seed = 7, .observer = &rec});
  Nanos lo = Nanos::max(), hi = Nanos::min();
  for (int i = 0; i < 300; ++i) {
    pool.acquire("", 0).lease().complete(with_status(OutcomeClass::kRateLimited));
    Nanos wait = rec.ends.back().key_cooldown_until - clock.now();
    ASSERT_GE(wait, milliseconds(1000));
    ASSERT_LE(wait, milliseconds(1500));
    lo = std::min(lo, wait);
    hi = std::max(hi, wait);
    clock.advance(wait);
    pool.acquire("", 0).lease().complete(ok());
  }
  EXPECT_LT(lo, milliseconds(1050));
  EXPECT_GT(hi, milliseconds(1450));
}

TEST(KeyPool, NoJitterMeansExactBackoff) {
  ManualClock clock;
  EndRecorder rec;
  KeyPool pool(make_provider("nojitter", 1, {},
                             {.initial_ms = 250, .multiplier = 1.5, .max_ms = 1000, .jitter = 0}),
               clock, {.observer = &rec});
  for (int64_t expect : {250, 375, 562, 843, 1000}) {
    pool.acquire("", 0).lease().complete(with_status(OutcomeClass::kRateLimited));
    Nanos wait = rec.ends.back().key_cooldown_until - clock.now();
    EXPECT_NEAR(static_cast<double>(wait.count()), expect * 1e6, 1e6) << expect;
    clock.advance(wait);
  }
}

TEST(KeyPool, AnnouncedRetryAfterIsHonouredAndNeverShortened) {
  ManualClock clock;
  EndRecorder rec;
  KeyPool pool(make_provider("never", 1, {}, {.jitter = 0}), clock, {.observer = &rec});
  Lease a = pool.acquire("", 0).take_lease();
  Lease b = pool.acquire("", 0).take_lease();
  a.complete(with_status(OutcomeClass::kRateLimited, {{"Retry-After", "100"}}));
  const MonoTime until = rec.ends.back().key_cooldown_until;
  EXPECT_EQ(until, clock.now() + seconds(100));
  EXPECT_EQ(pool.inspect("never#1")->cooldown_reason, CooldownReason::kRetryAfter);
  clock.advance(seconds(1));
  b.complete(with_status(OutcomeClass::kRateLimited, {{"retry-after-ms", "5000"}}));
  EXPECT_EQ(rec.ends.back().key_cooldown_until, until);  // a shorter one never wins
  auto s = *pool.inspect("never#1");
  EXPECT_EQ(s.cooldown_remaining, seconds(99));
  auto none = pool.acquire("", 0);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.no_key().earliest, until);
  clock.advance(seconds(99));
  EXPECT_TRUE(pool.acquire("", 0).ok());
}

TEST(KeyPool, RemainingZeroCoolsEvenOnSuccessAndSixMinutesIsSixMinutes) {
  ManualClock clock;
  KeyPool pool(make_provider("remaining", 2, {}, {.jitter = 0}), clock);
  Lease l = pool.acquire("", 0).take_lease();
  ASSERT_EQ(l.key_id(), "remaining#1");
  Outcome o = ok(10);
  o.headers = {{"x-ratelimit-remaining-requests", "0"}, {"x-ratelimit-reset-requests", "6m0s"}};
  l.complete(o);
  auto s = *pool.inspect("remaining#1");
  EXPECT_EQ(s.state, KeyState::kCooling);
  EXPECT_EQ(s.cooldown_reason, CooldownReason::kQuotaExhausted);
  EXPECT_EQ(s.cooldown_remaining, minutes(6));
  // Only the other key serves meanwhile.
  for (int i = 0; i < 5; ++i) {
    auto r = pool.acquire("", 0);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.lease().key_id(), "remaining#2");
    r.lease().complete(ok());
  }
  clock.advance(minutes(6));
  EXPECT_EQ(pool.inspect("remaining#1")->state, KeyState::kHealthy);
  // Remaining > 0 does not cool.
  Lease m = pool.acquire("", 0).take_lease();
  Outcome fine = ok();
  fine.headers = {{"x-ratelimit-remaining-tokens", "5"}, {"x-ratelimit-reset-tokens", "1m"}};
  std::string id = m.key_id();
  m.complete(fine);
  EXPECT_EQ(pool.inspect(id)->state, KeyState::kHealthy);
}

TEST(KeyPool, AnthropicResetTimeCoolsUntilThatTime) {
  ManualClock clock(WallTime(seconds(1714564800)));  // 2024-05-01T12:00:00Z
  KeyPool pool(make_provider("anth", 1, {}, {.jitter = 0}), clock);
  pool.acquire("claude", 0)
      .lease()
      .complete(with_status(OutcomeClass::kRateLimited,
                            {{"anthropic-ratelimit-tokens-remaining", "0"},
                             {"anthropic-ratelimit-tokens-reset", "2024-05-01T12:00:45Z"}}));
  auto s = *pool.inspect("anth#1");
  ASSERT_EQ(s.model_cooldowns.size(), 1u);
  EXPECT_EQ(s.model_cooldowns[0].model, "claude");
  EXPECT_EQ(s.model_cooldowns[0].remaining, seconds(45));
  EXPECT_EQ(s.model_cooldowns[0].reason, CooldownReason::kQuotaExhausted);
}

TEST(KeyPool, ModelCooldownLeavesOtherModelsAlone) {
  ManualClock clock;
  KeyPool pool(make_provider("permodel", 1, {}, {.jitter = 0}), clock);
  pool.acquire("gpt-4o", 0)
      .lease()
      .complete(with_status(OutcomeClass::kRateLimited, {{"retry-after", "20"}}));
  auto none = pool.acquire("gpt-4o", 0);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.no_key().reason, NoKeyReason::kCooling);
  EXPECT_EQ(none.no_key().earliest, clock.now() + seconds(20));
  EXPECT_TRUE(pool.acquire("gpt-4o-mini", 0).ok());
  auto s = *pool.inspect("permodel#1");
  EXPECT_EQ(s.state, KeyState::kHealthy);
  ASSERT_EQ(s.model_cooldowns.size(), 1u);
  EXPECT_EQ(s.model_cooldowns[0].model, "gpt-4o");
  // key_wide applies to the whole key.
  Outcome wide = with_status(OutcomeClass::kRateLimited, {{"retry-after", "5"}});
  wide.key_wide = true;
  pool.acquire("gpt-4o-mini", 0).lease().complete(wide);
  EXPECT_FALSE(pool.acquire("gpt-4o-mini", 0).ok());
  EXPECT_EQ(pool.inspect("permodel#1")->state, KeyState::kCooling);
  clock.advance(seconds(20));
  EXPECT_TRUE(pool.acquire("gpt-4o", 0).ok());
}

TEST(KeyPool, AuthFailureKillsKeyButServerErrorsDoNot) {
  ManualClock clock;
  KeyPool pool(make_provider("dead", 2), clock);
  for (int i = 0; i < 10; ++i) {
    auto r = pool.acquire("m", 0);
    ASSERT_TRUE(r.ok());
    r.lease().complete(with_status(i % 2 ? OutcomeClass::kServerError : OutcomeClass::kTimeout));
  }
  for (const auto& s : pool.snapshot()) {
    EXPECT_EQ(s.state, KeyState::kHealthy);
    EXPECT_EQ(s.consecutive_failures, 5);
  }
  Lease l = pool.acquire("m", 0).take_lease();
  std::string id = l.key_id();
  l.complete(with_status(OutcomeClass::kAuthFailed));
  EXPECT_EQ(pool.inspect(id)->state, KeyState::kDead);
  EXPECT_EQ(pool.inspect(id)->dead_reason, "auth_failed");
  for (int i = 0; i < 4; ++i) {
    auto r = pool.acquire("m", 0);
    ASSERT_TRUE(r.ok());
    EXPECT_NE(r.lease().key_id(), id);
    r.lease().complete(with_status(i == 3 ? OutcomeClass::kAuthFailed : OutcomeClass::kSuccess));
  }
  auto none = pool.acquire("m", 0);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.no_key().reason, NoKeyReason::kNoUsableKey);
  EXPECT_EQ(none.no_key().earliest, MonoTime::max());
  clock.advance(hours(100));
  EXPECT_FALSE(pool.acquire("m", 0).ok());  // dead is forever...
  EXPECT_TRUE(pool.enable(id).ok());        // ...unless an operator says otherwise
  EXPECT_TRUE(pool.acquire("m", 0).ok());
}

TEST(KeyPool, DisableAndEnableByIdAndSnapshotHasNoSecrets) {
  ManualClock clock;
  KeyPool pool(make_provider("admin", 3), clock);
  EXPECT_TRUE(pool.disable("admin#2").ok());
  EXPECT_EQ(pool.disable("admin#9").code(), StatusCode::kNotFound);
  for (int i = 0; i < 30; ++i) {
    auto r = pool.acquire("m", 0);
    ASSERT_TRUE(r.ok());
    EXPECT_NE(r.lease().key_id(), "admin#2");
  }
  EXPECT_EQ(pool.inspect("admin#2")->state, KeyState::kDisabled);
  EXPECT_TRUE(pool.enable("admin#2").ok());
  std::set<std::string> seen;
  for (int i = 0; i < 3; ++i) seen.insert(pool.acquire("m", 0).lease().key_id());
  EXPECT_EQ(seen.size(), 3u);
  for (const auto& s : pool.snapshot()) {
    for (const std::string* field : {&s.id, &s.fingerprint, &s.dead_reason}) {
      EXPECT_EQ(field->find("sk-test-secret"), std::string::npos);
    }
    EXPECT_EQ(s.fingerprint.size(), 7u + 12u);
  }
  EXPECT_FALSE(pool.inspect("nope").has_value());
}

TEST(KeyPool, SessionsStickToTheirKeyWhileItIsEligible) {
  ManualClock clock;
  KeyPool pool(make_provider("sticky", 4), clock);
  std::string first = pool.acquire("m", 0, MonoTime::max(), "conv-1").lease().key_id();
  for (int i = 0; i < 20; ++i) {
    auto other = pool.acquire("m", 0);  // unrelated traffic rotates around
    auto r = pool.acquire("m", 0, MonoTime::max(), "conv-1");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.lease().key_id(), first);
  }
  ASSERT_TRUE(pool.disable(first).ok());
  std::string second = pool.acquire("m", 0, MonoTime::max(), "conv-1").lease().key_id();
  EXPECT_NE(second, first);
  ASSERT_TRUE(pool.enable(first).ok());
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(pool.acquire("m", 0, MonoTime::max(), "conv-1").lease().key_id(), second);
  }
}

TEST(KeyPool, SessionTableIsBounded) {
  ManualClock clock;
  KeyPool pool(make_provider("sessions", 2), clock, {.max_sessions = 100});
  for (int i = 0; i < 1000; ++i) {
    clock.advance(milliseconds(1));
    ASSERT_TRUE(pool.acquire("m", 0, MonoTime::max(), "s" + std::to_string(i)).ok());
  }
  // The most recent session is still remembered.
  std::string k = pool.acquire("m", 0, MonoTime::max(), "s999").lease().key_id();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(pool.acquire("m", 0, MonoTime::max(), "s999").lease().key_id(), k);
  }
}

TEST(KeyPool, SmoothWeightedRoundRobinFollowsWeights) {
  ManualClock clock;
  ProviderConfig p = make_provider("weights", 3);
  p.keys[0].weight = 5;
  p.keys[1].weight = 1;
  p.keys[2].weight = 1;
  KeyPool pool(p, clock);
  std::string seq;
  for (int i = 0; i < 7; ++i) seq += pool.acquire("m", 0).lease().key_id().back();
  EXPECT_EQ(seq, "1121311");  // nginx's smooth sequence for 5:1:1: a a b a c a a

  p = make_provider("weights2", 3);
  p.keys[0].weight = 3;
  p.keys[1].weight = 2;
  p.keys[2].weight = 1;
  KeyPool pool2(p, clock);
  std::map<std::string, int> count;
  for (int i = 0; i < 600; ++i) ++count[pool2.acquire("m", 0).lease().key_id()];
  EXPECT_EQ(count["weights2#1"], 300);
  EXPECT_EQ(count["weights2#2"], 200);
  EXPECT_EQ(count["weights2#3"], 100);
}

TEST(KeyPool, FairnessEqualWeightsWithinOnePercent) {
  ManualClock clock;
  KeyPool pool(make_provider("fair", 6, {.max_concurrent = 4}), clock);
  std::map<std::string, int> count;
  std::vector<Lease> open;
  for (int i = 0; i < 60000; ++i) {
    auto r = pool.acquire("m", 100);
    ASSERT_TRUE(r.ok());
    ++count[r.lease().key_id()];
    open.push_back(r.take_lease());
    if (open.size() > 5 || i % 7 == 0) {  // hold a few leases at a time, complete out of order
      open.front().complete(ok(90));
      open.erase(open.begin());
    }
    clock.advance(milliseconds(1));
  }
  ASSERT_EQ(count.size(), 6u);
  for (const auto& [id, n] : count) {
    EXPECT_NEAR(n, 10000, 100) << id;
  }
}

TEST(KeyPool, LeastLoadedPicksTheKeyWithFewestInFlight) {
  ManualClock clock;
  ProviderConfig p = make_provider("least", 3);
  p.selection = KeySelection::kLeastLoaded;
  KeyPool pool(p, clock);
  std::vector<Lease> held;
  std::set<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    held.push_back(pool.acquire("m", 0).take_lease());
    ids.insert(held.back().key_id());
  }
  EXPECT_EQ(ids.size(), 3u);
  held.push_back(pool.acquire("m", 0).take_lease());  // all at 1: any
  std::string busy = held.back().key_id();
  std::string freed = held[0].key_id() == busy ? held[1].key_id() : held[0].key_id();
  (held[0].key_id() == busy ? held[1] : held[0]).complete(ok());
  EXPECT_EQ(pool.acquire("m", 0).lease().key_id(), freed);
}

TEST(KeyPool, DailyWindowResetsAtTheConfiguredUtcHour) {
  // 2024-01-01T04:59:00Z; reset at 05:00 UTC.
  ManualClock clock(WallTime(seconds(1704085140)));
  KeyPool pool(make_provider("daily", 1, {.rpd = 2, .tpd = 0, .daily_reset_hour_utc = 5}), clock);
  pool.acquire("m", 0).lease().complete(ok());
  pool.acquire("m", 0).lease().complete(ok());
  auto none = pool.acquire("m", 0);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.no_key().reason, NoKeyReason::kDailyWindow);
  EXPECT_EQ(none.no_key().earliest, clock.now() + seconds(60));
  EXPECT_EQ(pool.inspect("daily#1")->day.requests, 2);
  clock.advance(seconds(59));
  EXPECT_FALSE(pool.acquire("m", 0).ok());
  clock.advance(seconds(1));
  EXPECT_TRUE(pool.acquire("m", 0).ok());
}

TEST(KeyPool, DailyTokenWindowRollsOver24Hours) {
  ManualClock clock(WallTime(seconds(1704085140)));
  KeyPool pool(make_provider("rolling", 1, {.tpd = 1000, .daily_reset_hour_utc = -1}), clock);
  const MonoTime t0 = clock.now();
  pool.acquire("m", 600).lease().complete(ok(600));
  clock.advance(hours(5));
  pool.acquire("m", 400).lease().complete(ok(400));
  auto none = pool.acquire("m", 1);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.no_key().reason, NoKeyReason::kDailyWindow);
  // Minute buckets: the first usage (04:59:00, a minute boundary) leaves at +24 h 1 min.
  EXPECT_EQ(none.no_key().earliest, t0 + hours(24) + minutes(1));
  clock.advance(hours(19));  // t0 + 24 h: not yet
  EXPECT_FALSE(pool.acquire("m", 1).ok());
  clock.advance(minutes(1));
  auto r = pool.acquire("m", 600);
  EXPECT_TRUE(r.ok());
  EXPECT_FALSE(pool.acquire("m", 1).ok());  // the second usage still counts
}

TEST(KeyPool, DailyUsageSurvivesExportAndImport) {
  ManualClock clock(WallTime(seconds(1704085140)));
  RateLimits limits{.rpd = 5, .tpd = 10000, .daily_reset_hour_utc = 0};
  for (int hour : {0, -1}) {
    limits.daily_reset_hour_utc = hour;
    const std::string name = hour < 0 ? "persist-rolling" : "persist-fixed";
    auto cfg = make_provider(name, 2, limits);
    std::vector<KeyUsage> saved;
    {
      KeyPool before(cfg, clock);
      for (int i = 0; i < 6; ++i) before.acquire("m", 100).lease().complete(ok(150));
      saved = before.export_usage();
    }
    ASSERT_EQ(saved.size(), 2u);
    int64_t total = 0;
    for (const auto& u : saved) {
      for (const auto& b : u.daily) total += b.requests;
    }
    EXPECT_EQ(total, 6);
    clock.advance(minutes(10));
    KeyPool after(cfg, clock);
    EXPECT_TRUE(after.import_usage(saved).ok());
    auto s = *after.inspect(name + "#1");
    EXPECT_EQ(s.day.requests, 3) << name;
    EXPECT_EQ(s.day.tokens, 450) << name;
    // 3 + 2 = rpd on each key: 4 more leases, then none.
    std::vector<Lease> held;
    for (int i = 0; i < 4; ++i) {
      auto r = after.acquire("m", 100);
      ASSERT_TRUE(r.ok()) << name << i;
      held.push_back(r.take_lease());
    }
    EXPECT_FALSE(after.acquire("m", 100).ok()) << name;
    for (auto& l : held) l.complete(ok());
    // Unknown ids are reported; stale usage (two days old) is ignored.
    KeyPool fresh(cfg, clock);
    std::vector<KeyUsage> stale = {
        {name + "#1", {{clock.wall_now() - hours(48), 5, 5}}},
        {"other#1", {{clock.wall_now(), 1, 1}}},
    };
    EXPECT_EQ(fresh.import_usage(stale).code(), StatusCode::kNotFound);
    EXPECT_EQ(fresh.inspect(name + "#1")->day.requests, 0) << name;
  }
}

TEST(KeyPool, MalformedHeadersAreCountedNeverFatal) {
  ManualClock clock;
  KeyPool pool(make_provider("badheaders", 1, {}, {.initial_ms = 1000, .jitter = 0}), clock);
  double before = counter_value("switchboard_keys_header_parse_errors_total", "badheaders");
  pool.acquire("", 0).lease().complete(
      with_status(OutcomeClass::kRateLimited,
                  {{"retry-after", "later"}, {"x-ratelimit-reset-requests", "6 min"}}));
  EXPECT_EQ(counter_value("switchboard_keys_header_parse_errors_total", "badheaders"), before + 2);
  // Ignored headers mean "nothing announced": plain backoff.
  auto s = *pool.inspect("badheaders#1");
  EXPECT_EQ(s.cooldown_reason, CooldownReason::kBackoff);
  EXPECT_EQ(s.cooldown_remaining, seconds(1));
}

// ------------------------------------------------------------------------ async waiters

TEST(KeyPoolWait, WaitersAreServedInFifoOrderAsCapacityFrees) {
  ManualClock clock;
  ManualScheduler sched;
  KeyPool pool(make_provider("fifo", 1, {.max_concurrent = 1}), clock, {.scheduler = &sched});
  Lease held = pool.acquire("m", 0).take_lease();
  std::vector<int> order;
  std::vector<Lease> got(4);
  int calls[4] = {};
  for (int i = 0; i < 4; ++i) {
    pool.wait_async({"m", 0, clock.now() + seconds(10), ""}, [&, i](AcquireResult r) {
      ++calls[i];
      ASSERT_TRUE(r.ok());
      order.push_back(i);
      got[i] = r.take_lease();
    });
  }
  EXPECT_EQ(pool.waiting(), 4u);
  EXPECT_TRUE(order.empty());
  EXPECT_FALSE(pool.acquire("m", 0).ok());  // a newcomer does not jump the queue
  held.complete(ok());
  EXPECT_EQ(order, std::vector<int>({0}));
  got[0] = Lease();  // dropping it (cancelled) frees the slot for the next
  EXPECT_EQ(order, std::vector<int>({0, 1}));
  got[1].complete(ok());
  got[2].complete(with_status(OutcomeClass::kServerError));
  EXPECT_EQ(order, std::vector<int>({0, 1, 2, 3}));
  EXPECT_EQ(pool.waiting(), 0u);
  for (int c : calls) EXPECT_EQ(c, 1);
}

TEST(KeyPoolWait, WaiterTimesOutAtItsDeadlineExactlyOnce) {
  ManualClock clock;
  ManualScheduler sched;
  KeyPool pool(make_provider("timeout", 1, {.max_concurrent = 1}), clock, {.scheduler = &sched});
  Lease held = pool.acquire("m", 0).take_lease();
  int calls = 0;
  NoKeyReason reason{};
  pool.wait_async({"m", 0, clock.now() + seconds(5), ""}, [&](AcquireResult r) {
    ++calls;
    ASSERT_FALSE(r.ok());
    reason = r.no_key().reason;
  });
  clock.advance(milliseconds(4999));
  sched.run_due(clock.now());
  EXPECT_EQ(calls, 0);
  clock.advance(milliseconds(1));
  sched.run_due(clock.now());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(reason, NoKeyReason::kTimeout);
  held.complete(ok());  // too late: no second call
  clock.advance(seconds(10));
  sched.run_due(clock.now());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(pool.waiting(), 0u);
}

TEST(KeyPoolWait, WaiterWakesWhenCooldownEnds) {
  ManualClock clock;
  ManualScheduler sched;
  KeyPool pool(make_provider("wake", 1, {}, {.jitter = 0}), clock, {.scheduler = &sched});
  pool.acquire("m", 0).lease().complete(
      with_status(OutcomeClass::kRateLimited, {{"retry-after", "2"}}));
  std::optional<AcquireResult> result;
  pool.wait_async({"m", 0, clock.now() + seconds(10), ""},
                  [&](AcquireResult r) { result.emplace(std::move(r)); });
  EXPECT_EQ(sched.next_due(), clock.now() + seconds(2));
  clock.advance(milliseconds(1999));
  sched.run_due(clock.now());
  EXPECT_FALSE(result.has_value());
  clock.advance(milliseconds(1));
  sched.run_due(clock.now());
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok());
  EXPECT_EQ(result->lease().key_id(), "wake#1");
}

TEST(KeyPoolWait, WaiterWakesWhenTheMinuteWindowFrees) {
  ManualClock clock;
  ManualScheduler sched;
  KeyPool pool(make_provider("wakewin", 1, {.rpm = 1}), clock, {.scheduler = &sched});
  const MonoTime t0 = clock.now();
  pool.acquire("m", 0).lease().complete(ok());
  std::optional<AcquireResult> result;
  pool.wait_async({"m", 0, t0 + seconds(120), ""},
                  [&](AcquireResult r) { result.emplace(std::move(r)); });
  ASSERT_FALSE(result.has_value());
  clock.advance(milliseconds(60'100));
  sched.run_due(clock.now());
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->ok());
}

TEST(KeyPoolWait, ImmediateGrantPermanentFailureCancelAndShutdown) {
  ManualClock clock;
  ManualScheduler sched;
  std::vector<NoKeyReason> reasons;
  Lease held;
  auto record = [&](AcquireResult r) {
    if (r.ok()) {
      held = r.take_lease();
      reasons.push_back(NoKeyReason::kNoScheduler);  // marker for "got a lease"
    } else {
      reasons.push_back(r.no_key().reason);
    }
  };
  {
    KeyPool pool(make_provider("misc", 1, {.tpm = 100}), clock, {.scheduler = &sched});
    pool.wait_async({"m", 90, clock.now() + seconds(1), ""}, record);  // granted at once
    ASSERT_EQ(reasons.size(), 1u);
    ASSERT_TRUE(held.active());
    pool.wait_async({"m", 1000, clock.now() + seconds(1), ""}, record);  // can never fit
    ASSERT_EQ(reasons.size(), 2u);
    EXPECT_EQ(reasons[1], NoKeyReason::kTooLarge);
    WaitId id = pool.wait_async({"m", 20, clock.now() + seconds(1), ""}, record);
    EXPECT_EQ(pool.waiting(), 1u);
    EXPECT_TRUE(pool.cancel_wait(id));
    EXPECT_FALSE(pool.cancel_wait(id));
    ASSERT_EQ(reasons.size(), 3u);
    EXPECT_EQ(reasons[2], NoKeyReason::kCancelled);
    pool.wait_async({"m", 20, clock.now() + seconds(1), ""}, record);
    EXPECT_EQ(reasons.size(), 3u);
    held.complete(ok(90));  // keeps its tokens: the waiter still cannot fit
    EXPECT_EQ(reasons.size(), 3u);
  }  // destroyed with one waiter pending
  ASSERT_EQ(reasons.size(), 4u);
  EXPECT_EQ(reasons[3], NoKeyReason::kShutdown);
  clock.advance(seconds(5));
  sched.run_due(clock.now());  // timers of a dead pool do nothing
  EXPECT_EQ(reasons.size(), 4u);
}

TEST(KeyPoolWait, BlockingHelperReturnsWhenAnotherThreadReleases) {
  ManualClock clock;
  ManualScheduler sched;
  KeyPool pool(make_provider("blocking", 1, {.max_concurrent = 1}), clock, {.scheduler = &sched});
  Lease held = pool.acquire("m", 0).take_lease();
  std::thread releaser([&] {
    while (pool.waiting() == 0) std::this_thread::yield();
    held.complete(ok());
  });
  auto r = pool.acquire_blocking({"m", 0, clock.now() + seconds(10), ""});
  releaser.join();
  EXPECT_TRUE(r.ok());
}

}  // namespace
}  // namespace switchboard::keys
