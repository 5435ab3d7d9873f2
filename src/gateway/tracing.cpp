// The gateway's side of tracing (tracing.h): the OTLP sender over our HTTP client, and a
// request's spans.
#include "gateway/tracing.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "common/log.h"
#include "net/http_client.h"

namespace switchboard::gateway {

namespace asio = boost::asio;

std::unique_ptr<telemetry::Exporter> make_trace_exporter(const TelemetryConfig& config) {
  if (config.otlp_endpoint.empty()) return nullptr;
  std::string url = config.otlp_endpoint;
  if (!url.ends_with("/v1/traces")) url += "/v1/traces";
  // The exporter calls this from its one thread only: the io_context and the client (with its
  // kept-alive connection to the collector) are that thread's.
  struct Sender {
    asio::io_context io;
    net::HttpClient client{io.get_executor()};
  };
  auto sender = std::make_shared<Sender>();
  auto send = [sender, url](const std::string& body) -> Status {
    net::HttpRequest req;
    req.url = url;
    req.headers = {{"content-type", "application/json"}, {"user-agent", "switchboard"}};
    req.body = body;
    req.deadline = MonoClock::now() + Millis(5000);
    net::HttpResponse resp;
    net::TransportStatus st;
    asio::co_spawn(
        sender->io,
        [&]() -> asio::awaitable<void> { st = co_await sender->client.fetch(req, resp); },
        asio::detached);
    sender->io.restart();
    sender->io.run();
    if (!st.ok()) return Status::unavailable("OTLP collector: " + st.message);
    if (resp.head.status < 200 || resp.head.status >= 300)
      return Status::unavailable("OTLP collector answered HTTP " +
                                 std::to_string(resp.head.status));
    return Status();
  };
  log::info("telemetry: traces to {} as service '{}', new traces sampled at {}", url,
            config.service_name, config.sample_ratio);
  return std::make_unique<telemetry::Exporter>(config.service_name, std::move(send));
}

namespace {
const char* operation_of(bool embeddings) {
  return embeddings ? "embeddings" : "chat";
}
}  // namespace

std::string request_span_name(const TracedRequest& t) {
  return std::string(operation_of(t.embeddings)) + " " + std::string(t.request_model);
}

std::vector<telemetry::Attribute> request_attributes(const TracedRequest& t) {
  std::vector<telemetry::Attribute> attrs = {
      {"gen_ai.operation.name", std::string(operation_of(t.embeddings))},
      {"gen_ai.request.model", std::string(t.request_model)},
      {"gen_ai.usage.input_tokens", t.usage.prompt_tokens},
      {"gen_ai.usage.output_tokens", t.usage.completion_tokens},
      {"http.response.status_code", int64_t(t.status)},
      {"switchboard.request_id", std::string(t.request_id)},
      {"switchboard.attempts", int64_t(t.attempts)},
      {"switchboard.layer", int64_t(t.layer)}};
  if (!t.response_model.empty())
    attrs.push_back({"gen_ai.response.model", std::string(t.response_model)});
  if (!t.route.empty()) attrs.push_back({"switchboard.route", std::string(t.route)});
  if (!t.client.empty()) attrs.push_back({"switchboard.client", std::string(t.client)});
  return attrs;
}

telemetry::Span attempt_span_of(const telemetry::SpanId& id, WallTime start, WallTime end,
                                bool embeddings, const routing::Attempt& a, bool anthropic,
                                const std::string& key_id, const Attempted& r) {
  telemetry::Span s;
  s.id = id;
  s.kind = telemetry::SpanKind::kClient;
  const char* operation = operation_of(embeddings);
  s.name = std::string(operation) + " " + std::string(a.upstream);
  s.start = start;
  s.end = end;
  s.error = r.cls != OutcomeClass::kSuccess;
  if (s.error) s.status_message = r.message.substr(0, 256);
  s.attributes = {{"gen_ai.operation.name", std::string(operation)},
                  {"gen_ai.system", anthropic ? std::string("anthropic") : "openai"},
                  {"gen_ai.request.model", std::string(a.upstream)},
                  {"gen_ai.usage.input_tokens", r.usage.prompt_tokens},
                  {"gen_ai.usage.output_tokens", r.usage.completion_tokens},
                  {"http.response.status_code", int64_t(r.status)},
                  {"switchboard.provider", std::string(a.provider)},
                  {"switchboard.model", std::string(a.model)},
                  {"switchboard.key_id", key_id},
                  {"switchboard.outcome", std::string(to_string(r.cls))}};
  if (s.error) s.attributes.push_back({"error.type", std::string(to_string(r.cls))});
  return s;
}

void RequestTrace::begin(bool tracing, double sample_ratio, std::string_view traceparent,
                         WallTime now) {
  start_ = now;
  auto parent = traceparent.empty() ? std::nullopt : telemetry::parse_traceparent(traceparent);
  if (parent) incoming_.assign(traceparent);
  if (!tracing) return;
  if (parent) {
    trace_ = parent->trace;
    parent_ = parent->parent;
    sampled_ = parent->sampled;
  } else {
    trace_ = telemetry::new_trace_id();
    sampled_ = telemetry::sampled_by_ratio(trace_, sample_ratio);
  }
  server_ = telemetry::new_span_id();
  recording_ = sampled_;
}

std::string RequestTrace::upstream_header(const telemetry::SpanId& attempt) const {
  if (trace_.valid()) return telemetry::format_traceparent(trace_, attempt, sampled_);
  return incoming_;
}

void RequestTrace::add_child(telemetry::Span span) {
  if (!recording_) return;
  span.trace = trace_;
  span.parent = server_;
  spans_.push_back(std::move(span));
}

void RequestTrace::finish(telemetry::Exporter& exporter, std::string name, WallTime end, bool error,
                          std::string status_message,
                          std::vector<telemetry::Attribute> attributes) {
  if (!recording_) return;
  recording_ = false;  // once
  telemetry::Span s;
  s.trace = trace_;
  s.id = server_;
  s.parent = parent_;
  s.name = std::move(name);
  s.kind = telemetry::SpanKind::kServer;
  s.start = start_;
  s.end = end;
  s.error = error;
  s.status_message = std::move(status_message);
  s.attributes = std::move(attributes);
  spans_.push_back(std::move(s));
  exporter.submit(std::move(spans_));
  spans_.clear();
}

}  // namespace switchboard::gateway
