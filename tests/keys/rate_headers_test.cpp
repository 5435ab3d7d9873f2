#include <gtest/gtest.h>

#include "keys/keys.h"

namespace switchboard::keys {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

WallTime at(int64_t unix_seconds) {
  return WallTime(seconds(unix_seconds));
}

TEST(ParseDuration, GoStyleDurations) {
  EXPECT_EQ(parse_duration("1s"), Nanos(seconds(1)));
  EXPECT_EQ(parse_duration("6m0s"), Nanos(seconds(360)));  // not six seconds
  EXPECT_EQ(parse_duration("20ms"), Nanos(milliseconds(20)));
  EXPECT_EQ(parse_duration("1h2m3.5s"), Nanos(milliseconds(3'723'500)));
  EXPECT_EQ(parse_duration("250us"), Nanos(250'000));
  EXPECT_EQ(parse_duration("2m59.56s"), Nanos(milliseconds(179'560)));
  EXPECT_EQ(parse_duration("0"), Nanos(0));
  EXPECT_EQ(parse_duration("0s"), Nanos(0));
  EXPECT_EQ(parse_duration(" 7 "), Nanos(seconds(7)));  // bare number = seconds
  EXPECT_EQ(parse_duration("1.5"), Nanos(milliseconds(1500)));
}

TEST(ParseDuration, MalformedIsRejected) {
  for (const char* bad : {"", "abc", "-1s", "1x", "s", "1s2", "1m-2s", ".s", "1..2s", "1e3s",
                          "99999999999999999999h", "nan", "inf"}) {
    EXPECT_FALSE(parse_duration(bad).has_value()) << bad;
  }
}

TEST(ParseHttpDate, AllThreeForms) {
  const WallTime expected = at(784111777);  // Sun, 06 Nov 1994 08:49:37 GMT
  EXPECT_EQ(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), expected);
  EXPECT_EQ(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), expected);
  EXPECT_EQ(parse_http_date("Sun Nov  6 08:49:37 1994"), expected);
  EXPECT_EQ(parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT"), at(1709164800));
}

TEST(ParseHttpDate, MalformedIsRejected) {
  for (const char* bad :
       {"", "yesterday", "Sun, 32 Nov 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 06 Nov 1994 08:49 GMT", "06 Nov 1994 08:49:37 GMT",
        "Thu, 29 Feb 2023 00:00:00 GMT", "Sun, 06 Nov 1994 08:49:37 GMT GMT"}) {
    EXPECT_FALSE(parse_http_date(bad).has_value()) << bad;
  }
}

TEST(ParseRfc3339, UtcOffsetsAndFractions) {
  EXPECT_EQ(parse_rfc3339("2024-05-01T12:00:30Z"), at(1714564830));
  EXPECT_EQ(parse_rfc3339("2024-05-01t12:00:30z"), at(1714564830));
  EXPECT_EQ(parse_rfc3339("2024-05-01T14:00:30+02:00"), at(1714564830));
  EXPECT_EQ(parse_rfc3339("2024-05-01T11:30:30-00:30"), at(1714564830));
  EXPECT_EQ(parse_rfc3339("2024-05-01T12:00:30.25Z"), at(1714564830) + milliseconds(250));
  for (const char* bad :
       {"", "2024-05-01", "2024-05-01T12:00:30", "2024-13-01T12:00:30Z", "2024-05-01T12:00:30+0200",
        "2024-05-01T12:00:30.Z", "2024-05-01T12:00:30Zjunk", "24-05-01T12:00:30Z"}) {
    EXPECT_FALSE(parse_rfc3339(bad).has_value()) << bad;
  }
}

// Found by fuzz/rate_headers_fuzz: a date past 2262 overflowed the clock's int64 nanoseconds.
TEST(ParseRfc3339, BeyondTheClockIsRejected) {
  EXPECT_TRUE(parse_rfc3339("2262-01-01T00:00:00Z").has_value());
  EXPECT_FALSE(parse_rfc3339("2263-01-01T00:00:00Z").has_value());
  EXPECT_FALSE(parse_rfc3339("9999-12-31T23:59:60.999999999Z").has_value());
  EXPECT_FALSE(parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT").has_value());
  auto info = parse_rate_limit_headers(
      HeaderList{{"anthropic-ratelimit-tokens-reset", "9999-12-31T23:59:59Z"}}, at(1'700'000'000));
  EXPECT_EQ(info.parse_errors, 1);
  EXPECT_FALSE(info.tokens.reset.has_value());
}

TEST(ParseHeaders, RetryAfterSecondsDateAndMs) {
  const WallTime now = at(1'700'000'000);
  auto info = parse_rate_limit_headers(HeaderList{{"Retry-After", "30"}}, now);
  EXPECT_EQ(info.retry_after, Nanos(seconds(30)));
  EXPECT_EQ(info.parse_errors, 0);

  info = parse_rate_limit_headers(HeaderList{{"retry-after", "Tue, 14 Nov 2023 22:14:50 GMT"}},
                                  now);  // 1'700'000'090
  EXPECT_EQ(info.retry_after, Nanos(seconds(90)));

  info = parse_rate_limit_headers(HeaderList{{"Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT"}},
                                  now);  // in the past: usable now
  EXPECT_EQ(info.retry_after, Nanos(0));

  info = parse_rate_limit_headers(HeaderList{{"Retry-After-Ms", "1500"}}, now);
  EXPECT_EQ(info.retry_after, Nanos(milliseconds(1500)));

  // Both: the longer wins.
  info =
      parse_rate_limit_headers(HeaderList{{"retry-after-ms", "1500"}, {"retry-after", "2"}}, now);
  EXPECT_EQ(info.retry_after, Nanos(seconds(2)));
}

TEST(ParseHeaders, OpenAiRateLimitHeaders) {
  auto info = parse_rate_limit_headers(HeaderList{{"x-ratelimit-limit-requests", "500"},
                                                  {"X-RateLimit-Remaining-Requests", "0"},
                                                  {"x-ratelimit-reset-requests", "6m0s"},
                                                  {"x-ratelimit-remaining-tokens", "1500"},
                                                  {"x-ratelimit-reset-tokens", "20ms"}},
                                       WallTime{});
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.remaining, 0);
  EXPECT_EQ(info.requests.reset, Nanos(seconds(360)));
  EXPECT_EQ(info.tokens.remaining, 1500);
  EXPECT_EQ(info.tokens.reset, Nanos(milliseconds(20)));
  EXPECT_EQ(info.exhausted_for(), Nanos(seconds(360)));
  EXPECT_FALSE(info.retry_after.has_value());
}

TEST(ParseHeaders, AnthropicRateLimitHeaders) {
  const WallTime now = at(1714564800);  // 2024-05-01T11:00:00Z... minus 30 s below
  auto info = parse_rate_limit_headers(
      HeaderList{{"anthropic-ratelimit-requests-remaining", "10"},
                 {"anthropic-ratelimit-requests-reset", "2024-05-01T12:00:30Z"},
                 {"anthropic-ratelimit-tokens-remaining", "0"},
                 {"anthropic-ratelimit-tokens-reset", "2024-05-01T12:00:20Z"},
                 {"anthropic-ratelimit-input-tokens-remaining", "0"},
                 {"anthropic-ratelimit-input-tokens-reset", "2024-05-01T12:00:25Z"},
                 {"anthropic-ratelimit-output-tokens-remaining", "5"},
                 {"anthropic-ratelimit-output-tokens-reset", "2024-05-01T11:59:00Z"}},
      now);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.remaining, 10);
  EXPECT_EQ(info.requests.reset, Nanos(seconds(30)));
  EXPECT_EQ(info.tokens.reset, Nanos(seconds(20)));
  EXPECT_EQ(info.input_tokens.remaining, 0);
  EXPECT_EQ(info.input_tokens.reset, Nanos(seconds(25)));
  EXPECT_EQ(info.output_tokens.reset, Nanos(0));  // in the past: clamped
  // Only exhausted categories count: tokens (20 s) and input tokens (25 s).
  EXPECT_EQ(info.exhausted_for(), Nanos(seconds(25)));
}

TEST(ParseHeaders, MalformedValuesAreCountedAndIgnored) {
  auto info = parse_rate_limit_headers(
      HeaderList{{"Retry-After", "soon"},
                 {"retry-after-ms", "-5"},
                 {"x-ratelimit-remaining-requests", "lots"},
                 {"x-ratelimit-reset-requests", "6 minutes"},
                 {"anthropic-ratelimit-tokens-reset", "tomorrow"},
                 {"anthropic-ratelimit-tokens-remaining", "-1"},
                 {"x-ratelimit-reset-tokens", "1s"},  // good one among them
                 {"content-type", "application/json"},
                 {"x-ratelimit-something-else", "???"}},
      WallTime{});
  EXPECT_EQ(info.parse_errors, 6);
  EXPECT_FALSE(info.retry_after.has_value());
  EXPECT_FALSE(info.requests.remaining.has_value());
  EXPECT_FALSE(info.requests.reset.has_value());
  EXPECT_FALSE(info.tokens.remaining.has_value());
  EXPECT_EQ(info.tokens.reset, Nanos(seconds(1)));
  EXPECT_FALSE(info.exhausted_for().has_value());
}

TEST(ParseHeaders, GarbageNeverCrashes) {
  std::string junk;
  for (int i = 0; i < 256; ++i) junk.push_back(static_cast<char>(i));
  HeaderList h;
  for (const char* name : {"retry-after", "retry-after-ms", "x-ratelimit-reset-tokens",
                           "x-ratelimit-remaining-tokens", "anthropic-ratelimit-requests-reset"}) {
    h.emplace_back(name, junk);
    h.emplace_back(name, std::string(10000, '9'));
    h.emplace_back(name, "");
  }
  auto info = parse_rate_limit_headers(h, WallTime{});
  EXPECT_EQ(info.parse_errors, 15);
  EXPECT_TRUE(info.empty());
}

}  // namespace
}  // namespace switchboard::keys
