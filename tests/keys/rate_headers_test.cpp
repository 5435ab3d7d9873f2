#include <gtest/gtest.h>

#include <limits>
#include <string>

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

// ---------------------------------------------------------------------------------------------
// The other providers' families. Header sets are as the providers send them (values from their
// documentation or from logged responses), at a fixed "now": 2024-12-06T15:46:40Z.

const WallTime kNow = at(1'733'500'000);

// Groq: OpenAI's names, but requests are per day (resets of minutes: "2m59.56s") and tokens per
// minute; retry-after only on a 429. Its only x-groq-* header names the region, not a limit.
TEST(ParseHeaders, GroqRecordedHeaders) {
  auto info = parse_rate_limit_headers(HeaderList{{"x-groq-region", "us-east-1"},
                                                  {"x-ratelimit-limit-requests", "14400"},
                                                  {"x-ratelimit-limit-tokens", "18000"},
                                                  {"x-ratelimit-remaining-requests", "14370"},
                                                  {"x-ratelimit-remaining-tokens", "17997"},
                                                  {"x-ratelimit-reset-requests", "2m59.56s"},
                                                  {"x-ratelimit-reset-tokens", "7.66s"}},
                                       kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.remaining, 14370);
  EXPECT_EQ(info.requests.reset, Nanos(milliseconds(179'560)));
  EXPECT_EQ(info.tokens.remaining, 17997);
  EXPECT_EQ(info.tokens.reset, Nanos(milliseconds(7'660)));
  EXPECT_FALSE(info.exhausted_for().has_value());
  EXPECT_FALSE(info.retry_after.has_value());

  // The 429 when the minute's tokens ran out.
  info = parse_rate_limit_headers(HeaderList{{"retry-after", "8"},
                                             {"x-groq-region", "us-east-1"},
                                             {"x-ratelimit-limit-requests", "14400"},
                                             {"x-ratelimit-limit-tokens", "6000"},
                                             {"x-ratelimit-remaining-requests", "14346"},
                                             {"x-ratelimit-remaining-tokens", "0"},
                                             {"x-ratelimit-reset-requests", "2m52.8s"},
                                             {"x-ratelimit-reset-tokens", "7.66s"}},
                                  kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.retry_after, Nanos(seconds(8)));
  EXPECT_EQ(info.requests.reset, Nanos(milliseconds(172'800)));
  EXPECT_EQ(info.exhausted_for(), Nanos(milliseconds(7'660)));  // the tokens, not the day
}

// OpenRouter's free-tier daily cap: bare x-ratelimit-*, the reset in Unix milliseconds (the next
// midnight UTC).
TEST(ParseHeaders, OpenRouterBareHeadersWithEpochMillisReset) {
  auto info = parse_rate_limit_headers(HeaderList{{"X-RateLimit-Limit", "50"},
                                                  {"X-RateLimit-Remaining", "0"},
                                                  {"X-RateLimit-Reset", "1733529600000"}},
                                       kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.remaining, 0);                   // bare headers count requests
  EXPECT_EQ(info.requests.reset, Nanos(seconds(29'600)));  // 8 h 13 min 20 s to midnight
  EXPECT_FALSE(info.tokens.remaining.has_value());
  EXPECT_EQ(info.exhausted_for(), Nanos(seconds(29'600)));

  // Its per-minute limit on a free model: the same, a minute ahead.
  info = parse_rate_limit_headers(HeaderList{{"X-RateLimit-Limit", "20"},
                                             {"X-RateLimit-Remaining", "0"},
                                             {"X-RateLimit-Reset", "1733500020000"}},
                                  kNow);
  EXPECT_EQ(info.exhausted_for(), Nanos(seconds(20)));
}

// Together: bare x-ratelimit-* counts requests (per second; reset in seconds), x-tokenlimit-*
// the tokens.
TEST(ParseHeaders, TogetherRecordedHeaders) {
  auto info = parse_rate_limit_headers(HeaderList{{"x-ratelimit-limit", "10"},
                                                  {"x-ratelimit-remaining", "0"},
                                                  {"x-ratelimit-reset", "1"},
                                                  {"x-tokenlimit-limit", "3333"},
                                                  {"x-tokenlimit-remaining", "3297"}},
                                       kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.remaining, 0);
  EXPECT_EQ(info.requests.reset, Nanos(seconds(1)));
  EXPECT_EQ(info.tokens.remaining, 3297);
  EXPECT_FALSE(info.tokens.reset.has_value());
  EXPECT_EQ(info.exhausted_for(), Nanos(seconds(1)));
}

// Fireworks: requests, prompt tokens (input) and generated tokens (output); no resets at all,
// and x-ratelimit-over-limit is a yes/no hint without a time.
TEST(ParseHeaders, FireworksRecordedHeaders) {
  auto info = parse_rate_limit_headers(
      HeaderList{{"x-ratelimit-limit-requests", "6000"},
                 {"x-ratelimit-remaining-requests", "5999"},
                 {"x-ratelimit-limit-tokens-prompt", "7200000"},
                 {"x-ratelimit-remaining-tokens-prompt", "7193993"},
                 {"x-ratelimit-limit-tokens-cache-adjusted-prompt", "7200000"},
                 {"x-ratelimit-remaining-tokens-cache-adjusted-prompt", "7199000"},
                 {"x-ratelimit-limit-tokens-generated", "72000"},
                 {"x-ratelimit-remaining-tokens-generated", "0"},
                 {"x-ratelimit-over-limit", "yes"}},
      kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.remaining, 5999);
  EXPECT_EQ(info.input_tokens.remaining, 7193993);  // the fewer of the two prompt budgets
  EXPECT_EQ(info.output_tokens.remaining, 0);
  EXPECT_FALSE(info.tokens.remaining.has_value());  // not "tokens" with a "-prompt" window
  EXPECT_FALSE(info.exhausted_for().has_value());   // out of output tokens, but until when?
}

// Cerebras: windows in the names, resets in fractional seconds.
TEST(ParseHeaders, CerebrasRecordedHeaders) {
  auto info =
      parse_rate_limit_headers(HeaderList{{"x-ratelimit-limit-requests-day", "14400"},
                                          {"x-ratelimit-limit-tokens-minute", "60000"},
                                          {"x-ratelimit-remaining-requests-day", "14399"},
                                          {"x-ratelimit-remaining-tokens-minute", "0"},
                                          {"x-ratelimit-reset-requests-day", "33011.382867"},
                                          {"x-ratelimit-reset-tokens-minute", "11.382867"}},
                               kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.remaining, 14399);
  EXPECT_EQ(info.requests.reset, Nanos(33'011'382'867'000));
  EXPECT_EQ(info.tokens.remaining, 0);
  EXPECT_EQ(info.tokens.reset, Nanos(11'382'867'000));
  EXPECT_EQ(info.exhausted_for(), Nanos(11'382'867'000));
}

// Two windows of one category: the remaining count keeps the reset of its own window, whatever
// the order of the headers. Read one header at a time, the exhausted minute would borrow the
// day's nine hours.
TEST(ParseHeaders, CerebrasWindowsOfOneCategoryPairUp) {
  auto info =
      parse_rate_limit_headers(HeaderList{{"X-Ratelimit-Remaining-Requests-Minute", "0"},
                                          {"X-Ratelimit-Reset-Requests-Minute", "45.5"},
                                          {"X-Ratelimit-Remaining-Requests-Day", "9500"},
                                          {"X-Ratelimit-Reset-Requests-Day", "33011.382867"}},
                               kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.remaining, 0);
  EXPECT_EQ(info.requests.reset, Nanos(milliseconds(45'500)));
  EXPECT_EQ(info.exhausted_for(), Nanos(milliseconds(45'500)));

  // Neither exhausted: the one with fewer left binds, with its reset.
  info = parse_rate_limit_headers(HeaderList{{"x-ratelimit-remaining-requests-minute", "7"},
                                             {"x-ratelimit-reset-requests-day", "33011.382867"},
                                             {"x-ratelimit-remaining-requests-day", "9500"},
                                             {"x-ratelimit-reset-requests-minute", "45.5"}},
                                  kNow);
  EXPECT_EQ(info.requests.remaining, 7);
  EXPECT_EQ(info.requests.reset, Nanos(milliseconds(45'500)));

  // Both exhausted: the longer wait.
  info = parse_rate_limit_headers(HeaderList{{"x-ratelimit-remaining-requests-minute", "0"},
                                             {"x-ratelimit-reset-requests-minute", "45.5"},
                                             {"x-ratelimit-remaining-requests-day", "0"},
                                             {"x-ratelimit-reset-requests-day", "33011.382867"}},
                                  kNow);
  EXPECT_EQ(info.exhausted_for(), Nanos(33'011'382'867'000));
}

// Mistral (current names): requests per minute and per 10 s ("req"), tokens per minute and per
// month, no resets; a spent month has no reset unless one is given.
TEST(ParseHeaders, MistralRecordedHeaders) {
  auto info =
      parse_rate_limit_headers(HeaderList{{"x-ratelimit-limit-req-minute", "60"},
                                          {"x-ratelimit-remaining-req-minute", "59"},
                                          {"x-ratelimit-limit-req-10-second", "10"},
                                          {"x-ratelimit-remaining-req-10-second", "0"},
                                          {"x-ratelimit-limit-tokens-minute", "5000000"},
                                          {"x-ratelimit-remaining-tokens-minute", "4999911"},
                                          {"x-ratelimit-limit-tokens-month", "1000000000000"},
                                          {"x-ratelimit-remaining-tokens-month", "999998798434"},
                                          {"x-ratelimit-tokens-query-cost", "52"}},
                               kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.remaining, 0);  // the 10-second window
  EXPECT_FALSE(info.requests.reset.has_value());
  EXPECT_EQ(info.tokens.remaining, 4999911);  // the minute binds before the month
  EXPECT_FALSE(info.exhausted_for().has_value());

  // The month spent: remaining 0, but no invented reset.
  info = parse_rate_limit_headers(HeaderList{{"x-ratelimit-remaining-tokens-minute", "500000"},
                                             {"x-ratelimit-remaining-tokens-month", "0"}},
                                  kNow);
  EXPECT_EQ(info.tokens.remaining, 0);
  EXPECT_FALSE(info.tokens.reset.has_value());
  EXPECT_FALSE(info.exhausted_for().has_value());

  // With a reset for the month, that long wait counts.
  info = parse_rate_limit_headers(HeaderList{{"x-ratelimit-remaining-tokens-minute", "500000"},
                                             {"x-ratelimit-reset-tokens-minute", "12"},
                                             {"x-ratelimit-remaining-tokens-month", "0"},
                                             {"x-ratelimit-reset-tokens-month", "1735689600"}},
                                  kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.exhausted_for(), Nanos(seconds(2'189'600)));  // to 2025-01-01T00:00:00Z
}

// Mistral (the earlier "by size" names): the minute's tokens, with a reset in seconds.
TEST(ParseHeaders, MistralRateLimitBySizeRecordedHeaders) {
  auto info =
      parse_rate_limit_headers(HeaderList{{"ratelimitbysize-limit", "500000"},
                                          {"ratelimitbysize-query-cost", "32007"},
                                          {"ratelimitbysize-remaining", "0"},
                                          {"ratelimitbysize-reset", "19"},
                                          {"x-ratelimitbysize-limit-minute", "500000"},
                                          {"x-ratelimitbysize-limit-month", "1000000000"},
                                          {"x-ratelimitbysize-remaining-minute", "0"},
                                          {"x-ratelimitbysize-remaining-month", "999967993"}},
                               kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.tokens.remaining, 0);
  EXPECT_EQ(info.tokens.reset, Nanos(seconds(19)));
  EXPECT_FALSE(info.requests.remaining.has_value());
  EXPECT_EQ(info.exhausted_for(), Nanos(seconds(19)));
}

// The IETF draft, up to -06: three fields, reset in delta seconds. RateLimit-Limit may be a list
// with the policy; it carries no state.
TEST(ParseHeaders, IetfDraftSeparateFields) {
  auto info = parse_rate_limit_headers(HeaderList{{"RateLimit-Limit", "100, 100;w=60"},
                                                  {"RateLimit-Remaining", "0"},
                                                  {"RateLimit-Reset", "30"}},
                                       kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.remaining, 0);
  EXPECT_EQ(info.requests.reset, Nanos(seconds(30)));
  EXPECT_EQ(info.exhausted_for(), Nanos(seconds(30)));
}

// The IETF draft's single RateLimit field: the -07 key=value shape and the structured one
// (Cloudflare's API sends the latter), several policies in one field.
TEST(ParseHeaders, IetfDraftCombinedField) {
  auto info =
      parse_rate_limit_headers(HeaderList{{"RateLimit-Policy", "100;w=60"},
                                          {"RateLimit", "limit=100, remaining=0, reset=30"}},
                               kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.remaining, 0);
  EXPECT_EQ(info.exhausted_for(), Nanos(seconds(30)));

  info = parse_rate_limit_headers(HeaderList{{"ratelimit-policy", "\"default\";q=1200;w=300"},
                                             {"ratelimit", "\"default\";r=1199;t=1"}},
                                  kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.remaining, 1199);
  EXPECT_EQ(info.requests.reset, Nanos(seconds(1)));
  EXPECT_FALSE(info.exhausted_for().has_value());

  info = parse_rate_limit_headers(
      HeaderList{{"RateLimit-Policy", "\"burst\";q=100;w=60, \"daily\";q=1000;w=86400"},
                 {"RateLimit", "\"daily\";r=420;t=5000, \"burst\";r=0;t=30"}},
      kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.remaining, 0);
  EXPECT_EQ(info.requests.reset, Nanos(seconds(30)));  // the burst's, not the day's
  EXPECT_EQ(info.exhausted_for(), Nanos(seconds(30)));

  // Malformed: each counted once, none used.
  info = parse_rate_limit_headers(HeaderList{{"RateLimit", "limit=100, remaining=lots, reset=30"},
                                             {"RateLimit", "\"default\";r=-1;t=5"},
                                             {"RateLimit", "\"default\";r=0, remaining=0"},
                                             {"RateLimit", "limit=100"},
                                             {"RateLimit", ";;,,"},
                                             {"RateLimit", ""}},
                                  kNow);
  EXPECT_EQ(info.parse_errors, 6);
  EXPECT_TRUE(info.empty());
}

// A plain-number reset is Unix milliseconds from 1e12, Unix seconds from 1e9, else a delta in
// seconds; other shapes are durations, RFC 3339 times or HTTP dates. Every value below means
// "in 90 seconds" (or the stated other wait) at kNow.
TEST(ParseHeaders, ResetEpochMillisEpochSecondsOrDelta) {
  struct Case {
    const char* value;
    Nanos expected;
  };
  const Case cases[] = {
      {"90", seconds(90)},
      {"0.5", milliseconds(500)},
      {"1733500090", seconds(90)},             // Unix seconds
      {"1733500090000", seconds(90)},          // Unix milliseconds (OpenRouter)
      {"1733500000250", milliseconds(250)},    // milliseconds keep their precision
      {"1733500090.5", milliseconds(90'500)},  // fractional Unix seconds
      {"1m30s", seconds(90)},
      {"2024-12-06T15:48:10Z", seconds(90)},
      {"Fri, 06 Dec 2024 15:48:10 GMT", seconds(90)},
      {"999999999", seconds(999'999'999)},  // just under 1e9: still a delta (31.7 years)
      {"1000000000", Nanos(0)},             // 1e9: Unix seconds, 2001, in the past
      {"9000000000000", seconds(9'000'000'000 - 1'733'500'000)},  // ms in 2255: the clock holds
  };
  for (const Case& c : cases) {
    auto info = parse_rate_limit_headers(
        HeaderList{{"x-ratelimit-remaining", "0"}, {"x-ratelimit-reset", c.value}}, kNow);
    EXPECT_EQ(info.parse_errors, 0) << c.value;
    EXPECT_EQ(info.requests.reset, c.expected) << c.value;
    EXPECT_EQ(info.exhausted_for(), c.expected) << c.value;
  }
  // The same rule holds for the resets of the suffixed names: an OpenAI-compatible server that
  // writes a Unix time there no longer cools a key for 55 years.
  auto info = parse_rate_limit_headers(HeaderList{{"x-ratelimit-remaining-requests", "0"},
                                                  {"x-ratelimit-reset-requests", "1733500060"}},
                                       kNow);
  EXPECT_EQ(info.exhausted_for(), Nanos(seconds(60)));
  info = parse_rate_limit_headers(
      HeaderList{{"RateLimit-Remaining", "0"}, {"RateLimit-Reset", "1733500045"}}, kNow);
  EXPECT_EQ(info.exhausted_for(), Nanos(seconds(45)));
}

TEST(ParseHeaders, ResetInThePastIsZero) {
  for (const char* past : {"1733499000", "1733499999999", "1700000000000", "2024-12-06T15:00:00Z",
                           "Fri, 06 Dec 2024 15:46:39 GMT"}) {
    auto info = parse_rate_limit_headers(
        HeaderList{{"X-RateLimit-Remaining", "0"}, {"X-RateLimit-Reset", past}}, kNow);
    EXPECT_EQ(info.parse_errors, 0) << past;
    EXPECT_EQ(info.requests.reset, Nanos(0)) << past;
    EXPECT_EQ(info.exhausted_for(), Nanos(0)) << past;  // usable now, not never
  }
}

TEST(ParseHeaders, GarbageInTheNewFamiliesIsCountedAndIgnored) {
  HeaderList h;
  for (const char* bad :
       {"", "soon", "-5", "+5", "1e3", "0x10", "nan", "inf", "12abc", "1,5", "5 s", "--1",
        "99999999999999999999999",  // Unix ms far past the clock's end (2262)
        "9223372036854",            // Unix ms just past it
        "999999999999",             // under 1e12: Unix seconds, year 33658
        "9999-12-31T23:59:59Z"}) {
    h.emplace_back("x-ratelimit-reset", bad);
  }
  for (const char* bad : {"", "lots", "-1", "1e3", "0x10", "nan", "12abc"}) {
    h.emplace_back("x-ratelimit-remaining", bad);
    h.emplace_back("x-tokenlimit-remaining", bad);
    h.emplace_back("RateLimit-Remaining", bad);
    h.emplace_back("x-ratelimitbysize-remaining-month", bad);
    h.emplace_back("x-ratelimit-remaining-tokens-prompt", bad);
  }
  std::string junk;
  for (int i = 0; i < 256; ++i) junk.push_back(static_cast<char>(i));
  for (const char* name : {"x-ratelimit-reset-requests-day", "ratelimitbysize-reset",
                           "RateLimit-Reset", "RateLimit", "x-tokenlimit-reset"}) {
    h.emplace_back(name, junk);
    h.emplace_back(name, std::string(10000, '9'));
  }
  auto info = parse_rate_limit_headers(h, kNow);
  EXPECT_EQ(info.parse_errors, 16 + 7 * 5 + 5 * 2);
  EXPECT_TRUE(info.empty());
}

// A huge count in the families that take decimals is "plenty", bounded rather than an error
// (OpenAI's and Anthropic's integers stay strict, as before).
TEST(ParseHeaders, HugeRemainingIsBounded) {
  auto info = parse_rate_limit_headers(
      HeaderList{{"x-tokenlimit-remaining", "99999999999999999999999"},
                 {"x-ratelimit-remaining", "12.9"},
                 {"x-ratelimit-remaining-tokens", "99999999999999999999999"}},
      kNow);
  EXPECT_EQ(info.parse_errors, 1);  // the OpenAI name
  EXPECT_EQ(info.tokens.remaining, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(info.requests.remaining, 12);  // floored
}

TEST(ParseHeaders, MixedCaseAndPaddedNames) {
  auto info = parse_rate_limit_headers(HeaderList{{"X-RATELIMIT-REMAINING", "0"},
                                                  {"x-RateLimit-Reset", " 20 "},
                                                  {" X-TokenLimit-Remaining ", "0"},
                                                  {"X-TOKENLIMIT-RESET", "1m"},
                                                  {"X-RateLimit-Remaining-Tokens-Generated", "0"},
                                                  {"X-RateLimit-Reset-Tokens-Generated", "5s"}},
                                       kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.reset, Nanos(seconds(20)));
  EXPECT_EQ(info.tokens.remaining, 0);
  EXPECT_EQ(info.tokens.reset, Nanos(seconds(60)));
  EXPECT_EQ(info.output_tokens.reset, Nanos(seconds(5)));
  EXPECT_EQ(info.exhausted_for(), Nanos(seconds(60)));

  info = parse_rate_limit_headers(
      HeaderList{{"RATELIMIT", "\"Default\";R=0;T=7"}, {"RateLimitBySize-Reset", "3"}}, kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_EQ(info.requests.reset, Nanos(seconds(7)));
  EXPECT_EQ(info.tokens.reset, Nanos(seconds(3)));
}

// Near misses of the new names are other headers: ignored, not counted.
TEST(ParseHeaders, NearMissNamesAreIgnored) {
  auto info = parse_rate_limit_headers(HeaderList{{"x-ratelimit-remaining-", "0"},
                                                  {"x-ratelimit-remaining-tokens_usage_based", "0"},
                                                  {"x-ratelimit-reset-tokens-fortnight", "??"},
                                                  {"x-ratelimit-remaining-requests-", "??"},
                                                  {"x-ratelimit-remaining-bananas", "0"},
                                                  {"x-ratelimit-over-limit", "yes"},
                                                  {"x-ratelimit-limit", "??"},
                                                  {"x-ratelimit-used", "??"},
                                                  {"ratelimit-policy", "??"},
                                                  {"ratelimit-limit", "??"},
                                                  {"ratelimitbysize-query-cost", "??"},
                                                  {"x-tokenlimit-remaining-minute", "??"},
                                                  {"x-ratelimits", "??"},
                                                  {"ratelimit-remaining-requests", "??"}},
                                       kNow);
  EXPECT_EQ(info.parse_errors, 0);
  EXPECT_TRUE(info.empty());
}

}  // namespace
}  // namespace switchboard::keys
