#include "net/http1.h"

#include <gtest/gtest.h>

#include <random>

namespace switchboard::net::http1 {
namespace {

Error request_error(std::string_view data, size_t max_head = 8192) {
  Head h;
  Error e = Error::kNone;
  EXPECT_EQ(parse_request_head(data, max_head, h, e), 0u);
  return e;
}

Error response_error(std::string_view data) {
  Head h;
  Error e = Error::kNone;
  EXPECT_EQ(parse_response_head(data, 8192, h, e), 0u);
  return e;
}

// Decodes `body` fed in slices cut at `cuts`; returns the payload and the bytes used.
std::string decode(const Head& h, std::string_view body, std::vector<size_t> cuts, Error& error,
                   size_t& used, bool& done, uint64_t max_body = 0) {
  BodyReader r;
  r.start(h, max_body);
  std::string out;
  used = 0;
  cuts.push_back(body.size());
  size_t pos = 0;
  error = Error::kNone;
  for (size_t c : cuts) {
    while (pos < c && !r.done()) {
      size_t n = r.feed(body.substr(pos, c - pos), out, error);
      if (error != Error::kNone) {
        done = false;
        return out;
      }
      pos += n;
      if (n == 0) break;
    }
  }
  used = pos;
  done = r.done();
  return out;
}

TEST(Http1Request, ParsesAHeadAndItsFields) {
  const std::string data =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type:application/json\r\n"
      "Content-Length:  12 \r\nX-Empty:\r\n\r\n{\"model\":1}X";
  Head h;
  Error e;
  const size_t n = parse_request_head(data, 8192, h, e);
  ASSERT_EQ(e, Error::kNone);
  EXPECT_EQ(n, data.size() - 12);  // the 12 body bytes follow the head
  EXPECT_EQ(h.method, "POST");
  EXPECT_EQ(h.target, "/v1/chat/completions");
  EXPECT_EQ(h.version, 11);
  ASSERT_EQ(h.fields.size(), 4u);
  EXPECT_EQ(h.field("content-type"), "application/json");
  EXPECT_EQ(h.field("CONTENT-LENGTH"), "12");
  EXPECT_EQ(h.field("x-empty"), "");
  EXPECT_EQ(h.field("absent"), "");
  EXPECT_EQ(h.framing, Framing::kLength);
  EXPECT_EQ(h.content_length, 12u);
  EXPECT_TRUE(h.keep_alive);
  EXPECT_FALSE(h.expect_continue);
}

TEST(Http1Request, IncompleteHeadAsksForMoreWhateverTheCut) {
  const std::string data = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
  for (size_t cut = 0; cut < data.size(); ++cut) {
    Head h;
    Error e = Error::kBadField;
    EXPECT_EQ(parse_request_head(std::string_view(data).substr(0, cut), 8192, h, e, cut / 2), 0u)
        << cut;
    EXPECT_EQ(e, Error::kNone) << cut;
    // Resuming from where the previous attempt stopped still finds the end.
    EXPECT_EQ(parse_request_head(data, 8192, h, e, cut), data.size()) << cut;
  }
}

TEST(Http1Request, KeepAliveFollowsVersionAndConnection) {
  struct Case {
    const char* head;
    bool keep;
  } cases[] = {
      {"GET / HTTP/1.1\r\n\r\n", true},
      {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false},
      {"GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n", false},
      {"GET / HTTP/1.0\r\n\r\n", false},
      {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
  };
  for (const auto& c : cases) {
    Head h;
    Error e;
    ASSERT_GT(parse_request_head(c.head, 8192, h, e), 0u) << c.head;
    EXPECT_EQ(h.keep_alive, c.keep) << c.head;
    EXPECT_EQ(h.framing, Framing::kNone);
  }
}

TEST(Http1Request, ExpectContinueAndChunked) {
  Head h;
  Error e;
  ASSERT_GT(parse_request_head("POST /x HTTP/1.1\r\nExpect: 100-Continue\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n",
                               8192, h, e),
            0u);
  EXPECT_TRUE(h.expect_continue);
  EXPECT_EQ(h.framing, Framing::kChunked);
}

TEST(Http1Request, RefusesMalformedHeads) {
  EXPECT_EQ(request_error("GET\r\n\r\n"), Error::kBadStartLine);
  EXPECT_EQ(request_error("GET  / HTTP/1.1\r\n\r\n"), Error::kBadStartLine);
  EXPECT_EQ(request_error("GET / HTTP/1.1 \r\n\r\n"), Error::kBadStartLine);
  EXPECT_EQ(request_error("G(T / HTTP/1.1\r\n\r\n"), Error::kBadStartLine);
  EXPECT_EQ(request_error("GET / FTP/1.1\r\n\r\n"), Error::kBadStartLine);
  EXPECT_EQ(request_error("GET / HTTP/2.0\r\n\r\n"), Error::kBadVersion);
  EXPECT_EQ(request_error("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), Error::kBadField);
  EXPECT_EQ(request_error("GET / HTTP/1.1\r\n: a\r\n\r\n"), Error::kBadField);
  EXPECT_EQ(request_error("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n"), Error::kBadField);
  EXPECT_EQ(request_error("GET / HTTP/1.1\r\nNoColon\r\n\r\n"), Error::kBadField);
  EXPECT_EQ(request_error(std::string("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", 26)), Error::kBadField);
  EXPECT_EQ(request_error("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"), Error::kBadField);
  EXPECT_EQ(request_error("GET / HTTP/1.1\r\nA: b\nc: d\r\n\r\n"), Error::kBadField);
}

TEST(Http1Request, RefusesUntrustworthyFraming) {
  EXPECT_EQ(request_error("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n"),
            Error::kBadContentLength);
  EXPECT_EQ(request_error("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Error::kBadContentLength);
  EXPECT_EQ(request_error("POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n"),
            Error::kBadContentLength);
  EXPECT_EQ(request_error("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            Error::kBadContentLength);
  EXPECT_EQ(request_error("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Error::kBadContentLength);
  EXPECT_EQ(request_error("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n"), Error::kBadContentLength);
  EXPECT_EQ(
      request_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
      Error::kBadTransferEncoding);
  EXPECT_EQ(request_error("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Error::kBadTransferEncoding);
  EXPECT_EQ(request_error("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Error::kBadTransferEncoding);
  EXPECT_EQ(request_error("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Error::kBadTransferEncoding);
  // Repeated equal lengths are one length.
  Head h;
  Error e;
  EXPECT_GT(parse_request_head("POST / HTTP/1.1\r\nContent-Length: 4\r\ncontent-length: 4\r\n\r\n",
                               8192, h, e),
            0u);
  EXPECT_EQ(h.content_length, 4u);
}

TEST(Http1Request, HeadLimit) {
  std::string big = "GET / HTTP/1.1\r\nX-Big: " + std::string(200, 'a') + "\r\n\r\n";
  EXPECT_EQ(request_error(big, 100), Error::kHeadTooLarge);
  // Not yet complete and not yet at the limit: read more.
  EXPECT_EQ(request_error(std::string_view(big).substr(0, 50), 100), Error::kNone);
  Head h;
  Error e;
  EXPECT_EQ(parse_request_head(big, big.size(), h, e), big.size());
}

TEST(Http1Response, StatusLineAndFraming) {
  Head h;
  Error e;
  std::string data = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Ratelimit: 3\r\n\r\nhello";
  ASSERT_EQ(parse_response_head(data, 8192, h, e), data.size() - 5);
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.reason, "OK");
  EXPECT_EQ(h.framing, Framing::kLength);
  EXPECT_EQ(h.field("x-ratelimit"), "3");

  ASSERT_GT(parse_response_head("HTTP/1.1 429\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n", 8192,
                                h, e),
            0u);
  EXPECT_EQ(h.status, 429);
  EXPECT_EQ(h.reason, "");
  ASSERT_GT(parse_response_head("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", 8192, h, e),
            0u);
  EXPECT_EQ(h.framing, Framing::kNone);
  ASSERT_GT(parse_response_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n"
                                "Content-Length: 9\r\n\r\n",
                                8192, h, e),
            0u);
  EXPECT_EQ(h.framing, Framing::kChunked);
  ASSERT_GT(parse_response_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 8192, h, e),
            0u);
  EXPECT_EQ(h.framing, Framing::kUntilClose);
  EXPECT_FALSE(h.keep_alive);
  ASSERT_GT(parse_response_head("HTTP/1.0 200 OK\r\n\r\n", 8192, h, e), 0u);
  EXPECT_EQ(h.framing, Framing::kUntilClose);
  EXPECT_FALSE(h.keep_alive);
  ASSERT_GT(parse_response_head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                                8192, h, e),
            0u);
  EXPECT_FALSE(h.keep_alive);
}

TEST(Http1Response, RefusesMalformedStatusLines) {
  EXPECT_EQ(response_error("HTTP/1.1 20 OK\r\n\r\n"), Error::kBadStartLine);
  EXPECT_EQ(response_error("HTTP/1.1 2000 OK\r\n\r\n"), Error::kBadStartLine);
  EXPECT_EQ(response_error("HTTP/1.1 abc OK\r\n\r\n"), Error::kBadStartLine);
  EXPECT_EQ(response_error("HTTP/1.1 099 OK\r\n\r\n"), Error::kBadStartLine);
  EXPECT_EQ(response_error("ICY 200 OK\r\n\r\n"), Error::kBadStartLine);
  EXPECT_EQ(response_error("HTTP/3.0 200 OK\r\n\r\n"), Error::kBadVersion);
  EXPECT_EQ(response_error("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"), Error::kBadField);
}

TEST(Http1Body, LengthStopsAtTheEndOfTheBody) {
  Head h;
  h.framing = Framing::kLength;
  h.content_length = 5;
  for (size_t cut = 0; cut <= 8; ++cut) {
    Error e;
    size_t used;
    bool done;
    EXPECT_EQ(decode(h, "helloGET", {cut}, e, used, done), "hello");
    EXPECT_EQ(e, Error::kNone);
    EXPECT_EQ(used, 5u);
    EXPECT_TRUE(done);
  }
  Error e;
  size_t used;
  bool done;
  decode(h, "hel", {}, e, used, done);
  EXPECT_FALSE(done);
  decode(h, "hello", {}, e, used, done, 4);
  EXPECT_EQ(e, Error::kBodyTooLarge);
  BodyReader r;
  r.start(h);
  EXPECT_EQ(r.remaining(), 5u);
  EXPECT_EQ(r.on_eof(), Error::kTruncated);
}

TEST(Http1Body, ChunkedDecodesAtEveryCut) {
  Head h;
  h.framing = Framing::kChunked;
  const std::string body =
      "5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
  for (size_t a = 0; a <= body.size(); a += 3) {
    for (size_t b = a; b <= body.size(); b += 7) {
      Error e;
      size_t used;
      bool done;
      EXPECT_EQ(decode(h, body, {a, b}, e, used, done), "helloabcdefghijklmnopqrstuvwxyz")
          << a << " " << b;
      EXPECT_EQ(e, Error::kNone);
      EXPECT_TRUE(done);
      EXPECT_EQ(used, body.size() - 4);
    }
  }
}

TEST(Http1Body, ChunkedRefusesMalformedInput) {
  Head h;
  h.framing = Framing::kChunked;
  for (std::string bad : {"x\r\n", "\r\n", "5\nhello\r\n", "5\r\nhelloX\r\n", "5\r\nhello\r\r",
                          "1234567890123456\r\n", "5\r\r", "3 ;a\nb"}) {
    Error e;
    size_t used;
    bool done;
    decode(h, bad, {}, e, used, done);
    EXPECT_EQ(e, Error::kBadChunk) << bad;
  }
  Error e;
  size_t used;
  bool done;
  decode(h, "10\r\n", {}, e, used, done, 15);
  EXPECT_EQ(e, Error::kBodyTooLarge);
  decode(h, "8\r\n12345678\r\n8\r\n", {}, e, used, done, 15);
  EXPECT_EQ(e, Error::kBodyTooLarge);
  decode(h, "0\r\n" + std::string(20000, 'a'), {}, e, used, done);
  EXPECT_EQ(e, Error::kBadChunk);  // endless trailer
  BodyReader r;
  r.start(h);
  std::string out;
  r.feed("5\r\nhel", out, e);
  EXPECT_EQ(r.on_eof(), Error::kTruncated);
}

TEST(Http1Body, UntilCloseEndsAtEof) {
  Head h;
  h.framing = Framing::kUntilClose;
  BodyReader r;
  r.start(h);
  std::string out;
  Error e;
  EXPECT_EQ(r.feed("abc", out, e), 3u);
  EXPECT_EQ(r.feed("def", out, e), 3u);
  EXPECT_FALSE(r.done());
  EXPECT_EQ(r.on_eof(), Error::kNone);
  EXPECT_TRUE(r.done());
  EXPECT_EQ(out, "abcdef");
}

// Random bytes never crash the parsers and never claim more than they were given.
TEST(Http1Fuzz, RandomInputIsRefusedOrBounded) {
  std::mt19937 rng(7);
  const std::string alphabet = "GET /HTP1.0\r\n:;chunkedContent-Length0123456789abcdef \t\x01";
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s;
    const size_t n = rng() % 120;
    for (size_t i = 0; i < n; ++i) s += alphabet[rng() % alphabet.size()];
    Head h;
    Error e;
    size_t used = parse_request_head(s, 64, h, e);
    EXPECT_LE(used, s.size());
    used = parse_response_head(s, 64, h, e);
    EXPECT_LE(used, s.size());
    Head c;
    c.framing = Framing::kChunked;
    BodyReader r;
    r.start(c, 1000);
    std::string out;
    EXPECT_LE(r.feed(s, out, e), s.size());
    EXPECT_LE(out.size(), 1000u);
  }
}

}  // namespace
}  // namespace switchboard::net::http1

namespace switchboard::net::http1 {
namespace {

TEST(Http1Buffer, KeepsUnreadBytesAndGrowsOnlyToTheLimit) {
  ReadBuffer b;
  auto put = [&](std::string_view s) {
    auto room = b.prepare(s.size(), 64);
    ASSERT_GE(room.size(), s.size());
    std::copy(s.begin(), s.end(), room.begin());
    b.commit(s.size());
  };
  put("hello world");
  EXPECT_EQ(b.data(), "hello world");
  b.consume(6);
  EXPECT_EQ(b.data(), "world");
  put(std::string(40, 'x'));
  EXPECT_EQ(b.data(), "world" + std::string(40, 'x'));
  EXPECT_LE(b.capacity(), 64u);
  // Full up to the limit: no more room than the limit leaves.
  put(std::string(19, 'y'));
  EXPECT_EQ(b.size(), 64u);
  EXPECT_TRUE(b.prepare(1, 64).empty());
  b.consume(64);
  EXPECT_EQ(b.size(), 0u);
  b.shrink_if_empty(16);
  EXPECT_EQ(b.capacity(), 16u);
  put("abc");
  EXPECT_EQ(b.data(), "abc");
}

}  // namespace
}  // namespace switchboard::net::http1

namespace switchboard::net::http1 {
namespace {

TEST(Http1Review, EmptyLinesBeforeARequestAreSkipped) {
  const std::string data = "\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n";
  Head h;
  Error e;
  EXPECT_EQ(parse_request_head(data, 8192, h, e), data.size());
  EXPECT_EQ(h.target, "/x");
  EXPECT_EQ(parse_request_head("\r\n", 8192, h, e), 0u);
  EXPECT_EQ(e, Error::kNone);
}

TEST(Http1Review, ResponsesWithConflictingFramingAreNotReused) {
  Head h;
  Error e;
  ASSERT_GT(parse_response_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                "Content-Length: 5\r\n\r\n",
                                8192, h, e),
            0u);
  EXPECT_EQ(h.framing, Framing::kChunked);
  EXPECT_FALSE(h.keep_alive);
  ASSERT_GT(parse_response_head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n",
                                8192, h, e),
            0u);
  EXPECT_FALSE(h.keep_alive);
}

TEST(Http1Review, TrailersRefuseBareLineFeedsAndControlCharacters) {
  Head h;
  h.framing = Framing::kChunked;
  for (std::string bad :
       {std::string("0\r\n\nGET / HTTP/1.1\r\n\r\n"), std::string("0\r\nA: b\nc\r\n\r\n"),
        std::string("0\r\nA: \x01\r\n\r\n", 11)}) {
    BodyReader r;
    r.start(h);
    std::string out;
    Error e;
    r.feed(bad, out, e);
    EXPECT_EQ(e, Error::kBadChunk) << bad;
  }
}

}  // namespace
}  // namespace switchboard::net::http1
