// The request path of POST /v1/chat/completions (chat_call.h): validate, admit, plan, and for
// each attempt take a breaker permit and a key lease (waiting for capacity within the budget),
// send (upstream_call.cpp), classify, and record the outcome everywhere (keys, breakers, router,
// store).
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
#include "gateway/client_limits.h"
#include "gateway/quotas.h"
#include "gateway/tracing.h"

namespace switchboard::gateway {

namespace {

constexpr auto kNothrow = asio::as_tuple(asio::use_awaitable);
constexpr int64_t kDefaultOutputEstimate = 256;

std::string retry_after_seconds(Nanos wait) {
  auto s = std::chrono::duration_cast<std::chrono::seconds>(wait + std::chrono::milliseconds(999))
               .count();
  return std::to_string(std::max<int64_t>(1, s));
}

// ---- one request ------------------------------------------------------------------------------

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

  asio::awaitable<void> run() {
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

 private:
  // An answer before any attempt (bad request, unknown model, policy): counted like the rest.
  void reject(http::status status, std::string_view message, std::string_view type,
              std::string_view code) {
    fail(status, message, type, code);
    // No route label: the client may have sent any model name (unbounded label values).
    rt_.metrics.observe("", "", "", code,
                        std::chrono::duration<double>(rt_.clock.now() - t0_).count(), 0, false);
  }

  // Errors carry the x-switchboard-* headers too (DESIGN.md: every response), naming the last
  // attempt that failed, or empty when none was made.
  void fail(http::status status, std::string_view message, std::string_view type,
            std::string_view code) {
    ex_.response = anthropic_
                       ? json_response(status, upstream::anthropic_error_json(int(status), message),
                                       ex_.request.version())
                       : error_response(status, message, type, code, ex_.request.version());
    set_headers(failed_model_, failed_provider_, failed_key_);
  }

  // The client key's allowed routes (403, whatever the model's spelling). Its rpm and budget are
  // ClientLimits'.
  bool admit_gateway_key() {
    if (gateway_key_ < 0) return true;
    const auto& policy = snap_->config->auth.gateway_policies[size_t(gateway_key_)];
    if (!key_may_use(*snap_->config, gateway_key_, req_.model)) {
      reject(http::status::forbidden,
             "gateway key '" + policy.name + "' may not use '" + req_.model + "'",
             "permission_error", "model_not_allowed");
      return false;
    }
    return true;
  }

  void refuse(const ClientRefusal& r) {
    reject(r.status, r.message, r.type, r.code);
    if (r.retry_after)
      ex_.response.set(http::field::retry_after, retry_after_seconds(*r.retry_after));
  }

  // The monthly budget, held once the plan is known: the request's worst-case cost over its plan
  // (prompt estimate plus max_tokens, or a default output) (ClientLimits::reserve_budget).
  asio::awaitable<bool> reserve_budget() {
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
                   MonoTime now) {
    std::string& h = ex_.extra_headers;
    h.clear();
    for_each_switchboard_header(
        facts(model, provider, key_id, now),
        [&h](std::string_view n, std::string_view v) { append_header(h, n, v); });
  }

  // The x-switchboard-* headers of a streamed answer (set_headers' counterpart for SSE heads).
  std::string stream_headers(const routing::Attempt& a, const keys::Lease& lease) {
    quota_note_ = quota_note(rt_, a.provider);
    std::string out;
    out.reserve(256);
    for_each_switchboard_header(
        facts(a.model, a.provider, lease.key_id(), rt_.clock.now()),
        [&out](std::string_view n, std::string_view v) { append_header(out, n, v); });
    return out;
  }

  AnswerFacts facts(std::string_view model, std::string_view provider, std::string_view key_id,
                    MonoTime now) const {
    return {request_id_, model,       provider,         key_id,
            attempts_,   layer_rank_, overhead_us(now), quota_note_};
  }

  int64_t overhead_us(MonoTime now) const {
    auto total = std::chrono::duration_cast<Micros>(now - t0_);
    return std::max<int64_t>(0, (total - upstream_time_).count());
  }

  asio::awaitable<void> attempts() {
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
        unsupported_ = {responses_->native_only + " (no provider of '" + req_.model +
                            "' has the Responses API)",
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
                   "the gateways' shared key limits are unavailable (Redis unreachable)",
                   "api_error", "cluster_unavailable");
              co_return;
            }
            break;  // this gateway's share of each key's limits, counted locally
        }
      }
      if (shared_got && !shared_got->ok()) {
        const keys::NoKey nk = shared_got->no_key();
        if (nk.reason != keys::NoKeyReason::kNoUsableKey &&
            nk.reason != keys::NoKeyReason::kTooLarge)
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
            anthropic_       ? upstream::anthropic_error_json(int(status),
                                                              log::redact_relayed(relayed_message(r)))
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

  void give_up(const std::optional<Attempted>& last, MonoTime earliest_key, bool breaker_skips,
               const routing::Attempt* quota_skip) {
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
        earliest_key != MonoTime::max() && (!last || last->cls == OutcomeClass::kRateLimited ||
                                            last->cls == OutcomeClass::kAuthFailed);
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

  void finish_success(const routing::Attempt& a, const std::string& key_id, Attempted& r) {
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
    rt_.ledger->remember(
        seq_, bucket(a), plan_.category(), layer_rank_, 1.0, true,
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

  // Ends the request's span (no-op unless its trace is recorded).
  void finish_trace(bool error, std::string_view model, const upstream::TokenUsage& u) {
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
                  error ? std::string(ex_.response.reason()) : std::string(),
                  request_attributes(t));
  }

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

  void record_learning(const routing::Attempt& a, const Attempted& r, Nanos latency) {
    routing::Outcome o;
    o.model = std::string(bucket(a));
    o.category = plan_.category();
    o.success = r.cls == OutcomeClass::kSuccess;
    o.reward = o.success ? 1.0 : 0.0;
    // Only what says something about the model teaches the bandit: not the caller's mistakes,
    // not a key's rate limit or revocation, not a cancelled request.
    o.counts_for_learning = r.cls == OutcomeClass::kSuccess ||
                            r.cls == OutcomeClass::kServerError || r.cls == OutcomeClass::kTimeout;
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

  void record_usage(const routing::Attempt& a, const std::string& key_id,
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

  void flush_events() {
    if (pending_events_.empty() || !rt_.store) return;
    rt_.store->enqueue_batch(pending_events_);
    pending_events_.clear();
  }

  void record_outcome(const routing::Attempt* a, const std::string& key_id,
                      std::string_view status_class, const upstream::TokenUsage& u) {
    record_outcome(a, key_id, status_class, u, rt_.clock.now());
  }
  void record_outcome(const routing::Attempt* a, const std::string& key_id,
                      std::string_view status_class, const upstream::TokenUsage& u, MonoTime now) {
    auto total = now - t0_;
    std::string model = a ? std::string(a->model) : "";
    std::string provider = a ? std::string(a->provider) : "";
    // Labels are configured names only: a name outside the catalog (provider/anything, from the
    // client) is counted under its provider's bucket.
    const bool direct = a ? a->placement == routing::Placement::kDirect
                          : plan_.size() > 0 && plan_[0].placement == routing::Placement::kDirect;
    const std::string_view bucket_name = direct ? bucket(plan_[0]) : std::string_view(model);
    rt_.metrics.observe(direct ? bucket_name : std::string_view(plan_.route()), bucket_name,
                        provider, status_class, std::chrono::duration<double>(total).count(),
                        attempts_, layer_rank_ > 0);
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

}  // namespace

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
    ChatCall call(rt, std::move(snap), ex, gateway_key, watch.since(), dialect,
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
