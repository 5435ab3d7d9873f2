// ChatCall: one request of POST /v1/chat/completions, /v1/embeddings or /v1/responses, from its
// body to its answer. The flow (validate, admit, plan, attempts, giving up) is chat_call.cpp;
// what a call leaves behind (its answer's x-switchboard-* headers, the outcome, usage and learning
// records, the access log line, its trace) is call_records.cpp.
//
// Internal to the gateway module (includes Beast through gateway/chat_call.h).
// Thread-safety: a call lives on its connection's thread, start to end.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/chat_call.h"
#include "gateway/client_limits.h"
#include "gateway/tracing.h"

namespace switchboard::gateway::detail {

class ChatCall {
 public:
  ChatCall(Runtime& rt, std::shared_ptr<const Snapshot> snap, Exchange& ex, int gateway_key,
           MonoTime t0, Dialect dialect, std::string anthropic_body, bool embeddings,
           ResponsesContext* responses)
      : rt_(rt),
        snap_(std::move(snap)),
        ex_(ex),
        t0_(t0),
        gateway_key_(gateway_key),
        anthropic_(dialect == Dialect::kAnthropic),
        embeddings_(embeddings),
        limits_(rt, *snap_, gateway_key),
        anthropic_body_(std::move(anthropic_body)),
        responses_(responses) {
    pending_events_.reserve(2);  // a usage and an outcome, enqueued together
    upstream_.anthropic_client = anthropic_;
    upstream_.anthropic_body = anthropic_body_;
    upstream_.embeddings = embeddings_;
    upstream_.responses = responses_;
  }
  ChatCall(const ChatCall&) = delete;
  ChatCall& operator=(const ChatCall&) = delete;
  // Usage is essential (spend, budgets): whatever is still pending is stored.
  ~ChatCall() {
    flush_events();
    // A request refused before it had an outcome (a bad body, a key it may not use) still ends
    // its span, with the status it was answered.
    if (trace_.recording()) {
      const int status = int(ex_.response.result_int());
      finish_trace(status >= 400, {}, {});
    }
  }

  // The whole request: validation, admission, the plan, then its attempts.
  asio::awaitable<void> run();

 private:
  // An answer before any attempt (bad request, unknown model, policy): counted like the rest.
  void reject(http::status status, std::string_view message, std::string_view type,
              std::string_view code);

  // Errors carry the x-switchboard-* headers too (DESIGN.md: every response), naming the last
  // attempt that failed, or empty when none was made.
  void fail(http::status status, std::string_view message, std::string_view type,
            std::string_view code);

  // The client key's allowed routes (403, whatever the model's spelling). Its rpm and budget are
  // ClientLimits'.
  bool admit_gateway_key();

  // A client limit's refusal (rpm, budget), with its Retry-After.
  void refuse(const ClientRefusal& r);

  // The monthly budget, held once the plan is known: the request's worst-case cost over its plan
  // (prompt estimate plus max_tokens, or a default output) (ClientLimits::reserve_budget).
  asio::awaitable<bool> reserve_budget();

  // The x-switchboard-* headers of a whole (non-stream) answer.
  void set_headers(const routing::Attempt& a, const std::string& key_id) {
    set_headers(a.model, a.provider, key_id, rt_.clock.now());
  }
  void set_headers(const routing::Attempt& a, const std::string& key_id, MonoTime now) {
    set_headers(a.model, a.provider, key_id, now);
  }
  void set_headers(std::string_view model, std::string_view provider, std::string_view key_id) {
    set_headers(model, provider, key_id, rt_.clock.now());
  }
  void set_headers(std::string_view model, std::string_view provider, std::string_view key_id,
                   MonoTime now);

  // The x-switchboard-* headers of a streamed answer (set_headers' counterpart for SSE heads).
  std::string stream_headers(const routing::Attempt& a, const keys::Lease& lease);

  AnswerFacts facts(std::string_view model, std::string_view provider, std::string_view key_id,
                    MonoTime now) const {
    return {request_id_, model,       provider,         key_id,
            attempts_,   layer_rank_, overhead_us(now), quota_note_};
  }

  int64_t overhead_us(MonoTime now) const {
    auto total = std::chrono::duration_cast<Micros>(now - t0_);
    return std::max<int64_t>(0, (total - upstream_time_).count());
  }

  // The plan's targets in turn: a breaker permit and a key lease (waiting within the retry
  // budget), one exchange, its outcome everywhere; the first success answers.
  asio::awaitable<void> attempts();

  // No attempt succeeded or none could be made: 400 (no provider can serve this request), 429
  // (quotas or keys, with Retry-After), 503 (breakers open), else 502 or 504 naming the last
  // failure.
  void give_up(const std::optional<Attempted>& last, MonoTime earliest_key, bool breaker_skips,
               const routing::Attempt* quota_skip);

  // A successful attempt: the answer in the client's API (translated when needed), its headers,
  // the request remembered for the caller's verdict, and the outcome recorded.
  void finish_success(const routing::Attempt& a, const std::string& key_id, Attempted& r);

  // Ends the request's span (no-op unless its trace is recorded).
  void finish_trace(bool error, std::string_view model, const upstream::TokenUsage& u);

  // The client key's configured name, "" without gateway keys (a metric label, never a secret).
  std::string_view client_name() const {
    return gateway_key_ >= 0
               ? std::string_view(snap_->config->auth.gateway_policies[size_t(gateway_key_)].name)
               : std::string_view();
  }

  double cost_of(const routing::Attempt& a, const upstream::TokenUsage& u) const {
    const ModelConfig* m = snap_->config->find_model(a.model);
    if (!m) return 0;
    return (double(u.prompt_tokens) * m->cost.input_per_mtok +
            double(u.completion_tokens) * m->cost.output_per_mtok) /
           1e6;
  }

  // The name learning, metrics and breakers know a target by: its catalog name, or for a name
  // outside the catalog (provider/anything, chosen by the client) its provider's shared bucket.
  std::string_view bucket(const routing::Attempt& a) {
    if (a.placement != routing::Placement::kDirect) return a.model;
    if (bucket_.empty()) {
      bucket_.assign(a.provider);
      bucket_ += "/*";
    }
    return bucket_;
  }

  void record_learning(const routing::Attempt& a, const Attempted& r, Nanos latency);

  void record_usage(const routing::Attempt& a, const std::string& key_id,
                    const upstream::TokenUsage& u);

  void flush_events();

  void record_outcome(const routing::Attempt* a, const std::string& key_id,
                      std::string_view status_class, const upstream::TokenUsage& u) {
    record_outcome(a, key_id, status_class, u, rt_.clock.now());
  }
  void record_outcome(const routing::Attempt* a, const std::string& key_id,
                      std::string_view status_class, const upstream::TokenUsage& u, MonoTime now);

  Runtime& rt_;
  const std::shared_ptr<const Snapshot> snap_;  // the configuration this request runs under
  Exchange& ex_;
  const MonoTime t0_;
  const int gateway_key_;
  const bool anthropic_;        // the client speaks Anthropic's Messages API (Dialect::kAnthropic)
  const bool embeddings_;       // POST /v1/embeddings: the same path to an embeddings endpoint
  ClientLimits limits_;         // after snap_ and gateway_key_: built from them
  std::string anthropic_body_;  // an Anthropic client's own request (UpstreamCall::anthropic_body)
  ResponsesContext* const responses_;  // POST /v1/responses (nullptr otherwise)
  uint64_t seq_ = 0;
  uint64_t nonce_ = 0;
  std::string request_id_;
  std::string bucket_;  // see bucket()
  std::string session_;
  ChatRequest req_;
  routing::FallbackPlan plan_;
  routing::FeatureVector features_;  // the request's (empty for embeddings)
  int attempts_ = 0;
  int layer_rank_ = 0;
  double ttft_ = -1;  // a stream's time to first content in seconds, -1 before any
  RequestTrace trace_;
  Micros upstream_time_{0};
  keys::HeaderList response_headers_;
  // The last attempt that failed, for the headers of an error answer (views into plan_).
  std::string_view failed_model_, failed_provider_;
  std::string failed_key_;
  std::string quota_note_;  // x-switchboard-quota of the answer (quota_note)
  // A target was skipped because its provider cannot serve this request (embeddings on
  // Anthropic, built-in tools without the Responses API): the 400's message and code.
  std::pair<std::string, std::string_view> unsupported_;
  std::vector<store::Event> pending_events_;  // usage events waiting for the outcome
  UpstreamCall upstream_{rt_,
                         ex_,
                         req_,
                         request_id_,
                         response_headers_,
                         [this](const routing::Attempt& a, const keys::Lease& lease) {
                           return stream_headers(a, lease);
                         }};
};

}  // namespace switchboard::gateway::detail
