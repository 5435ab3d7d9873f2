// The key pool's side of limits shared with other gateways (keys.h, "shared limits"): which keys
// it offers a shared limiter, leases granted on the limiter's word, and what ending one reports.
#include <gtest/gtest.h>

#include "test_util.h"

namespace switchboard::keys {
namespace {

using std::chrono::seconds;
using testing::make_provider;

Outcome status(OutcomeClass c, HeaderList h = {}, int64_t tokens = -1) {
  Outcome o;
  o.status = c;
  o.headers = std::move(h);
  o.tokens_used = tokens;
  return o;
}

AcquireRequest req(std::string model, int64_t est = 10, std::string session = {}) {
  AcquireRequest r;
  r.model = std::move(model);
  r.estimated_tokens = est;
  r.session_id = std::move(session);
  return r;
}

TEST(SharedPool, CandidatesSkipDeadDisabledAndCoolingKeysAndRotate) {
  ManualClock clock;
  KeyPool pool(make_provider("sh", 3, {.max_concurrent = 1}), clock);
  auto first = pool.shared_candidates(req("m"));
  ASSERT_EQ(first.size(), 3u) << "limits are not the pool's to check here";
  auto second = pool.shared_candidates(req("m"));
  ASSERT_EQ(second.size(), 3u);
  EXPECT_NE(first.front(), second.front()) << "each call starts one key later";

  ASSERT_TRUE(pool.disable("sh#1").ok());
  // sh#2 answers a 429 for model m with a 30 s wait: cooling for m only.
  Lease l = pool.acquire_on("sh#2", req("m")).take_lease();
  EndReport report;
  l.complete(status(OutcomeClass::kRateLimited, {{"retry-after", "30"}}), &report);
  ASSERT_TRUE(report.cooldown.has_value());
  EXPECT_GE(*report.cooldown, seconds(30));
  EXPECT_EQ(report.cooldown_model, "m");
  EXPECT_TRUE(report.request_counted);

  auto for_m = pool.shared_candidates(req("m"));
  ASSERT_EQ(for_m.size(), 1u);
  EXPECT_EQ(for_m.front(), "sh#3");
  EXPECT_EQ(pool.shared_candidates(req("other")).size(), 2u);

  ASSERT_TRUE(pool.disable("sh#3").ok());
  NoKey none;
  EXPECT_TRUE(pool.shared_candidates(req("m"), &none).empty());
  EXPECT_EQ(none.reason, NoKeyReason::kCooling);
  EXPECT_GE(none.earliest, clock.now() + seconds(30));
  clock.advance(seconds(40));
  EXPECT_EQ(pool.shared_candidates(req("m")).size(), 1u);
  ASSERT_TRUE(pool.disable("sh#2").ok());
  EXPECT_TRUE(pool.shared_candidates(req("m"), &none).empty());
  EXPECT_EQ(none.reason, NoKeyReason::kNoUsableKey);
}

TEST(SharedPool, TheSessionsKeyComesFirst) {
  ManualClock clock;
  KeyPool pool(make_provider("ss", 4), clock);
  Lease l = pool.acquire_on("ss#3", req("m", 10, "conv-1")).take_lease();
  l.complete(status(OutcomeClass::kSuccess));
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(pool.shared_candidates(req("m", 10, "conv-1")).front(), "ss#3");
}

TEST(SharedPool, AGrantIgnoresLocalLimitsButCountsAndEndsExactlyOnce) {
  ManualClock clock;
  KeyPool pool(make_provider("sg", 1, {.tpm = 1000, .max_concurrent = 1}), clock);
  Lease a = pool.acquire_on("sg#1", req("m", 600)).take_lease();
  // The shared limiter said yes for a second one: this pool's share is not its business.
  AcquireResult b = pool.acquire_on("sg#1", req("m", 600));
  ASSERT_TRUE(b.ok());
  auto snap = *pool.inspect("sg#1");
  EXPECT_EQ(snap.in_flight, 2);
  EXPECT_EQ(snap.minute.tokens, 1200);
  EXPECT_FALSE(pool.acquire("m", 1).ok()) << "the local path still sees the counted load";

  EndReport report;
  EXPECT_TRUE(a.complete(status(OutcomeClass::kSuccess, {}, 150), &report));
  EXPECT_TRUE(report.request_counted);
  EXPECT_EQ(report.tokens_counted, 150);
  EXPECT_FALSE(report.cooldown.has_value());
  EndReport again;
  EXPECT_FALSE(a.complete(status(OutcomeClass::kSuccess), &again)) << "ends exactly once";
  EndReport dropped;
  EXPECT_TRUE(b.lease().complete(status(OutcomeClass::kConnectionError), &dropped));
  EXPECT_FALSE(dropped.request_counted) << "may never have reached the provider";
  EXPECT_EQ(dropped.tokens_counted, 0);
  snap = *pool.inspect("sg#1");
  EXPECT_EQ(snap.in_flight, 0);
  EXPECT_EQ(snap.minute.tokens, 150);

  EXPECT_FALSE(pool.acquire_on("nope#1", req("m")).ok());
  ASSERT_TRUE(pool.disable("sg#1").ok());
  AcquireResult off = pool.acquire_on("sg#1", req("m"));
  ASSERT_FALSE(off.ok());
  EXPECT_EQ(off.no_key().reason, NoKeyReason::kNoUsableKey);
}

TEST(SharedPool, AKeyWideCooldownIsReportedWithoutAModel) {
  ManualClock clock;
  KeyPool pool(make_provider("sw", 1), clock);
  Lease l = pool.acquire_on("sw#1", req("m")).take_lease();
  Outcome o = status(OutcomeClass::kRateLimited, {{"retry-after", "5"}});
  o.key_wide = true;
  EndReport report;
  l.complete(o, &report);
  ASSERT_TRUE(report.cooldown.has_value());
  EXPECT_TRUE(report.cooldown_model.empty());
  EXPECT_EQ(report.cooldown_reason, CooldownReason::kRetryAfter);
  AcquireResult cooling = pool.acquire_on("sw#1", req("other"));
  ASSERT_FALSE(cooling.ok());
  EXPECT_EQ(cooling.no_key().reason, NoKeyReason::kCooling);
}

}  // namespace
}  // namespace switchboard::keys
