// Parsing of rate-limit response headers. Every parser here is total: malformed input gives
// nullopt (counted by the caller), never an exception or undefined behaviour.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "common/log.h"
#include "keys/header_values.h"
#include "keys/keys.h"

namespace switchboard::keys {

using detail::iequals;
using detail::is_digit;
using detail::parse_int;
using detail::parse_unsigned_decimal;
using detail::seconds_to_nanos;
using detail::trim;

namespace {
// ---------------------------------------------------------------------------------------------
// Header families. Every recognised header names one field (remaining or reset) of one window of
// one category; a window is what a provider resets as a unit (OpenAI's requests, Cerebras's
// requests per day, Mistral's tokens per month, an IETF policy). A remaining count and a reset
// pair up only within their window, and the windows of a category are folded into it at the end
// (Windows::fold), so that a daily reset never lends its hours to an exhausted minute.

enum class Field { kNone, kRemaining, kReset, kCombined };

enum class ResetForm {
  kRfc3339,   // anthropic-ratelimit-*-reset: an RFC 3339 time, nothing else
  kFlexible,  // everything else: see parse_reset
};

struct Recognised {
  LimitCategory* category = nullptr;
  Field field = Field::kNone;
  ResetForm reset_form = ResetForm::kFlexible;
  // Integers only for the names known before the other families were added (OpenAI's and
  // Anthropic's, which always send integers); the others also take "12.5", floored.
  bool fractional_remaining = true;
  std::string window;  // pairs a remaining with its reset; unique per (category, window)
};

// "minute", "day", "month", "10-second", "5-minute": a window's name (Cerebras, Mistral).
bool is_window(std::string_view s) {
  size_t digits = 0;
  while (digits < s.size() && is_digit(s[digits])) ++digits;
  if (digits > 0) {
    if (digits > 6 || digits == s.size() || s[digits] != '-') return false;
    s.remove_prefix(digits + 1);
  }
  for (std::string_view unit : {"second", "minute", "hour", "day", "week", "month"}) {
    if (s == unit) return true;
  }
  return false;
}

// "" or "-" and a window.
bool is_window_suffix(std::string_view s) {
  return s.empty() || (s.front() == '-' && is_window(s.substr(1)));
}

// The part after "x-ratelimit-remaining-" or "x-ratelimit-reset-": a category, then an optional
// window. Fireworks splits tokens into prompt (input) and generated (output); Mistral writes
// "req" for requests. Longer names first, so that "tokens-prompt" is not "tokens" + "-prompt".
bool x_ratelimit_suffix(std::string_view rest, RateLimitInfo& info, Recognised& r) {
  struct Name {
    std::string_view text;
    LimitCategory RateLimitInfo::*category;
  };
  static constexpr Name kNames[] = {
      {"tokens-cache-adjusted-prompt", &RateLimitInfo::input_tokens},
      {"tokens-generated", &RateLimitInfo::output_tokens},
      {"tokens-prompt", &RateLimitInfo::input_tokens},
      {"requests", &RateLimitInfo::requests},
      {"tokens", &RateLimitInfo::tokens},
      {"req", &RateLimitInfo::requests},
  };
  for (const Name& n : kNames) {
    if (!rest.starts_with(n.text)) continue;
    std::string_view window = rest.substr(n.text.size());
    if (!is_window_suffix(window)) continue;
    r.category = &(info.*n.category);
    r.fractional_remaining = !window.empty() || (n.text != "requests" && n.text != "tokens");
    r.window = "x:" + std::string(rest);
    return true;
  }
  return false;
}

// Reads "remaining" / "reset" at the start of `n` (then "-" and a rest, or the end).
Field remaining_or_reset(std::string_view& n) {
  for (auto [word, field] : {std::pair{std::string_view("remaining"), Field::kRemaining},
                             std::pair{std::string_view("reset"), Field::kReset}}) {
    if (n == word) {
      n = {};
      return field;
    }
    if (n.starts_with(word) && n.size() > word.size() + 1 && n[word.size()] == '-') {
      n.remove_prefix(word.size() + 1);
      return field;
    }
  }
  return Field::kNone;
}

Recognised recognise(std::string_view name, RateLimitInfo& info) {
  // Most response headers are none of ours: only lower-case (and allocate) those that might be.
  auto contains_ci = [&](std::string_view needle) {
    if (name.size() < needle.size()) return false;
    for (size_t i = 0; i + needle.size() <= name.size(); ++i) {
      if (iequals(name.substr(i, needle.size()), needle)) return true;
    }
    return false;
  };
  if (!contains_ci("ratelimit") && !contains_ci("tokenlimit")) return {};
  std::string lower(name);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string_view n = lower;
  Recognised r;

  if (n.starts_with("x-ratelimit-")) {
    // OpenAI, Groq, Together, Fireworks, Cerebras, Mistral, OpenRouter and many servers that
    // copy them: x-ratelimit-{remaining,reset}[-<category>[-<window>]].
    n.remove_prefix(12);
    r.field = remaining_or_reset(n);
    if (r.field == Field::kNone) return {};
    if (n.empty()) {
      // Bare x-ratelimit-remaining / -reset (OpenRouter, Together, GitHub-style servers) count
      // requests: Together documents them as "based on requests" beside its x-tokenlimit-* pair
      // for tokens, OpenRouter's limits are requests per minute or per day, and the servers that
      // copied the convention from REST APIs count calls. (exhausted_for takes any exhausted
      // category, so the choice only decides which windows the bare pair is folded with.)
      r.category = &info.requests;
      r.window = "x-bare";
      return r;
    }
    if (!x_ratelimit_suffix(n, info, r)) return {};
    return r;
  }
  if (n.starts_with("anthropic-ratelimit-")) {
    n.remove_prefix(20);
    if (n.ends_with("-remaining")) {
      r.field = Field::kRemaining;
      n.remove_suffix(10);
    } else if (n.ends_with("-reset")) {
      r.field = Field::kReset;
      n.remove_suffix(6);
    } else {
      return {};
    }
    r.reset_form = ResetForm::kRfc3339;
    r.fractional_remaining = false;
    r.window = "anthropic";
    if (n == "requests") {
      r.category = &info.requests;
    } else if (n == "tokens") {
      r.category = &info.tokens;
    } else if (n == "input-tokens") {
      r.category = &info.input_tokens;
    } else if (n == "output-tokens") {
      r.category = &info.output_tokens;
    } else {
      return {};
    }
    return r;
  }
  if (n.starts_with("x-ratelimitbysize-") || n.starts_with("ratelimitbysize-")) {
    // Mistral's token budget: ratelimitbysize-{remaining,reset} for the minute window (reset in
    // seconds), x-ratelimitbysize-remaining-{minute,month} per window. Always tokens.
    const bool x = n.front() == 'x';
    n.remove_prefix(x ? 18 : 16);
    r.field = remaining_or_reset(n);
    if (r.field == Field::kNone || !(n.empty() || is_window(n))) return {};
    r.category = &info.tokens;
    r.window = (x ? "xbysize:" : "bysize:") + std::string(n);
    return r;
  }
  if (n.starts_with("x-tokenlimit-")) {
    // Together's token budget next to its (request) x-ratelimit-*.
    n.remove_prefix(13);
    r.field = remaining_or_reset(n);
    if (r.field == Field::kNone || !n.empty()) return {};
    r.category = &info.tokens;
    r.window = "tokenlimit";
    return r;
  }
  if (n.starts_with("ratelimit-")) {
    // IETF draft-ietf-httpapi-ratelimit-headers up to -06: RateLimit-Remaining and
    // RateLimit-Reset (delta seconds). RateLimit-Limit and RateLimit-Policy carry no state.
    n.remove_prefix(10);
    r.field = remaining_or_reset(n);
    if (r.field == Field::kNone || !n.empty()) return {};
    r.category = &info.requests;
    r.window = "ietf";
    return r;
  }
  if (n == "ratelimit") {
    r.field = Field::kCombined;
    r.category = &info.requests;
    return r;
  }
  return {};
}

void keep_longer(std::optional<Nanos>& slot, Nanos v) {
  if (!slot || v > *slot) slot = v;
}

Nanos until(WallTime t, WallTime now) {
  auto d = std::chrono::duration_cast<Nanos>(t - now);
  return d.count() < 0 ? Nanos(0) : d;
}

// A remaining count: a non-negative integer, or (fractional) a decimal floored, with values past
// int64 bounded to its maximum (it is "plenty" either way).
std::optional<int64_t> parse_remaining(std::string_view s, bool fractional) {
  if (!fractional) return parse_int(s);
  auto v = parse_unsigned_decimal(trim(s));
  if (!v) return std::nullopt;
  if (*v >= 9.0e18) return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(std::floor(*v));
}

// Thresholds between the three readings of a plain number (see parse_reset).
constexpr double kEpochMillisFrom = 1e12;  // 2001-09-09 as Unix milliseconds
constexpr double kEpochSecondsFrom = 1e9;  // 2001-09-09 as Unix seconds; as a delta, 31.7 years

// From a Unix time, counted in units of 1/`per_second` s, to the wait from `now`; nullopt past the
// clock's end (2262). Whole units are converted exactly ("1733500000250" ms is 250 ms after a
// whole second, not that less a rounding of 1.7e18 ns in a double).
std::optional<Nanos> until_epoch(double units, int64_t per_second, WallTime now) {
  constexpr int64_t kMaxSecs =
      std::chrono::duration_cast<std::chrono::seconds>(WallTime::duration::max()).count() - 1;
  if (!(units >= 0) || units / static_cast<double>(per_second) >= static_cast<double>(kMaxSecs)) {
    return std::nullopt;
  }
  const double whole = std::floor(units);
  const int64_t ns_per_unit = 1'000'000'000 / per_second;
  const auto ns = Nanos(static_cast<int64_t>(whole) * ns_per_unit +
                        std::llround((units - whole) * static_cast<double>(ns_per_unit)));
  return until(WallTime(std::chrono::duration_cast<WallTime::duration>(ns)), now);
}

// A reset as the many families write it, as a wait from `now`:
//   a plain number: from 1e12 Unix milliseconds (OpenRouter), from 1e9 Unix seconds, else delta
//     seconds ("20", "0.5", Cerebras's "33011.382867"). No wait is 31 years, and no reset time
//     before 2001, so the ranges do not overlap in practice. A time in the past is 0.
//   a Go-style duration: "6m0s", "2m59.56s", "20ms" (OpenAI, Groq);
//   an RFC 3339 time or an HTTP date.
std::optional<Nanos> parse_reset(std::string_view text, WallTime now) {
  std::string_view s = trim(text);
  if (auto v = parse_unsigned_decimal(s)) {
    if (*v >= kEpochMillisFrom) return until_epoch(*v, 1000, now);
    if (*v >= kEpochSecondsFrom) return until_epoch(*v, 1, now);
    return seconds_to_nanos(*v);
  }
  if (auto d = parse_duration(s)) return d;
  if (auto t = parse_rfc3339(s)) return until(*t, now);
  if (auto t = parse_http_date(s)) return until(*t, now);
  return std::nullopt;
}

struct Window {
  LimitCategory* category = nullptr;
  std::string key;
  std::optional<int64_t> remaining;
  std::optional<Nanos> reset;
};

// The windows seen in one response. A response names a handful; more than kMaxWindows distinct
// ones is not a provider, and the rest are ignored rather than searched quadratically.
class Windows {
 public:
  static constexpr size_t kMaxWindows = 64;

  Window* get(LimitCategory* category, std::string_view key) {
    for (Window& w : windows_) {
      if (w.category == category && w.key == key) return &w;
    }
    if (windows_.size() >= kMaxWindows) return nullptr;
    windows_.push_back(Window{category, std::string(key), std::nullopt, std::nullopt});
    return &windows_.back();
  }

  // Per category, the window that binds: an exhausted one (remaining 0; among several, the
  // longest known reset), else the one with the fewest remaining, with its own reset. Windows
  // with a reset but no count only say when they reset; the longest of those is kept when no
  // window has a count. A single window per category (every family before this) is copied.
  void fold(RateLimitInfo& info) const {
    for (LimitCategory* c :
         {&info.requests, &info.tokens, &info.input_tokens, &info.output_tokens}) {
      const Window* binding = nullptr;
      bool exhausted = false;
      std::optional<Nanos> exhausted_reset, any_reset;
      for (const Window& w : windows_) {
        if (w.category != c) continue;
        if (w.reset) keep_longer(any_reset, *w.reset);
        if (!w.remaining) continue;
        if (*w.remaining == 0) {
          exhausted = true;
          if (w.reset) keep_longer(exhausted_reset, *w.reset);
        } else if (!binding || *w.remaining < *binding->remaining) {
          binding = &w;
        }
      }
      if (exhausted) {
        c->remaining = 0;
        c->reset = exhausted_reset;
      } else if (binding) {
        c->remaining = binding->remaining;
        c->reset = binding->reset;
      } else {
        c->reset = any_reset;
      }
    }
  }

 private:
  std::vector<Window> windows_;
};

// The single RateLimit field of the IETF draft, in either of its shapes:
//   -07 style (express-rate-limit and others): `limit=100, remaining=0, reset=30`;
//   -08 and later (structured fields, Cloudflare): `"default";r=0;t=30`, one list member per
//     policy, `r` remaining and `t` seconds to reset (other parameters ignored).
// Every policy becomes a requests window (the draft's default quota unit is requests). False
// when malformed: then nothing of it is used.
bool parse_combined(std::string_view value, WallTime now, Windows& windows, LimitCategory* cat) {
  struct Policy {
    std::string name;
    std::optional<int64_t> remaining;
    std::optional<Nanos> reset;
  };
  std::vector<Policy> policies;
  policies.reserve(16);  // `target` points into it: at most one item per member, 16 members
  Policy flat{"ietf:", std::nullopt, std::nullopt};  // the -07 shape: one policy
  bool structured = false, any = false;
  size_t members = 0;
  std::string_view rest = trim(value);
  if (rest.empty()) return false;
  while (!rest.empty()) {
    if (++members > 16) return false;
    const size_t comma = rest.find(',');
    std::string_view member = trim(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (member.empty()) return false;
    Policy* target = &flat;
    bool first = true;
    while (!member.empty()) {
      const size_t semi = member.find(';');
      std::string_view part = trim(member.substr(0, semi));
      member = semi == std::string_view::npos ? std::string_view() : member.substr(semi + 1);
      const size_t eq = part.find('=');
      if (first && eq == std::string_view::npos) {
        // An item: the policy's name (a string or a token), its parameters follow.
        if (part.empty() || (members > 1 && !structured)) return false;
        structured = true;
        policies.push_back(Policy{"ietf:" + std::string(part), std::nullopt, std::nullopt});
        target = &policies.back();
        first = false;
        continue;
      }
      first = false;
      if (eq == std::string_view::npos) return false;
      if (structured && target == &flat) return false;  // a bare pair among items
      std::string key(trim(part.substr(0, eq)));
      for (auto& ch : key) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      const std::string_view v = trim(part.substr(eq + 1));
      const bool is_remaining = structured ? key == "r" : key == "remaining";
      const bool is_reset = structured ? key == "t" : key == "reset";
      if (is_remaining) {
        target->remaining = parse_remaining(v, true);
        if (!target->remaining) return false;
        any = true;
      } else if (is_reset) {
        target->reset = parse_reset(v, now);
        if (!target->reset) return false;
        any = true;
      }
    }
  }
  if (!any) return false;
  if (!structured) policies.push_back(std::move(flat));
  for (const Policy& p : policies) {
    Window* w = windows.get(cat, p.name);
    if (w == nullptr) break;
    if (p.remaining) w->remaining = p.remaining;
    if (p.reset) w->reset = p.reset;
  }
  return true;
}

}  // namespace

std::optional<Nanos> RateLimitInfo::exhausted_for() const {
  std::optional<Nanos> out;
  for (const LimitCategory* c : {&requests, &tokens, &input_tokens, &output_tokens}) {
    if (c->remaining && *c->remaining == 0 && c->reset) keep_longer(out, *c->reset);
  }
  return out;
}

bool RateLimitInfo::empty() const {
  for (const LimitCategory* c : {&requests, &tokens, &input_tokens, &output_tokens}) {
    if (c->remaining || c->reset) return false;
  }
  return !retry_after;
}

RateLimitInfo parse_rate_limit_headers(std::span<const Header> headers, WallTime wall_now) {
  RateLimitInfo info;
  Windows windows;
  for (const auto& [raw_name, raw_value] : headers) {
    std::string_view name = trim(raw_name);
    std::string_view value = trim(raw_value);
    bool bad = false;
    if (iequals(name, "retry-after")) {
      if (auto secs = parse_unsigned_decimal(value)) {
        if (auto n = seconds_to_nanos(*secs)) {
          keep_longer(info.retry_after, *n);
        } else {
          bad = true;
        }
      } else if (auto date = parse_http_date(value)) {
        keep_longer(info.retry_after, until(*date, wall_now));
      } else {
        bad = true;
      }
    } else if (iequals(name, "retry-after-ms")) {
      auto ms = parse_unsigned_decimal(value);
      auto n = ms ? seconds_to_nanos(*ms / 1000.0) : std::nullopt;
      if (n) {
        keep_longer(info.retry_after, *n);
      } else {
        bad = true;
      }
    } else {
      Recognised r = recognise(name, info);
      if (r.field == Field::kCombined) {
        bad = !parse_combined(value, wall_now, windows, r.category);
      } else if (r.field == Field::kRemaining) {
        if (auto v = parse_remaining(value, r.fractional_remaining)) {
          if (Window* w = windows.get(r.category, r.window)) w->remaining = *v;
        } else {
          bad = true;
        }
      } else if (r.field == Field::kReset) {
        std::optional<Nanos> d;
        if (r.reset_form == ResetForm::kRfc3339) {
          if (auto t = parse_rfc3339(value)) d = until(*t, wall_now);
        } else {
          d = parse_reset(value, wall_now);
        }
        if (!d) {
          bad = true;
        } else if (Window* w = windows.get(r.category, r.window)) {
          w->reset = *d;
        }
      }
    }
    if (bad) {
      ++info.parse_errors;
      // The value is the provider's, not a secret, but bound its length in the log.
      log::warn("keys: ignoring malformed rate-limit header {}: '{}'", name,
                value.substr(0, std::min<size_t>(value.size(), 64)));
    }
  }
  windows.fold(info);
  return info;
}

}  // namespace switchboard::keys