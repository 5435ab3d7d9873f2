// Store behaviour: load round trip, queue-full policy, retention, migrations, shutdown hygiene,
// write errors and the statistics query.
#include "store/store.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "common/metrics.h"
#include "test_util.h"

namespace switchboard::store {
namespace {

using namespace std::chrono_literals;
using storetest::kSanitized;
using storetest::make_outcome;
using storetest::query_int;
using storetest::query_text;
using storetest::TempDir;

std::unique_ptr<Store> open_or_die(const SqliteStoreOptions& options) {
  auto s = open_sqlite_store(options);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(*s) : nullptr;
}

SqliteStoreOptions options_for(const std::string& path, const Clock* clock = nullptr) {
  SqliteStoreOptions o;
  o.state.path = path;
  o.state.batch_ms = 2;
  o.clock = clock;
  return o;
}

TEST(StoreTest, FreshDatabaseHasSchemaAndPragmas) {
  TempDir dir;
  auto s = open_or_die(options_for(dir.file("a.db")));
  ASSERT_TRUE(s);
  const std::string path = dir.file("a.db");
  EXPECT_EQ(query_int(path, "PRAGMA user_version"), schema_version());
  EXPECT_EQ(query_text(path, "PRAGMA journal_mode"), "wal");
  for (const char* table : {"outcomes", "usage", "key_state", "breaker_transitions",
                            "bandit_posteriors", "model_stats", "feedback"}) {
    EXPECT_EQ(query_int(path, std::string("SELECT count(*) FROM sqlite_master WHERE name='") +
                                  table + "'"),
              1)
        << table;
  }
}

// Gateways started together on one path (a fresh file): every one opens it, none fails on
// the WAL switch or the migrations another is doing at that moment.
TEST(StoreTest, StoresOpenedTogetherOnAFreshFileAllOpen) {
  TempDir dir;
  for (int round = 0; round < 10; ++round) {
    const std::string path = dir.file("together-" + std::to_string(round) + ".db");
    constexpr int kOpeners = 6;
    std::atomic<int> opened{0};
    std::vector<std::string> errors(kOpeners);
    std::vector<std::thread> openers;
    for (int i = 0; i < kOpeners; ++i)
      openers.emplace_back([&, i] {
        auto s = open_sqlite_store(options_for(path));
        if (s.ok()) {
          opened++;
          (*s)->close();
        } else {
          errors[size_t(i)] = s.status().to_string();
        }
      });
    for (auto& t : openers) t.join();
    std::string all;
    for (const auto& e : errors) all += e.empty() ? "" : e + "\n";
    ASSERT_EQ(opened.load(), kOpeners) << all;
    EXPECT_EQ(query_text(path, "PRAGMA journal_mode"), "wal");
  }
}

TEST(StoreTest, LoadRoundTripAndSequenceContinues) {
  TempDir dir;
  ManualClock clock;
  const auto now = clock.wall_now();
  const std::string path = dir.file("rt.db");
  uint64_t last_outcome = 0;
  {
    auto s = open_or_die(options_for(path, &clock));
    ASSERT_TRUE(s);
    KeyStateEvent a;
    a.key_id = "openai#1";
    a.state = "cooling";
    a.cooldown_until = now + 5min;
    a.reason = "backoff";
    s->enqueue(a);
    a.cooldown_until = now + 10min;  // a later state of the same key wins
    a.reason = "retry_after";
    s->enqueue(a);
    KeyStateEvent b;
    b.key_id = "openai#2";
    b.state = "active";
    b.cooldown_until = now - 1min;  // already expired
    s->enqueue(b);
    BanditPosteriorEvent p;
    p.category = "coding";
    p.model = "gpt-4o";
    p.alpha = 5.5;
    p.beta = 2.25;
    last_outcome = s->enqueue(make_outcome("gpt-4o", now));
    ASSERT_GT(last_outcome, 0u);
    p.last_outcome_id = static_cast<int64_t>(last_outcome);
    s->enqueue(p);
    ModelStatsEvent m;
    m.model = "gpt-4o";
    m.requests = 10;
    m.successes = 9;
    m.latency_ewma_us = 1234.5;
    m.latency_p95_us = 3000;
    m.spend_usd = 0.5;
    m.last_outcome_id = static_cast<int64_t>(last_outcome);
    s->enqueue(m);
    s->enqueue(BreakerTransitionEvent{now, "openai", "closed", "open", "failure rate"});
    s->enqueue(UsageEvent{now, "req-1", "openai", "openai#1", "gpt-4o", 100, 20, 0.01});
    s->enqueue(FeedbackEvent{now, "req-1", true, 0.9});
    ASSERT_TRUE(s->flush().ok());
    EXPECT_EQ(s->committed_seq(), last_outcome + 5);
    EXPECT_EQ(s->counters().committed, 9u);
    EXPECT_EQ(s->counters().dropped, 0u);
  }
  auto s = open_or_die(options_for(path, &clock));
  ASSERT_TRUE(s);
  auto loaded = s->load();
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  ASSERT_EQ(loaded->keys.size(), 2u);
  EXPECT_EQ(loaded->keys[0].key_id, "openai#1");
  EXPECT_EQ(loaded->keys[0].state, "cooling");
  EXPECT_EQ(loaded->keys[0].reason, "retry_after");
  EXPECT_EQ(std::chrono::floor<Millis>(loaded->keys[0].cooldown_until),
            std::chrono::floor<Millis>(now + 10min));
  EXPECT_EQ(loaded->keys[1].key_id, "openai#2");
  EXPECT_EQ(loaded->keys[1].cooldown_until, WallTime{});  // expired cooldowns are not restored
  ASSERT_EQ(loaded->posteriors.size(), 1u);
  EXPECT_EQ(loaded->posteriors[0].category, "coding");
  EXPECT_DOUBLE_EQ(loaded->posteriors[0].alpha, 5.5);
  EXPECT_DOUBLE_EQ(loaded->posteriors[0].beta, 2.25);
  EXPECT_EQ(loaded->posteriors[0].last_outcome_id, static_cast<int64_t>(last_outcome));
  ASSERT_EQ(loaded->model_stats.size(), 1u);
  EXPECT_EQ(loaded->model_stats[0].requests, 10);
  EXPECT_EQ(loaded->model_stats[0].successes, 9);
  EXPECT_DOUBLE_EQ(loaded->model_stats[0].latency_ewma_us, 1234.5);
  EXPECT_EQ(loaded->model_stats[0].last_outcome_id, static_cast<int64_t>(last_outcome));
  EXPECT_EQ(loaded->last_outcome_id, static_cast<int64_t>(last_outcome));
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM usage"), 1);
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM feedback"), 1);
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM breaker_transitions"), 1);
  // Outcome ids keep increasing across restarts: a posterior's last_outcome_id stays meaningful.
  EXPECT_GT(s->enqueue(make_outcome("gpt-4o", now)), last_outcome);
}

// Issue 30: the journal keeps each record's route and features, and the contextual models'
// weights are snapshot rows read back exactly; a damaged row is skipped, not trusted.
TEST(StoreTest, ContextualStateRoundTrips) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("ctx.db");
  {
    auto s = open_or_die(options_for(path, &clock));
    ASSERT_TRUE(s);
    LearnEvent l;
    l.model = "gpt-4o";
    l.reward = 1;
    l.route = "auto";
    l.features = std::string("\x00\x00\x10\x02\xff", 5);
    s->enqueue(l);
    ContextualModelEvent c;
    c.route = "auto";
    c.model = "gpt-4o";
    c.means.assign(kContextualDim, 0.0f);
    c.variances.assign(kContextualDim, 0.3f);
    c.means[3] = 0.125f;
    c.updates = 9;
    c.last_outcome_id = 1;
    s->enqueue(c);
    c.model = "broken";
    s->enqueue(c);
    ASSERT_TRUE(s->flush().ok());
  }
  ASSERT_EQ(query_int(path, "SELECT count(*) FROM contextual_models"), 2);
  // A read-write statement through the test helper (it returns no row).
  EXPECT_EQ(query_text(path, "UPDATE contextual_models SET means = 'zz' WHERE model = 'broken'"),
            "");
  auto s = open_or_die(options_for(path, &clock));
  auto loaded = s->load();
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  ASSERT_EQ(loaded->learning.size(), 1u);
  EXPECT_EQ(loaded->learning[0].second.route, "auto");
  EXPECT_EQ(loaded->learning[0].second.features, std::string("\x00\x00\x10\x02\xff", 5));
  ASSERT_EQ(loaded->contextual.size(), 1u) << "the damaged row is skipped";
  EXPECT_EQ(loaded->contextual[0].model, "gpt-4o");
  EXPECT_EQ(loaded->contextual[0].updates, 9u);
  EXPECT_EQ(loaded->contextual[0].means[3], 0.125f);
  EXPECT_EQ(loaded->contextual[0].variances[100], 0.3f);
}

TEST(StoreTest, DayUsageIsCountedBackFromTheUsageJournalPerKeyAndMinute) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("day.db");
  const auto now = std::chrono::floor<std::chrono::minutes>(clock.wall_now());
  {
    auto s = open_or_die(options_for(path, &clock));
    ASSERT_TRUE(s);
    // Two days of rows, oldest first as a gateway appends them: the query must skip the first
    // day however many rows it holds (found by binary search, not a scan).
    for (int i = 0; i < 3000; ++i)
      s->enqueue(UsageEvent{now - 48h + std::chrono::seconds(i), "old", "p", "p#1", "m", 1, 1, 0});
    s->enqueue(UsageEvent{now - 2min, "a", "p", "p#1", "m", 10, 5, 0});
    s->enqueue(UsageEvent{now - 2min + 30s, "b", "p", "p#1", "m", 1, 0, 0});
    s->enqueue(UsageEvent{now - 1min, "c", "p", "p#2", "m", 0, 0, 0});  // a failed attempt
    ASSERT_TRUE(s->flush().ok());
  }
  auto rows = query_key_day_usage(path, now - 24h);
  ASSERT_TRUE(rows.ok()) << rows.status().to_string();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].key_id, "p#1");
  EXPECT_EQ((*rows)[0].minute, now - 2min);
  EXPECT_EQ((*rows)[0].requests, 2);
  EXPECT_EQ((*rows)[0].tokens, 16);
  EXPECT_EQ((*rows)[1].key_id, "p#2");
  EXPECT_EQ((*rows)[1].requests, 1);
  EXPECT_EQ((*rows)[1].tokens, 0);
  auto all = query_key_day_usage(path, now - 72h);
  ASSERT_TRUE(all.ok());
  int64_t requests = 0;
  for (const auto& r : *all) requests += r.requests;
  EXPECT_EQ(requests, 3003);
  EXPECT_EQ(query_key_day_usage(dir.file("missing.db"), now).status().code(),
            StatusCode::kNotFound);
}

TEST(StoreTest, QueueFullDropsOldestNonEssentialAndCountsIt) {
  TempDir dir;
  auto o = options_for(dir.file("q.db"));
  o.state.queue_capacity = 100;
  o.state.batch_ms = 60'000;  // the writer stays idle until flush()
  o.state.batch_max = 1'000'000;
  auto s = open_or_die(o);
  ASSERT_TRUE(s);
  const auto now = std::chrono::system_clock::now();
  const std::string before = metrics::serialize();
  for (int i = 0; i < 50; ++i) {
    ASSERT_GT(s->enqueue(UsageEvent{now, "r", "openai", "openai#1", "m", i, 0, 0}), 0u);
  }
  std::vector<uint64_t> outcome_seqs;
  for (int i = 0; i < 100; ++i) outcome_seqs.push_back(s->enqueue(make_outcome("m", now)));
  EXPECT_EQ(s->counters().dropped, 50u);  // the 50 oldest outcomes
  ASSERT_TRUE(s->flush().ok());
  const std::string path = dir.file("q.db");
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM usage"), 50);  // essential: all kept
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM outcomes"), 50);
  EXPECT_EQ(query_int(path, "SELECT min(id) FROM outcomes"),
            static_cast<int64_t>(outcome_seqs[50]));  // the newest 50 survived
  EXPECT_NE(metrics::serialize().find("switchboard_store_dropped_total{kind=\"outcome\"}"),
            std::string::npos);
  // A key's cooldown of hours or an operator's disable must outlive a full queue too; a learning
  // record need not (the next learned-state snapshot carries its effect).
  EXPECT_TRUE(is_essential(Event{KeyStateEvent{}}));
  EXPECT_FALSE(is_essential(Event{LearnEvent{}}));

  // A queue full of essential events, the writer stalled: a non-essential event is dropped; an
  // essential one neither waits for the writer (which does nothing until flush()) nor is lost: it
  // goes over the capacity and is written with the rest.
  for (int i = 0; i < 100; ++i) {
    ASSERT_GT(s->enqueue(FeedbackEvent{now, "r", true, 1}), 0u);
  }
  EXPECT_EQ(s->enqueue(make_outcome("m", now)), 0u);
  EXPECT_EQ(s->counters().dropped, 51u);
  EXPECT_GT(s->enqueue(FeedbackEvent{now, "late", false, 0}), 0u);  // returns: nothing blocks
  EXPECT_EQ(s->counters().overflowed, 1u);
  EXPECT_EQ(s->counters().dropped, 51u);
  ASSERT_TRUE(s->flush().ok());
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM feedback"), 101);
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM feedback WHERE request_id='late'"), 1);
  EXPECT_EQ(s->counters().dropped, 51u);
  EXPECT_NE(metrics::serialize().find("switchboard_store_overflow_total"), std::string::npos);
}

TEST(StoreTest, AStalledWriterNeverBlocksAnEssentialEventAndItsOverflowIsBounded) {
  TempDir dir;
  auto o = options_for(dir.file("stall.db"));
  o.state.queue_capacity = 8;
  o.state.batch_ms = 60'000;  // the writer stays idle until flush(): a disk that stalls
  o.state.batch_max = 1'000'000;
  auto s = open_or_die(o);
  ASSERT_TRUE(s);
  const auto now = std::chrono::system_clock::now();
  // From another thread, so that a blocking enqueue would show as a test timeout with a message
  // rather than a hang: every call must return while the writer still does nothing.
  auto producer = std::async(std::launch::async, [&] {
    std::vector<Event> events;
    for (int i = 0; i < 8 * 4 + 5; ++i)
      events.emplace_back(UsageEvent{now, "u", "p", "p#1", "m", i, 1, 0});
    s->enqueue_batch(events);
    return s->counters();
  });
  ASSERT_EQ(producer.wait_for(60s), std::future_status::ready)
      << "an essential enqueue waited for the stalled writer";
  const StoreCounters c = producer.get();
  EXPECT_EQ(c.overflowed, 8u * 3);  // over the capacity, up to 4 capacities in all
  EXPECT_EQ(c.dropped, 5u);         // beyond that, counted as dropped
  ASSERT_TRUE(s->flush().ok());
  EXPECT_EQ(query_int(dir.file("stall.db"), "SELECT count(*) FROM usage"), 32);
}

TEST(StoreTest, EnqueueFromManyThreadsLosesNothing) {
  TempDir dir;
  auto s = open_or_die(options_for(dir.file("mt.db")));
  ASSERT_TRUE(s);
  constexpr int kThreads = 4;
  const int per_thread = kSanitized ? 2000 : 20000;
  std::vector<std::thread> threads;
  const auto now = std::chrono::system_clock::now();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < per_thread; ++i) {
        if (i % 2) {
          s->enqueue(make_outcome("m", now));
        } else {
          s->enqueue(UsageEvent{now, "r", "p", "p#1", "m", 1, 1, 0});
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(s->flush().ok());
  const auto c = s->counters();
  EXPECT_EQ(c.enqueued, static_cast<uint64_t>(kThreads * per_thread));
  const std::string path = dir.file("mt.db");
  const int64_t rows = query_int(path, "SELECT count(*) FROM outcomes") +
                       query_int(path, "SELECT count(*) FROM usage");
  EXPECT_EQ(static_cast<uint64_t>(rows) + c.dropped, static_cast<uint64_t>(kThreads * per_thread));
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM usage"), kThreads * per_thread / 2);
}

// A request's events go in with one call: all of them from every thread, in order, and an
// essential event in a batch still waits for space rather than being dropped.
TEST(StoreTest, EnqueueBatchKeepsEveryEventAndBackPressure) {
  TempDir dir;
  auto o = options_for(dir.file("batch.db"));
  auto s = open_or_die(o);
  ASSERT_TRUE(s);
  const auto now = std::chrono::system_clock::now();
  constexpr int kThreads = 4;
  const int per_thread = kSanitized ? 500 : 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < per_thread; ++i) {
        std::vector<Event> events;
        events.emplace_back(UsageEvent{now, "r", "p", "p#1", "m", i, 1, 0});
        events.emplace_back(make_outcome("m", now));
        s->enqueue_batch(events);
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(s->flush().ok());
  const std::string path = dir.file("batch.db");
  EXPECT_EQ(s->counters().enqueued, static_cast<uint64_t>(2 * kThreads * per_thread));
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM usage"), kThreads * per_thread);
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM outcomes") + int64_t(s->counters().dropped),
            kThreads * per_thread);
  s->close();

  TempDir dir2;
  auto o2 = options_for(dir2.file("bp.db"));
  o2.state.queue_capacity = 4;
  o2.state.batch_ms = 60'000;  // the writer stays idle until flush()
  o2.state.batch_max = 1'000'000;
  auto s2 = open_or_die(o2);
  ASSERT_TRUE(s2);
  for (int i = 0; i < 4; ++i) ASSERT_GT(s2->enqueue(FeedbackEvent{now, "r", true, 1}), 0u);
  // In a batch too, an essential event goes over the capacity instead of waiting; the outcome
  // beside it, not essential, is dropped.
  std::vector<Event> events;
  events.emplace_back(UsageEvent{now, "late", "p", "p#1", "m", 7, 1, 0});
  events.emplace_back(make_outcome("m", now));
  s2->enqueue_batch(events);
  EXPECT_EQ(s2->counters().overflowed, 1u);
  EXPECT_EQ(s2->counters().dropped, 1u);
  ASSERT_TRUE(s2->flush().ok());
  const std::string path2 = dir2.file("bp.db");
  EXPECT_EQ(query_int(path2, "SELECT count(*) FROM usage WHERE request_id='late'"), 1);
  EXPECT_EQ(query_int(path2, "SELECT count(*) FROM outcomes"), 0);
}

TEST(StoreTest, RetentionPrunesOldOutcomesInBatches) {
  TempDir dir;
  ManualClock clock;
  auto o = options_for(dir.file("ret.db"), &clock);
  o.state.retention_days = 30;
  o.prune_batch_rows = 500;
  auto s = open_or_die(o);
  ASSERT_TRUE(s);
  const auto now = clock.wall_now();
  for (int i = 0; i < 5000; ++i) s->enqueue(make_outcome("old", now - 40 * 24h));
  for (int i = 0; i < 10; ++i) s->enqueue(make_outcome("recent", now - 24h));
  ASSERT_TRUE(s->flush().ok());
  ASSERT_TRUE(s->prune().ok());
  const std::string path = dir.file("ret.db");
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM outcomes WHERE model='old'"), 0);
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM outcomes WHERE model='recent'"), 10);
  clock.advance(30 * 24h);  // now the recent ones are 31 days old
  ASSERT_TRUE(s->prune().ok());
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM outcomes"), 0);
}

TEST(StoreTest, RetentionRunsByItselfOnTheInjectedClock) {
  TempDir dir;
  ManualClock clock;
  auto o = options_for(dir.file("auto.db"), &clock);
  o.state.retention_days = 1;
  o.prune_interval = Millis(60'000);
  auto s = open_or_die(o);
  ASSERT_TRUE(s);
  for (int i = 0; i < 100; ++i) s->enqueue(make_outcome("m", clock.wall_now()));
  ASSERT_TRUE(s->flush().ok());
  const std::string path = dir.file("auto.db");
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM outcomes"), 100);
  clock.advance(48h);
  // The writer notices on its own (next cycle after the interval), no prune() call.
  EXPECT_TRUE(testsupport::wait_until([&] {
    return query_int(path, "SELECT count(*) FROM outcomes") == 0;
  })) << "the writer never pruned on its own";
}

std::string schema_dump(const std::string& path) {
  return query_text(path,
                    "SELECT group_concat(type || ':' || name || ':' || coalesce(sql, ''), '\n') "
                    "FROM (SELECT * FROM sqlite_master ORDER BY name)");
}

TEST(StoreTest, MigrationUpgradesOldDatabaseOnceAndReopenChangesNothing) {
  TempDir dir;
  const std::string path = dir.file("old.db");
  {
    // A version-1 database, as the first release would have left it, with one recent outcome
    // (recent, so that retention pruning, which may run at open, keeps it).
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, schema_migrations().at(0).sql, nullptr, nullptr, nullptr),
              SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(
                  db,
                  "PRAGMA user_version = 1; INSERT INTO outcomes (id, ts_ms, request_id, "
                  "model, status_class) VALUES (41, CAST(strftime('%s','now') AS INTEGER) * 1000, "
                  "'r', 'legacy', 'ok');",
                  nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  ASSERT_GE(schema_version(), 2) << "the test needs at least one migration to apply";
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM sqlite_master WHERE name='model_stats'"), 0);
  {
    auto s = open_or_die(options_for(path));
    ASSERT_TRUE(s);
    // New ids continue after the legacy row.
    EXPECT_EQ(s->enqueue(make_outcome("m", std::chrono::system_clock::now())), 42u);
  }
  EXPECT_EQ(query_int(path, "PRAGMA user_version"), schema_version());
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM sqlite_master WHERE name='model_stats'"), 1);
  EXPECT_EQ(query_text(path, "SELECT model FROM outcomes WHERE id = 41"), "legacy");
  const std::string schema = schema_dump(path);
  for (int i = 0; i < 2; ++i) {
    auto s = open_or_die(options_for(path));
    ASSERT_TRUE(s);
  }
  EXPECT_EQ(query_int(path, "PRAGMA user_version"), schema_version());
  EXPECT_EQ(schema_dump(path), schema);
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM outcomes"), 2);
}

TEST(StoreTest, RefusesDatabaseFromNewerVersion) {
  TempDir dir;
  const std::string path = dir.file("new.db");
  { auto s = open_or_die(options_for(path)); }
  ASSERT_EQ(query_text(path, "PRAGMA user_version = 999"), "");
  auto s = open_sqlite_store(options_for(path));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
}

TEST(StoreTest, MigrationsAreNumberedInOrder) {
  int expected = 1;
  for (const Migration& m : schema_migrations()) EXPECT_EQ(m.version, expected++) << m.name;
}

int count_dir_entries(const char* dir) {
  int n = 0;
  DIR* d = opendir(dir);
  if (!d) return -1;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

TEST(StoreTest, ThousandOpenCloseCyclesLeakNoThreadsOrFds) {
  TempDir dir;
  const std::string path = dir.file("cycle.db");
  const auto now = std::chrono::system_clock::now();
  { auto warm = open_or_die(options_for(path)); }
  const int threads_before = count_dir_entries("/proc/self/task");
  const int fds_before = count_dir_entries("/proc/self/fd");
  const int cycles = kSanitized ? 200 : 1000;
  for (int i = 0; i < cycles; ++i) {
    auto s = open_or_die(options_for(path));
    ASSERT_TRUE(s);
    s->enqueue(make_outcome("m", now));
    s->enqueue(UsageEvent{now, "r", "p", "p#1", "m", 1, 1, 0});
    if (i % 2) s->close();  // explicit close and destructor-only both work
  }
  EXPECT_EQ(count_dir_entries("/proc/self/task"), threads_before);
  EXPECT_EQ(count_dir_entries("/proc/self/fd"), fds_before);
  // Every cycle's events were drained and committed at close.
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM outcomes"), cycles);
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM usage"), cycles);
  // Close checkpoints and truncates the WAL.
  std::error_code ec;
  auto wal_size = std::filesystem::file_size(path + "-wal", ec);
  EXPECT_TRUE(ec || wal_size == 0) << wal_size;
}

TEST(StoreTest, ClosedStoreRefusesAndCountsEvents) {
  TempDir dir;
  auto s = open_or_die(options_for(dir.file("closed.db")));
  ASSERT_TRUE(s);
  s->close();
  s->close();  // idempotent
  EXPECT_EQ(s->enqueue(make_outcome("m", std::chrono::system_clock::now())), 0u);
  EXPECT_EQ(s->counters().dropped, 1u);
  EXPECT_FALSE(s->prune().ok());
}

TEST(StoreTest, WriteErrorsAreCountedAndNeverCrash) {
  TempDir dir;
  auto o = options_for(dir.file("full.db"));
  o.max_page_count = 40;  // a "disk" of 160 KiB
  auto s = open_or_die(o);
  ASSERT_TRUE(s);
  const auto now = std::chrono::system_clock::now();
  bool flush_failed = false;
  for (int round = 0; round < 200 && !flush_failed; ++round) {
    for (int i = 0; i < 200; ++i) s->enqueue(make_outcome("a-long-model-name", now));
    flush_failed = !s->flush().ok();
  }
  EXPECT_TRUE(flush_failed);
  EXPECT_GE(s->counters().write_errors, 1u);
  EXPECT_GE(s->counters().dropped, 1u);  // failed non-essential events are counted as dropped
  // The last round's outcomes may still be queued behind the batch that failed: wait until the
  // writer has handled (committed or dropped) every one before taking the counts below.
  testsupport::wait_until([&] {
    const auto c = s->counters();
    return c.committed + c.dropped >= c.enqueued;
  });
  {
    const auto c = s->counters();
    ASSERT_EQ(c.committed + c.dropped, c.enqueued) << "the writer never handled every outcome";
  }
  // Essential events that fail are kept and retried, not dropped (the flush reports the failure).
  // A slow writer (sanitizers) may take a small first batch that still fits in the last free
  // pages: every one of the 3000 is committed or, once the store gives up at close, dropped.
  const uint64_t dropped_before = s->counters().dropped;
  const uint64_t committed_before = s->counters().committed;
  const uint64_t errors_before = s->counters().write_errors;
  for (int i = 0; i < 3000; ++i) s->enqueue(UsageEvent{now, "r", "p", "p#1", "m", 1, 1, 0});
  EXPECT_FALSE(s->flush().ok());
  EXPECT_EQ(s->counters().dropped, dropped_before);
  EXPECT_GT(s->counters().write_errors, errors_before);
  const auto t0 = std::chrono::steady_clock::now();
  s->close();  // gives up after a bounded number of retries, and counts what it gave up
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  const auto after = s->counters();
  EXPECT_LT(after.committed - committed_before, 3000u) << "the disk was full";
  EXPECT_EQ((after.dropped - dropped_before) + (after.committed - committed_before), 3000u);
  EXPECT_EQ(after.committed + after.dropped, after.enqueued);
  EXPECT_EQ(query_text(dir.file("full.db"), "PRAGMA integrity_check"), "ok");
}

TEST(StoreTest, EssentialEventsAreRetriedUntilTheyCommit) {
  TempDir dir;
  const std::string path = dir.file("busy.db");
  auto o = options_for(path);
  o.state.busy_timeout_ms = 10;
  auto s = open_or_die(o);
  ASSERT_TRUE(s);
  // Another process holds the write lock: every commit fails with SQLITE_BUSY meanwhile.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  const auto now = std::chrono::system_clock::now();
  // One enqueue_batch, so that the writer's first (failing) batch holds the outcome too.
  std::vector<Event> events;
  for (int i = 0; i < 100; ++i) events.emplace_back(UsageEvent{now, "r", "p", "p#1", "m", i, 1, 0});
  events.emplace_back(make_outcome("m", now));
  s->enqueue_batch(events);
  EXPECT_FALSE(s->flush().ok());
  EXPECT_GE(s->counters().write_errors, 1u);
  EXPECT_EQ(s->counters().dropped, 1u);  // the outcome of the failed batch, counted
  ASSERT_EQ(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  // The writer retries with backoff; the essential events land without being enqueued again.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  Status st = s->flush();
  while (!st.ok() && std::chrono::steady_clock::now() < deadline) st = s->flush();
  EXPECT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM usage"), 100);
  EXPECT_EQ(s->counters().dropped, 1u);
}

TEST(StoreTest, ModelStatsQueryAndFormats) {
  TempDir dir;
  const std::string path = dir.file("stats.db");
  {
    auto s = open_or_die(options_for(path));
    ASSERT_TRUE(s);
    const auto now = std::chrono::system_clock::now();
    for (int i = 1; i <= 100; ++i) {
      s->enqueue(make_outcome("gpt-4o", now, i * 1000, i <= 90 ? kStatusOk : "server_error"));
    }
    s->enqueue(make_outcome("mini \"q\"", now, 2000));
  }
  auto rows = query_model_stats(path);
  ASSERT_TRUE(rows.ok()) << rows.status().to_string();
  ASSERT_EQ(rows->size(), 2u);
  const ModelStatsRow& r = (*rows)[0];
  EXPECT_EQ(r.model, "gpt-4o");
  EXPECT_EQ(r.requests, 100);
  EXPECT_EQ(r.successes, 90);
  EXPECT_DOUBLE_EQ(r.success_rate, 0.9);
  EXPECT_DOUBLE_EQ(r.avg_latency_ms, 50.5);
  EXPECT_DOUBLE_EQ(r.p95_latency_ms, 95.0);
  EXPECT_EQ(r.tokens_in, 100 * 100);
  EXPECT_EQ(r.tokens_out, 100 * 20);
  EXPECT_NEAR(r.spend_usd, 0.1, 1e-9);

  auto text = format_model_stats(path, false);
  ASSERT_TRUE(text.ok());
  EXPECT_NE(text->find("gpt-4o"), std::string::npos);
  EXPECT_NE(text->find("90.0%"), std::string::npos) << *text;
  auto json = format_model_stats(path, true);
  ASSERT_TRUE(json.ok());
  EXPECT_NE(json->find("\"model\":\"gpt-4o\",\"requests\":100,\"successes\":90"), std::string::npos)
      << *json;
  EXPECT_NE(json->find("\"model\":\"mini \\\"q\\\"\""), std::string::npos) << *json;

  auto missing = format_model_stats(dir.file("nope.db"), false);
  EXPECT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(dir.file("nope.db")));
}

// Spend per gateway key since a time; usage without a gateway key is stored but stays out of
// the budget index (migration 5), and the budget query still finds its rows through the index.
TEST(StoreTest, GatewaySpendUsesThePartialIndex) {
  TempDir dir;
  const std::string path = dir.file("spend.db");
  const auto now = std::chrono::system_clock::now();
  {
    auto s = open_or_die(options_for(path));
    ASSERT_TRUE(s);
    auto usage = [&](std::string gateway_key, double cost, WallTime t) {
      UsageEvent u;
      u.time = t;
      u.request_id = "r";
      u.provider = "p";
      u.key_id = "p#0";
      u.model = "m";
      u.cost_usd = cost;
      u.gateway_key = std::move(gateway_key);
      s->enqueue(std::move(u));
    };
    usage("team-a", 1.5, now);
    usage("team-a", 0.25, now);
    usage("team-b", 2.0, now);
    usage("team-b", 9.0, now - 48h);  // before `since`
    for (int i = 0; i < 50; ++i) usage("", 1.0, now);
  }
  auto spend = query_gateway_spend(path, now - 24h);
  ASSERT_TRUE(spend.ok()) << spend.status().to_string();
  EXPECT_EQ(spend->size(), 2u);
  EXPECT_DOUBLE_EQ((*spend)["team-a"], 1.75);
  EXPECT_DOUBLE_EQ((*spend)["team-b"], 2.0);
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM usage"), 54);
  // The index serves the budget query's condition (INDEXED BY fails when it cannot) and holds
  // only the gateway-key rows.
  EXPECT_EQ(query_int(path,
                      "SELECT count(*) FROM usage INDEXED BY usage_gateway_key_ts "
                      "WHERE gateway_key != ''"),
            4);
  EXPECT_NE(query_text(path, "SELECT sql FROM sqlite_master WHERE name = 'usage_gateway_key_ts'")
                .find("WHERE gateway_key != ''"),
            std::string::npos);
}

TEST(StoreTest, OpenStoreRejectsUnknownBackend) {
  StateConfig state;
  state.backend = "redis";
  auto s = open_store(state, SystemClock::instance());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchboard::store
