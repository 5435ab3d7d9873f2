#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "routing/routing.h"

namespace switchboard::routing {
namespace {

std::shared_ptr<const Config> config() {
  auto load = load_config_string(R"(
providers: { p: { kind: mock } }
models:
  cheap: { provider: p, tier: speed }
  good:  { provider: p, tier: flagship }
routes:
  auto: { strategy: learned, layers: [[cheap, good]] }
)",
                                 "t.yaml", Environment::from_map({}));
  return std::make_shared<const Config>(std::move(*load.config));
}

TEST(FeedbackLedgerTest, RemembersClaimsOnceAndForgets) {
  ManualClock clock;
  FeedbackLedger ledger(8, Millis(1000), clock);
  ledger.remember(1, "cheap", "sql", 0, 1.0, true);
  ledger.remember(2, "good", "", 1, 1.0, false);
  FeedbackLedger::Served s;
  ASSERT_EQ(ledger.claim(1, s), FeedbackLedger::Claim::kOk);
  EXPECT_EQ(s.model, "cheap");
  EXPECT_EQ(s.category, "sql");
  EXPECT_TRUE(s.learned);
  EXPECT_EQ(ledger.claim(1, s), FeedbackLedger::Claim::kDuplicate);
  ASSERT_EQ(ledger.claim(2, s), FeedbackLedger::Claim::kOk);
  EXPECT_EQ(s.category, "default");
  EXPECT_EQ(s.layer, 1);
  EXPECT_EQ(ledger.claim(3, s), FeedbackLedger::Claim::kUnknown);  // never served
  // Expiry by age.
  ledger.remember(4, "cheap", "sql", 0, 1.0, true);
  clock.advance(Millis(1001));
  EXPECT_EQ(ledger.claim(4, s), FeedbackLedger::Claim::kUnknown);
  // Expiry by count: slot reused by seq 4 + 8.
  ledger.remember(5, "cheap", "sql", 0, 1.0, true);
  ledger.remember(13, "good", "sql", 0, 1.0, true);
  EXPECT_EQ(ledger.claim(5, s), FeedbackLedger::Claim::kUnknown);
  EXPECT_EQ(ledger.claim(13, s), FeedbackLedger::Claim::kOk);
}

// Issue 17: a verdict needs the id's nonce and the requester's tag; anything else is unknown.
TEST(FeedbackLedgerTest, ClaimsNeedTheNonceAndTheOwner) {
  ManualClock clock;
  FeedbackLedger ledger(8, Millis(1000), clock);
  ledger.remember(1, "cheap", "sql", 0, 1.0, true, {0xabc, 7});
  FeedbackLedger::Served s;
  EXPECT_EQ(ledger.claim(1, s, {0xabd, 7}), FeedbackLedger::Claim::kUnknown);  // guessed nonce
  EXPECT_EQ(ledger.claim(1, s, {0xabc, 8}), FeedbackLedger::Claim::kUnknown);  // another client
  EXPECT_EQ(ledger.claim(1, s), FeedbackLedger::Claim::kUnknown);              // neither
  EXPECT_EQ(ledger.claim(1, s, {0xabc, 7}), FeedbackLedger::Claim::kOk);
  EXPECT_EQ(ledger.claim(1, s, {0xabc, 7}), FeedbackLedger::Claim::kDuplicate);
}

// Issue 18: requests served before a restart are claimable by their whole id, within the window
// counted from when they were served, by their owner only, once.
TEST(FeedbackLedgerTest, RestoredRequestsAreClaimableWithinTheirWindow) {
  ManualClock clock;
  FeedbackLedger ledger(2, Millis(1000), clock);
  FeedbackLedger::Served served;
  served.model = "good";
  served.category = "sql";
  served.layer = 1;
  served.learned = true;
  served.transport_reward = 1.0;
  const WallTime now = clock.wall_now();
  ledger.restore("sb-old-1", served, 7, now - Millis(400));
  ledger.restore("sb-old-2", served, 0, now - Millis(1200));       // already expired
  ledger.restore("sb-old-3", served, 0, now - Millis(100), true);  // judged before the restart
  ledger.restore("sb-old-4", served, 0, now);                      // over capacity (2)
  FeedbackLedger::Served s;
  EXPECT_EQ(ledger.claim_restored("sb-old-1", s, 8), FeedbackLedger::Claim::kUnknown);
  EXPECT_EQ(ledger.claim_restored("sb-old-2", s, 0), FeedbackLedger::Claim::kUnknown);
  EXPECT_EQ(ledger.claim_restored("sb-old-3", s, 0), FeedbackLedger::Claim::kDuplicate);
  EXPECT_EQ(ledger.claim_restored("sb-old-4", s, 0), FeedbackLedger::Claim::kUnknown);
  clock.advance(Millis(500));
  ASSERT_EQ(ledger.claim_restored("sb-old-1", s, 7), FeedbackLedger::Claim::kOk);
  EXPECT_EQ(s.model, "good");
  EXPECT_EQ(s.category, "sql");
  EXPECT_EQ(s.layer, 1);
  EXPECT_TRUE(s.learned);
  EXPECT_EQ(s.transport_reward, served.transport_reward);
  EXPECT_TRUE(s.features.empty());
  EXPECT_EQ(ledger.claim_restored("sb-old-1", s, 7), FeedbackLedger::Claim::kDuplicate);
  ledger.restore("sb-old-5", served, 0, clock.wall_now() - Millis(900));
  clock.advance(Millis(101));
  EXPECT_EQ(ledger.claim_restored("sb-old-5", s, 0), FeedbackLedger::Claim::kUnknown);
}

TEST(FeedbackLedgerTest, MemoryStaysBoundedOverAMillionRequests) {
  ManualClock clock;
  FeedbackLedger ledger(1000, Millis(3600000), clock);
  for (uint64_t seq = 1; seq <= 1000000; ++seq)
    ledger.remember(seq, "m" + std::to_string(seq % 7), "cat" + std::to_string(seq % 5000), 0, 1.0,
                    true);
  FeedbackLedger::Served s;
  EXPECT_EQ(ledger.claim(999000, s), FeedbackLedger::Claim::kUnknown);  // beyond the last 1000
  ASSERT_EQ(ledger.claim(999999, s), FeedbackLedger::Claim::kOk);
  EXPECT_EQ(s.model, "m" + std::to_string(999999 % 7));
  // 5000 distinct categories were seen: names are bounded, the rest share "other".
  EXPECT_EQ(ledger.capacity(), 1000u);
  EXPECT_TRUE(s.category == "other" || s.category == "cat" + std::to_string(999999 % 5000));
}

TEST(FeedbackLedgerTest, ConcurrentClaimsGiveExactlyOneVerdictPerRequest) {
  ManualClock clock;
  FeedbackLedger ledger(4096, Millis(3600000), clock);
  for (uint64_t seq = 1; seq <= 4000; ++seq) ledger.remember(seq, "cheap", "c", 0, 1.0, true);
  std::atomic<int> ok{0}, dup{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      FeedbackLedger::Served s;
      for (uint64_t seq = 1; seq <= 4000; ++seq) {
        auto c = ledger.claim(seq, s);
        if (c == FeedbackLedger::Claim::kOk)
          ok++;
        else if (c == FeedbackLedger::Claim::kDuplicate)
          dup++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 4000);
  EXPECT_EQ(dup.load(), 3 * 4000);
}

TEST(RouterFeedbackTest, VerdictReplacesTransportEvidence) {
  Router r(config());
  r.record(Outcome{.model = "cheap", .category = "sql", .reward = 1, .success = true});
  auto before = *r.posterior("sql", "cheap");
  EXPECT_DOUBLE_EQ(before.alpha, 2.0);
  r.record_feedback("sql", "cheap", 1.0, 0.0);
  auto after = *r.posterior("sql", "cheap");
  // As if the request had failed: the success is gone, a failure is there, still one outcome.
  EXPECT_DOUBLE_EQ(after.alpha, 1.0);
  EXPECT_DOUBLE_EQ(after.beta, 2.0);
  EXPECT_EQ(after.outcomes, 1u);
  EXPECT_EQ(after.feedback, 1u);
  // A graded verdict moves the evidence proportionally.
  r.record(Outcome{.model = "good", .category = "sql", .reward = 1, .success = true});
  r.record_feedback("sql", "good", 1.0, 0.75);
  auto g = *r.posterior("sql", "good");
  EXPECT_DOUBLE_EQ(g.alpha, 1.75);
  EXPECT_DOUBLE_EQ(g.beta, 1.25);
  EXPECT_DOUBLE_EQ(g.feedback_reward_sum, 0.75);
}

TEST(RouterFeedbackTest, EvidenceNeverGoesNonPositive) {
  Router r(config());
  for (int i = 0; i < 5; ++i) r.record_feedback("x", "cheap", 1.0, 0.0);
  auto p = *r.posterior("x", "cheap");
  EXPECT_GT(p.alpha, 0.0);
  EXPECT_GT(p.beta, 0.0);
  Rng rng(1);
  EXPECT_TRUE(r.plan(RequestInfo{.model = "auto", .category = "x"}, rng).ok());
}

// With transport success only, a model that answers but answers wrong looks perfect; verdicts
// make the learned route move to the model whose answers are right.
TEST(RouterFeedbackTest, VerdictsSteerTheLearnedRoute) {
  Router r(config());
  Rng rng(3), world(4);
  int good_recent = 0;
  for (int i = 0; i < 600; ++i) {
    auto plan = r.plan(RequestInfo{.model = "auto", .category = "proofs"}, rng);
    std::string m((*plan)[0].model);
    r.record(Outcome{.model = m, .category = "proofs", .reward = 1, .success = true});
    bool right = world.uniform() < (m == "cheap" ? 0.2 : 0.95);
    r.record_feedback("proofs", m, 1.0, right ? 1.0 : 0.0);
    if (i >= 400) good_recent += m == "good";
  }
  EXPECT_GE(good_recent, 170) << "good chosen " << good_recent << " of the last 200";
}

}  // namespace
}  // namespace switchboard::routing
