// Helpers shared by the rate-limit header parsers (rate_headers.cpp) and the time-value parsers
// (header_values.cpp): small, total (malformed input gives nullopt), internal to the keys module.
#pragma once

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>

#include "common/clock.h"

namespace switchboard::keys::detail {

inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

inline bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// A non-negative decimal "123" or "1.5" (no sign, no exponent) as a double.
inline std::optional<double> parse_unsigned_decimal(std::string_view s) {
  if (s.empty()) return std::nullopt;
  size_t i = 0, digits = 0;
  while (i < s.size() && is_digit(s[i])) ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && is_digit(s[i])) ++i, ++digits;
  }
  if (i != s.size() || digits == 0) return std::nullopt;
  // strtod on a validated, bounded copy: from_chars for double is fine in GCC 12 too, but this
  // keeps the accepted grammar explicit.
  double v = 0;
  auto res = std::from_chars(s.data(), s.data() + s.size(), v);
  if (res.ec != std::errc() || res.ptr != s.data() + s.size() || !std::isfinite(v)) {
    return std::nullopt;
  }
  return v;
}

inline std::optional<int64_t> parse_int(std::string_view s) {
  s = trim(s);
  if (s.empty()) return std::nullopt;
  int64_t v = 0;
  auto res = std::from_chars(s.data(), s.data() + s.size(), v);
  if (res.ec != std::errc() || res.ptr != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

// Seconds (as a double) to Nanos, refusing values that would overflow (> ~292 years).
inline std::optional<Nanos> seconds_to_nanos(double seconds) {
  if (!(seconds >= 0) || seconds > 9.0e9) return std::nullopt;
  return Nanos(static_cast<int64_t>(std::llround(seconds * 1e9)));
}

}  // namespace switchboard::keys::detail
