// The router's journal and restart (issue 25): a snapshot taken at any moment plus the journal's
// later records gives back exactly the state the journal acknowledged, whatever was snapshotted,
// compacted or half-written before the crash.
#include <gtest/gtest.h>

#include <mutex>
#include <random>
#include <thread>

#include "routing/routing.h"

namespace switchboard::routing {
namespace {

std::shared_ptr<const Config> make_config() {
  auto load = load_config_string(R"(
providers:
  p1: { kind: mock }
models:
  a: { provider: p1, tier: speed }
  b: { provider: p1, tier: balanced }
  c: { provider: p1, tier: flagship }
routes:
  auto: { strategy: learned, layers: [[a, b, c]] }
learning: { half_life: 50 }
)",
                                 "test.yaml", Environment::from_map({}));
  EXPECT_TRUE(load.ok());
  return std::make_shared<const Config>(std::move(*load.config));
}

// A journal that keeps what it is given, the way the store does: ids in the order of the calls.
struct Journal {
  std::mutex mu;
  uint64_t next = 100;  // a store's sequence numbers continue from earlier runs
  std::vector<std::pair<uint64_t, LearnRecord>> records;
  Router::Journal callback() {
    return [this](const LearnRecord& r) {
      std::lock_guard lock(mu);
      records.emplace_back(++next, r);
      return next;
    };
  }
  std::vector<std::pair<uint64_t, LearnRecord>> after(uint64_t id) {
    std::lock_guard lock(mu);
    std::vector<std::pair<uint64_t, LearnRecord>> out;
    for (const auto& r : records)
      if (r.first > id) out.push_back(r);
    return out;
  }
};

void expect_same(const RouterState& want, const RouterState& got) {
  ASSERT_EQ(want.posteriors.size(), got.posteriors.size());
  for (size_t i = 0; i < want.posteriors.size(); ++i) {
    const auto& w = want.posteriors[i];
    const auto* g = &got.posteriors[i];
    for (const auto& p : got.posteriors)
      if (p.category == w.category && p.model == w.model) g = &p;
    SCOPED_TRACE(w.category + "/" + w.model);
    EXPECT_EQ(g->alpha, w.alpha);  // exactly: the same operations in the same order
    EXPECT_EQ(g->beta, w.beta);
    EXPECT_EQ(g->outcomes, w.outcomes);
    EXPECT_EQ(g->feedback, w.feedback);
    EXPECT_EQ(g->feedback_reward_sum, w.feedback_reward_sum);
    EXPECT_EQ(g->last_outcome_id, w.last_outcome_id);
  }
  ASSERT_EQ(want.stats.size(), got.stats.size());
  for (size_t i = 0; i < want.stats.size(); ++i) {
    SCOPED_TRACE(want.stats[i].model);
    EXPECT_EQ(got.stats[i].requests, want.stats[i].requests);
    EXPECT_EQ(got.stats[i].successes, want.stats[i].successes);
    EXPECT_EQ(got.stats[i].latency_ewma_us, want.stats[i].latency_ewma_us);
    EXPECT_EQ(got.stats[i].latency_p95_us, want.stats[i].latency_p95_us);
    EXPECT_EQ(got.stats[i].spend_usd, want.stats[i].spend_usd);
  }
  EXPECT_EQ(got.learned_through, want.learned_through);
}

void teach_randomly(Router& r, std::mt19937_64& rng, int n) {
  const char* models[] = {"a", "b", "c"};
  const char* categories[] = {"", "coding", "chat"};
  for (int i = 0; i < n; ++i) {
    const std::string model = models[rng() % 3];
    const std::string category = categories[rng() % 3];
    if (rng() % 5 == 0) {
      r.record_feedback(category, model, 1.0, double(rng() % 11) / 10.0);
    } else {
      Outcome o;
      o.model = model;
      o.category = category;
      o.success = rng() % 3 != 0;
      o.reward = o.success ? 1 : 0;
      o.counts_for_learning = rng() % 7 != 0;
      o.latency_us = int64_t(rng() % 50'000) + 1;
      o.tokens_in = int64_t(rng() % 1000);
      o.cost_usd = double(rng() % 100) / 1e4;
      r.record(o);
    }
  }
}

TEST(RestoreTest, SnapshotPlusLaterJournalIsExactlyTheLiveState) {
  auto config = make_config();
  std::mt19937_64 rng(7);
  Journal journal;
  Router live(config);
  live.set_journal(journal.callback());
  teach_randomly(live, rng, 400);
  const RouterState snapshot = live.export_state();  // the periodic snapshot
  teach_randomly(live, rng, 400);                    // then more, journaled only

  Router restarted(config);
  restarted.restore(snapshot, journal.after(snapshot.learned_through));
  expect_same(live.export_state(), restarted.export_state());
}

TEST(RestoreTest, AJournalThatStillHoldsSnapshottedRecordsCountsNothingTwice) {
  // A crash after the rows were written and before the journal was compacted: the whole
  // journal is replayed onto rows that already include most of it.
  auto config = make_config();
  std::mt19937_64 rng(11);
  Journal journal;
  Router live(config);
  live.set_journal(journal.callback());
  teach_randomly(live, rng, 300);
  const RouterState snapshot = live.export_state();
  teach_randomly(live, rng, 300);

  Router restarted(config);
  restarted.restore(snapshot, journal.after(0));
  expect_same(live.export_state(), restarted.export_state());
}

TEST(RestoreTest, RowsFromDifferentSnapshotsStillRestoreExactly) {
  // A crash in the middle of writing a snapshot: some rows are from the new one, others from the
  // previous one. Each row's own last id decides which records it still needs.
  auto config = make_config();
  std::mt19937_64 rng(13);
  Journal journal;
  Router live(config);
  live.set_journal(journal.callback());
  teach_randomly(live, rng, 200);
  const RouterState older = live.export_state();
  teach_randomly(live, rng, 200);
  const RouterState newer = live.export_state();
  teach_randomly(live, rng, 200);

  RouterState mixed;
  for (size_t i = 0; i < newer.posteriors.size(); ++i) {
    const Posterior& n = newer.posteriors[i];
    const Posterior* o = nullptr;
    for (const auto& p : older.posteriors)
      if (p.category == n.category && p.model == n.model) o = &p;
    if (i % 2 == 1 && o) {
      mixed.posteriors.push_back(*o);
    } else if (i % 2 == 0) {
      mixed.posteriors.push_back(n);
    }  // odd rows the older snapshot lacked: not written yet at all
  }
  mixed.stats = older.stats;
  Router restarted(config);
  restarted.restore(mixed, journal.after(0));
  expect_same(live.export_state(), restarted.export_state());
}

TEST(RestoreTest, ConcurrentLearnersJournalInTheOrderTheyApply) {
  // Ids are handed out inside the router's lock: replaying the journal in id order from nothing
  // reproduces the live state exactly, however the threads interleaved.
  auto config = make_config();
  Journal journal;
  Router live(config);
  live.set_journal(journal.callback());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&live, t] {
      std::mt19937_64 rng(100 + t);
      teach_randomly(live, rng, 2000);
    });
  }
  for (auto& t : threads) t.join();
  Router restarted(config);
  restarted.restore(RouterState{}, journal.after(0));
  expect_same(live.export_state(), restarted.export_state());
}

// Issue 21: another gateway's records (shared through the cluster) teach the posteriors exactly
// as its own did there, leave this gateway's statistics alone, and survive its restart.
TEST(RestoreTest, PeerRecordsTeachThePosteriorsButNotTheStatisticsAndReplay) {
  auto config = make_config();
  std::mt19937_64 rng(17);
  Journal journal_a;
  Router a(config);
  a.set_journal(journal_a.callback());
  teach_randomly(a, rng, 500);

  Journal journal_b;
  Router b(config);
  b.set_journal(journal_b.callback());
  for (const auto& [id, rec] : journal_a.after(0)) b.learn_from_peer(rec);

  const RouterState sa = a.export_state();
  const RouterState sb = b.export_state();
  ASSERT_EQ(sa.posteriors.size(), sb.posteriors.size());
  for (const auto& pa : sa.posteriors) {
    SCOPED_TRACE(pa.category + "/" + pa.model);
    const Posterior* pb = nullptr;
    for (const auto& p : sb.posteriors)
      if (p.category == pa.category && p.model == pa.model) pb = &p;
    ASSERT_NE(pb, nullptr);
    EXPECT_EQ(pb->alpha, pa.alpha);  // the same operations in the same order
    EXPECT_EQ(pb->beta, pa.beta);
    EXPECT_EQ(pb->outcomes, pa.outcomes);
    EXPECT_EQ(pb->feedback, pa.feedback);
  }
  for (const auto& s : sb.stats) EXPECT_EQ(s.requests, 0u) << s.model;
  // Journaled as peer records (never shared again), which a restart replays.
  size_t peer = 0;
  for (const auto& [id, rec] : journal_b.after(0))
    peer +=
        rec.kind == LearnRecord::Kind::kPeerOutcome || rec.kind == LearnRecord::Kind::kPeerFeedback;
  EXPECT_EQ(peer, journal_b.after(0).size());
  Router restarted(config);
  restarted.restore(RouterState{}, journal_b.after(0));
  expect_same(sb, restarted.export_state());
}

TEST(RestoreTest, PeerRecordsForUnknownModelsOrOversizedCategoriesAreIgnored) {
  auto config = make_config();
  Journal journal;
  Router r(config);
  r.set_journal(journal.callback());
  LearnRecord rec;
  rec.model = "not-in-this-catalog";
  rec.reward = 1;
  r.learn_from_peer(rec);
  rec.model = "a";
  rec.category = std::string(Router::kMaxCategoryBytes + 1, 'x');
  r.learn_from_peer(rec);
  rec.category = "coding";
  rec.counts_for_learning = false;  // a client error there teaches nothing here either
  r.learn_from_peer(rec);
  EXPECT_TRUE(journal.after(0).empty());
  rec.counts_for_learning = true;
  r.learn_from_peer(rec);
  ASSERT_EQ(journal.after(0).size(), 1u);
  EXPECT_EQ(r.posterior("coding", "a")->outcomes, 1u);
}

}  // namespace
}  // namespace switchboard::routing
