#include <gtest/gtest.h>

#include <random>

#include "test_util.h"
#include "upstream/translate.h"

namespace switchboard::upstream {
namespace {

using testing::read_fixture;

std::vector<SseEvent> parse_all(std::string_view body, std::vector<size_t> splits = {}) {
  SseParser p;
  std::vector<SseEvent> out;
  size_t pos = 0;
  splits.push_back(body.size());
  for (size_t s : splits) {
    EXPECT_TRUE(p.feed(body.substr(pos, s - pos), out).ok());
    pos = s;
  }
  EXPECT_FALSE(p.has_partial_event());
  return out;
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t f = s.find(from, pos);
    out.append(s, pos, f == std::string::npos ? std::string::npos : f - pos);
    if (f == std::string::npos) break;
    out.append(to);
    pos = f + from.size();
  }
  return out;
}

TEST(SseParser, FixtureEventsAreParsed) {
  auto events = parse_all(read_fixture("anthropic_stream.sse"));
  ASSERT_EQ(events.size(), 16u);
  EXPECT_EQ(events[0].event, "message_start");
  EXPECT_EQ(events[2].event, "ping");
  EXPECT_EQ(events[2].data, R"({"type": "ping"})");
  EXPECT_EQ(events[3].event, "content_block_delta");
  EXPECT_EQ(
      events[3].data,
      R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, let's check"}})");
  EXPECT_EQ(events.back().event, "message_stop");
}

// The core property: however the body is cut into chunks, the events are the same.
TEST(SseParser, EverySplitPositionGivesIdenticalEvents) {
  std::string lf = read_fixture("anthropic_stream.sse");
  for (std::string body : {lf, replace_all(lf, "\n", "\r\n"), replace_all(lf, "\n", "\r")}) {
    auto reference = parse_all(lf);
    ASSERT_EQ(parse_all(body), reference);
    for (size_t i = 0; i <= body.size(); ++i) {
      ASSERT_EQ(parse_all(body, {i}), reference) << "split at " << i;
    }
    // Two cuts close together land inside "\r\n" pairs and field names.
    for (size_t i = 0; i + 3 <= body.size(); i += 7) {
      ASSERT_EQ(parse_all(body, {i, i + 1, i + 3}), reference) << "splits at " << i;
    }
  }
}

TEST(SseParser, ByteByByte) {
  std::string body = replace_all(read_fixture("anthropic_stream.sse"), "\n", "\r\n");
  SseParser p;
  std::vector<SseEvent> out;
  for (char c : body) ASSERT_TRUE(p.feed(std::string_view(&c, 1), out).ok());
  EXPECT_EQ(out, parse_all(read_fixture("anthropic_stream.sse")));
}

TEST(SseParser, MixedLineEndingsMultiLineDataCommentsAndFields) {
  std::string raw =
      std::string(
          "\xEF\xBB\xBF: comment\r\nevent: upd\rdata: line1\ndata:line2\r\ndata\nid: 7\n"
          "retry: 1500\nunknown: x\n\r\nevent: only-name\n\ndata:  two spaces\n"
          "retry: 1x\nid: a") +
      std::string(1, '\0') + "b\n\n";
  for (size_t i = 0; i <= raw.size(); ++i) {
    auto events = parse_all(raw, {i});
    ASSERT_EQ(events.size(), 2u) << "split at " << i;
    EXPECT_EQ(events[0].event, "upd");
    EXPECT_EQ(events[0].data, "line1\nline2\n");
    EXPECT_EQ(events[0].id, "7");
    EXPECT_EQ(events[0].retry, 1500);
    // The name-only block is dropped, and does not leak into the next event.
    EXPECT_EQ(events[1].event, "");
    EXPECT_EQ(events[1].data, " two spaces");
    EXPECT_EQ(events[1].id, "7");  // an id containing NUL is ignored
    EXPECT_EQ(events[1].retry, std::nullopt);
  }
}

TEST(SseParser, TruncatedStreamLeavesPartialEvent) {
  SseParser p;
  std::vector<SseEvent> out;
  ASSERT_TRUE(p.feed("data: a\n\ndata: b\n", out).ok());
  EXPECT_EQ(out.size(), 1u);
  EXPECT_TRUE(p.has_partial_event());
  ASSERT_TRUE(p.feed("\n", out).ok());
  EXPECT_EQ(out.size(), 2u);
  EXPECT_FALSE(p.has_partial_event());
  ASSERT_TRUE(p.feed("data: unfinished", out).ok());
  EXPECT_TRUE(p.has_partial_event());
}

TEST(SseParser, OversizeEventIsAnErrorNotGrowth) {
  SseParser p(64);
  std::vector<SseEvent> out;
  // Complete events before the oversize one are still delivered.
  Status s = p.feed(
      "data: small\n\ndata: " + std::string(40, 'x') + "\ndata: " + std::string(40, 'y') + "\n\n",
      out);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "small");
  EXPECT_TRUE(p.failed());
  EXPECT_FALSE(p.feed("data: later\n\n", out).ok());  // stays failed
  EXPECT_EQ(out.size(), 1u);
}

TEST(SseParser, OversizeUnfinishedLineIsAnError) {
  SseParser p(1000);
  std::vector<SseEvent> out;
  std::string piece(300, 'z');
  ASSERT_TRUE(p.feed("data: ", out).ok());
  ASSERT_TRUE(p.feed(piece, out).ok());
  ASSERT_TRUE(p.feed(piece, out).ok());
  ASSERT_TRUE(p.feed(piece, out).ok());
  EXPECT_EQ(p.feed(piece, out).code(), StatusCode::kResourceExhausted);
  // The default bound is 1 MiB: an event just under it is fine.
  SseParser big;
  std::string body = "data: " + std::string(kDefaultMaxSseEventBytes - 16, 'a') + "\n\n";
  ASSERT_TRUE(big.feed(body, out).ok());
  EXPECT_EQ(out.back().data.size(), kDefaultMaxSseEventBytes - 16);
  SseParser over;
  EXPECT_FALSE(over.feed("data: " + std::string(kDefaultMaxSseEventBytes + 1, 'a'), out).ok());
}

TEST(SseWriter, FormatsAndRoundTrips) {
  EXPECT_EQ(format_sse_event("{\"a\":1}"), "data: {\"a\":1}\n\n");
  EXPECT_EQ(format_sse_event("x", "error"), "event: error\ndata: x\n\n");
  EXPECT_EQ(format_sse_event("a\nb\r\nc\rd", "n\nm"),
            "event: nm\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
  EXPECT_EQ(format_sse_event(""), "data: \n\n");
  std::string body;
  append_sse_event(body, "one\ntwo", "evt");
  append_sse_event(body, "three");
  body += kSseDone;
  auto events = parse_all(body);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].event, "evt");
  EXPECT_EQ(events[0].data, "one\ntwo");
  EXPECT_EQ(events[1].data, "three");
  EXPECT_EQ(events[2].data, "[DONE]");
}

// The relay's fast path: a chunk of whole one-line `data: ` events is taken as views, and those
// events are exactly what feed() makes of the same bytes, written back by append_sse_event as
// exactly the same bytes. Anything else (a partial event, CRLF, other fields, comments, several
// data lines, no space after the colon, a BOM, a parser holding a partial event) is refused
// without consuming anything.
TEST(SseParser, PlainChunksAreViewsOfWhatFeedWouldParse) {
  std::mt19937 rng(20261206);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  static const char* kLines[] = {
      "data: {\"a\":1}", "data: [DONE]", "data: ", "data:  two",         "data:x",
      ": comment",       "event: e",     "id: 7",  "data: \xEF\xBB\xBF", "retry: 10"};
  int plain = 0;
  for (int n = 0; n < 5000; ++n) {
    std::string chunk;
    if (pick(20) == 0) chunk += "\xEF\xBB\xBF";
    for (int e = pick(4) + 1; e > 0; --e) {
      for (int l = pick(8) == 0 ? 2 : 1; l > 0; --l) {
        chunk += kLines[pick(pick(3) == 0 ? 10 : 4)];
        chunk += pick(25) == 0 ? "\r\n" : "\n";
      }
      chunk += pick(30) == 0 ? "" : "\n";
    }
    if (pick(10) == 0) chunk.resize(size_t(pick(int(chunk.size()))));
    SseParser fast;
    std::vector<SseEventView> views;
    const bool ok = fast.feed_plain(chunk, views);
    SseParser slow;
    std::vector<SseEvent> events;
    ASSERT_TRUE(slow.feed(chunk, events).ok());
    if (!ok) {
      ASSERT_TRUE(views.empty()) << chunk;
      continue;
    }
    ++plain;
    ASSERT_FALSE(slow.has_partial_event()) << chunk;
    ASSERT_EQ(views.size(), events.size()) << chunk;
    std::string rewritten, as_came;
    for (size_t i = 0; i < views.size(); ++i) {
      ASSERT_EQ(views[i].data, events[i].data) << chunk;
      ASSERT_TRUE(events[i].event.empty() && events[i].id.empty() && !events[i].retry) << chunk;
      append_sse_event(rewritten, events[i].data, events[i].event);
      as_came += views[i].raw;
    }
    ASSERT_EQ(as_came, chunk);
    ASSERT_EQ(rewritten, chunk);
    // The stream goes on through feed() as if it had read these bytes (a BOM now is no BOM).
    const std::string next =
        "\xEF\xBB\xBF"
        "data: x\n\ndata: y\n\n";
    std::vector<SseEvent> after_fast, after_slow;
    ASSERT_TRUE(fast.feed(next, after_fast).ok());
    ASSERT_TRUE(slow.feed(next, after_slow).ok());
    ASSERT_EQ(after_fast, after_slow);
  }
  EXPECT_GT(plain, 500);
  // A parser holding part of an event takes the slow path.
  SseParser p;
  std::vector<SseEvent> events;
  ASSERT_TRUE(p.feed("data: {\"a\"", events).ok());
  std::vector<SseEventView> views;
  EXPECT_FALSE(p.feed_plain(":1}\n\n", views));
  EXPECT_TRUE(views.empty());
  // An event over the budget is left to feed(), which reports it.
  SseParser small(8);
  EXPECT_FALSE(small.feed_plain("data: 0123456789\n\n", views));
}

}  // namespace
}  // namespace switchboard::upstream
