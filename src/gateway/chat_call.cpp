// The request path of POST /v1/chat/completions (chat_call.h): validate, admit, plan, and for
// each attempt take a breaker permit and a key lease (waiting for capacity within the budget),
// send (upstream_call.cpp), classify, and record the outcome everywhere (keys, breakers, router,
// store: call_records.cpp). The call itself is declared in chat_call_impl.h.
#include "gateway/chat_call.h"

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

namespace switchboard::gateway {

namespace {

constexpr int64_t kDefaultOutputEstimate = 256;

std::string retry_after_seconds(Nanos wait) {
  auto s = std::chrono::duration_cast<std::chrono::seconds>(wait + std::chrono::milliseconds(999))
               .count();
  return std::to_string(std::max<int64_t>(1, s));
}

}  // namespace

namespace detail {

asio::awaitable<void> ChatCall::run() {
  seq_ = rt_.next_request_seq();
  nonce_ = secure_random_u64();
  request_id_ = rt_.request_id(seq_, nonce_);
  if (responses_) responses_->id = "resp_" + request_id_;
  trace_.begin(rt_.tracer != nullptr, snap_->config->telemetry.sample_ratio,
               ex_.request["traceparent"], rt_.clock.wall_now());
  if (auto err = embeddings_ ? validate_embeddings_request(ex_.request.body(), req_)
                             : validate_chat_request(ex_.request.body(), req_)) {
    reject(http::status::bad_request, *err, "invalid_request_error", "invalid_request");
    co_return;
  }
  if (!admit_gateway_key()) co_return;
  if (auto refusal = co_await limits_.admit_rpm()) {
    refuse(*refusal);
    co_return;
  }
  routing::RequestInfo info;
  info.model = req_.model;
  info.prompt_tokens = req_.prompt_tokens;
  info.max_tokens = req_.max_tokens;
  if (auto err = read_routing_hints(ex_.request, info, session_)) {
    reject(http::status::bad_request, *err, "invalid_request_error", "invalid_header");
    co_return;
  }
  // What the request looks like, for the learned routes' contextual models (issue 30): only
  // a learned route reads them (the plan, the ledger and the journal all ask has_route).
  if (!embeddings_ && snap_->router->contextual().has_route(req_.model)) {
    const auto ua = ex_.request[http::field::user_agent];
    info.features = routing::build_features(
        req_.text, {info.category, info.complexity ? to_string(*info.complexity) : "",
                    owner_tag(*snap_, gateway_key_), std::string_view(ua.data(), ua.size())});
    features_ = info.features;
  }
  auto plan = snap_->router->plan(info);
  if (!plan.ok()) {
    if (plan.status().code() == StatusCode::kNotFound) {
      reject(http::status::not_found, "The model '" + req_.model + "' does not exist",
             "invalid_request_error", "model_not_found");
    } else {
      reject(http::status::bad_request, plan.status().message(), "invalid_request_error",
             "no_eligible_model");
    }
    co_return;
  }
  plan_ = std::move(plan.value());
  if (!co_await reserve_budget()) co_return;
  co_await attempts();
}

void ChatCall::reject(http::status status, std::string_view message, std::string_view type,
                      std::string_view code) {
  fail(status, message, type, code);
  // No route label: the client may have sent any model name (unbounded label values).
  rt_.metrics.observe("", "", "", code,
                      std::chrono::duration<double>(rt_.clock.now() - t0_).count(), 0, false);
}

void ChatCall::fail(http::status status, std::string_view message, std::string_view type,
                    std::string_view code) {
  ex_.response = anthropic_
                     ? json_response(status, upstream::anthropic_error_json(int(status), message),
                                     ex_.request.version())
                     : error_response(status, message, type, code, ex_.request.version());
  set_headers(failed_model_, failed_provider_, failed_key_);
}

bool ChatCall::admit_gateway_key() {
  if (gateway_key_ < 0) return true;
  const auto& policy = snap_->config->auth.gateway_policies[size_t(gateway_key_)];
  if (!key_may_use(*snap_->config, gateway_key_, req_.model)) {
    reject(http::status::forbidden,
           "gateway key '" + policy.name + "' may not use '" + req_.model + "'", "permission_error",
           "model_not_allowed");
    return false;
  }
  return true;
}

void ChatCall::refuse(const ClientRefusal& r) {
  reject(r.status, r.message, r.type, r.code);
  if (r.retry_after)
    ex_.response.set(http::field::retry_after, retry_after_seconds(*r.retry_after));
}

asio::awaitable<bool> ChatCall::reserve_budget() {
  if (gateway_key_ < 0) co_return true;
  if (snap_->config->auth.gateway_policies[size_t(gateway_key_)].monthly_budget_usd <= 0)
    co_return true;
  double estimate = 0;
  const int64_t output = req_.max_tokens > 0 ? req_.max_tokens : kDefaultOutputEstimate;
  for (size_t i = 0; i < plan_.size(); ++i) {
    const ModelConfig* m = snap_->config->find_model(plan_[i].model);
    if (!m) continue;  // outside the catalog: no price known
    estimate = std::max(estimate, (double(req_.prompt_tokens) * m->cost.input_per_mtok +
                                   double(output) * m->cost.output_per_mtok) /
                                      1e6);
  }
  if (auto refusal = co_await limits_.reserve_budget(estimate)) {
    refuse(*refusal);
    co_return false;
  }
  co_return true;
}

asio::awaitable<void> ChatCall::attempts() {
  const Config& cfg = *snap_->config;
  const MonoTime deadline = t0_ + Millis(cfg.retry.budget_ms);
  const int64_t estimate =
      req_.prompt_tokens + (req_.max_tokens > 0 ? req_.max_tokens : kDefaultOutputEstimate);
  MonoTime earliest_key = MonoTime::max();
  std::optional<Attempted> last;
  bool breaker_skips = false;
  const routing::Attempt* quota_skip = nullptr;  // the first target skipped for its quota
  size_t idx = 0;
  while (idx < plan_.size() && attempts_ < cfg.retry.max_attempts) {
    const routing::Attempt& a = plan_[idx];
    // The plan's rank of this target's layer: layers skipped for open breakers count.
    layer_rank_ = a.rank;
    auto now = rt_.clock.now();
    if (now >= deadline) break;
    ProviderRuntime* pr = snap_->provider(a.provider);
    if (!pr) {
      idx++;
      continue;
    }
    if (embeddings_ && pr->anthropic) {  // Anthropic has no embeddings API
      unsupported_ = {
          "no provider of '" + req_.model + "' offers embeddings (Anthropic's API has none)",
          "embeddings_unsupported"};
      idx++;
      continue;
    }
    if (responses_ && !responses_->native_only.empty() && !speaks_responses(*pr)) {
      unsupported_ = {
          responses_->native_only + " (no provider of '" + req_.model + "' has the Responses API)",
          "responses_unsupported"};
      idx++;
      continue;
    }
    // An exhausted quota is not spent past, whatever the plan said when it was made.
    if (rt_.quotas.any() &&
        rt_.quotas.level(a.provider, rt_.clock.wall_now()) == quota::Level::kExhausted) {
      if (!quota_skip) quota_skip = &a;
      idx++;
      continue;
    }
    breaker::Permit pp = snap_->breaker_table->provider(a.provider).try_acquire();
    breaker::Permit mp =
        pp ? snap_->breaker_table->model(a.provider, a.model).try_acquire() : breaker::Permit();
    if (!pp || !mp) {
      breaker_skips = true;
      idx++;
      continue;
    }
    keys::AcquireRequest kr{std::string(a.upstream), estimate, deadline, session_};
    const MonoTime wait_until = std::min(deadline, now + Millis(cfg.retry.wait_for_key_ms));
    cluster::Reservation shared;  // the lease's slot in the cluster's Redis, when shared
    std::optional<keys::AcquireResult> shared_got;
    if (rt_.cluster) {
      SharedAcquire sa = co_await acquire_shared(rt_, *pr, kr, wait_until);
      switch (sa.kind) {
        case SharedAcquire::Kind::kCancelled:
          co_return;
        case SharedAcquire::Kind::kLease:
        case SharedAcquire::Kind::kNoKey:
          shared_got.emplace(std::move(sa.result));
          shared = std::move(sa.reservation);
          break;
        case SharedAcquire::Kind::kUnavailable:
          if (rt_.cluster->config().on_redis_down == RedisDownPolicy::kRefuse) {
            fail(http::status::service_unavailable,
                 "the gateways' shared key limits are unavailable (Redis unreachable)", "api_error",
                 "cluster_unavailable");
            co_return;
          }
          break;  // this gateway's share of each key's limits, counted locally
      }
    }
    if (shared_got && !shared_got->ok()) {
      const keys::NoKey nk = shared_got->no_key();
      if (nk.reason != keys::NoKeyReason::kNoUsableKey && nk.reason != keys::NoKeyReason::kTooLarge)
        earliest_key = std::min(earliest_key, nk.earliest);
      idx++;
      continue;
    }
    keys::AcquireResult got = shared_got ? std::move(*shared_got) : pr->pool->acquire(kr);
    bool waited = shared.active();  // a Redis round trip: the attempt starts after it
    if (!got.ok()) {
      const keys::NoKey nk = got.no_key();
      bool waitable = nk.reason == keys::NoKeyReason::kConcurrency ||
                      nk.reason == keys::NoKeyReason::kCooling ||
                      nk.reason == keys::NoKeyReason::kMinuteWindow ||
                      nk.reason == keys::NoKeyReason::kDailyWindow;
      if (waitable && nk.earliest <= wait_until) {
        kr.deadline = wait_until;
        const WallTime wait_start = rt_.clock.wall_now();
        got = co_await wait_for_key(*pr->pool, kr);
        waited = true;
        if (trace_.recording()) {
          telemetry::Span w;
          w.id = telemetry::new_span_id();
          w.name = "wait for key";
          w.start = wait_start;
          w.end = rt_.clock.wall_now();
          w.attributes = {{"switchboard.provider", std::string(a.provider)},
                          {"switchboard.wait_reason", std::string(keys::to_string(nk.reason))},
                          {"switchboard.key_granted", got.ok()}};
          trace_.add_child(std::move(w));
        }
        // A reload handed this pool's keys to a new pool while we waited (the waiters of the
        // old one are let go): the old pool forwards to the new one, so ask again there, with
        // what is left of the wait. Bounded: each round needs another reload to end this way.
        for (int round = 0;
             round < 8 && !got.ok() && got.no_key().reason == keys::NoKeyReason::kShutdown;
             ++round) {
          got = pr->pool->acquire(kr);
          if (!got.ok() && got.no_key().reason != keys::NoKeyReason::kNoUsableKey &&
              got.no_key().reason != keys::NoKeyReason::kTooLarge &&
              got.no_key().earliest <= wait_until)
            got = co_await wait_for_key(*pr->pool, kr);
        }
      }
      if (!got.ok()) {
        if (got.no_key().reason == keys::NoKeyReason::kCancelled) co_return;
        MonoTime e = got.no_key().reason == keys::NoKeyReason::kTimeout ? nk.earliest
                                                                        : got.no_key().earliest;
        if (nk.reason != keys::NoKeyReason::kNoUsableKey &&
            nk.reason != keys::NoKeyReason::kTooLarge)
          earliest_key = std::min(earliest_key, e);
        idx++;
        continue;
      }
    }
    keys::Lease lease = got.take_lease();
    attempts_++;
    // A grant that did not wait took microseconds: the loop's reading serves as the start.
    const MonoTime started = waited ? rt_.clock.now() : now;
    const MonoTime call_deadline = std::min(deadline, started + Millis(pr->config->timeout_ms));
    const telemetry::SpanId attempt_span =
        trace_.recording() ? telemetry::new_span_id() : telemetry::SpanId{};
    upstream_.traceparent = trace_.upstream_header(attempt_span);
    const WallTime attempt_start = trace_.recording() ? rt_.clock.wall_now() : WallTime{};
    Attempted r = co_await send_attempt(upstream_, *pr, a, lease, call_deadline);
    auto latency = rt_.clock.now() - started;
    if (trace_.recording())
      trace_.add_child(attempt_span_of(attempt_span, attempt_start, rt_.clock.wall_now(),
                                       embeddings_, a, pr->anthropic, lease.key_id(), r));
    upstream_time_ += std::chrono::duration_cast<Micros>(latency);
    rt_.metrics.observe_attempt(bucket(a), a.provider, to_string(r.cls),
                                std::chrono::duration<double>(latency).count());
    if (r.first_content != MonoTime{})
      ttft_ = std::chrono::duration<double>(r.first_content - t0_).count();

    keys::Outcome ko;
    ko.status = r.cls;
    ko.latency = std::chrono::duration_cast<Millis>(latency);
    ko.tokens_used = r.usage.total() > 0 ? r.usage.total() : -1;
    ko.headers = std::move(response_headers_);
    const std::string key_id = lease.key_id();
    if (shared.active()) {
      keys::EndReport report;
      lease.complete(ko, &report);
      shared.settle(report);
    } else {
      lease.complete(ko);
    }
    pp.record(r.cls, latency);
    mp.record(r.cls, latency);
    record_learning(a, r, latency);
    // Every attempt the key's day window counts (all but those that may never have reached the
    // provider) is journaled: the window is counted back from these after a restart.
    if (r.cls != OutcomeClass::kCancelled && r.cls != OutcomeClass::kConnectionError) {
      record_usage(a, key_id, r.usage);
      count_quota(rt_, a.provider, r.usage.total(), cost_of(a, r.usage));
    }
    if (r.cls == OutcomeClass::kRateLimited) persist_key_state(rt_, *pr->pool, key_id);

    if (r.cls == OutcomeClass::kSuccess) {
      finish_success(a, key_id, r);
      co_return;
    }
    if (r.cls == OutcomeClass::kCancelled) {
      ex_.close = true;
      ex_.written = true;
      record_outcome(&a, key_id, "cancelled", {});
      co_return;
    }
    if (r.wrote_response) {  // a stream failed after the client saw content: already ended
      record_outcome(&a, key_id, to_string(r.cls), r.usage);
      co_return;
    }
    if (r.cls == OutcomeClass::kClientError) {
      // The request's own fault: another model would reject it too. Pass the upstream's answer,
      // with anything that looks like one of our secrets taken out (a provider may echo the
      // key it was sent, or part of it).
      const auto status =
          static_cast<http::status>(r.status >= 400 && r.status < 500 ? r.status : 400);
      ex_.response = json_response(
          status,
          anthropic_
              ? upstream::anthropic_error_json(int(status), log::redact_relayed(relayed_message(r)))
          : r.body.empty() ? upstream::openai_error_json(r.message, "invalid_request_error")
                           : log::redact_relayed(r.body),
          ex_.request.version());
      set_headers(a, key_id);
      record_outcome(&a, key_id, "client_error", {});
      co_return;
    }
    log::warn("request {}: {} via {} on {} failed: {} ({})", request_id_, a.model, a.provider,
              key_id, to_string(r.cls), r.message);
    last = std::move(r);
    failed_model_ = a.model;
    failed_provider_ = a.provider;
    failed_key_ = key_id;
    if (last->cls == OutcomeClass::kRateLimited || last->cls == OutcomeClass::kAuthFailed) {
      // Another key of the same model first; the pool will not hand out the cooled or dead key.
      continue;
    }
    idx++;
  }
  give_up(last, earliest_key, breaker_skips, quota_skip);
}

void ChatCall::give_up(const std::optional<Attempted>& last, MonoTime earliest_key,
                       bool breaker_skips, const routing::Attempt* quota_skip) {
  auto now = rt_.clock.now();
  if (!last && !unsupported_.first.empty() && !quota_skip && !breaker_skips &&
      earliest_key == MonoTime::max()) {
    fail(http::status::bad_request, unsupported_.first, "invalid_request_error",
         unsupported_.second);
    record_outcome(nullptr, "", "client_error", {});
    return;
  }
  if (!last && quota_skip && !breaker_skips && earliest_key == MonoTime::max()) {
    // Nothing was sent: every target left had a provider whose quota is used up.
    auto s = rt_.quotas.standing(quota_skip->provider, rt_.clock.wall_now());
    const Nanos wait = s ? std::chrono::duration_cast<Nanos>(s->period.end - rt_.clock.wall_now())
                         : Nanos(std::chrono::hours(1));
    fail(http::status::too_many_requests,
         "the quota of provider '" + std::string(quota_skip->provider) +
             "' is exhausted for this " +
             (s && s->config.period == QuotaPeriod::kDay ? "day" : "month") +
             " and no other provider can serve '" + req_.model + "'",
         "insufficient_quota", "quota_exhausted");
    ex_.response.set(http::field::retry_after, retry_after_seconds(wait));
    record_outcome(nullptr, "", "quota_exhausted", {});
    return;
  }
  const bool limited =
      earliest_key != MonoTime::max() &&
      (!last || last->cls == OutcomeClass::kRateLimited || last->cls == OutcomeClass::kAuthFailed);
  if (limited) {
    Nanos wait = earliest_key > now ? earliest_key - now : Nanos(0);
    fail(http::status::too_many_requests,
         "every key of every model for '" + req_.model +
             "' is rate limited; retry after the indicated time",
         "rate_limit_error", "rate_limit_exceeded");
    ex_.response.set(http::field::retry_after, retry_after_seconds(wait));
    record_outcome(nullptr, "", "rate_limited", {});
    return;
  }
  if (!last) {
    fail(http::status::service_unavailable,
         breaker_skips ? "every provider for this model is failing (circuit breakers open)"
                       : "no provider key can serve this request",
         "server_error", breaker_skips ? "breaker_open" : "no_capacity");
    record_outcome(nullptr, "", "unavailable", {});
    return;
  }
  http::status status = last->cls == OutcomeClass::kTimeout ? http::status::gateway_timeout
                                                            : http::status::bad_gateway;
  fail(status,
       "upstream failed after " + std::to_string(attempts_) + " attempt(s): " + last->message,
       "server_error", std::string(to_string(last->cls)));
  record_outcome(nullptr, "", to_string(last->cls), {});
}

}  // namespace detail

namespace {
asio::awaitable<void> run_call(Runtime& rt, std::shared_ptr<const Snapshot> snap, Exchange& ex,
                               int gateway_key, Dialect dialect, std::string anthropic_body,
                               bool embeddings, ResponsesContext* responses = nullptr) {
  ClientWatch watch(ex);
  // Once the client has left (the watch emits the connection's cancellation signal), the
  // operation then pending completes with operation_aborted and every later one throws: the
  // call unwinds, its leases and permits end as `cancelled` and its usage is still stored.
  // (The signal alone could be missed: by an operation that ignores cancellation, such as name
  // resolution, or one that had just completed.)
  co_await asio::this_coro::throw_if_cancelled(true);
  std::exception_ptr failure;
  try {
    detail::ChatCall call(rt, std::move(snap), ex, gateway_key, watch.since(), dialect,
                          std::move(anthropic_body), embeddings, responses);
    co_await call.run();
  } catch (...) {
    failure = std::current_exception();
  }
  co_await asio::this_coro::throw_if_cancelled(false);
  if (watch.client_left()) {  // nobody to answer, whatever the call was doing
    ex.written = true;
    ex.close = true;
    co_return;
  }
  if (failure) std::rethrow_exception(failure);
}
}  // namespace

asio::awaitable<void> handle_chat(Runtime& rt, std::shared_ptr<const Snapshot> snap, Exchange& ex,
                                  int gateway_key, Dialect dialect, std::string anthropic_body) {
  co_await run_call(rt, std::move(snap), ex, gateway_key, dialect, std::move(anthropic_body),
                    false);
}

asio::awaitable<void> handle_embeddings(Runtime& rt, std::shared_ptr<const Snapshot> snap,
                                        Exchange& ex, int gateway_key) {
  co_await run_call(rt, std::move(snap), ex, gateway_key, Dialect::kOpenAI, {}, true);
}

asio::awaitable<void> handle_responses_call(Runtime& rt, std::shared_ptr<const Snapshot> snap,
                                            Exchange& ex, int gateway_key, ResponsesContext& ctx) {
  co_await run_call(rt, std::move(snap), ex, gateway_key, Dialect::kOpenAI, {}, false, &ctx);
}

}  // namespace switchboard::gateway
