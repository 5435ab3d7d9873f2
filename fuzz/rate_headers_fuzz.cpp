// Rate-limit response headers (keys/keys.h): Retry-After, retry-after-ms, x-ratelimit-* and
// anthropic-ratelimit-* come from upstreams and decide how long a key cools down.
//
// The input is header lines, `Name: value`, one per line. Beyond "no crash", the harness checks
//   - every duration and remaining count is non-negative, every malformed value is counted once
//     at most, and the longest exhausted reset is one of the resets;
//   - each value given to the three parsers on its own: a duration is never negative; a parsed
//     HTTP date or RFC 3339 time, written back in that format, parses to the same instant (the
//     date arithmetic is self-consistent, and no time overflows on the way).
#include <spdlog/sinks/null_sink.h>

#include <chrono>
#include <ctime>
#include <memory>
#include <string>

#include "common/log.h"
#include "fuzz_util.h"
#include "keys/keys.h"

namespace {

namespace keys = switchboard::keys;
using switchboard::Nanos;
using switchboard::WallTime;

// 2024-05-01T12:00:00Z: a fixed "now", so that a saved input replays the same.
const WallTime kNow = WallTime(std::chrono::seconds(1714564800));

bool to_utc(WallTime t, std::tm& tm, long& nanos) {
  const auto since = t.time_since_epoch();
  auto secs = std::chrono::floor<std::chrono::seconds>(since);
  nanos = static_cast<long>(std::chrono::duration_cast<Nanos>(since - secs).count());
  const std::time_t tt = static_cast<std::time_t>(secs.count());
  return gmtime_r(&tt, &tm) != nullptr;
}

void check_http_date(WallTime t) {
  std::tm tm{};
  long nanos = 0;
  FUZZ_CHECK(to_utc(t, tm, nanos));
  FUZZ_CHECK(nanos == 0);  // HTTP dates have whole seconds
  char buf[64];
  FUZZ_CHECK(std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm) > 0);
  const auto again = keys::parse_http_date(buf);
  FUZZ_CHECK(again && *again == t);
}

void check_rfc3339(WallTime t) {
  std::tm tm{};
  long nanos = 0;
  FUZZ_CHECK(to_utc(t, tm, nanos));
  // The parser takes years 1970..9999; an offset can move an instant just outside.
  if (tm.tm_year + 1900 < 1970 || tm.tm_year + 1900 > 9999) return;
  char buf[64];
  FUZZ_CHECK(std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm) > 0);
  char text[96];
  std::snprintf(text, sizeof text, "%s.%09ldZ", buf, nanos);
  const auto again = keys::parse_rfc3339(text);
  FUZZ_CHECK(again && *again == t);
}

void check_value(std::string_view value) {
  if (auto d = keys::parse_duration(value)) FUZZ_CHECK(d->count() >= 0);
  if (auto t = keys::parse_http_date(value)) check_http_date(*t);
  if (auto t = keys::parse_rfc3339(value)) check_rfc3339(*t);
}

void check_category(const keys::LimitCategory& c) {
  if (c.remaining) FUZZ_CHECK(*c.remaining >= 0);
  if (c.reset) FUZZ_CHECK(c.reset->count() >= 0);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Malformed headers are logged: formatted, redacted and escaped as JSON, then dropped rather
  // than printed for every input.
  switchboard::log::set_sink(std::make_shared<spdlog::sinks::null_sink_mt>(),
                             switchboard::log::Format::kJson);
  switchboard::log::add_secret("sk-fuzz-secret", "openai#1");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in = switchboard::fuzz::as_view(data, size);
  keys::HeaderList headers;
  while (!in.empty()) {
    const size_t eol = in.find('\n');
    std::string_view line = in.substr(0, eol);
    in.remove_prefix(eol == std::string_view::npos ? in.size() : eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      headers.emplace_back(std::string(line), std::string());
    } else {
      headers.emplace_back(std::string(line.substr(0, colon)), std::string(line.substr(colon + 1)));
    }
  }

  const keys::RateLimitInfo info = keys::parse_rate_limit_headers(headers, kNow);
  FUZZ_CHECK(info.parse_errors >= 0 && static_cast<size_t>(info.parse_errors) <= headers.size());
  if (info.retry_after) FUZZ_CHECK(info.retry_after->count() >= 0);
  const keys::LimitCategory* categories[] = {&info.requests, &info.tokens, &info.input_tokens,
                                             &info.output_tokens};
  bool any = info.retry_after.has_value();
  for (const keys::LimitCategory* c : categories) {
    check_category(*c);
    any = any || c->remaining || c->reset;
  }
  FUZZ_CHECK(info.empty() == !any);
  if (auto ex = info.exhausted_for()) {
    bool found = false;
    for (const keys::LimitCategory* c : categories)
      found = found || (c->remaining == 0 && c->reset == *ex);
    FUZZ_CHECK(found);
  }

  for (const keys::Header& h : headers) check_value(h.second);
  return 0;
}
