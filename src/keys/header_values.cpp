// Time values of response headers: durations ("1m30s", "20ms"), HTTP dates and RFC 3339 times.
// Every parser here is total: malformed input gives nullopt, never an exception or undefined
// behaviour.
#include "keys/header_values.h"

#include <chrono>
#include <string>

#include "keys/keys.h"

namespace switchboard::keys {

using detail::iequals;
using detail::is_digit;
using detail::parse_unsigned_decimal;
using detail::seconds_to_nanos;
using detail::trim;

namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's civil algorithm idea,
// written out here from the arithmetic).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool valid_date(int64_t y, int m, int d) {
  static const int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (y < 1970 || y > 9999 || m < 1 || m > 12 || d < 1 || d > kDays[m - 1]) return false;
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return !(m == 2 && d == 29 && !leap);
}

std::optional<WallTime> make_wall(int64_t y, int mo, int d, int h, int mi, int s, int64_t frac_ns,
                                  int64_t offset_s) {
  // 60 is a leap second: accepted and treated as :59.999… would be; clamp to 59.
  if (!valid_date(y, mo, d) || h > 23 || mi > 59 || s > 60) return std::nullopt;
  if (s == 60) s = 59;
  int64_t secs = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 86400 +
                 h * 3600 + mi * 60 + s - offset_s;
  // The wall clock counts int64 nanoseconds, which end in 2262: a later date (valid_date takes
  // years up to 9999) would overflow the conversion below. Found by fuzz/rate_headers_fuzz.
  constexpr int64_t kMaxSecs =
      std::chrono::duration_cast<std::chrono::seconds>(WallTime::duration::max()).count();
  if (secs >= kMaxSecs) return std::nullopt;
  return WallTime(
      std::chrono::duration_cast<WallTime::duration>(std::chrono::seconds(secs) + Nanos(frac_ns)));
}

// Reads exactly `n` digits at `pos`.
bool read_fixed(std::string_view s, size_t& pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!is_digit(s[pos + i])) return false;
    v = v * 10 + (s[pos + i] - '0');
  }
  pos += n;
  out = v;
  return true;
}

int month_from_name(std::string_view s) {
  static const char* kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                  "jul", "aug", "sep", "oct", "nov", "dec"};
  for (int i = 0; i < 12; ++i) {
    if (iequals(s, kMonths[i])) return i + 1;
  }
  return 0;
}

bool is_day_name(std::string_view s) {
  static const char* kShort[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
  static const char* kLong[] = {"monday", "tuesday",  "wednesday", "thursday",
                                "friday", "saturday", "sunday"};
  for (int i = 0; i < 7; ++i) {
    if (iequals(s, kShort[i]) || iequals(s, kLong[i])) return true;
  }
  return false;
}

}  // namespace

std::optional<Nanos> parse_duration(std::string_view text) {
  std::string_view s = trim(text);
  if (s.empty()) return std::nullopt;
  if (auto plain = parse_unsigned_decimal(s)) return seconds_to_nanos(*plain);
  double total_s = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i, digits = 0;
    while (i < s.size() && is_digit(s[i])) ++i, ++digits;
    if (i < s.size() && s[i] == '.') {
      ++i;
      while (i < s.size() && is_digit(s[i])) ++i, ++digits;
    }
    if (digits == 0) return std::nullopt;
    auto number = parse_unsigned_decimal(s.substr(start, i - start));
    if (!number) return std::nullopt;
    size_t unit_start = i;
    while (i < s.size() && !is_digit(s[i]) && s[i] != '.') ++i;
    std::string_view unit = s.substr(unit_start, i - unit_start);
    double scale = 0;
    if (unit == "h") {
      scale = 3600;
    } else if (unit == "m") {
      scale = 60;
    } else if (unit == "s") {
      scale = 1;
    } else if (unit == "ms") {
      scale = 1e-3;
    } else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") {
      scale = 1e-6;
    } else if (unit == "ns") {
      scale = 1e-9;
    } else {
      return std::nullopt;
    }
    total_s += *number * scale;
  }
  return seconds_to_nanos(total_s);
}

std::optional<WallTime> parse_http_date(std::string_view text) {
  // Tokens separated by spaces, commas or (RFC 850) dashes; then classified, which accepts the
  // three forms of RFC 9110 §5.6.7 without three grammars.
  std::string_view s = trim(text);
  std::vector<std::string_view> tokens;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == ',' || s[i] == '-')) ++i;
    size_t start = i;
    while (i < s.size() && s[i] != ' ' && s[i] != ',' && s[i] != '-') ++i;
    if (i > start) tokens.push_back(s.substr(start, i - start));
    if (tokens.size() > 8) return std::nullopt;
  }
  if (tokens.size() < 5 || !is_day_name(tokens[0])) return std::nullopt;
  int month = 0, day = -1, h = -1, mi = -1, sec = -1;
  int64_t year = -1;
  bool zone = false;
  for (size_t t = 1; t < tokens.size(); ++t) {
    std::string_view tok = tokens[t];
    if (int m = month_from_name(tok); m != 0 && month == 0) {
      month = m;
    } else if (tok.size() == 8 && tok[2] == ':' && tok[5] == ':' && h < 0) {
      size_t p = 0;
      if (!read_fixed(tok, p, 2, h) || !read_fixed(tok, ++p, 2, mi) ||
          !read_fixed(tok, ++p, 2, sec))
        return std::nullopt;
    } else if (iequals(tok, "GMT") || iequals(tok, "UTC")) {
      if (zone || t + 1 != tokens.size()) return std::nullopt;
      zone = true;
    } else if (!tok.empty() && std::all_of(tok.begin(), tok.end(), is_digit) && tok.size() <= 4) {
      int v = 0;
      size_t p = 0;
      read_fixed(tok, p, tok.size(), v);
      if (day < 0 && tok.size() <= 2) {
        day = v;
      } else if (year < 0 && (tok.size() == 4 || tok.size() == 2)) {
        // RFC 850 two-digit years: RFC 9110 says interpret as within 50 years; 70..99 → 19xx.
        year = tok.size() == 4 ? v : (v >= 70 ? 1900 + v : 2000 + v);
      } else {
        return std::nullopt;
      }
    } else {
      return std::nullopt;
    }
  }
  if (month == 0 || day < 0 || year < 0 || h < 0) return std::nullopt;
  return make_wall(year, month, day, h, mi, sec, 0, 0);
}

std::optional<WallTime> parse_rfc3339(std::string_view text) {
  std::string_view s = trim(text);
  size_t p = 0;
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (!read_fixed(s, p, 4, y) || p >= s.size() || s[p++] != '-' || !read_fixed(s, p, 2, mo) ||
      p >= s.size() || s[p++] != '-' || !read_fixed(s, p, 2, d) || p >= s.size())
    return std::nullopt;
  char sep = s[p++];
  if (sep != 'T' && sep != 't' && sep != ' ') return std::nullopt;
  if (!read_fixed(s, p, 2, h) || p >= s.size() || s[p++] != ':' || !read_fixed(s, p, 2, mi) ||
      p >= s.size() || s[p++] != ':' || !read_fixed(s, p, 2, sec))
    return std::nullopt;
  int64_t frac_ns = 0;
  if (p < s.size() && s[p] == '.') {
    ++p;
    size_t digits = 0;
    int64_t scale = 100'000'000;
    while (p < s.size() && is_digit(s[p])) {
      if (scale > 0) frac_ns += (s[p] - '0') * scale;
      scale /= 10;
      ++p;
      ++digits;
    }
    if (digits == 0) return std::nullopt;
  }
  if (p >= s.size()) return std::nullopt;  // RFC 3339 requires a zone
  int64_t offset_s = 0;
  if (s[p] == 'Z' || s[p] == 'z') {
    ++p;
  } else if (s[p] == '+' || s[p] == '-') {
    int sign = s[p++] == '-' ? -1 : 1;
    int oh = 0, om = 0;
    if (!read_fixed(s, p, 2, oh) || p >= s.size() || s[p++] != ':' || !read_fixed(s, p, 2, om) ||
        oh > 23 || om > 59)
      return std::nullopt;
    offset_s = sign * (oh * 3600 + om * 60);
  } else {
    return std::nullopt;
  }
  if (p != s.size()) return std::nullopt;
  return make_wall(y, mo, d, h, mi, sec, frac_ns, offset_s);
}

}  // namespace switchboard::keys
