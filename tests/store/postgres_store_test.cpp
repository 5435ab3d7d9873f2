// The postgres backend (issue 22) against a private PostgreSQL 15 server: the Store contract as
// the SQLite store keeps it, several gateways on one database, migrations run once, and kill -9
// of a writing process never loses an acknowledged outcome.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "store/store.h"
#include "test_util.h"

namespace switchboard::store {
namespace {

using storetest::crash_round;
using storetest::make_outcome;
using testsupport::PostgresServer;

PostgresStoreOptions options_for(const PostgresServer& pg, const std::string& node) {
  PostgresStoreOptions o;
  o.state.backend = "postgres";
  o.state.url = pg.url();
  o.state.node = node;
  o.state.batch_ms = 2;
  return o;
}

std::unique_ptr<Store> open(const PostgresServer& pg, const std::string& node) {
  auto s = open_postgres_store(options_for(pg, node));
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(*s) : nullptr;
}

int64_t count(const PostgresServer& pg, const std::string& sql) {
  const std::string out = pg.psql(sql);
  try {
    return std::stoll(out);
  } catch (...) {
    ADD_FAILURE() << sql << ": " << out;
    return -1;
  }
}

TEST(PostgresStoreTest, EveryEventRoundTripsAndTheSequenceContinues) {
  PostgresServer pg;
  const WallTime now = std::chrono::system_clock::now();
  uint64_t last = 0;
  {
    auto s = open(pg, "gw-a");
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->enqueue(make_outcome("gpt", now)), 1u);
    UsageEvent u;
    u.time = now;
    u.request_id = "r1";
    u.provider = "openai";
    u.key_id = "openai#1";
    u.model = "gpt";
    u.tokens_in = 10;
    u.cost_usd = 0.25;
    u.gateway_key = "team";
    s->enqueue(u);
    KeyStateEvent k;
    k.key_id = "openai#1";
    k.model = "gpt";
    k.state = "cooling";
    k.cooldown_until = now + std::chrono::hours(1);
    k.reason = "retry_after";
    k.updated = now;
    s->enqueue(k);
    k.reason = "backoff";  // upserted: the latest wins
    s->enqueue(k);
    BanditPosteriorEvent post;
    post.category = "coding";
    post.model = "gpt";
    post.alpha = 3.5;
    post.beta = 1.25;
    post.outcomes = 4;
    post.last_outcome_id = 2;
    s->enqueue(post);
    ModelStatsEvent st;
    st.model = "gpt";
    st.requests = 4;
    st.successes = 3;
    st.latency_ewma_us = 1234.5;
    st.last_outcome_id = 2;
    s->enqueue(st);
    LearnEvent l1;
    l1.model = "gpt";
    l1.reward = 1;
    const uint64_t id1 = s->enqueue(l1);
    LearnEvent l2;
    l2.kind = LearnRecord::Kind::kPeerOutcome;
    l2.model = "gpt";
    l2.category = "coding";
    l2.reward = 0.5;
    l2.route = "auto";
    l2.features = std::string("\x01\x00\xff\x07", 4);  // binary, as FeatureVector::encode
    last = s->enqueue(l2);
    ContextualModelEvent cm;
    cm.route = "auto";
    cm.model = "gpt";
    cm.means.assign(kContextualDim, 0.25f);
    cm.variances.assign(kContextualDim, 0.5f);
    cm.means[7] = -1.5f;
    cm.updates = 42;
    cm.last_outcome_id = 2;
    s->enqueue(cm);
    // Compaction is essential and goes ahead of a batch's journal records (as with SQLite): it
    // forgets what earlier batches committed.
    ASSERT_TRUE(s->flush().ok());
    LearnCompactEvent compact;
    compact.up_to = id1;  // the snapshot holds the first record
    s->enqueue(compact);
    FeedbackEvent f;
    f.request_id = "r1";
    f.success = true;
    f.score = 1;
    s->enqueue(f);
    BreakerTransitionEvent b;
    b.breaker = "openai";
    b.from_state = "closed";
    b.to_state = "open";
    s->enqueue(b);
    ASSERT_TRUE(s->flush().ok());
    EXPECT_EQ(s->committed_seq(), s->counters().enqueued);
  }
  EXPECT_EQ(count(pg, "SELECT count(*) FROM usage WHERE gateway_key = 'team'"), 1);
  EXPECT_EQ(count(pg, "SELECT count(*) FROM feedback"), 1);
  EXPECT_EQ(count(pg, "SELECT count(*) FROM breaker_transitions"), 1);
  EXPECT_EQ(pg.psql("SELECT reason FROM key_state"), "backoff");

  auto s = open(pg, "gw-a");
  ASSERT_NE(s, nullptr);
  auto loaded = s->load();
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  ASSERT_EQ(loaded->keys.size(), 1u);
  EXPECT_EQ(loaded->keys[0].reason, "backoff");
  EXPECT_GT(loaded->keys[0].cooldown_until, now);
  ASSERT_EQ(loaded->posteriors.size(), 1u);
  EXPECT_EQ(loaded->posteriors[0].alpha, 3.5);  // doubles exactly
  EXPECT_EQ(loaded->posteriors[0].beta, 1.25);
  EXPECT_EQ(loaded->posteriors[0].outcomes, 4u);
  ASSERT_EQ(loaded->model_stats.size(), 1u);
  EXPECT_EQ(loaded->model_stats[0].latency_ewma_us, 1234.5);
  ASSERT_EQ(loaded->learning.size(), 1u) << "the compacted record is gone";
  EXPECT_EQ(loaded->learning[0].first, last);
  EXPECT_EQ(loaded->learning[0].second.kind, LearnRecord::Kind::kPeerOutcome);
  EXPECT_EQ(loaded->learning[0].second.category, "coding");
  EXPECT_EQ(loaded->learning[0].second.route, "auto");
  EXPECT_EQ(loaded->learning[0].second.features, std::string("\x01\x00\xff\x07", 4));
  ASSERT_EQ(loaded->contextual.size(), 1u);
  EXPECT_EQ(loaded->contextual[0].model, "gpt");
  EXPECT_EQ(loaded->contextual[0].updates, 42u);
  ASSERT_EQ(loaded->contextual[0].means.size(), kContextualDim);
  EXPECT_EQ(loaded->contextual[0].means[7], -1.5f);  // floats exactly
  EXPECT_EQ(loaded->contextual[0].variances[9], 0.5f);
  EXPECT_EQ(loaded->last_outcome_id, 1);
  // Sequence numbers go on after everything this node referenced.
  EXPECT_GT(s->enqueue(make_outcome("gpt", now)), last);
}

TEST(PostgresStoreTest, GatewaysShareTheRecordButEachKeepsItsLearnedState) {
  PostgresServer pg;
  const WallTime now = std::chrono::system_clock::now();
  std::unique_ptr<Store> a, b;
  // Both start at once: the schema is created once, under the advisory lock.
  std::thread ta([&] { a = open(pg, "gw-a"); });
  std::thread tb([&] { b = open(pg, "gw-b"); });
  ta.join();
  tb.join();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(pg.psql("SELECT version FROM switchboard_schema"),
            std::to_string(postgres_schema_version()));
  for (int i = 0; i < 30; ++i) {
    a->enqueue(make_outcome("gpt", now));
    b->enqueue(make_outcome("claude", now));
  }
  LearnEvent l;
  l.model = "gpt";
  l.reward = 1;
  const uint64_t ida = a->enqueue(l);
  const uint64_t idb = b->enqueue(l);
  EXPECT_EQ(ida, idb) << "each gateway numbers its own events";
  // A second live gateway under a name in use is refused, not left to collide.
  auto twin = open_postgres_store(options_for(pg, "gw-a"));
  ASSERT_FALSE(twin.ok());
  EXPECT_NE(twin.status().message().find("node 'gw-a'"), std::string::npos)
      << twin.status().to_string();
  ASSERT_TRUE(a->flush().ok());
  ASSERT_TRUE(b->flush().ok());
  EXPECT_EQ(count(pg, "SELECT count(*) FROM outcomes"), 60) << "one record for all";
  auto la = a->load();
  auto lb = b->load();
  ASSERT_TRUE(la.ok() && lb.ok());
  EXPECT_EQ(la->learning.size(), 1u) << "its own journal only";
  EXPECT_EQ(lb->learning.size(), 1u);
  EXPECT_EQ(la->last_outcome_id, 30);
}

TEST(PostgresStoreTest, RetentionPrunesOldOutcomesOfEveryGateway) {
  PostgresServer pg;
  ManualClock clock;
  auto o = options_for(pg, "gw-a");
  o.clock = &clock;
  o.state.retention_days = 1;
  o.prune_batch_rows = 7;
  auto s = open_postgres_store(o);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  const WallTime now = clock.wall_now();
  for (int i = 0; i < 25; ++i) (*s)->enqueue(make_outcome("old", now - std::chrono::hours(48)));
  for (int i = 0; i < 5; ++i) (*s)->enqueue(make_outcome("recent", now));
  ASSERT_TRUE((*s)->flush().ok());
  ASSERT_TRUE((*s)->prune().ok());
  EXPECT_EQ(count(pg, "SELECT count(*) FROM outcomes WHERE model = 'old'"), 0);
  EXPECT_EQ(count(pg, "SELECT count(*) FROM outcomes WHERE model = 'recent'"), 5);
}

// A database that goes away and comes back: the writer reconnects, and essential events (usage,
// what budgets count) are retried until they are committed, none lost and none twice.
TEST(PostgresStoreTest, ADatabaseRestartLosesNoEssentialEvent) {
  PostgresServer pg;
  auto s = open(pg, "gw-a");
  ASSERT_NE(s, nullptr);
  UsageEvent u;
  u.provider = "openai";
  u.key_id = "openai#1";
  u.model = "gpt";
  u.cost_usd = 0.001;
  constexpr int kBefore = 600, kDuring = 600, kAfter = 600;  // full prepared statements
  for (int i = 0; i < kBefore; ++i) s->enqueue(u);
  ASSERT_TRUE(s->flush().ok());
  pg.kill();
  for (int i = 0; i < kDuring; ++i) s->enqueue(u);  // the writer fails to commit these, for now
  ASSERT_TRUE(testsupport::wait_until([&] { return s->counters().write_errors > 0; }));
  pg.start();
  for (int i = 0; i < kAfter; ++i) s->enqueue(u);
  ASSERT_TRUE(testsupport::wait_until(
      [&] { return s->committed_seq() >= uint64_t(kBefore + kDuring + kAfter); },
      std::chrono::seconds(30)));
  EXPECT_EQ(count(pg, "SELECT count(*) FROM usage"), kBefore + kDuring + kAfter);
  EXPECT_EQ(s->counters().dropped, 0u);
}

TEST(PostgresStoreTest, StatsAggregateEveryGatewaysOutcomes) {
  PostgresServer pg;
  const WallTime now = std::chrono::system_clock::now();
  auto a = open(pg, "gw-a");
  auto b = open(pg, "gw-b");
  ASSERT_TRUE(a && b);
  for (int i = 1; i <= 20; ++i) {
    // Latencies 1..20 ms; the 20th, from gateway b, failed.
    (i % 2 ? a : b)->enqueue(make_outcome("gpt", now, i * 1000, i == 20 ? "server_error" : "ok"));
  }
  ASSERT_TRUE(a->flush().ok() && b->flush().ok());
  auto rows = query_model_stats(pg.url());
  ASSERT_TRUE(rows.ok()) << rows.status().to_string();
  ASSERT_EQ(rows->size(), 1u);
  const ModelStatsRow& r = rows->front();
  EXPECT_EQ(r.requests, 20);
  EXPECT_EQ(r.successes, 19);
  EXPECT_DOUBLE_EQ(r.avg_latency_ms, 10.5);
  EXPECT_DOUBLE_EQ(r.p95_latency_ms, 19.0);  // nearest rank: the 19th of 20
  EXPECT_EQ(r.tokens_in, 20 * 100);
  auto text = format_model_stats(pg.url(), true);
  ASSERT_TRUE(text.ok());
  EXPECT_NE(text->find("\"requests\":20"), std::string::npos) << *text;
}

TEST(PostgresStoreTest, ANewerSchemaIsRefusedAndABadUrlIsAClearError) {
  PostgresServer pg;
  ASSERT_NE(open(pg, "gw-a"), nullptr);
  ASSERT_EQ(pg.psql("UPDATE switchboard_schema SET version = 999"), "");
  auto s = open_postgres_store(options_for(pg, "gw-a"));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("newer"), std::string::npos) << s.status().to_string();

  auto o = options_for(pg, "gw-a");
  o.state.url = "postgresql://postgres:hunter2@127.0.0.1:1/postgres";
  o.connect_timeout_s = 1;
  auto bad = open_postgres_store(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().find("hunter2"), std::string::npos) << "no password in errors";
  // libpq quotes a URI it cannot parse: the error names it without it.
  o.state.url = "postgresql://postgres:hunter4@[127.0.0.1:1/postgres";
  auto unparsable = open_postgres_store(o);
  ASSERT_FALSE(unparsable.ok());
  EXPECT_EQ(unparsable.status().message().find("hunter4"), std::string::npos)
      << unparsable.status().to_string();
}

// Stored responses (previous_response_id) on the shared database: any gateway finds what another
// wrote, until it expires; upserts, pruning by count, megabyte rows, text that is not UTF-8,
// a database restart under pooled read connections, and reads from several threads.
TEST(PostgresStoreTest, StoredResponsesRoundTripExpireUpsertAndPrune) {
  PostgresServer pg;
  ManualClock clock;
  auto oa = options_for(pg, "gw-a");
  oa.clock = &clock;
  oa.state.retention_days = 0;  // outcomes kept: responses expire all the same
  oa.prune_batch_rows = 7;
  auto ra = open_postgres_store(oa);
  ASSERT_TRUE(ra.ok()) << ra.status().to_string();
  auto& a = *ra;
  auto ob = options_for(pg, "gw-b");
  ob.clock = &clock;  // (the table is common: every gateway's writer prunes it by its clock)
  auto rb = open_postgres_store(ob);
  ASSERT_TRUE(rb.ok()) << rb.status().to_string();
  auto& b = *rb;
  const WallTime now = clock.wall_now();
  using storetest::make_response;
  a->enqueue(make_response("resp_a", "team", now, now + std::chrono::hours(1), R"([{"n":1}])"));
  a->enqueue(make_response("resp_gone", "team", now - std::chrono::hours(2),
                           now - std::chrono::seconds(1), "[]"));
  ASSERT_TRUE(a->flush().ok());
  for (Store* s : {a.get(), b.get()}) {  // the writer's gateway and another one
    auto found = s->find_response("resp_a", now);
    ASSERT_TRUE(found.ok()) << found.status().to_string();
    ASSERT_TRUE(found->has_value());
    EXPECT_EQ((*found)->id, "resp_a");
    EXPECT_EQ((*found)->owner, "team");
    EXPECT_EQ((*found)->created, now);
    EXPECT_EQ((*found)->expires, now + std::chrono::hours(1));
    EXPECT_EQ((*found)->items, R"([{"n":1}])");
    auto gone = s->find_response("resp_gone", now);
    ASSERT_TRUE(gone.ok());
    EXPECT_FALSE(gone->has_value()) << "expired";
    auto at_expiry = s->find_response("resp_a", now + std::chrono::hours(1));
    ASSERT_TRUE(at_expiry.ok());
    EXPECT_FALSE(at_expiry->has_value());
    auto never = s->find_response("resp_never", now);
    ASSERT_TRUE(never.ok());
    EXPECT_FALSE(never->has_value());
    auto bad_id = s->find_response("resp_\xff", now);
    ASSERT_TRUE(bad_id.ok()) << bad_id.status().to_string();
    EXPECT_FALSE(bad_id->has_value());
  }
  // Upserted by id, whichever gateway writes: the latest wins.
  b->enqueue(make_response("resp_a", "team", now, now + std::chrono::hours(5), R"([{"n":2}])"));
  ASSERT_TRUE(b->flush().ok());
  a->enqueue(make_response("resp_a", "team", now, now + std::chrono::hours(6), R"([{"n":3}])"));
  ASSERT_TRUE(a->flush().ok());
  auto latest = b->find_response("resp_a", now);
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->items, R"([{"n":3}])");
  EXPECT_EQ((*latest)->expires, now + std::chrono::hours(6));
  EXPECT_EQ(count(pg, "SELECT count(*) FROM responses WHERE id = 'resp_a'"), 1);

  // Text that PostgreSQL cannot hold is stored repaired, not left to fail the writer's batches.
  a->enqueue(make_response("resp_bytes", std::string("o\0k", 3), now, now + std::chrono::hours(1),
                           "[\"\xff\"]"));
  UsageEvent u;
  u.provider = "openai";
  u.model = "gpt";
  a->enqueue(u);
  ASSERT_TRUE(a->flush().ok());
  auto repaired = a->find_response("resp_bytes", now);
  ASSERT_TRUE(repaired.ok() && repaired->has_value());
  EXPECT_EQ((*repaired)->items, "[\"\xef\xbf\xbd\"]");
  EXPECT_EQ((*repaired)->owner, "o\xef\xbf\xbdk");
  EXPECT_EQ(count(pg, "SELECT count(*) FROM usage"), 1);

  // Pruning: expired rows go in batches, live ones stay; a gateway's store survives a reopen.
  for (int i = 0; i < 30; ++i)
    a->enqueue(make_response("resp_old_" + std::to_string(i), "k", now,
                             now + std::chrono::minutes(30), "[]"));
  ASSERT_TRUE(a->flush().ok());
  ASSERT_TRUE(a->prune().ok());
  EXPECT_EQ(count(pg, "SELECT count(*) FROM responses"), 32) << "only resp_gone had expired";
  clock.advance(std::chrono::hours(2));  // the old ones expired, and resp_bytes
  ASSERT_TRUE(a->prune().ok());
  EXPECT_EQ(count(pg, "SELECT count(*) FROM responses"), 1);
  a->close();
  b.reset();
  auto reopened = open_postgres_store(oa);
  ASSERT_TRUE(reopened.ok()) << reopened.status().to_string();
  auto kept = (*reopened)->find_response("resp_a", clock.wall_now());
  ASSERT_TRUE(kept.ok() && kept->has_value());
  EXPECT_EQ((*kept)->items, R"([{"n":3}])");
}

TEST(PostgresStoreTest, StoredResponsesOfMegabytesAndAcrossADatabaseRestart) {
  PostgresServer pg;
  auto s = open(pg, "gw-a");
  ASSERT_NE(s, nullptr);
  const WallTime now =
      std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  std::string items = "[";
  for (int i = 0; items.size() < (4u << 20); ++i)
    items += (i ? "," : "") + std::string(R"({"type":"message","content":"é✓ 𝄞 )") +
             std::to_string(i) + "\"}";
  items += "]";
  s->enqueue(storetest::make_response("resp_big", "k", now, now + std::chrono::hours(1), items));
  ASSERT_TRUE(s->flush().ok());
  auto big = s->find_response("resp_big", now);
  ASSERT_TRUE(big.ok()) << big.status().to_string();
  ASSERT_TRUE(big->has_value());
  EXPECT_EQ((*big)->items.size(), items.size());
  EXPECT_TRUE((*big)->items == items);
  // The pooled read connection breaks with the server; the next read takes a new one.
  pg.kill();
  pg.start();
  auto again = s->find_response("resp_big", now);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  ASSERT_TRUE(again->has_value());
  EXPECT_TRUE((*again)->items == items);
}

TEST(PostgresStoreTest, StoredResponsesAreReadFromManyThreadsWhileTheWriterCommits) {
  PostgresServer pg;
  auto s = open(pg, "gw-a");
  ASSERT_NE(s, nullptr);
  const WallTime now =
      std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  const WallTime expires = now + std::chrono::hours(1);
  constexpr int kFixed = 20;
  for (int i = 0; i < kFixed; ++i)
    s->enqueue(storetest::make_response("resp_fixed_" + std::to_string(i), "k", now, expires,
                                        "[" + std::to_string(i) + "]"));
  ASSERT_TRUE(s->flush().ok());
  std::atomic<int> acked{0}, reads{0}, bad{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      for (int n = 0; !done.load(); ++n) {
        const int i = (n * 5 + t) % kFixed;
        auto r = s->find_response("resp_fixed_" + std::to_string(i), now);
        ++reads;
        if (!r.ok() || !r->has_value() || (*r)->items.rfind("[" + std::to_string(i), 0) != 0) ++bad;
        if (const int a = acked.load(); a > 0) {
          auto fresh = s->find_response("resp_new_" + std::to_string(n % a), now);
          if (!fresh.ok() || !fresh->has_value()) ++bad;
        }
      }
    });
  }
  for (int k = 0; k < 400; ++k) {
    s->enqueue(storetest::make_response("resp_new_" + std::to_string(k), "w", now, expires, "[]"));
    const int i = k % kFixed;
    s->enqueue(storetest::make_response("resp_fixed_" + std::to_string(i), "k", now, expires,
                                        "[" + std::to_string(i) + "," + std::to_string(k) + "]"));
    if (k % 40 == 39) {
      EXPECT_TRUE(s->flush().ok());  // (no ASSERT while the readers run)
      acked.store(k + 1);
    }
  }
  EXPECT_TRUE(testsupport::wait_until([&] { return reads.load() >= 200; }));
  done.store(true);
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
}

// The SQLite crash test's twin: kill -9 a process writing outcomes at random moments; every
// outcome it saw acknowledged is in the database afterwards.

TEST(PostgresStoreTest, KillNineNeverLosesAcknowledgedOutcomes) {
  PostgresServer pg;
  ASSERT_NE(open(pg, "setup"), nullptr);  // the schema, so that counting works from round 0
  std::mt19937 rng(54321);
  std::uniform_int_distribution<int> kill_after_ms(5, 200);
  constexpr int kRounds = 16;
  int rounds_with_ack = 0;
  for (int round = 0; round < kRounds; ++round) {
    const int64_t base = count(pg, "SELECT count(*) FROM outcomes");
    std::string why;
    const auto got = crash_round(STORE_CRASH_CHILD, pg.url(), round % 2 == 0,
                                 std::chrono::milliseconds(kill_after_ms(rng)), &why);
    ASSERT_TRUE(got.has_value()) << why;
    const uint64_t acked = *got;
    rounds_with_ack += acked > 0;
    EXPECT_GE(count(pg, "SELECT count(*) FROM outcomes"), base + int64_t(acked))
        << "round " << round;
    // The next run of the same node continues its numbering past what was committed.
    auto reopened = open(pg, "crash");
    ASSERT_NE(reopened, nullptr);
    auto loaded = reopened->load();
    ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
    EXPECT_EQ(loaded->last_outcome_id,
              count(pg, "SELECT COALESCE(MAX(seq), 0) FROM outcomes WHERE node = 'crash'"));
  }
  EXPECT_GE(rounds_with_ack, kRounds / 2);
}

}  // namespace
}  // namespace switchboard::store
