// Stored responses (the Responses API's previous_response_id) in the SQLite store: written by the
// writer, read back by find_response until they expire, upserted, pruned, kept across a reopen,
// megabytes long, and read from several threads while the writer commits.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "store/batch_writer.h"
#include "store/store.h"
#include "test_util.h"

namespace switchboard::store {
namespace {

using namespace std::chrono_literals;
using storetest::kSanitized;
using storetest::make_response;
using storetest::query_int;
using storetest::TempDir;

std::unique_ptr<Store> open_or_die(const SqliteStoreOptions& options) {
  auto s = open_sqlite_store(options);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(*s) : nullptr;
}

SqliteStoreOptions options_for(const std::string& path, const Clock* clock) {
  SqliteStoreOptions o;
  o.state.path = path;
  o.state.batch_ms = 2;
  o.clock = clock;
  return o;
}

// find_response's answer, or a failure naming what went wrong.
std::optional<StoredResponse> find_or_fail(Store& s, std::string_view id, WallTime now) {
  auto r = s.find_response(id, now);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? *r : std::nullopt;
}

TEST(StoredResponsesTest, RoundTripExpiryUpsertAndReopen) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("resp.db");
  const WallTime now = clock.wall_now();
  {
    auto s = open_or_die(options_for(path, &clock));
    ASSERT_TRUE(s);
    EXPECT_GT(s->enqueue(make_response("resp_a", "team", now, now + 1h, R"([{"n":1}])")), 0u);
    s->enqueue(make_response("resp_gone", "team", now - 2h, now - 1s, "[]"));
    s->enqueue(make_response("resp_b", "", now, now + 2h, R"([{"n":"b"}])"));
    ASSERT_TRUE(s->flush().ok());

    auto a = find_or_fail(*s, "resp_a", now);
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->id, "resp_a");
    EXPECT_EQ(a->owner, "team");
    EXPECT_EQ(a->created, now);
    EXPECT_EQ(a->expires, now + 1h);
    EXPECT_EQ(a->items, R"([{"n":1}])");
    auto b = find_or_fail(*s, "resp_b", now);
    ASSERT_TRUE(b.has_value());
    EXPECT_EQ(b->owner, "");
    EXPECT_FALSE(find_or_fail(*s, "resp_gone", now).has_value()) << "expired";
    EXPECT_FALSE(find_or_fail(*s, "resp_never", now).has_value());
    EXPECT_FALSE(find_or_fail(*s, "", now).has_value());
    // Expired exactly at `expires`.
    EXPECT_TRUE(find_or_fail(*s, "resp_a", now + 1h - 1ms).has_value());
    EXPECT_FALSE(find_or_fail(*s, "resp_a", now + 1h).has_value());

    // Upserted by id: the latest wins (also within one batch).
    s->enqueue(make_response("resp_a", "other", now + 1s, now + 3h, R"([{"n":2}])"));
    s->enqueue(make_response("resp_a", "team", now + 2s, now + 4h, R"([{"n":3}])"));
    ASSERT_TRUE(s->flush().ok());
    a = find_or_fail(*s, "resp_a", now + 2h);
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->owner, "team");
    EXPECT_EQ(a->created, now + 2s);
    EXPECT_EQ(a->expires, now + 4h);
    EXPECT_EQ(a->items, R"([{"n":3}])");
    EXPECT_EQ(query_int(path, "SELECT count(*) FROM responses WHERE id = 'resp_a'"), 1);
    EXPECT_EQ(s->counters().dropped, 0u);
  }
  // A restart (or another gateway on the file) finds them.
  auto s = open_or_die(options_for(path, &clock));
  ASSERT_TRUE(s);
  auto a = find_or_fail(*s, "resp_a", now);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->items, R"([{"n":3}])");
  EXPECT_TRUE(find_or_fail(*s, "resp_b", now).has_value());
  // Closed: refused, not crashed.
  s->close();
  auto closed = s->find_response("resp_a", now);
  ASSERT_FALSE(closed.ok());
  EXPECT_EQ(closed.status().code(), StatusCode::kUnavailable);
}

TEST(StoredResponsesTest, PruneDeletesExpiredResponsesInBatchesAndKeepsLiveOnes) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("prune.db");
  auto o = options_for(path, &clock);
  o.state.retention_days = 0;  // outcomes kept forever: responses expire all the same
  o.prune_batch_rows = 7;
  auto s = open_or_die(o);
  ASSERT_TRUE(s);
  const WallTime now = clock.wall_now();
  for (int i = 0; i < 250; ++i)
    s->enqueue(make_response("resp_old_" + std::to_string(i), "k", now - 2h, now + 1h, "[]"));
  for (int i = 0; i < 5; ++i)
    s->enqueue(make_response("resp_live_" + std::to_string(i), "k", now, now + 3h, "[]"));
  s->enqueue(storetest::make_outcome("m", now - 24h * 400));
  ASSERT_TRUE(s->flush().ok());
  ASSERT_TRUE(s->prune().ok());
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM responses"), 255) << "none expired yet";
  clock.advance(2h);  // the old ones expired an hour ago
  ASSERT_TRUE(s->prune().ok());
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM responses"), 5);
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM responses WHERE id LIKE 'resp_live_%'"), 5);
  EXPECT_EQ(query_int(path, "SELECT count(*) FROM outcomes"), 1);
  EXPECT_TRUE(find_or_fail(*s, "resp_live_3", clock.wall_now()).has_value());
  // The writer's own periodic prune removes them too, without prune().
  clock.advance(2h);
  EXPECT_TRUE(testsupport::wait_until([&] {
    return query_int(path, "SELECT count(*) FROM responses") == 0;
  })) << "the writer never pruned expired responses on its own";
}

TEST(StoredResponsesTest, AFourMegabyteConversationRoundTrips) {
  TempDir dir;
  ManualClock clock;
  const std::string path = dir.file("big.db");
  auto s = open_or_die(options_for(path, &clock));
  ASSERT_TRUE(s);
  const WallTime now = clock.wall_now();
  std::string items = "[";
  for (int i = 0; items.size() < (4u << 20); ++i) {
    items += i ? "," : "";
    items += R"({"type":"message","role":"user","content":"é✓ 𝄞 )" + std::to_string(i) +
             " lorem ipsum dolor sit amet\"}";
  }
  items += "]";
  s->enqueue(make_response("resp_big", "k", now, now + 1h, items));
  s->enqueue(make_response("resp_small", "k", now, now + 1h, "[]"));
  ASSERT_TRUE(s->flush().ok());
  auto big = find_or_fail(*s, "resp_big", now);
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->items.size(), items.size());
  EXPECT_TRUE(big->items == items);
  EXPECT_TRUE(find_or_fail(*s, "resp_small", now).has_value());
  s->close();
  auto reopened = open_or_die(options_for(path, &clock));
  ASSERT_TRUE(reopened);
  big = find_or_fail(*reopened, "resp_big", now);
  ASSERT_TRUE(big.has_value());
  EXPECT_TRUE(big->items == items);
}

TEST(StoredResponsesTest, AnIdNoLookupCouldNameIsRefusedAndCounted) {
  TempDir dir;
  ManualClock clock;
  auto s = open_or_die(options_for(dir.file("ids.db"), &clock));
  ASSERT_TRUE(s);
  const WallTime now = clock.wall_now();
  EXPECT_EQ(s->enqueue(make_response("", "k", now, now + 1h, "[]")), 0u);
  EXPECT_EQ(s->enqueue(
                make_response(std::string(kMaxResponseIdBytes + 1, 'x'), "k", now, now + 1h, "[]")),
            0u);
  EXPECT_EQ(s->enqueue(make_response("resp_\xff", "k", now, now + 1h, "[]")), 0u);
  EXPECT_EQ(s->enqueue(make_response(std::string("resp_\0x", 7), "k", now, now + 1h, "[]")), 0u);
  EXPECT_EQ(s->counters().dropped, 4u);
  const std::string longest(kMaxResponseIdBytes, 'y');
  EXPECT_GT(s->enqueue(make_response(longest, "k", now, now + 1h, "[]")), 0u);
  ASSERT_TRUE(s->flush().ok());
  EXPECT_TRUE(find_or_fail(*s, longest, now).has_value());
  EXPECT_FALSE(find_or_fail(*s, longest + "y", now).has_value());
}

// Readers on several threads while the writer commits new responses and upserts the ones they
// read: every read is a whole row (the old or the new), every acknowledged response is found,
// and closing the store while they read ends their reads cleanly. (Run under TSan too.)
TEST(StoredResponsesTest, FindFromManyThreadsWhileTheWriterCommits) {
  TempDir dir;
  ManualClock clock;
  auto s = open_or_die(options_for(dir.file("threads.db"), &clock));
  ASSERT_TRUE(s);
  const WallTime now = clock.wall_now();
  constexpr int kFixed = 40;
  auto fixed_items = [](int i, int version) {
    return "[{\"i\":" + std::to_string(i) + ",\"v\":" + std::to_string(version) + "}]";
  };
  for (int i = 0; i < kFixed; ++i)
    s->enqueue(make_response("resp_fixed_" + std::to_string(i), "owner" + std::to_string(i), now,
                             now + 1h, fixed_items(i, 0)));
  ASSERT_TRUE(s->flush().ok());

  const int kWrites = kSanitized ? 300 : 2000;
  std::atomic<int> acked{0};  // resp_new_0 .. resp_new_{acked-1} are committed
  std::atomic<bool> closed{false};
  std::atomic<int> reads{0}, fresh_reads{0}, bad{0}, errors_before_close{0};
  std::vector<std::string> failures(4);
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      for (int n = 0;; ++n) {
        const bool was_closed = closed.load();
        const int i = (n * 7 + t) % kFixed;
        auto r = s->find_response("resp_fixed_" + std::to_string(i), now);
        if (!r.ok()) {
          if (was_closed) break;
          ++errors_before_close;
          failures[size_t(t)] = r.status().to_string();
          break;
        }
        ++reads;
        const std::string prefix = "[{\"i\":" + std::to_string(i) + ",\"v\":";
        if (!r->has_value() || (*r)->owner != "owner" + std::to_string(i) ||
            (*r)->items.rfind(prefix, 0) != 0 || (*r)->items.back() != ']') {
          ++bad;
        }
        const int a = acked.load();
        if (a > 0) {
          const int k = n % a;
          auto fresh = s->find_response("resp_new_" + std::to_string(k), now);
          if (fresh.ok() && !fresh->has_value()) ++bad;  // acknowledged, so it must be there
          ++fresh_reads;
        }
        std::this_thread::yield();
      }
    });
  }
  for (int k = 0; k < kWrites; ++k) {
    s->enqueue(make_response("resp_new_" + std::to_string(k), "w", now, now + 1h,
                             R"([{"k":)" + std::to_string(k) + "}]"));
    const int i = k % kFixed;
    s->enqueue(make_response("resp_fixed_" + std::to_string(i), "owner" + std::to_string(i), now,
                             now + 1h, fixed_items(i, k + 1)));
    if (k % 50 == 49) {
      EXPECT_TRUE(s->flush().ok());  // (no ASSERT while the readers run)
      acked.store(k + 1);
    }
  }
  EXPECT_TRUE(testsupport::wait_until([&] { return fresh_reads.load() >= 200; }));
  closed.store(true);
  s->close();
  for (auto& t : readers) t.join();
  std::string all;
  for (const auto& f : failures) all += f.empty() ? "" : f + "\n";
  EXPECT_EQ(errors_before_close.load(), 0) << all;
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GE(fresh_reads.load(), 200);
}

TEST(StoredResponsesTest, Utf8RepairReplacesWhatPostgresWouldRefuse) {
  using detail::utf8_repaired;
  EXPECT_FALSE(utf8_repaired(""));
  EXPECT_FALSE(utf8_repaired(R"([{"text":"é✓ 𝄞 \u0000"}])"));  // an escaped NUL is text
  EXPECT_FALSE(utf8_repaired("\xf4\x8f\xbf\xbf"));             // U+10FFFF
  const std::string fffd = "\xef\xbf\xbd";
  EXPECT_EQ(utf8_repaired(std::string("a\0b", 3)).value_or("?"), "a" + fffd + "b");
  EXPECT_EQ(utf8_repaired("a\xff").value_or("?"), "a" + fffd);
  EXPECT_EQ(utf8_repaired("\xc0\xaf").value_or("?"), fffd + fffd);             // overlong
  EXPECT_EQ(utf8_repaired("\xed\xa0\x80").value_or("?"), fffd + fffd + fffd);  // a surrogate
  EXPECT_EQ(utf8_repaired("\xf4\x90\x80\x80").value_or("?"), fffd + fffd + fffd + fffd);
  EXPECT_EQ(utf8_repaired("x\xe2\x9c").value_or("?"), "x" + fffd + fffd);  // cut short
  EXPECT_EQ(utf8_repaired("\xe2\x9c\x93\x80").value_or("?"), "\xe2\x9c\x93" + fffd);
}

}  // namespace
}  // namespace switchboard::store
