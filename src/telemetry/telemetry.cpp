// Trace context, OTLP JSON and the batching exporter (telemetry.h).
#include "telemetry/telemetry.h"

#include <sys/random.h>

#include <cmath>
#include <cstring>
#include <random>

#include "common/json.h"
#include "common/metrics.h"

namespace switchboard::telemetry {
namespace {

constexpr char kHex[] = "0123456789abcdef";

template <size_t N>
std::string to_hex(const std::array<uint8_t, N>& b) {
  std::string out(2 * N, '0');
  for (size_t i = 0; i < N; ++i) {
    out[2 * i] = kHex[b[i] >> 4];
    out[2 * i + 1] = kHex[b[i] & 0xf];
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // uppercase is not valid in a traceparent
}

template <size_t N>
bool from_hex(std::string_view s, std::array<uint8_t, N>& out) {
  if (s.size() != 2 * N) return false;
  for (size_t i = 0; i < N; ++i) {
    const int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = uint8_t(hi << 4 | lo);
  }
  return true;
}

template <size_t N>
bool all_zero(const std::array<uint8_t, N>& b) {
  for (uint8_t v : b)
    if (v != 0) return false;
  return true;
}

// Random bytes from a per-thread generator seeded by the kernel: ids need to be unique, not
// secret, and a system call per id would be on the request path.
void fill_random(uint8_t* out, size_t n) {
  thread_local std::mt19937_64 rng = [] {
    uint64_t seed[2] = {0, 0};
    if (::getrandom(seed, sizeof(seed), 0) != sizeof(seed)) {
      seed[0] = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
      seed[1] = uint64_t(reinterpret_cast<uintptr_t>(&seed));
    }
    std::seed_seq seq{seed[0], seed[0] >> 32, seed[1], seed[1] >> 32};
    return std::mt19937_64(seq);
  }();
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(out + i, &v, std::min<size_t>(8, n - i));
  }
}

int64_t unix_nanos(WallTime t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

void append_attribute(std::string& out, const Attribute& a) {
  out += "{\"key\":\"";
  json::append_escaped(out, a.key);
  out += "\",\"value\":{";
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          out += "\"stringValue\":\"";
          json::append_escaped(out, v);
          out += '"';
        } else if constexpr (std::is_same_v<T, int64_t>) {
          // int64 is a JSON string in the protobuf mapping.
          out += "\"intValue\":\"" + std::to_string(v) + "\"";
        } else if constexpr (std::is_same_v<T, double>) {
          out += "\"doubleValue\":" + json::number(v);
        } else {
          out += v ? "\"boolValue\":true" : "\"boolValue\":false";
        }
      },
      a.value);
  out += "}}";
}

struct TelemetryMetrics {
  prometheus::Counter& exported =
      metrics::counter_family("switchboard_telemetry_spans_exported_total",
                              "Spans the OTLP collector accepted")
          .Add({});
  prometheus::Counter& dropped =
      metrics::counter_family("switchboard_telemetry_spans_dropped_total",
                              "Spans lost: the export queue was full or the collector failed")
          .Add({});
  prometheus::Counter& failed =
      metrics::counter_family("switchboard_telemetry_export_errors_total",
                              "Span batches the OTLP collector did not accept")
          .Add({});
};

TelemetryMetrics& telemetry_metrics() {
  static TelemetryMetrics m;
  return m;
}

}  // namespace

bool TraceId::valid() const {
  return !all_zero(bytes);
}
std::string TraceId::hex() const {
  return to_hex(bytes);
}
bool SpanId::valid() const {
  return !all_zero(bytes);
}
std::string SpanId::hex() const {
  return to_hex(bytes);
}

TraceId new_trace_id() {
  TraceId t;
  do fill_random(t.bytes.data(), t.bytes.size());
  while (!t.valid());
  return t;
}

SpanId new_span_id() {
  SpanId s;
  do fill_random(s.bytes.data(), s.bytes.size());
  while (!s.valid());
  return s;
}

std::optional<TraceParent> parse_traceparent(std::string_view v) {
  // version "-" trace-id "-" parent-id "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2 = 55 characters.
  if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return std::nullopt;
  std::array<uint8_t, 1> version{}, flags{};
  if (!from_hex(v.substr(0, 2), version) || version[0] == 0xff) return std::nullopt;
  // Version 00 is exactly 55 characters; a later version may append fields after a dash.
  if (version[0] == 0 ? v.size() != 55 : v.size() > 55 && v[55] != '-') return std::nullopt;
  TraceParent p;
  if (!from_hex(v.substr(3, 32), p.trace.bytes) || !from_hex(v.substr(36, 16), p.parent.bytes) ||
      !from_hex(v.substr(53, 2), flags))
    return std::nullopt;
  if (!p.trace.valid() || !p.parent.valid()) return std::nullopt;
  p.sampled = (flags[0] & 0x01) != 0;
  return p;
}

std::string format_traceparent(const TraceId& trace, const SpanId& span, bool sampled) {
  std::string out = "00-";
  out += trace.hex();
  out += '-';
  out += span.hex();
  out += sampled ? "-01" : "-00";
  return out;
}

bool sampled_by_ratio(const TraceId& trace, double ratio) {
  if (!(ratio > 0)) return false;
  if (ratio >= 1) return true;
  // The trace id's last 8 bytes as a fraction of 2^64 (random in W3C trace ids' "random" part),
  // as OpenTelemetry's TraceIdRatioBased sampler compares them.
  uint64_t v = 0;
  for (size_t i = 8; i < 16; ++i) v = v << 8 | trace.bytes[i];
  return double(v) < std::ldexp(ratio, 64);
}

std::string otlp_json(const std::vector<Span>& spans, std::string_view service_name) {
  std::string out;
  out.reserve(256 + spans.size() * 512);
  out += R"({"resourceSpans":[{"resource":{"attributes":[)";
  append_attribute(out, {"service.name", std::string(service_name)});
  out += R"(]},"scopeSpans":[{"scope":{"name":"switchboard"},"spans":[)";
  bool first = true;
  for (const Span& s : spans) {
    if (!first) out += ',';
    first = false;
    out += "{\"traceId\":\"" + s.trace.hex() + "\",\"spanId\":\"" + s.id.hex() + "\"";
    if (s.parent.valid()) out += ",\"parentSpanId\":\"" + s.parent.hex() + "\"";
    out += ",\"name\":\"";
    json::append_escaped(out, s.name);
    out += "\",\"kind\":" + std::to_string(int(s.kind));
    out += ",\"startTimeUnixNano\":\"" + std::to_string(unix_nanos(s.start)) + "\"";
    out += ",\"endTimeUnixNano\":\"" + std::to_string(unix_nanos(s.end)) + "\"";
    out += ",\"attributes\":[";
    for (size_t i = 0; i < s.attributes.size(); ++i) {
      if (i) out += ',';
      append_attribute(out, s.attributes[i]);
    }
    out += "],\"status\":{";
    if (s.error) {
      out += "\"code\":2,\"message\":\"";  // STATUS_CODE_ERROR
      json::append_escaped(out, s.status_message);
      out += '"';
    } else {
      out += "\"code\":1";  // STATUS_CODE_OK
    }
    out += "}}";
  }
  out += "]}]}]}";
  return out;
}

Exporter::Exporter(std::string service_name, Send send, ExporterOptions options)
    : service_name_(std::move(service_name)), send_(std::move(send)), options_(options) {
  telemetry_metrics();  // the series exist from the start, at 0
  thread_ = std::thread([this] { run(); });
}

void Exporter::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Exporter::stopping() const {
  std::lock_guard lock(mu_);
  return stopping_;
}

void Exporter::submit(std::vector<Span>&& spans) {
  size_t lost = 0;
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    for (Span& s : spans) {
      if (queue_.size() >= options_.max_queue || exited_) {
        ++lost;
        continue;
      }
      queue_.push_back(std::move(s));
    }
    wake = queue_.size() >= options_.max_batch;
  }
  if (lost > 0) {
    dropped_.fetch_add(lost, std::memory_order_relaxed);
    telemetry_metrics().dropped.Increment(double(lost));
  }
  if (wake) cv_.notify_one();
}

void Exporter::flush() {
  std::unique_lock lock(mu_);
  const uint64_t target = flushes_done_ + 1;
  flush_requested_ = true;
  cv_.notify_one();
  done_cv_.wait(lock, [&] { return flushes_done_ >= target || stopping_; });
}

ExporterCounters Exporter::counters() const {
  return {exported_.load(std::memory_order_relaxed), dropped_.load(std::memory_order_relaxed),
          failed_batches_.load(std::memory_order_relaxed)};
}

void Exporter::run() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait_for(lock, options_.interval, [&] {
      return stopping_ || flush_requested_ || queue_.size() >= options_.max_batch;
    });
    const bool flushing = flush_requested_;
    flush_requested_ = false;
    send_queued(lock);
    if (flushing) {
      ++flushes_done_;
      done_cv_.notify_all();
    }
    if (stopping_) {
      send_queued(lock);  // what came meanwhile
      exited_ = true;     // later spans are dropped: nobody would send them
      ++flushes_done_;
      done_cv_.notify_all();
      return;
    }
  }
}

// Sends every queued span in batches of max_batch, the lock released while a batch is sent.
void Exporter::send_queued(std::unique_lock<std::mutex>& lock) {
  while (!queue_.empty()) {
    std::vector<Span> batch;
    const size_t n = std::min(queue_.size(), options_.max_batch);
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lock.unlock();
    const std::string body = otlp_json(batch, service_name_);
    const Status st = send_(body);
    if (st.ok()) {
      exported_.fetch_add(n, std::memory_order_relaxed);
      telemetry_metrics().exported.Increment(double(n));
    } else {
      // Not retried: a collector that is down must not make the gateway hold spans for ever.
      failed_batches_.fetch_add(1, std::memory_order_relaxed);
      dropped_.fetch_add(n, std::memory_order_relaxed);
      telemetry_metrics().failed.Increment();
      telemetry_metrics().dropped.Increment(double(n));
    }
    lock.lock();
    if (!st.ok() && stopping_ && !queue_.empty()) {
      // Shutting down with the collector failing: one timeout, not one per batch left.
      const size_t left = queue_.size();
      queue_.clear();
      dropped_.fetch_add(left, std::memory_order_relaxed);
      telemetry_metrics().dropped.Increment(double(left));
      return;
    }
  }
}

}  // namespace switchboard::telemetry
