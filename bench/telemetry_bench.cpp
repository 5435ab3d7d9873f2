// Tracing on the request path: reading a caller's traceparent, and the spans of one traced
// request (the server span and an attempt's, with their attributes) handed to the exporter. The
// exporter's sender does nothing here: encoding and sending happen on its own thread, not the
// request's (BM_TelemetryOtlpJson times the encoding of a batch there).
#include <benchmark/benchmark.h>

#include "telemetry/telemetry.h"

namespace switchboard::telemetry {
namespace {

constexpr const char* kParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

void BM_TelemetryParseTraceparent(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(parse_traceparent(kParent));
}
BENCHMARK(BM_TelemetryParseTraceparent);

Span request_span(const TraceId& trace) {
  Span s;
  s.trace = trace;
  s.id = new_span_id();
  s.name = "chat auto";
  s.kind = SpanKind::kServer;
  s.start = std::chrono::system_clock::now();
  s.end = s.start + std::chrono::milliseconds(3);
  s.attributes = {
      {"gen_ai.operation.name", std::string("chat")},
      {"gen_ai.request.model", std::string("auto")},
      {"gen_ai.response.model", std::string("gpt-4o-mini")},
      {"gen_ai.usage.input_tokens", int64_t(1200)},
      {"gen_ai.usage.output_tokens", int64_t(300)},
      {"http.response.status_code", int64_t(200)},
      {"switchboard.request_id", std::string("sb-1a2b3c4d-0000000042-0123456789abcdef")},
      {"switchboard.attempts", int64_t(1)},
      {"switchboard.layer", int64_t(0)}};
  return s;
}

// One traced request's spans built and submitted (what the request thread pays).
void BM_TelemetryRequestSpans(benchmark::State& state) {
  ExporterOptions o;
  o.max_queue = 1 << 16;
  Exporter exporter(
      "bench", [](const std::string&) { return Status(); }, o);
  const TraceId trace = new_trace_id();
  for (auto _ : state) {
    std::vector<Span> spans;
    spans.reserve(2);
    spans.push_back(request_span(trace));
    Span attempt = request_span(trace);
    attempt.kind = SpanKind::kClient;
    attempt.parent = spans[0].id;
    spans.push_back(std::move(attempt));
    benchmark::DoNotOptimize(format_traceparent(trace, spans[1].id, true));
    exporter.submit(std::move(spans));
  }
}
BENCHMARK(BM_TelemetryRequestSpans);

void BM_TelemetryOtlpJson(benchmark::State& state) {
  std::vector<Span> batch;
  const TraceId trace = new_trace_id();
  for (int i = 0; i < 512; ++i) batch.push_back(request_span(trace));
  for (auto _ : state) benchmark::DoNotOptimize(otlp_json(batch, "bench"));
  state.SetItemsProcessed(state.iterations() * int64_t(batch.size()));
}
BENCHMARK(BM_TelemetryOtlpJson);

}  // namespace
}  // namespace switchboard::telemetry
