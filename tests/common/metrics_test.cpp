#include "common/metrics.h"

#include <gtest/gtest.h>

#include <regex>
#include <thread>
#include <vector>

namespace switchboard {
namespace {

TEST(MetricsTest, CounterGaugeHistogramInTextFormat) {
  auto& c = metrics::counter_family("switchboard_test_events_total", "events seen by the test")
                .Add({{"kind", "a"}});
  c.Increment();
  c.Increment(2);
  // Registering the same family again returns the same family (handles stay valid).
  auto& c2 = metrics::counter_family("switchboard_test_events_total", "events seen by the test")
                 .Add({{"kind", "a"}});
  EXPECT_EQ(&c, &c2);
  metrics::gauge_family("switchboard_test_depth_events", "queue depth").Add({}).Set(7);
  auto& h = metrics::histogram_family("switchboard_test_latency_seconds", "latency")
                .Add({}, metrics::latency_buckets_seconds());
  h.Observe(0.003);
  h.Observe(20);

  std::string text = metrics::serialize();
  EXPECT_NE(text.find("# TYPE switchboard_test_events_total counter"), std::string::npos) << text;
  EXPECT_TRUE(std::regex_search(
      text, std::regex(R"(switchboard_test_events_total\{kind="a"\} 3(\.0+)?\n)")))
      << text;
  EXPECT_NE(text.find("# TYPE switchboard_test_depth_events gauge"), std::string::npos);
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(switchboard_test_depth_events 7(\.0+)?\n)")));
  EXPECT_NE(text.find("# TYPE switchboard_test_latency_seconds histogram"), std::string::npos);
  EXPECT_TRUE(std::regex_search(
      text, std::regex(R"(switchboard_test_latency_seconds_bucket\{le="0.005"\} 1\n)")))
      << text;
  EXPECT_TRUE(std::regex_search(
      text, std::regex(R"(switchboard_test_latency_seconds_bucket\{le="\+Inf"\} 2\n)")));
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(switchboard_test_latency_seconds_count 2\n)")));
  // Every sample line is "name{labels} value" or "name value".
  std::istringstream lines(text);
  std::string line;
  static const std::regex kSample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEInfa]+$)");
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    EXPECT_TRUE(std::regex_match(line, kSample)) << line;
  }
}

// Many threads add at once; every scrape moves exactly what was added since the last one.
TEST(MetricsTest, ShardedCounterSumsEveryThreadsAddsAtScrapeTime) {
  auto& target = metrics::counter_family("switchboard_test_sharded_total", "sharded adds")
                     .Add({{"kind", "threads"}});
  const double before = target.Value();
  // More threads than slots, so some share one.
  constexpr int kThreads = 2 * static_cast<int>(metrics::ShardedCounter::kSlots) + 3;
  constexpr uint64_t kAdds = 5000;
  uint64_t expected = 0;
  for (int t = 0; t < kThreads; ++t) expected += kAdds * (t % 2 == 0 ? 1 : 2);
  {
    metrics::ShardedCounter counter(&target);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&counter, t] {
        for (uint64_t i = 0; i < kAdds; ++i) counter.add(t % 2 == 0 ? 1 : 2);
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(counter.value(), expected);
    EXPECT_EQ(target.Value(), before);  // nothing moves before a scrape
    const std::string text = metrics::serialize();
    EXPECT_NE(text.find("switchboard_test_sharded_total{kind=\"threads\"} " +
                        std::to_string(static_cast<uint64_t>(before) + expected)),
              std::string::npos)
        << text;
    metrics::flush_all();  // a second scrape adds nothing twice
    EXPECT_EQ(target.Value(), before + static_cast<double>(expected));
    counter.add(5);
  }
  // Destruction flushes what the last scrape did not see.
  EXPECT_EQ(target.Value(), before + static_cast<double>(expected + 5));
}

// Observations from many threads land in the right buckets (upper bounds, as Prometheus's
// `le`), with the right sum, once a scrape flushed them.
TEST(MetricsTest, ShardedHistogramMergesThreadsAtScrapeTime) {
  const prometheus::Histogram::BucketBoundaries bounds = {0.01, 0.1, 1};
  auto& target = metrics::histogram_family("switchboard_test_sharded_seconds", "sharded latency")
                     .Add({{"kind", "threads"}}, bounds);
  {
    metrics::ShardedHistogram h(&target, bounds);
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&h] {
        for (int i = 0; i < 1000; ++i) {
          h.observe(0.005);  // le 0.01
          h.observe(0.1);    // le 0.1: a value on a boundary belongs to that bucket
          h.observe(5);      // +Inf only
        }
      });
    }
    for (auto& th : threads) th.join();
    const std::string text = metrics::serialize();
    for (const char* line :
         {R"(switchboard_test_sharded_seconds_bucket{kind="threads",le="0.01"} 6000)",
          R"(switchboard_test_sharded_seconds_bucket{kind="threads",le="0.1"} 12000)",
          R"(switchboard_test_sharded_seconds_bucket{kind="threads",le="1"} 12000)",
          R"(switchboard_test_sharded_seconds_bucket{kind="threads",le="+Inf"} 18000)",
          R"(switchboard_test_sharded_seconds_count{kind="threads"} 18000)"}) {
      EXPECT_NE(text.find(std::string(line) + "\n"), std::string::npos) << line << "\n" << text;
    }
    auto sum_at = text.find(R"(switchboard_test_sharded_seconds_sum{kind="threads"} )");
    ASSERT_NE(sum_at, std::string::npos);
    const double sum = std::stod(text.substr(text.find(' ', sum_at) + 1));
    EXPECT_NEAR(sum, 6000 * (0.005 + 0.1 + 5), 1e-6);
    h.observe(0.5);
  }
  // Destruction flushes the last observation.
  const std::string text = metrics::serialize();
  EXPECT_NE(text.find(R"(switchboard_test_sharded_seconds_count{kind="threads"} 18001)"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace switchboard
