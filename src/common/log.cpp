#include "common/log.h"

#include <spdlog/details/log_msg.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <chrono>
#include <climits>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <utility>
#include <vector>

#include "common/batched_sink.h"
#include "common/json.h"

namespace switchboard::log {
namespace {

struct Secrets {
  std::shared_mutex mu;
  std::vector<std::pair<std::string, std::string>> items;  // longest secret first
};

Secrets& secrets() {
  static Secrets s;
  return s;
}

constexpr std::string_view kAccessLogger = "access";
constexpr std::string_view kAccessPrefix = "access {";

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string& line = line_;
    line.clear();
    line += "{\"ts\":\"";
    append_rfc3339(line, msg.time);
    line += "\",\"level\":\"";
    auto lv = spdlog::level::to_string_view(msg.level);
    line.append(lv.data(), lv.size());
    line += "\",\"logger\":\"";
    const std::string_view logger(msg.logger_name.data(), msg.logger_name.size());
    json::append_escaped(line, logger);
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    if (logger == kAccessLogger && payload.starts_with(kAccessPrefix) && payload.ends_with('}')) {
      // An access record (log::access): its fields at the top level, ready for a log store
      // without a second parse.
      line += "\",\"msg\":\"access\",";
      line.append(payload.substr(kAccessPrefix.size()));
      line += '\n';
    } else {
      line += "\",\"msg\":\"";
      json::append_escaped(line, payload);
      line += "\"}\n";
    }
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }

 private:
  std::string line_;  // reused: a formatter is used by one thread at a time (its sink's lock)
};

// `2026-12-06T01:02:03.123456Z info message`: what spdlog's pattern
// "%Y-%m-%dT%H:%M:%S.%fZ %l %v" (UTC) writes, without its per-flag formatter objects (every access
// line goes through here).
class TextFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string& line = line_;
    line.clear();
    append_rfc3339(line, msg.time);
    line += ' ';
    auto lv = spdlog::level::to_string_view(msg.level);
    line.append(lv.data(), lv.size());
    line += ' ';
    line.append(msg.payload.data(), msg.payload.size());
    line += '\n';
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<TextFormatter>();
  }

 private:
  std::string line_;  // reused: a formatter is used by one thread at a time (its sink's lock)
};

std::unique_ptr<spdlog::formatter> make_formatter(Format format) {
  if (format == Format::kJson) return std::make_unique<JsonFormatter>();
  return std::make_unique<TextFormatter>();
}

// Redacts the payload, then hands the message to the real sink. Redaction happens here, at the
// one place every line passes, so no call site can forget it. No lock of its own around the
// inner sink's work (a shared lock only guards its replacement): the inner sinks are thread-safe,
// and a global mutex here would serialise every request thread's access line.
class RedactingSink final : public spdlog::sinks::sink {
 public:
  void set_inner(std::shared_ptr<spdlog::sinks::sink> inner, Format format = Format::kText) {
    std::shared_ptr<spdlog::sinks::sink> old;
    {
      std::unique_lock lock(mu_);
      batched_ = dynamic_cast<BatchedSink*>(inner.get());
      format_ = format;
      old = std::exchange(inner_, std::move(inner));
    }
    // `old` goes here, outside the lock: a batched sink flushes and joins its thread.
  }
  void log(const spdlog::details::log_msg& msg) override {
    std::shared_lock lock(mu_);
    if (!inner_) return;
    std::string payload = redact(std::string_view(msg.payload.data(), msg.payload.size()));
    spdlog::details::log_msg copy = msg;
    copy.payload = spdlog::string_view_t(payload.data(), payload.size());
    inner_->log(copy);
  }
  // An access record whose fields are already redacted (`fields`: the members of its JSON
  // object, without braces). A batched sink gets the whole line formatted here, in one pass; any
  // other sink gets a message to format.
  void log_access(std::string_view fields) {
    std::shared_lock lock(mu_);
    if (!inner_) return;
    thread_local std::string line;
    line.clear();
    if (batched_) {
      const auto now = std::chrono::system_clock::now();
      if (format_ == Format::kJson) {
        line += "{\"ts\":\"";
        append_rfc3339(line, now);
        line += "\",\"level\":\"info\",\"logger\":\"access\",\"msg\":\"access\",";
      } else {
        append_rfc3339(line, now);
        line += " info ";
        line += kAccessPrefix;
      }
      line += fields;
      line += "}\n";
      batched_->append(line);
      return;
    }
    line += kAccessPrefix;
    line += fields;
    line += '}';
    spdlog::details::log_msg msg(spdlog::string_view_t(kAccessLogger.data(), kAccessLogger.size()),
                                 spdlog::level::info,
                                 spdlog::string_view_t(line.data(), line.size()));
    inner_->log(msg);
  }
  void flush() override {
    std::shared_lock lock(mu_);
    if (inner_) inner_->flush();
  }
  // The inner sink formats.
  void set_pattern(const std::string&) override {}
  void set_formatter(std::unique_ptr<spdlog::formatter>) override {}

 private:
  std::shared_mutex mu_;
  std::shared_ptr<spdlog::sinks::sink> inner_;  // guarded by mu_
  BatchedSink* batched_ = nullptr;              // inner_, when it is one; guarded by mu_
  Format format_ = Format::kText;               // guarded by mu_
};

struct State {
  std::shared_ptr<RedactingSink> sink = std::make_shared<RedactingSink>();
  std::shared_ptr<spdlog::logger> logger;
  State() {
    auto err = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    err->set_formatter(make_formatter(Format::kText));
    sink->set_inner(err);
    logger = std::make_shared<spdlog::logger>("switchboard", sink);
    logger->set_level(spdlog::level::info);
    logger->flush_on(spdlog::level::warn);
  }
};

State& state() {
  static State s;
  return s;
}

}  // namespace

void init(std::string_view level, Format format) {
  auto err = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  set_sink(err, format);
  state().logger->set_level(spdlog::level::from_str(std::string(level)));
}

void init_batched(std::string_view level, Format format, std::chrono::milliseconds interval) {
  set_sink(std::make_shared<BatchedSink>(2, interval), format);
  state().logger->set_level(spdlog::level::from_str(std::string(level)));
}

void shutdown() {
  // A plain stderr sink again: the batched one (if any) writes what it holds and stops.
  auto err = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  err->set_formatter(make_formatter(Format::kText));
  state().sink->set_inner(std::move(err));
}

void set_sink(std::shared_ptr<spdlog::sinks::sink> sink, Format format) {
  sink->set_formatter(make_formatter(format));
  state().sink->set_inner(std::move(sink), format);
}

void add_secret(std::string secret, std::string id) {
  if (secret.empty()) return;
  auto& s = secrets();
  std::unique_lock lock(s.mu);
  for (auto& [sec, existing] : s.items) {
    if (sec == secret) {
      existing = std::move(id);
      return;
    }
  }
  s.items.emplace_back(std::move(secret), std::move(id));
  std::sort(s.items.begin(), s.items.end(),
            [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

void clear_secrets() {
  auto& s = secrets();
  std::unique_lock lock(s.mu);
  s.items.clear();
}

namespace {

// redact() with the secrets' lock held.
std::string redact_locked(const Secrets& s, std::string_view text) {
  std::string out(text);
  for (const auto& [secret, id] : s.items) {
    std::string replacement = "[" + id + "]";
    size_t pos = 0;
    while ((pos = out.find(secret, pos)) != std::string::npos) {
      out.replace(pos, secret.size(), replacement);
      pos += replacement.size();
    }
  }
  return out;
}

// Bytes a JSON string cannot hold as they are.
constexpr std::array<bool, 256> kNeedsEscape = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 0x20; ++c) t[size_t(c)] = true;
  t[size_t('"')] = t[size_t('\\')] = true;
  return t;
}();

// Appends `prefix` (`,"name":"`), the value escaped and redacted, and the closing quote. Most
// values need no escape and hold no secret: one scan, one copy.
void append_field(std::string& out, const Secrets& s, std::string_view prefix,
                  std::string_view value) {
  out += prefix;
  bool secret = false;
  for (const auto& item : s.items) {
    // (find, not memmem: memmem builds a table per call, costly for values this short.)
    if (item.first.size() <= value.size() && value.find(item.first) != std::string_view::npos) {
      secret = true;
      break;
    }
  }
  if (secret) {
    json::append_escaped(out, redact_locked(s, value));
  } else if (std::none_of(value.begin(), value.end(),
                          [](char c) { return kNeedsEscape[static_cast<unsigned char>(c)]; })) {
    out += value;
  } else {
    json::append_escaped(out, value);
  }
  out += '"';
}

// Appends `prefix` (`,"name":`) and the number.
void append_int(std::string& out, std::string_view prefix, int64_t v) {
  char buf[64];
  std::memcpy(buf, prefix.data(), prefix.size());
  char* end = std::to_chars(buf + prefix.size(), buf + sizeof(buf), v).ptr;
  out.append(buf, end);
}

}  // namespace

std::string redact(std::string_view text) {
  auto& s = secrets();
  std::shared_lock lock(s.mu);
  return redact_locked(s, text);
}

void access(const AccessRecord& r) {
  State& st = state();
  if (!st.logger->should_log(spdlog::level::info)) return;
  thread_local std::string fields;
  fields.clear();
  {
    auto& s = secrets();
    std::shared_lock lock(s.mu);
    append_field(fields, s, "\"request_id\":\"", r.request_id);
    append_field(fields, s, ",\"route\":\"", r.route);
    append_field(fields, s, ",\"model\":\"", r.model);
    append_field(fields, s, ",\"provider\":\"", r.provider);
    append_field(fields, s, ",\"key\":\"", r.key);
    if (!r.client.empty()) append_field(fields, s, ",\"client\":\"", r.client);
    append_field(fields, s, ",\"status\":\"", r.status);
  }
  append_int(fields, ",\"attempts\":", r.attempts);
  append_int(fields, ",\"layer\":", r.layer);
  append_int(fields, ",\"latency_us\":", r.latency_us);
  append_int(fields, ",\"tokens_in\":", r.tokens_in);
  append_int(fields, ",\"tokens_out\":", r.tokens_out);
  fields += ",\"cost_usd\":";
  json::append_fixed(fields, r.cost_usd, 9);
  st.sink->log_access(fields);
}

void append_rfc3339(std::string& out, std::chrono::system_clock::time_point tp) {
  using namespace std::chrono;
  const auto us = duration_cast<microseconds>(tp.time_since_epoch()).count();
  int64_t secs = us / 1000000;
  int64_t frac = us % 1000000;
  if (frac < 0) {
    frac += 1000000;
    --secs;
  }
  // The date and time of the second, kept per thread: lines come many to a second.
  thread_local int64_t cached_sec = INT64_MIN;
  thread_local char cached[20];
  if (secs != cached_sec) {
    const auto day = floor<days>(sys_seconds(seconds(secs)));
    const year_month_day ymd(day);
    const hh_mm_ss hms(seconds(secs) - day.time_since_epoch());
    auto put = [](char* at, int v, int width) {
      for (int i = width - 1; i >= 0; --i, v /= 10) at[i] = char('0' + v % 10);
    };
    std::memcpy(cached, "0000-00-00T00:00:00", 20);
    put(cached, std::clamp(int(ymd.year()), 0, 9999), 4);
    put(cached + 5, int(unsigned(ymd.month())), 2);
    put(cached + 8, int(unsigned(ymd.day())), 2);
    put(cached + 11, int(hms.hours().count()), 2);
    put(cached + 14, int(hms.minutes().count()), 2);
    put(cached + 17, int(hms.seconds().count()), 2);
    cached_sec = secs;
  }
  out.append(cached, 19);
  char f[8] = {'.', '0', '0', '0', '0', '0', '0', 'Z'};
  for (int i = 6; i >= 1; --i, frac /= 10) f[i] = char('0' + frac % 10);
  out.append(f, 8);
}

std::string redact_relayed(std::string_view text) {
  std::string out = redact(text);
  auto& s = secrets();
  std::shared_lock lock(s.mu);
  if (s.items.empty()) return out;
  // Characters of a key and of the masks providers print over it.
  auto word_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '*' ||
           c == '.' || c == '+' || c == '/' || c == '=';
  };
  std::string result;
  result.reserve(out.size());
  size_t i = 0;
  while (i < out.size()) {
    if (!word_char(out[i])) {
      result += out[i++];
      continue;
    }
    size_t j = i;
    while (j < out.size() && word_char(out[j])) ++j;
    std::string_view word(out.data() + i, j - i);
    // A sentence's full stop is not part of the word.
    while (!word.empty() && word.back() == '.') word.remove_suffix(1);
    bool leak = false;
    for (const auto& [secret, id] : s.items) {
      if (secret.size() < 12) continue;  // too short to have a recognisable head and tail
      const std::string_view sec(secret);
      const std::string_view head = sec.substr(0, 8), tail = sec.substr(sec.size() - 4);
      if ((word.size() >= head.size() && word.substr(0, head.size()) == head) ||
          (word.size() > tail.size() && word.substr(word.size() - tail.size()) == tail)) {
        leak = true;
        break;
      }
    }
    if (leak) {
      result += "[redacted]";
      result.append(out, i + word.size(), j - i - word.size());  // the full stops kept
    } else {
      result.append(out, i, j - i);
    }
    i = j;
  }
  return result;
}

spdlog::logger& logger() {
  return *state().logger;
}

}  // namespace switchboard::log
