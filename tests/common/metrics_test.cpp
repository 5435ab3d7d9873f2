#include "common/metrics.h"

#include <gtest/gtest.h>

#include <regex>

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

}  // namespace
}  // namespace switchboard
