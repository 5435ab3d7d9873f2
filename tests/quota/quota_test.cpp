// QuotaBook: UTC periods, thresholds, crossings reported once, seeding, reloads, and the shares
// that meet other gateways' counts, on simulated time.
#include "quota/quota.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <thread>
#include <vector>

namespace switchboard::quota {
namespace {

// 2026-12-05T12:00:00Z
const WallTime kNoon = WallTime(std::chrono::seconds(1796472000));

WallTime utc(int year, int month, int day, int hour = 0, int min = 0, int sec = 0) {
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

ProviderConfig provider(const std::string& name, QuotaConfig q) {
  ProviderConfig p;
  p.name = name;
  p.quota = q;
  return p;
}

QuotaConfig requests_quota(int64_t n, QuotaPeriod period = QuotaPeriod::kMonth) {
  QuotaConfig q;
  q.period = period;
  q.requests = n;
  return q;
}

Usage calls(int64_t n, int64_t tokens = 0, double usd = 0) {
  return Usage{n, tokens, to_nano_usd(usd)};
}

TEST(QuotaPeriodTest, MonthsAndDaysAreUtcCalendarPeriods) {
  ASSERT_EQ(kNoon, utc(2026, 12, 5, 12));
  Period m = period_at(QuotaPeriod::kMonth, kNoon);
  EXPECT_EQ(m.id, "2026-12");
  EXPECT_EQ(m.start, utc(2026, 12, 1));
  EXPECT_EQ(m.end, utc(2027, 1, 1));  // December rolls into the next year
  Period d = period_at(QuotaPeriod::kDay, kNoon);
  EXPECT_EQ(d.id, "2026-12-05");
  EXPECT_EQ(d.start, utc(2026, 12, 5));
  EXPECT_EQ(d.end, utc(2026, 12, 6));
  // The last millisecond of a period is in it; its end is in the next.
  const WallTime last = utc(2027, 1, 1) - std::chrono::milliseconds(1);
  EXPECT_EQ(period_at(QuotaPeriod::kMonth, last).id, "2026-12");
  EXPECT_EQ(period_at(QuotaPeriod::kMonth, utc(2027, 1, 1)).id, "2027-01");
  EXPECT_EQ(period_at(QuotaPeriod::kDay, utc(2024, 2, 28, 23, 59, 59)).end, utc(2024, 2, 29));
  EXPECT_EQ(period_at(QuotaPeriod::kMonth, utc(2024, 2, 10)).end, utc(2024, 3, 1));
}

TEST(QuotaPeriodTest, TheProcessTimeZoneDoesNotMoveTheBoundaries) {
  const char* old = std::getenv("TZ");
  const std::string saved = old ? old : "";
  ::setenv("TZ", "America/Los_Angeles", 1);
  ::tzset();
  Period d = period_at(QuotaPeriod::kDay, utc(2026, 12, 5, 3));  // the 4th, 19:00 in LA
  if (old) {
    ::setenv("TZ", saved.c_str(), 1);
  } else {
    ::unsetenv("TZ");
  }
  ::tzset();
  EXPECT_EQ(d.id, "2026-12-05");
  EXPECT_EQ(d.start, utc(2026, 12, 5));
}

TEST(QuotaBookTest, AProviderWithoutAQuotaIsAlwaysHealthyAndNotCounted) {
  QuotaBook book;
  book.configure({provider("a", QuotaConfig{})}, kNoon);
  EXPECT_FALSE(book.any());
  EXPECT_EQ(book.add("a", calls(1000), kNoon), std::nullopt);
  EXPECT_EQ(book.level("a", kNoon), Level::kHealthy);
  EXPECT_EQ(book.level("unknown", kNoon), Level::kHealthy);
  EXPECT_TRUE(book.standings(kNoon).empty());
}

TEST(QuotaBookTest, ThresholdsGiveTheLevelsAndEachCrossingIsReportedOnce) {
  QuotaBook book;
  book.configure({provider("a", requests_quota(100)), provider("b", requests_quota(10))}, kNoon);
  ASSERT_TRUE(book.any());
  std::vector<Level> crossings;
  for (int i = 0; i < 120; ++i)
    if (auto c = book.add("a", calls(1), kNoon)) crossings.push_back(*c);
  EXPECT_EQ(crossings, (std::vector<Level>{Level::kWarning, Level::kCritical, Level::kExhausted}));
  EXPECT_EQ(book.level("a", kNoon), Level::kExhausted);
  EXPECT_EQ(book.level("b", kNoon), Level::kHealthy);  // counted apart
  auto s = book.standing("a", kNoon);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->used.requests, 120);
  EXPECT_DOUBLE_EQ(s->used_ratio, 1.2);
  EXPECT_EQ(s->measure, "requests");
  EXPECT_EQ(s->summary(), "exhausted 120%");

  // Exactly at a threshold: 80 of 100 is warning, 79 is not.
  QuotaBook edge;
  edge.configure({provider("a", requests_quota(100))}, kNoon);
  edge.add("a", calls(79), kNoon);
  EXPECT_EQ(edge.level("a", kNoon), Level::kHealthy);
  EXPECT_EQ(edge.add("a", calls(1), kNoon), Level::kWarning);
  EXPECT_EQ(edge.standing("a", kNoon)->summary(), "warning 80%");
  edge.add("a", calls(15), kNoon);
  EXPECT_EQ(edge.level("a", kNoon), Level::kCritical);
  edge.add("a", calls(5), kNoon);
  EXPECT_EQ(edge.level("a", kNoon), Level::kExhausted);
}

TEST(QuotaBookTest, TheMeasureNearestItsLimitDecides) {
  QuotaConfig q;
  q.requests = 1000;
  q.tokens = 10000;
  q.usd = 2.0;
  QuotaBook book;
  book.configure({provider("a", q)}, kNoon);
  book.add("a", calls(10, 1000, 1.7), kNoon);  // 1%, 10%, 85%
  auto s = book.standing("a", kNoon);
  EXPECT_EQ(s->measure, "usd");
  EXPECT_NEAR(s->used_ratio, 0.85, 1e-12);
  EXPECT_EQ(s->level, Level::kWarning);
  // Spend sums exactly in nano-USD: a million calls of $0.000001 are $1, not $0.99999...
  QuotaConfig dollar;
  dollar.usd = 1.0;
  QuotaBook exact;
  exact.configure({provider("a", dollar)}, kNoon);
  for (int i = 0; i < 1000000; ++i) exact.add("a", calls(0, 0, 0.000001), kNoon);
  EXPECT_EQ(exact.level("a", kNoon), Level::kExhausted);
  EXPECT_EQ(exact.standing("a", kNoon)->used.nano_usd, 1000000000);
}

TEST(QuotaBookTest, TheCountStartsOverExactlyAtTheUtcBoundary) {
  QuotaBook book;
  book.configure({provider("a", requests_quota(10, QuotaPeriod::kDay))}, kNoon);
  const WallTime midnight = utc(2026, 12, 6);
  EXPECT_EQ(book.add("a", calls(10), kNoon), Level::kExhausted);
  const WallTime just_before = midnight - std::chrono::milliseconds(1);
  EXPECT_EQ(book.level("a", just_before), Level::kExhausted);
  EXPECT_EQ(book.level("a", midnight), Level::kHealthy);  // nothing yet in the new day
  // The first call of the new day counts alone, and the crossings are reported again.
  EXPECT_EQ(book.add("a", calls(8), midnight), Level::kWarning);
  auto s = book.standing("a", midnight);
  EXPECT_EQ(s->period.id, "2026-12-06");
  EXPECT_EQ(s->used.requests, 8);
}

TEST(QuotaBookTest, SeedAddsWhatTheStoreRecordedForTheCurrentPeriodOnly) {
  QuotaBook book;
  book.configure({provider("a", requests_quota(100))}, kNoon);
  EXPECT_EQ(book.seed("a", calls(50), "2026-11", kNoon), std::nullopt);  // last month: ignored
  EXPECT_EQ(book.standing("a", kNoon)->used.requests, 0);
  EXPECT_EQ(book.seed("a", calls(85), "2026-12", kNoon), Level::kWarning);
  EXPECT_EQ(book.add("a", calls(10), kNoon), Level::kCritical);
  EXPECT_EQ(book.standing("a", kNoon)->used.requests, 95);
  EXPECT_EQ(book.seed("nobody", calls(5), "2026-12", kNoon), std::nullopt);
}

TEST(QuotaBookTest, AReloadKeepsTheCountUnlessThePeriodKindChanges) {
  QuotaBook book;
  book.configure({provider("a", requests_quota(100)), provider("b", requests_quota(100))}, kNoon);
  book.add("a", calls(50), kNoon);
  book.add("b", calls(50), kNoon);
  // Tighter limit on a: same count, new level; b loses its quota; c gains one.
  book.configure({provider("a", requests_quota(60)), provider("b", QuotaConfig{}),
                  provider("c", requests_quota(5))},
                 kNoon);
  EXPECT_EQ(book.standing("a", kNoon)->used.requests, 50);
  EXPECT_EQ(book.level("a", kNoon), Level::kWarning);
  EXPECT_EQ(book.level("b", kNoon), Level::kHealthy);
  EXPECT_FALSE(book.standing("b", kNoon));
  EXPECT_EQ(book.add("b", calls(500), kNoon), std::nullopt);
  EXPECT_EQ(book.standings(kNoon).size(), 2u);
  // a per day instead of per month: counted afresh.
  book.configure({provider("a", requests_quota(60, QuotaPeriod::kDay))}, kNoon);
  EXPECT_EQ(book.standing("a", kNoon)->used.requests, 0);
  EXPECT_EQ(book.standing("a", kNoon)->period.id, "2026-12-05");
  // No quota anywhere: nothing is counted at all.
  book.configure({provider("a", QuotaConfig{})}, kNoon);
  EXPECT_FALSE(book.any());
  EXPECT_EQ(book.level("a", kNoon), Level::kHealthy);
}

TEST(QuotaBookTest, SharesCarryTheNewCountAndTheTotalsReplaceIt) {
  QuotaBook book;
  book.configure({provider("a", requests_quota(100))}, kNoon);
  book.seed("a", calls(10), "2026-12", kNoon);
  book.add("a", calls(5), kNoon);
  auto shares = book.take_shares(kNoon);
  ASSERT_EQ(shares.size(), 1u);
  EXPECT_EQ(shares[0].provider, "a");
  EXPECT_EQ(shares[0].period_id, "2026-12");
  EXPECT_EQ(shares[0].delta.requests, 5);
  EXPECT_EQ(shares[0].base.requests, 10);
  // While the share is in flight its count still counts, and a second take leaves it out.
  EXPECT_EQ(book.standing("a", kNoon)->used.requests, 15);
  book.add("a", calls(1), kNoon);
  EXPECT_TRUE(book.take_shares(kNoon).empty());
  // The cluster's total (another gateway counted 70) replaces base and share; what came since
  // stays on top.
  EXPECT_EQ(book.shared(shares[0], calls(85), kNoon), Level::kWarning);
  EXPECT_EQ(book.standing("a", kNoon)->used.requests, 86);
  // A share that did not arrive is sent again with what came after it.
  book.add("a", calls(2), kNoon);
  shares = book.take_shares(kNoon);
  ASSERT_EQ(shares.size(), 1u);
  EXPECT_EQ(shares[0].delta.requests, 3);
  book.unshared(shares[0]);
  EXPECT_EQ(book.standing("a", kNoon)->used.requests, 88);
  shares = book.take_shares(kNoon);
  EXPECT_EQ(shares[0].delta.requests, 3);
  EXPECT_EQ(shares[0].base.requests, 85);
  // An answer about a period that has ended changes nothing in the new one.
  const WallTime next_month = utc(2027, 1, 1, 0, 0, 1);
  book.add("a", calls(1), next_month);
  EXPECT_EQ(book.shared(shares[0], calls(99), next_month), std::nullopt);
  EXPECT_EQ(book.standing("a", next_month)->used.requests, 1);
}

// Many threads count while one shares with a simulated Redis (a total that adds each delta, or
// loses the round trip now and then): no call is lost or counted twice.
TEST(QuotaBookTest, ConcurrentCountingAndSharingLoseNothing) {
  QuotaBook book;
  book.configure({provider("a", requests_quota(1'000'000'000))}, kNoon);
  constexpr int kThreads = 4, kEach = 50000;
  std::atomic<bool> done{false};
  Usage redis;  // the shared total, as the script keeps it
  std::thread sharer([&] {
    int round = 0;
    auto share = [&] {
      for (auto& s : book.take_shares(kNoon)) {
        if (++round % 3 == 0) {
          book.unshared(s);  // the round trip failed
        } else {
          redis += s.delta;
          book.shared(s, redis, kNoon);
        }
      }
    };
    while (!done.load()) share();
    share();
    share();
  });
  std::vector<std::thread> counters;
  for (int t = 0; t < kThreads; ++t)
    counters.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) book.add("a", calls(1, 3, 0.001), kNoon);
    });
  for (auto& t : counters) t.join();
  done = true;
  sharer.join();
  const Usage want = calls(kThreads * kEach, 3 * kThreads * kEach, 0) +
                     Usage{0, 0, to_nano_usd(0.001) * kThreads * kEach};
  EXPECT_EQ(book.standing("a", kNoon)->used, want);
  // Everything reached "Redis" too: the last shares succeeded (round counts aside, a failed one
  // is followed by more rounds until nothing is pending).
  for (int i = 0; i < 3; ++i)
    for (auto& s : book.take_shares(kNoon)) {
      redis += s.delta;
      book.shared(s, redis, kNoon);
    }
  EXPECT_EQ(redis, want);
}

}  // namespace
}  // namespace switchboard::quota
