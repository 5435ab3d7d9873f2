// What a call leaves behind (chat_call_impl.h): the x-switchboard-* headers of its answer, the
// outcome, usage and learning records (store, router, metrics, the access log), its trace.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <optional>

#include "common/json.h"
#include "common/log.h"
#include "common/metrics.h"
#include "gateway/auth.h"
#include "gateway/chat_call_impl.h"
#include "gateway/client_limits.h"
#include "gateway/quotas.h"
#include "gateway/tracing.h"

namespace switchboard::gateway::detail {

void ChatCall::set_headers(std::string_view model, std::string_view provider,
                           std::string_view key_id, MonoTime now) {
  std::string& h = ex_.extra_headers;
  h.clear();
  for_each_switchboard_header(
      facts(model, provider, key_id, now),
      [&h](std::string_view n, std::string_view v) { append_header(h, n, v); });
}

std::string ChatCall::stream_headers(const routing::Attempt& a, const keys::Lease& lease) {
  quota_note_ = quota_note(rt_, a.provider);
  std::string out;
  out.reserve(256);
  for_each_switchboard_header(
      facts(a.model, a.provider, lease.key_id(), rt_.clock.now()),
      [&out](std::string_view n, std::string_view v) { append_header(out, n, v); });
  return out;
}

void ChatCall::finish_success(const routing::Attempt& a, const std::string& key_id, Attempted& r) {
  quota_note_ = quota_note(rt_, a.provider);
  if (responses_) {
    if (auto err = finish_responses(rt_, *snap_, *responses_, r, client_name())) {
      failed_model_ = a.model;
      failed_provider_ = a.provider;
      failed_key_ = key_id;
      fail(http::status::bad_gateway, "the upstream's answer could not be translated: " + *err,
           "server_error", "bad_upstream_answer");
      record_outcome(&a, key_id, "server_error", r.usage);
      return;
    }
  }
  if (anthropic_ && !r.wrote_response && !r.anthropic_body) {
    // The answer in Anthropic's shape, named after the request.
    boost::system::error_code ec;
    auto doc = boost::json::parse(r.body, ec);
    auto translated = !ec && doc.is_object()
                          ? upstream::openai_to_anthropic_response(doc.as_object(), req_.model,
                                                                   "msg_" + request_id_)
                          : Result<std::string>(Status::unavailable("not a JSON object"));
    if (translated.ok()) {
      r.body = std::move(translated.value());
    } else {
      failed_model_ = a.model;
      failed_provider_ = a.provider;
      failed_key_ = key_id;
      fail(http::status::bad_gateway,
           "the upstream's answer could not be translated: " + translated.status().message(),
           "server_error", "bad_upstream_answer");
      record_outcome(&a, key_id, "server_error", r.usage);
      return;
    }
  }
  // Remembered for the caller's verdict; the transport success already taught the bandit.
  rt_.ledger->remember(seq_, bucket(a), plan_.category(), layer_rank_, 1.0, true,
                       {nonce_, owner_tag(*snap_, gateway_key_)}, plan_.route(),
                       snap_->router->contextual().has_route(plan_.route()) ? &features_ : nullptr);
  // Read after the bookkeeping, which x-switchboard-overhead-us includes.
  const MonoTime now = rt_.clock.now();
  if (!r.wrote_response) {
    ex_.response = json_response(http::status::ok, std::move(r.body), ex_.request.version());
    set_headers(a, key_id, now);
    // What this answer cost at the model's configured prices (a workflow's llm step counts it
    // against the run's max_cost_usd). Streams send their head before the usage is known.
    std::string cost;
    json::append_fixed(cost, cost_of(a, r.usage), 9);
    append_header(ex_.extra_headers, "x-switchboard-cost-usd", cost);
  }
  record_outcome(&a, key_id, "ok", r.usage, now);
}

void ChatCall::finish_trace(bool error, std::string_view model, const upstream::TokenUsage& u) {
  if (!trace_.recording() || !rt_.tracer) return;
  TracedRequest t;
  t.embeddings = embeddings_;
  t.request_model = req_.model;
  t.response_model = model;
  t.request_id = request_id_;
  t.route = plan_.route();
  t.client = client_name();
  t.status = int(ex_.response.result_int());
  t.attempts = attempts_;
  t.layer = layer_rank_;
  t.usage = u;
  trace_.finish(*rt_.tracer, request_span_name(t), rt_.clock.wall_now(), error,
                error ? std::string(ex_.response.reason()) : std::string(), request_attributes(t));
}

void ChatCall::record_learning(const routing::Attempt& a, const Attempted& r, Nanos latency) {
  routing::Outcome o;
  o.model = std::string(bucket(a));
  o.category = plan_.category();
  o.success = r.cls == OutcomeClass::kSuccess;
  o.reward = o.success ? 1.0 : 0.0;
  // Only what says something about the model teaches the bandit: not the caller's mistakes,
  // not a key's rate limit or revocation, not a cancelled request.
  o.counts_for_learning = r.cls == OutcomeClass::kSuccess || r.cls == OutcomeClass::kServerError ||
                          r.cls == OutcomeClass::kTimeout;
  o.latency_us = std::chrono::duration_cast<Micros>(latency).count();
  o.tokens_in = r.usage.prompt_tokens;
  o.tokens_out = r.usage.completion_tokens;
  o.cost_usd = cost_of(a, r.usage);
  o.route = plan_.route();
  o.features = features_;
  snap_->router->record(o);
  static metrics::ShardedCounter updates(
      &metrics::counter_family("switchboard_routing_updates_total",
                               "Outcomes recorded by the learned router")
           .Add({}));
  updates.add();
}

void ChatCall::record_usage(const routing::Attempt& a, const std::string& key_id,
                            const upstream::TokenUsage& u) {
  limits_.charge(cost_of(a, u));
  rt_.metrics.observe_usage(bucket(a), a.provider, client_name(), u.prompt_tokens,
                            u.completion_tokens, cost_of(a, u));
  if (!rt_.store) return;
  store::UsageEvent e;
  e.time = rt_.clock.wall_now();
  e.request_id = request_id_;
  e.provider = std::string(a.provider);
  e.key_id = key_id;
  e.model = std::string(a.model);
  e.tokens_in = u.prompt_tokens;
  e.tokens_out = u.completion_tokens;
  e.cost_usd = cost_of(a, u);
  if (gateway_key_ >= 0)
    e.gateway_key = snap_->config->auth.gateway_policies[size_t(gateway_key_)].name;
  // Enqueued with the request's outcome (one trip through the store's lock), or by the
  // destructor if the call ends without one.
  pending_events_.emplace_back(std::move(e));
}

void ChatCall::flush_events() {
  if (pending_events_.empty() || !rt_.store) return;
  rt_.store->enqueue_batch(pending_events_);
  pending_events_.clear();
}

void ChatCall::record_outcome(const routing::Attempt* a, const std::string& key_id,
                              std::string_view status_class, const upstream::TokenUsage& u,
                              MonoTime now) {
  auto total = now - t0_;
  std::string model = a ? std::string(a->model) : "";
  std::string provider = a ? std::string(a->provider) : "";
  // Labels are configured names only: a name outside the catalog (provider/anything, from the
  // client) is counted under its provider's bucket.
  const bool direct = a ? a->placement == routing::Placement::kDirect
                        : plan_.size() > 0 && plan_[0].placement == routing::Placement::kDirect;
  const std::string_view bucket_name = direct ? bucket(plan_[0]) : std::string_view(model);
  rt_.metrics.observe(direct ? bucket_name : std::string_view(plan_.route()), bucket_name, provider,
                      status_class, std::chrono::duration<double>(total).count(), attempts_,
                      layer_rank_ > 0);
  const std::string_view client = client_name();
  finish_trace(status_class != "ok", model, u);
  if (ttft_ >= 0 && status_class == "ok") rt_.metrics.observe_ttft(bucket_name, ttft_);
  if (snap_->config->log.access_log) {
    log::AccessRecord rec;
    rec.request_id = request_id_;
    rec.route = plan_.route();
    rec.model = model;
    rec.provider = provider;
    rec.key = key_id;
    rec.client = client;
    rec.status = status_class;
    rec.attempts = attempts_;
    rec.layer = layer_rank_;
    rec.latency_us = std::chrono::duration_cast<Micros>(total).count();
    rec.tokens_in = u.prompt_tokens;
    rec.tokens_out = u.completion_tokens;
    rec.cost_usd = a ? cost_of(*a, u) : 0;
    log::access(rec);
  }
  if (!rt_.store) return;
  store::OutcomeEvent e;
  e.time = rt_.clock.wall_now();
  e.request_id = request_id_;
  e.route = plan_.route();
  e.model = std::move(model);
  e.provider = std::move(provider);
  e.key_id = key_id;
  e.status_class = status_class == "ok" ? store::kStatusOk : std::string(status_class);
  e.category = plan_.category();
  e.latency_us = std::chrono::duration_cast<Micros>(total).count();
  e.tokens_in = u.prompt_tokens;
  e.tokens_out = u.completion_tokens;
  e.cost_usd = a ? cost_of(*a, u) : 0;
  e.attempts = attempts_;
  e.layer = layer_rank_;
  e.gateway_key = client;
  pending_events_.emplace_back(std::move(e));
  flush_events();
}

}  // namespace switchboard::gateway::detail
