// Crash safety: kill -9 a writing process at random moments; nothing acknowledged may be lost
// and the database must stay intact.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>

#include "store/store.h"
#include "test_util.h"

namespace switchboard::store {
namespace {

using storetest::crash_round;
using storetest::query_int;
using storetest::query_text;
using storetest::TempDir;

TEST(StoreCrashTest, KillNineNeverLosesAcknowledgedOutcomes) {
  TempDir dir;
  const std::string path = dir.file("crash.db");
  std::mt19937 rng(12345);
  // Kill anywhere from during open/migration to well into steady writing.
  std::uniform_int_distribution<int> kill_after_ms(2, 150);
  constexpr int kRounds = 50;
  uint64_t total_acked = 0;
  int rounds_with_ack = 0;
  for (int round = 0; round < kRounds; ++round) {
    int64_t base = query_int(path, "SELECT count(*) FROM outcomes");
    if (base < 0) base = 0;  // no database or no table yet

    // Odd rounds kill at any time from the start (open and migrations included); even rounds
    // only once writes are being acknowledged.
    std::string why;
    const auto got = crash_round(STORE_CRASH_CHILD, path, round % 2 == 0,
                                 std::chrono::milliseconds(kill_after_ms(rng)), &why);
    ASSERT_TRUE(got.has_value()) << why;
    const uint64_t acked = *got;
    total_acked += acked;
    rounds_with_ack += acked > 0;

    ASSERT_EQ(query_text(path, "PRAGMA integrity_check"), "ok") << "round " << round;
    const int64_t committed = query_int(path, "SELECT count(*) FROM outcomes");
    if (acked > 0) {
      ASSERT_GE(committed, base + static_cast<int64_t>(acked)) << "round " << round;
    }
    SqliteStoreOptions options;
    options.state.path = path;
    auto reopened = open_sqlite_store(options);
    ASSERT_TRUE(reopened.ok()) << reopened.status().to_string();
    auto loaded = (*reopened)->load();
    ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
    EXPECT_EQ(loaded->last_outcome_id,
              query_int(path, "SELECT coalesce(max(id), 0) FROM outcomes"));
    (*reopened)->close();
    // Keep the file small so every round costs the same (integrity_check reads it all).
    ASSERT_EQ(query_text(path, "DELETE FROM outcomes"), "");
  }
  // The test means something only if the child got far enough to acknowledge writes.
  EXPECT_GE(rounds_with_ack, kRounds / 2);
  EXPECT_GT(total_acked, 0u);
  std::printf("crash test: %d/%d rounds acknowledged writes, %llu outcomes acknowledged\n",
              rounds_with_ack, kRounds, static_cast<unsigned long long>(total_acked));
}

}  // namespace
}  // namespace switchboard::store
