// Telemetry: W3C trace context and OpenTelemetry spans exported over OTLP/HTTP (JSON encoding).
//
// A request's trace continues the caller's `traceparent` when it sent a valid one (its sampled
// flag decides, as OpenTelemetry's parent-based sampler does), or starts one sampled by
// `sample_ratio` (decided from the trace id, so every gateway agrees on a trace). Spans are
// finished on the request path and handed to an Exporter, which batches them on its own thread:
// the request path never waits for the collector, memory is bounded (a full queue drops the span
// and counts it) and a collector that is down costs one failed POST per batch, counted, never a
// retry storm. The exporter knows no transport: it calls `Send` with each batch's OTLP JSON body
// (the gateway gives it an HTTP POST to `<otlp_endpoint>/v1/traces`).
//
// Span names and attributes follow the OpenTelemetry GenAI semantic conventions
// (`gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.usage.input_tokens`, ...) with ours
// under `switchboard.` (key id, layer, attempts).
//
// Thread-safety: the free functions are pure or use thread-local state. Exporter::submit and
// flush may be called from any thread; Send is called only from the exporter's thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace switchboard::telemetry {

struct TraceId {
  std::array<uint8_t, 16> bytes{};
  bool valid() const;  // not all zero
  std::string hex() const;
  bool operator==(const TraceId&) const = default;
};

struct SpanId {
  std::array<uint8_t, 8> bytes{};
  bool valid() const;
  std::string hex() const;
  bool operator==(const SpanId&) const = default;
};

// Fresh random ids (never all zero).
TraceId new_trace_id();
SpanId new_span_id();

struct TraceParent {
  TraceId trace;
  SpanId parent;
  bool sampled = false;
};

// A `traceparent` header value: version 00 exactly, or a later version's first four fields (as
// the W3C recommendation says); lowercase hex; ids not all zero. Anything else: nullopt.
std::optional<TraceParent> parse_traceparent(std::string_view value);
// `00-<trace>-<span>-<01|00>`.
std::string format_traceparent(const TraceId& trace, const SpanId& span, bool sampled);

// Whether a new trace is sampled at `ratio` (0..1), decided by the trace id alone.
bool sampled_by_ratio(const TraceId& trace, double ratio);

enum class SpanKind { kInternal = 1, kServer = 2, kClient = 3 };

struct Attribute {
  std::string key;
  std::variant<std::string, int64_t, double, bool> value;
};

struct Span {
  TraceId trace;
  SpanId id;
  SpanId parent;  // invalid (zero) for a root span
  std::string name;
  SpanKind kind = SpanKind::kInternal;
  WallTime start{};
  WallTime end{};
  bool error = false;
  std::string status_message;  // for an error
  std::vector<Attribute> attributes;
};

// One OTLP ExportTraceServiceRequest in the protobuf JSON mapping (ids in hex, times as decimal
// strings of nanoseconds since the epoch).
std::string otlp_json(const std::vector<Span>& spans, std::string_view service_name);

struct ExporterOptions {
  size_t max_queue = 4096;  // spans waiting; a span beyond is dropped (and counted)
  size_t max_batch = 512;   // spans per POST
  Millis interval{1000};    // a batch leaves at least this often when spans wait
};

struct ExporterCounters {
  uint64_t exported = 0;  // spans the collector accepted
  uint64_t dropped = 0;   // spans lost: queue full, or in a batch the collector refused
  uint64_t failed_batches = 0;
};

class Exporter {
 public:
  using Send = std::function<Status(const std::string& body)>;
  Exporter(std::string service_name, Send send, ExporterOptions options = {});
  ~Exporter() { stop(); }
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // Queues the spans of one request; never blocks on the collector.
  void submit(std::vector<Span>&& spans);
  // Sends everything queued now and returns when it was tried (tests, shutdown).
  void flush();
  ExporterCounters counters() const;
  // Sends what is queued (one try each batch; after a failed one the rest is dropped, so a
  // collector that is down delays shutdown by one timeout) and joins the thread; idempotent, not
  // concurrently with itself. Spans submitted afterwards are dropped.
  void stop();
  bool stopping() const;

 private:
  void run();
  void send_queued(std::unique_lock<std::mutex>& lock);

  const std::string service_name_;
  const Send send_;
  const ExporterOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;       // wakes the thread
  std::condition_variable done_cv_;  // flush() waiters
  std::deque<Span> queue_;           // guarded by mu_
  bool stopping_ = false;            // guarded by mu_
  bool flush_requested_ = false;     // guarded by mu_
  bool exited_ = false;              // the thread is done; guarded by mu_
  uint64_t flushes_done_ = 0;        // guarded by mu_
  std::atomic<uint64_t> exported_{0}, dropped_{0}, failed_batches_{0};
  std::thread thread_;
};

}  // namespace switchboard::telemetry
