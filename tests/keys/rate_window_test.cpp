#include "keys/rate_window.h"

#include <gtest/gtest.h>

namespace switchboard::keys::detail {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1000 * kMs;

TEST(SlidingWindow, CountsForAtLeastTheSpanAndLessThanOneBucketMore) {
  SlidingWindow w(100 * kMs, 600);  // the minute window: 600 × 100 ms
  const int64_t t0 = 1000 * kSec + 50 * kMs;
  w.advance(t0);
  w.add(1, 10);
  w.advance(t0 + 60 * kSec - 1);
  EXPECT_EQ(w.requests(), 1);
  w.advance(t0 + 60 * kSec);  // exactly a minute later: still counted (never under-count)
  EXPECT_EQ(w.requests(), 1);
  w.advance(1000 * kSec + 60 * kSec + 100 * kMs - 1);
  EXPECT_EQ(w.requests(), 1);
  w.advance(1000 * kSec + 60 * kSec + 100 * kMs);  // end of its bucket + 60 s
  EXPECT_EQ(w.requests(), 0);
  EXPECT_EQ(w.tokens(), 0);
}

TEST(SlidingWindow, EarliestFitWalksOldestBuckets) {
  SlidingWindow w(100 * kMs, 600);
  const int64_t t0 = 1000 * kSec;
  w.advance(t0);
  w.add(1, 400);
  w.advance(t0 + 10 * kSec);
  w.add(1, 400);
  EXPECT_EQ(w.earliest_fit(t0 + 10 * kSec, 1, 100, 3, 1000), t0 + 10 * kSec);  // fits now
  // 300 more tokens need the first entry gone: at t0 + 60.1 s.
  EXPECT_EQ(w.earliest_fit(t0 + 10 * kSec, 1, 300, 3, 1000), t0 + 60 * kSec + 100 * kMs);
  // Both must go for 700.
  EXPECT_EQ(w.earliest_fit(t0 + 10 * kSec, 1, 700, 3, 1000), t0 + 70 * kSec + 100 * kMs);
  // More than the whole limit: never.
  EXPECT_EQ(w.earliest_fit(t0 + 10 * kSec, 1, 1001, 3, 1000), kNever);
  // Request limit too.
  EXPECT_EQ(w.earliest_fit(t0 + 10 * kSec, 1, 0, 2, 0), t0 + 60 * kSec + 100 * kMs);
}

TEST(SlidingWindow, AdjustOnlyWhileLiveAndLongIdleClears) {
  SlidingWindow w(100 * kMs, 600);
  const int64_t t0 = 1000 * kSec;
  w.advance(t0);
  int64_t ref = w.add(1, 500);
  w.advance(t0 + 30 * kSec);
  w.adjust(ref, 0, -200);
  EXPECT_EQ(w.tokens(), 300);
  w.advance(t0 + 61 * kSec);
  EXPECT_EQ(w.tokens(), 0);
  w.adjust(ref, -1, -300);  // expired: ignored, totals never go negative
  EXPECT_EQ(w.tokens(), 0);
  EXPECT_EQ(w.requests(), 0);
  w.add(2, 20);
  w.advance(t0 + 3600 * kSec);
  EXPECT_EQ(w.requests(), 0);
  w.add(1, 1);
  EXPECT_EQ(w.requests(), 1);
}

TEST(DailyWindow, FixedDayResetsAtTheUtcHour) {
  DailyWindow d(5);
  const int64_t day = DailyWindow::kDayNs;
  const int64_t five = 5 * 3600 * kSec;
  const int64_t t = 19'000 * day + five - kSec;  // 04:59:59 UTC
  d.advance(t);
  d.add(3, 30);
  EXPECT_EQ(d.earliest_fit(t, 1, 0, 3, 0), t + kSec);
  d.advance(t + kSec - 1);
  EXPECT_EQ(d.requests(), 3);
  d.advance(t + kSec);  // 05:00:00
  EXPECT_EQ(d.requests(), 0);
}

}  // namespace
}  // namespace switchboard::keys::detail
