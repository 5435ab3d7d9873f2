#include "telemetry/telemetry.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <set>

namespace switchboard::telemetry {
namespace {

constexpr const char* kParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(TraceParentTest, AValidHeaderParsesAndFormatsBack) {
  auto p = parse_traceparent(kParent);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->trace.hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(p->parent.hex(), "00f067aa0ba902b7");
  EXPECT_TRUE(p->sampled);
  EXPECT_EQ(format_traceparent(p->trace, p->parent, true), kParent);
  auto unsampled = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
  ASSERT_TRUE(unsampled);
  EXPECT_FALSE(unsampled->sampled);
  // A later version may carry more fields; its first four are read.
  auto future =
      parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future");
  ASSERT_TRUE(future);
  EXPECT_EQ(future->parent.hex(), "00f067aa0ba902b7");
}

TEST(TraceParentTest, EveryMalformedHeaderIsRefused) {
  for (const char* bad : {
           "",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",          // no flags
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",     // 00 has no more
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",       // zero trace
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",       // zero parent
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",       // uppercase
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",       // forbidden version
           "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",       // separators
           "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",       // misplaced dash
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",       // not hex
           "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",      // no dash after
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx",  // header injection
       }) {
    EXPECT_FALSE(parse_traceparent(bad)) << bad;
  }
}

TEST(TraceParentTest, NewIdsAreValidAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto t = new_trace_id();
    auto s = new_span_id();
    EXPECT_TRUE(t.valid());
    EXPECT_TRUE(s.valid());
    EXPECT_TRUE(seen.insert(t.hex()).second);
    EXPECT_TRUE(seen.insert(s.hex()).second);
  }
}

TEST(SamplingTest, TheRatioIsKeptAndTheDecisionIsTheTraceIds) {
  int sampled = 0;
  for (int i = 0; i < 20000; ++i) {
    auto t = new_trace_id();
    const bool s = sampled_by_ratio(t, 0.25);
    EXPECT_EQ(s, sampled_by_ratio(t, 0.25));  // the same trace, the same answer
    sampled += s;
    EXPECT_TRUE(sampled_by_ratio(t, 1.0));
    EXPECT_FALSE(sampled_by_ratio(t, 0.0));
  }
  EXPECT_NEAR(sampled / 20000.0, 0.25, 0.02);
}

Span sample_span() {
  Span s;
  s.trace = parse_traceparent(kParent)->trace;
  s.id = new_span_id();
  s.parent = parse_traceparent(kParent)->parent;
  s.name = "chat \"gpt\"";
  s.kind = SpanKind::kClient;
  s.start = WallTime(std::chrono::seconds(1'700'000'000));
  s.end = s.start + std::chrono::microseconds(1500);
  s.error = true;
  s.status_message = "HTTP 500";
  s.attributes = {{"gen_ai.request.model", std::string("gpt-4o")},
                  {"gen_ai.usage.input_tokens", int64_t(12)},
                  {"ratio", 0.5},
                  {"switchboard.key_granted", true}};
  return s;
}

TEST(OtlpJsonTest, SpansEncodeAsTheProtobufJsonMapping) {
  const std::string body = otlp_json({sample_span()}, "gw-1");
  auto v = boost::json::parse(body);
  const auto& rs = v.at("resourceSpans").as_array().at(0);
  const auto& attr = rs.at("resource").at("attributes").as_array().at(0);
  EXPECT_EQ(attr.at("key").as_string(), "service.name");
  EXPECT_EQ(attr.at("value").at("stringValue").as_string(), "gw-1");
  const auto& span = rs.at("scopeSpans").as_array().at(0).at("spans").as_array().at(0);
  EXPECT_EQ(span.at("traceId").as_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(span.at("parentSpanId").as_string(), "00f067aa0ba902b7");
  EXPECT_EQ(span.at("spanId").as_string().size(), 16u);
  EXPECT_EQ(span.at("name").as_string(), "chat \"gpt\"");
  EXPECT_EQ(span.at("kind").as_int64(), 3);
  EXPECT_EQ(span.at("startTimeUnixNano").as_string(), "1700000000000000000");
  EXPECT_EQ(span.at("endTimeUnixNano").as_string(), "1700000000001500000");
  EXPECT_EQ(span.at("status").at("code").as_int64(), 2);
  EXPECT_EQ(span.at("status").at("message").as_string(), "HTTP 500");
  const auto& attrs = span.at("attributes").as_array();
  ASSERT_EQ(attrs.size(), 4u);
  EXPECT_EQ(attrs[0].at("value").at("stringValue").as_string(), "gpt-4o");
  EXPECT_EQ(attrs[1].at("value").at("intValue").as_string(), "12");
  EXPECT_EQ(attrs[2].at("value").at("doubleValue").as_double(), 0.5);
  EXPECT_EQ(attrs[3].at("value").at("boolValue").as_bool(), true);
  // A root span has no parent field.
  Span root = sample_span();
  root.parent = SpanId{};
  auto r = boost::json::parse(otlp_json({root}, "x"));
  EXPECT_FALSE(r.at("resourceSpans")
                   .as_array()[0]
                   .at("scopeSpans")
                   .as_array()[0]
                   .at("spans")
                   .as_array()[0]
                   .as_object()
                   .contains("parentSpanId"));
}

TEST(ExporterTest, BatchesGoOutAndTheirSpansAreCounted) {
  std::mutex mu;
  std::vector<std::string> bodies;
  ExporterOptions o;
  o.max_batch = 3;
  o.interval = Millis(60000);  // only flush() and full batches send
  Exporter e(
      "svc",
      [&](const std::string& body) {
        std::lock_guard lock(mu);
        bodies.push_back(body);
        return Status();
      },
      o);
  e.submit({sample_span(), sample_span()});
  e.flush();
  e.submit({sample_span(), sample_span(), sample_span(), sample_span()});
  e.flush();
  EXPECT_EQ(e.counters().exported, 6u);
  EXPECT_EQ(e.counters().dropped, 0u);
  std::lock_guard lock(mu);
  ASSERT_EQ(bodies.size(), 3u);  // 2, then 3 and 1
  size_t spans = 0;
  for (const auto& b : bodies) {
    auto v = boost::json::parse(b);
    const auto n = v.at("resourceSpans")
                       .as_array()[0]
                       .at("scopeSpans")
                       .as_array()[0]
                       .at("spans")
                       .as_array()
                       .size();
    EXPECT_LE(n, 3u);
    spans += n;
  }
  EXPECT_EQ(spans, 6u);
}

// A collector that hangs must not hold the request path or grow memory: submit never waits, the
// queue is bounded and what does not fit is dropped and counted.
TEST(ExporterTest, AStuckCollectorNeverBlocksSubmitAndMemoryIsBounded) {
  std::mutex gate;
  gate.lock();  // the collector is stuck until the end of the test
  std::atomic<int> calls{0};
  ExporterOptions o;
  o.max_queue = 100;
  o.max_batch = 10;
  o.interval = Millis(1);
  {
    Exporter e(
        "svc",
        [&](const std::string&) {
          calls++;
          std::lock_guard lock(gate);
          return Status::unavailable("collector down");
        },
        o);
    // The first batch is taken by the stuck send; afterwards at most max_queue wait.
    e.submit({sample_span()});
    while (calls.load() == 0) std::this_thread::yield();
    for (int i = 0; i < 1000; ++i) e.submit({sample_span()});
    EXPECT_EQ(e.counters().dropped, 900u);  // 1000 submitted, 100 queued
    gate.unlock();
  }  // the destructor tries what was queued, once, and the failures are dropped spans
  SUCCEED();
}

TEST(ExporterTest, AFailingCollectorCountsFailedBatchesAndDroppedSpans) {
  ExporterOptions o;
  o.max_batch = 2;
  o.interval = Millis(60000);
  Exporter e(
      "svc", [](const std::string&) { return Status::unavailable("refused"); }, o);
  e.submit({sample_span(), sample_span(), sample_span()});
  e.flush();
  EXPECT_EQ(e.counters().exported, 0u);
  EXPECT_EQ(e.counters().dropped, 3u);
  EXPECT_EQ(e.counters().failed_batches, 2u);
}

// At shutdown a failing collector costs one try, not one per batch still queued.
TEST(ExporterTest, ShutdownWithAFailingCollectorTriesOnce) {
  std::mutex gate;
  gate.lock();
  std::atomic<int> calls{0};
  ExporterOptions o;
  o.max_batch = 2;
  o.interval = Millis(60000);
  Exporter e(
      "svc",
      [&](const std::string&) {
        calls++;
        std::lock_guard lock(gate);  // the collector hangs until the test lets it fail
        return Status::unavailable("timed out");
      },
      o);
  e.submit({sample_span(), sample_span()});  // a full batch: its send hangs
  while (calls.load() == 0) std::this_thread::yield();
  for (int i = 0; i < 10; ++i) e.submit({sample_span()});  // five more batches wait
  std::thread stopper([&] { e.stop(); });
  while (!e.stopping()) std::this_thread::yield();
  gate.unlock();  // the hung send fails while the exporter is stopping
  stopper.join();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(e.counters().dropped, 12u);
  EXPECT_EQ(e.counters().failed_batches, 1u);
}

}  // namespace
}  // namespace switchboard::telemetry
