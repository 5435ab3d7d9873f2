// Request tracing for the gateway (telemetry/telemetry.h): the OTLP exporter with its HTTP sender,
// and one request's trace (its server span, a span for each wait for a key and each upstream
// attempt, and the traceparent each attempt carries upstream).
//
// Thread-safety: make_trace_exporter's exporter is thread-safe; a RequestTrace belongs to its
// request's coroutine.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "gateway/chat_call.h"
#include "telemetry/telemetry.h"

namespace switchboard::gateway {

// An exporter POSTing to `<otlp_endpoint>/v1/traces` (or the endpoint itself when it already
// ends in /v1/traces) from its own thread, each POST within 5 s; null when the endpoint is "".
std::unique_ptr<telemetry::Exporter> make_trace_exporter(const TelemetryConfig& config);

// What a request's span says of it.
struct TracedRequest {
  bool embeddings = false;
  std::string_view request_model, response_model, request_id, route, client;
  int status = 0;
  int attempts = 0;
  int layer = 0;
  upstream::TokenUsage usage;
};
// `chat <model>` (or `embeddings <model>`): the GenAI conventions' `{operation} {request model}`.
std::string request_span_name(const TracedRequest& t);
std::vector<telemetry::Attribute> request_attributes(const TracedRequest& t);

// An upstream attempt's span (a child of the request's), named and attributed by the GenAI
// semantic conventions; `key_id` is the key's id, never its secret.
telemetry::Span attempt_span_of(const telemetry::SpanId& id, WallTime start, WallTime end,
                                bool embeddings, const routing::Attempt& a, bool anthropic,
                                const std::string& key_id, const Attempted& r);

class RequestTrace {
 public:
  // The trace of a request that came with `traceparent` (the header's value, "" if none);
  // `tracing` says whether spans are exported at all.
  void begin(bool tracing, double sample_ratio, std::string_view traceparent, WallTime now);
  bool recording() const { return recording_; }

  // The traceparent an upstream request carries: the attempt's span under our trace when tracing,
  // else the caller's own header passed on (a trace we do not record still joins up), else "".
  std::string upstream_header(const telemetry::SpanId& attempt) const;

  // A finished child of the request's span (no-op unless recording).
  void add_child(telemetry::Span span);
  // Ends the request's span and hands every span to `exporter` (no-op unless recording).
  void finish(telemetry::Exporter& exporter, std::string name, WallTime end, bool error,
              std::string status_message, std::vector<telemetry::Attribute> attributes);

  const telemetry::TraceId& trace() const { return trace_; }
  const telemetry::SpanId& server_span() const { return server_; }

 private:
  bool recording_ = false;
  bool sampled_ = false;
  telemetry::TraceId trace_;
  telemetry::SpanId server_;
  telemetry::SpanId parent_;  // the caller's span; zero when the trace starts here
  std::string incoming_;      // the caller's valid traceparent
  WallTime start_{};
  std::vector<telemetry::Span> spans_;
};

}  // namespace switchboard::gateway
