// The request path of POST /v1/chat/completions: validate, plan, and for each attempt take a
// breaker permit and a key lease (waiting for capacity within the budget), send, classify, and
// record the outcome everywhere (keys, breakers, router, store). Streams are held back until the
// first content-bearing chunk so that failures before it fail over invisibly.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <charconv>
#include <cmath>
#include <ctime>
#include <optional>

#include "common/json.h"
#include "common/log.h"
#include "common/metrics.h"
#include "gateway/auth.h"
#include "gateway/chat_request.h"
#include "gateway/runtime.h"
#include "upstream/translate.h"

namespace switchboard::gateway {

namespace {

using upstream::ErrorClass;
constexpr auto kNothrow = asio::as_tuple(asio::use_awaitable);
constexpr int64_t kDefaultOutputEstimate = 256;
// Routing hints are map keys, stored rows and log fields: bounded.
constexpr size_t kMaxCategoryBytes = 64;
constexpr size_t kMaxSessionBytes = 128;
// A stream is held back until its first content so that a failure before it can still fail
// over; an upstream that sends this much without content is relayed from then on instead
// (holding it would grow without a bound).
constexpr size_t kMaxHeldStreamBytes = 256 * 1024;

// ---- body inspection --------------------------------------------------------------------------

size_t skip_ws(std::string_view s, size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return i;
}

// Index just past the string that starts at s[i] == '"'.
size_t end_of_string(std::string_view s, size_t i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\')
      ++i;
    else if (s[i] == '"')
      return i + 1;
  }
  return s.size();
}

// The byte range of the top-level member `key`'s string value in a JSON object already known to
// be valid. Lets the body be forwarded as is, with only the model name replaced.
bool find_top_level_string(std::string_view s, std::string_view key, size_t& start, size_t& end) {
  int depth = 0;
  bool expect_key = false;
  for (size_t i = 0; i < s.size();) {
    char c = s[i];
    if (c == '"') {
      size_t j = end_of_string(s, i);
      if (depth == 1 && expect_key) {
        std::string_view k = s.substr(i + 1, j - i - 2);
        size_t colon = skip_ws(s, j);
        size_t v = skip_ws(s, colon + 1);
        expect_key = false;
        if (k == key) {
          if (v >= s.size() || s[v] != '"') return false;
          start = v;
          end = end_of_string(s, v);
          return true;
        }
        i = colon + 1;
        continue;
      }
      i = j;
      continue;
    }
    if (c == '{' || c == '[') {
      ++depth;
      if (c == '{' && depth == 1) expect_key = true;
    } else if (c == '}' || c == ']') {
      --depth;
    } else if (c == ',' && depth == 1) {
      expect_key = true;
    }
    ++i;
  }
  return false;
}

// The body sent to an OpenAI-compatible upstream: the client's bytes with the model replaced and,
// for streams whose client did not ask for usage, usage requested (stripped again before the
// client sees it).
std::string openai_body(std::string_view original, ChatRequest& req,
                        std::string_view upstream_model) {
  size_t start = 0, end = 0;
  std::string out;
  out.reserve(original.size() + 64);
  if (find_top_level_string(original, "model", start, end)) {
    out.append(original.substr(0, start));
    out += json::quote(upstream_model);
    out.append(original.substr(end));
  } else {
    // The key was written with escapes ("mod\u0065l"), which the byte scan does not decode:
    // rebuilt from the document, whose keys are decoded.
    boost::json::object o = req.document(original);
    o["model"] = upstream_model;
    out = boost::json::serialize(o);
  }
  if (req.stream && !req.client_wants_usage) {
    if (!req.stream_options_present) {
      size_t brace = out.find('{');
      out.insert(brace + 1, "\"stream_options\":{\"include_usage\":true},");
    } else {
      // The client's stream_options (null, or without usage) would leave the gateway without the
      // usage it accounts with: rebuild the body with usage requested (rare; stripped again
      // before the client sees it).
      boost::json::object o = req.document(original);
      o["model"] = upstream_model;
      boost::json::value& so = o["stream_options"];
      if (!so.is_object()) so = boost::json::object();
      so.as_object()["include_usage"] = true;
      return boost::json::serialize(o);
    }
  }
  return out;
}

keys::OutcomeClass to_keys(ErrorClass c) {
  return static_cast<keys::OutcomeClass>(c);
}
breaker::Outcome to_breaker(ErrorClass c) {
  return static_cast<breaker::Outcome>(c);
}

std::string retry_after_seconds(Nanos wait) {
  auto s = std::chrono::duration_cast<std::chrono::seconds>(wait + std::chrono::milliseconds(999))
               .count();
  return std::to_string(std::max<int64_t>(1, s));
}

// ---- waiting for a key ------------------------------------------------------------------------

// Bridges KeyPool::wait_async (callback on any thread) into this coroutine (this thread).
asio::awaitable<keys::AcquireResult> wait_for_key(keys::KeyPool& pool,
                                                  keys::AcquireRequest request) {
  auto ex = co_await asio::this_coro::executor;
  struct State {
    explicit State(asio::any_io_executor e) : timer(e) {}
    asio::steady_timer timer;
    std::optional<keys::AcquireResult> result;
  };
  auto state = std::make_shared<State>(ex);
  state->timer.expires_at(MonoTime::max());
  auto id = pool.wait_async(std::move(request), [state, ex](keys::AcquireResult r) {
    auto shared = std::make_shared<keys::AcquireResult>(std::move(r));
    asio::post(ex, [state, shared] {
      state->result.emplace(std::move(*shared));
      state->timer.cancel();
    });
  });
  // Withdraws the waiter however this coroutine ends (the wait below throws once the client
  // has left). A no-op when it was served already.
  struct Withdraw {
    keys::KeyPool& pool;
    keys::WaitId id;
    ~Withdraw() { pool.cancel_wait(id); }
  } withdraw{pool, id};
  while (!state->result) {
    auto [ec] = co_await state->timer.async_wait(kNothrow);
    if (!state->result) {
      // Cancelled from outside (the client left): withdrawn on return. A lease already handed
      // over ends as `cancelled` when the posted handler drops it.
      co_return keys::AcquireResult(keys::NoKey{keys::NoKeyReason::kCancelled, MonoTime::max()});
    }
  }
  co_return std::move(*state->result);
}

// Notices a client that closes its connection while its request runs, and then cancels the
// request (Exchange::cancel), whose leases and permits end as `cancelled` and whose upstream
// connection is closed. Watching costs an epoll registration, so it starts only once a request
// has run for a while: the quick ones finish first, and a slow LLM call is still cancelled moments
// after its client leaves. Nothing per request but two pointer updates: calls wait in a per-thread
// list in start order, and one timer per thread starts watching those that reach the age.
constexpr auto kWatchClientAfter = std::chrono::milliseconds(20);

class ClientWatch;

// The calls of one server thread that are not watched yet, oldest first. Used only on its thread.
class WatchList {
 public:
  static WatchList& of_this_thread(const asio::any_io_executor& ex) {
    thread_local std::unique_ptr<WatchList> list;
    if (!list || &list->context_ != &asio::query(ex, asio::execution::context)) {
      list = std::make_unique<WatchList>(ex);
    }
    return *list;
  }

  explicit WatchList(const asio::any_io_executor& ex)
      : context_(asio::query(ex, asio::execution::context)), timer_(ex) {}
  WatchList(const WatchList&) = delete;
  WatchList& operator=(const WatchList&) = delete;
  // At thread exit; calls still listed (their frames die later, with the io_context) forget us.
  ~WatchList();

  void add(ClientWatch* w);
  void remove(ClientWatch* w);

 private:
  void arm();
  void sweep();

  asio::execution_context& context_;
  asio::steady_timer timer_;
  bool armed_ = false;
  ClientWatch* head_ = nullptr;
  ClientWatch* tail_ = nullptr;
};

class ClientWatch {
 public:
  explicit ClientWatch(Exchange& ex)
      : ex_(ex),
        since_(MonoClock::now()),
        list_(WatchList::of_this_thread(ex.stream.socket().get_executor())) {
    list_.add(this);
  }
  ClientWatch(const ClientWatch&) = delete;
  ClientWatch& operator=(const ClientWatch&) = delete;
  ~ClientWatch() {
    if (listed_) list_.remove(this);
    if (state_) {
      state_->done = true;
      // Only our wait is pending on the socket now (the request is over).
      boost::system::error_code ignored;
      ex_.stream.socket().cancel(ignored);
    }
  }

  bool client_left() const { return state_ && state_->gone; }
  MonoTime since() const { return since_; }

 private:
  friend class WatchList;

  // Shared with the pending wait's callback, which may run after the request ended.
  struct State : std::enable_shared_from_this<State> {
    explicit State(Exchange& x) : ex(x) {}
    Exchange& ex;  // valid while !done
    bool done = false;
    bool gone = false;

    void rearm() {
      ex.stream.socket().async_wait(
          asio::ip::tcp::socket::wait_read,
          [s = shared_from_this()](boost::system::error_code ec) { s->readable(ec); });
    }

    void readable(boost::system::error_code ec) {
      if (ec || done) return;
      char byte;
      ssize_t n = ::recv(ex.stream.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) return;  // pipelined bytes of a next request: the client is still there
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        rearm();  // a spurious wake-up: keep watching
        return;
      }
      gone = true;
      if (ex.cancel) ex.cancel->emit(asio::cancellation_type::terminal);
    }
  };

  void start_watching() {
    state_ = std::make_shared<State>(ex_);
    state_->rearm();
  }

  Exchange& ex_;
  const MonoTime since_;
  WatchList& list_;
  bool listed_ = false;
  ClientWatch* prev_ = nullptr;
  ClientWatch* next_ = nullptr;
  std::shared_ptr<State> state_;  // once watching
};

WatchList::~WatchList() {
  for (ClientWatch* w = head_; w != nullptr; w = w->next_) w->listed_ = false;
}

void WatchList::add(ClientWatch* w) {
  w->listed_ = true;
  w->prev_ = tail_;
  w->next_ = nullptr;
  (tail_ ? tail_->next_ : head_) = w;
  tail_ = w;
  if (!armed_) arm();
}

void WatchList::remove(ClientWatch* w) {
  (w->prev_ ? w->prev_->next_ : head_) = w->next_;
  (w->next_ ? w->next_->prev_ : tail_) = w->prev_;
  w->listed_ = false;
  w->prev_ = w->next_ = nullptr;
}

void WatchList::arm() {
  if (head_ == nullptr) return;
  armed_ = true;
  timer_.expires_at(head_->since_ + kWatchClientAfter);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;  // destroyed with the list (never re-armed while armed)
    armed_ = false;
    sweep();
  });
}

void WatchList::sweep() {
  const MonoTime now = MonoClock::now();
  while (head_ != nullptr && head_->since_ + kWatchClientAfter <= now) {
    ClientWatch* w = head_;
    remove(w);
    w->start_watching();
  }
  arm();
}

// ---- one request ------------------------------------------------------------------------------

struct Attempted {
  ErrorClass cls = ErrorClass::kSuccess;
  int status = 0;
  std::string body;  // error body (for client errors passed through)
  std::string message;
  upstream::TokenUsage usage;
  bool wrote_response = false;  // streaming: the client has seen bytes
};

class ChatCall {
 public:
  ChatCall(Runtime& rt, std::shared_ptr<const Snapshot> snap, Exchange& ex, int gateway_key,
           MonoTime t0)
      : rt_(rt), snap_(std::move(snap)), ex_(ex), t0_(t0), gateway_key_(gateway_key) {
    pending_events_.reserve(2);  // a usage and an outcome, enqueued together
  }
  ChatCall(const ChatCall&) = delete;
  ChatCall& operator=(const ChatCall&) = delete;
  // Usage is essential (spend, budgets): whatever is still pending is stored.
  ~ChatCall() {
    release_budget();
    flush_events();
  }

  asio::awaitable<void> run() {
    seq_ = rt_.next_request_seq();
    nonce_ = secure_random_u64();
    request_id_ = rt_.request_id(seq_, nonce_);
    if (auto err = validate_chat_request(ex_.request.body(), req_)) {
      reject(http::status::bad_request, *err, "invalid_request_error", "invalid_request");
      co_return;
    }
    if (!admit_gateway_key()) co_return;
    routing::RequestInfo info;
    info.model = req_.model;
    info.prompt_tokens = req_.prompt_tokens;
    info.max_tokens = req_.max_tokens;
    if (auto c = ex_.request["x-switchboard-complexity"]; !c.empty()) {
      info.complexity = parse_complexity(std::string_view(c.data(), c.size()));
      if (!info.complexity) {
        reject(http::status::bad_request,
               "x-switchboard-complexity must be simple, moderate, high or critical",
               "invalid_request_error", "invalid_header");
        co_return;
      }
    }
    // Hints become map keys, stored rows and log fields: bounded and printable.
    auto hint = [this](std::string_view name, size_t max, std::string& out) {
      auto v = ex_.request[beast::string_view(name.data(), name.size())];
      if (v.size() > max || !std::all_of(v.begin(), v.end(), [](char c) {
            return static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f;
          })) {
        reject(http::status::bad_request,
               std::string(name) + " must be at most " + std::to_string(max) +
                   " printable ASCII characters",
               "invalid_request_error", "invalid_header");
        return false;
      }
      out.assign(v.data(), v.size());
      return true;
    };
    if (!hint("x-switchboard-category", kMaxCategoryBytes, info.category) ||
        !hint("x-switchboard-session", kMaxSessionBytes, session_))
      co_return;
    if (auto c = ex_.request["x-switchboard-max-cost-usd"]; !c.empty()) {
      char* end = nullptr;
      std::string v(c);
      double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || !(d >= 0) || !std::isfinite(d)) {
        reject(http::status::bad_request,
               "x-switchboard-max-cost-usd must be a non-negative number", "invalid_request_error",
               "invalid_header");
        co_return;
      }
      info.max_cost_usd = d;
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
    if (!reserve_budget()) co_return;
    co_await attempts();
  }

 private:
  // An answer before any attempt (bad request, unknown model, policy): counted like the rest.
  void reject(http::status status, std::string_view message, std::string_view type,
              std::string_view code) {
    fail(status, message, type, code);
    // No route label: the client may have sent any model name (unbounded label values).
    rt_.metrics.observe("", "", "", code,
                        std::chrono::duration<double>(MonoClock::now() - t0_).count(), 0, false);
  }

  // Errors carry the x-switchboard-* headers too (DESIGN.md: every response), naming the last
  // attempt that failed, or empty when none was made.
  void fail(http::status status, std::string_view message, std::string_view type,
            std::string_view code) {
    ex_.response = error_response(status, message, type, code, ex_.request.version());
    set_headers(failed_model_, failed_provider_, failed_key_);
  }

  // The client key's policy: allowed routes (403, whatever the model's spelling) and rpm (429 +
  // Retry-After). The budget is reserved once the plan is known (reserve_budget).
  bool admit_gateway_key() {
    if (gateway_key_ < 0) return true;
    const auto& policy = snap_->config->auth.gateway_policies[size_t(gateway_key_)];
    if (!key_may_use(*snap_->config, gateway_key_, req_.model)) {
      reject(http::status::forbidden,
             "gateway key '" + policy.name + "' may not use '" + req_.model + "'",
             "permission_error", "model_not_allowed");
      return false;
    }
    auto& st = *snap_->gateway_keys[size_t(gateway_key_)];
    std::lock_guard lock(st.mu);
    if (policy.rpm > 0) {
      const auto now = MonoClock::now();
      while (!st.window.empty() && now - st.window.front() >= std::chrono::minutes(1))
        st.window.pop_front();
      if (int64_t(st.window.size()) >= policy.rpm) {
        reject(http::status::too_many_requests,
               "gateway key '" + policy.name + "' is limited to " + std::to_string(policy.rpm) +
                   " requests per minute",
               "rate_limit_error", "rate_limit_exceeded");
        ex_.response.set(http::field::retry_after,
                         retry_after_seconds(st.window.front() + std::chrono::minutes(1) - now));
        return false;
      }
      st.window.push_back(now);
    }
    return true;
  }

  // The monthly budget, reserved at admission like a key's token window (DESIGN.md invariant
  // 11): the request's worst-case cost over its plan (prompt estimate plus max_tokens, or a
  // default output) is held until the request ends, so requests in flight together cannot spend
  // past the budget that each of them saw unspent. Settled by charge_gateway_key and released
  // by release_budget.
  bool reserve_budget() {
    if (gateway_key_ < 0) return true;
    const auto& policy = snap_->config->auth.gateway_policies[size_t(gateway_key_)];
    if (policy.monthly_budget_usd <= 0) return true;
    double estimate = 0;
    const int64_t output = req_.max_tokens > 0 ? req_.max_tokens : kDefaultOutputEstimate;
    for (size_t i = 0; i < plan_.size(); ++i) {
      const ModelConfig* m = snap_->config->find_model(plan_[i].model);
      if (!m) continue;  // outside the catalog: no price known
      estimate = std::max(estimate, (double(req_.prompt_tokens) * m->cost.input_per_mtok +
                                     double(output) * m->cost.output_per_mtok) /
                                        1e6);
    }
    auto& st = *snap_->gateway_keys[size_t(gateway_key_)];
    std::lock_guard lock(st.mu);
    const int month = utc_month(rt_.clock.wall_now());
    if (st.month != month) {
      st.month = month;
      st.spend_usd = 0;
    }
    if (st.spend_usd + st.reserved_usd + estimate > policy.monthly_budget_usd ||
        st.spend_usd >= policy.monthly_budget_usd) {
      char msg[200];
      if (st.spend_usd >= policy.monthly_budget_usd) {
        std::snprintf(msg, sizeof(msg), "gateway key '%s' has spent its monthly budget of $%.2f",
                      policy.name.c_str(), policy.monthly_budget_usd);
      } else {
        std::snprintf(msg, sizeof(msg),
                      "gateway key '%s': this request (up to $%.4f) does not fit in what is left "
                      "of its monthly budget of $%.2f",
                      policy.name.c_str(), estimate, policy.monthly_budget_usd);
      }
      reject(http::status::too_many_requests, msg, "insufficient_quota", "budget_exceeded");
      ex_.response.set(http::field::retry_after, "3600");
      return false;
    }
    st.reserved_usd += estimate;
    reserved_usd_ = estimate;
    return true;
  }

  void release_budget() {
    if (gateway_key_ < 0 || reserved_usd_ <= 0) return;
    auto& st = *snap_->gateway_keys[size_t(gateway_key_)];
    std::lock_guard lock(st.mu);
    st.reserved_usd = std::max(0.0, st.reserved_usd - reserved_usd_);
    reserved_usd_ = 0;
  }

  void charge_gateway_key(double cost) {
    if (gateway_key_ < 0 || cost <= 0) return;
    auto& st = *snap_->gateway_keys[size_t(gateway_key_)];
    std::lock_guard lock(st.mu);
    st.spend_usd += cost;
  }

  // The x-switchboard-* headers of a whole (non-stream) answer.
  void set_headers(const routing::Attempt& a, const std::string& key_id,
                   MonoTime now = MonoClock::now()) {
    set_headers(a.model, a.provider, key_id, now);
  }
  void set_headers(std::string_view model, std::string_view provider, std::string_view key_id,
                   MonoTime now = MonoClock::now()) {
    std::string& h = ex_.extra_headers;
    h.clear();
    for_each_switchboard_header(
        facts(model, provider, key_id, now),
        [&h](std::string_view n, std::string_view v) { append_header(h, n, v); });
  }

  // The x-switchboard-* headers of a streamed answer (set_headers' counterpart for SSE heads).
  std::vector<std::pair<std::string, std::string>> stream_headers(const routing::Attempt& a,
                                                                  const keys::Lease& lease) const {
    std::vector<std::pair<std::string, std::string>> out;
    out.reserve(7);
    for_each_switchboard_header(facts(a.model, a.provider, lease.key_id(), MonoClock::now()),
                                [&out](std::string_view n, std::string_view v) {
                                  out.emplace_back(std::string(n), std::string(v));
                                });
    return out;
  }

  AnswerFacts facts(std::string_view model, std::string_view provider, std::string_view key_id,
                    MonoTime now) const {
    return {request_id_, model, provider, key_id, attempts_, layer_rank_, overhead_us(now)};
  }

  int64_t overhead_us(MonoTime now = MonoClock::now()) const {
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
    size_t idx = 0;
    while (idx < plan_.size() && attempts_ < cfg.retry.max_attempts) {
      const routing::Attempt& a = plan_[idx];
      // The plan's rank of this target's layer: layers skipped for open breakers count.
      layer_rank_ = a.rank;
      auto now = MonoClock::now();
      if (now >= deadline) break;
      ProviderRuntime* pr = snap_->provider(a.provider);
      if (!pr) {
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
      keys::AcquireResult got = pr->pool->acquire(kr);
      bool waited = false;
      if (!got.ok()) {
        const keys::NoKey nk = got.no_key();
        const MonoTime wait_until = std::min(deadline, now + Millis(cfg.retry.wait_for_key_ms));
        bool waitable = nk.reason == keys::NoKeyReason::kConcurrency ||
                        nk.reason == keys::NoKeyReason::kCooling ||
                        nk.reason == keys::NoKeyReason::kMinuteWindow ||
                        nk.reason == keys::NoKeyReason::kDailyWindow;
        if (waitable && nk.earliest <= wait_until) {
          kr.deadline = wait_until;
          got = co_await wait_for_key(*pr->pool, kr);
          waited = true;
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
      const MonoTime started = waited ? MonoClock::now() : now;
      const MonoTime call_deadline = std::min(deadline, started + Millis(pr->config->timeout_ms));
      Attempted r = co_await send(*pr, a, lease, call_deadline);
      auto latency = MonoClock::now() - started;
      upstream_time_ += std::chrono::duration_cast<Micros>(latency);

      keys::Outcome ko;
      ko.status = to_keys(r.cls);
      ko.latency = std::chrono::duration_cast<Millis>(latency);
      ko.tokens_used = r.usage.total() > 0 ? r.usage.total() : -1;
      ko.headers = std::move(response_headers_);
      const std::string key_id = lease.key_id();
      lease.complete(ko);
      pp.record(to_breaker(r.cls), latency);
      mp.record(to_breaker(r.cls), latency);
      record_learning(a, r, latency);
      if (r.usage.total() > 0) record_usage(a, key_id, r.usage);

      if (r.cls == ErrorClass::kSuccess) {
        finish_success(a, key_id, r);
        co_return;
      }
      if (r.cls == ErrorClass::kCancelled) {
        ex_.close = true;
        ex_.written = true;
        record_outcome(&a, key_id, "cancelled", {});
        co_return;
      }
      if (r.wrote_response) {  // a stream failed after the client saw content: already ended
        record_outcome(&a, key_id, upstream::to_string(r.cls), r.usage);
        co_return;
      }
      if (r.cls == ErrorClass::kClientError) {
        // The request's own fault: another model would reject it too. Pass the upstream's answer,
        // with anything that looks like one of our secrets taken out (a provider may echo the
        // key it was sent, or part of it).
        ex_.response = json_response(
            static_cast<http::status>(r.status >= 400 && r.status < 500 ? r.status : 400),
            r.body.empty() ? upstream::openai_error_json(r.message, "invalid_request_error")
                           : log::redact_relayed(r.body),
            ex_.request.version());
        set_headers(a, key_id);
        record_outcome(&a, key_id, "client_error", {});
        co_return;
      }
      log::warn("request {}: {} via {} on {} failed: {} ({})", request_id_, a.model, a.provider,
                key_id, upstream::to_string(r.cls), r.message);
      last = std::move(r);
      failed_model_ = a.model;
      failed_provider_ = a.provider;
      failed_key_ = key_id;
      if (last->cls == ErrorClass::kRateLimited || last->cls == ErrorClass::kAuthFailed) {
        // Another key of the same model first; the pool will not hand out the cooled or dead key.
        continue;
      }
      idx++;
    }
    give_up(last, earliest_key, breaker_skips);
  }

  void give_up(const std::optional<Attempted>& last, MonoTime earliest_key, bool breaker_skips) {
    auto now = MonoClock::now();
    const bool limited =
        earliest_key != MonoTime::max() &&
        (!last || last->cls == ErrorClass::kRateLimited || last->cls == ErrorClass::kAuthFailed);
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
    http::status status = last->cls == ErrorClass::kTimeout ? http::status::gateway_timeout
                                                            : http::status::bad_gateway;
    fail(status,
         "upstream failed after " + std::to_string(attempts_) + " attempt(s): " + last->message,
         "server_error", std::string(upstream::to_string(last->cls)));
    record_outcome(nullptr, "", upstream::to_string(last->cls), {});
  }

  void finish_success(const routing::Attempt& a, const std::string& key_id, Attempted& r) {
    // Remembered for the caller's verdict; the transport success already taught the bandit.
    rt_.ledger->remember(seq_, bucket(a), plan_.category(), layer_rank_, 1.0, true,
                         {nonce_, owner_tag(*snap_, gateway_key_)});
    // Read after the bookkeeping, which x-switchboard-overhead-us includes.
    const MonoTime now = MonoClock::now();
    if (!r.wrote_response) {
      ex_.response = json_response(http::status::ok, std::move(r.body), ex_.request.version());
      set_headers(a, key_id, now);
    }
    record_outcome(&a, key_id, "ok", r.usage, now);
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
    o.success = r.cls == ErrorClass::kSuccess;
    o.reward = o.success ? 1.0 : 0.0;
    // Only what says something about the model teaches the bandit: not the caller's mistakes,
    // not a key's rate limit or revocation, not a cancelled request.
    o.counts_for_learning = r.cls == ErrorClass::kSuccess || r.cls == ErrorClass::kServerError ||
                            r.cls == ErrorClass::kTimeout;
    o.latency_us = std::chrono::duration_cast<Micros>(latency).count();
    o.tokens_in = r.usage.prompt_tokens;
    o.tokens_out = r.usage.completion_tokens;
    o.cost_usd = cost_of(a, r.usage);
    snap_->router->record(o);
    static metrics::ShardedCounter updates(
        &metrics::counter_family("switchboard_routing_updates_total",
                                 "Outcomes recorded by the learned router")
             .Add({}));
    updates.add();
  }

  void record_usage(const routing::Attempt& a, const std::string& key_id,
                    const upstream::TokenUsage& u) {
    charge_gateway_key(cost_of(a, u));
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
                      std::string_view status_class, const upstream::TokenUsage& u,
                      MonoTime now = MonoClock::now()) {
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
    if (snap_->config->log.access_log) {
      log::info(
          "access {{\"request_id\":{},\"route\":{},\"model\":{},\"provider\":{},\"key\":{},"
          "\"attempts\":{},\"layer\":{},\"status\":{},\"latency_us\":{},\"tokens_in\":{},\"tokens_"
          "out\":{}}}",
          json::quote(request_id_), json::quote(plan_.route()), json::quote(model),
          json::quote(provider), json::quote(key_id), attempts_, layer_rank_,
          json::quote(status_class), std::chrono::duration_cast<Micros>(total).count(),
          u.prompt_tokens, u.completion_tokens);
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
    if (gateway_key_ >= 0)
      e.gateway_key = snap_->config->auth.gateway_policies[size_t(gateway_key_)].name;
    pending_events_.emplace_back(std::move(e));
    flush_events();
  }

  // ---- upstream exchange ----------------------------------------------------------------------

  upstream::HttpRequest build_request(const ProviderRuntime& pr, const routing::Attempt& a,
                                      const keys::Lease& lease, MonoTime deadline,
                                      std::string& error) {
    upstream::HttpRequest h;
    h.deadline = deadline;
    h.headers.reserve(5);
    h.headers.emplace_back("content-type", "application/json");
    h.headers.emplace_back("user-agent", "switchboard/" SWITCHBOARD_VERSION);
    if (pr.anthropic) {
      h.url = pr.call_url;
      h.headers.emplace_back("x-api-key", lease.secret());
      h.headers.emplace_back("anthropic-version", "2023-06-01");
      auto body =
          upstream::openai_to_anthropic_request(req_.document(ex_.request.body()), a.upstream);
      if (!body.ok()) {
        error = body.status().message();
        return h;
      }
      h.body = std::move(body.value());
    } else {
      h.url = pr.call_url;
      std::string& auth = h.headers.emplace_back("authorization", std::string()).second;
      auth.reserve(7 + lease.secret().size());
      auth += "Bearer ";
      auth += lease.secret();
      h.body = openai_body(ex_.request.body(), req_, a.upstream);
    }
    if (req_.stream) h.headers.emplace_back("accept", "text/event-stream");
    return h;
  }

  asio::awaitable<Attempted> send(ProviderRuntime& pr, const routing::Attempt& a,
                                  keys::Lease& lease, MonoTime deadline) {
    Attempted r;
    std::string build_error;
    upstream::HttpRequest h = build_request(pr, a, lease, deadline, build_error);
    if (!build_error.empty()) {
      r.cls = ErrorClass::kClientError;
      r.status = 400;
      r.message = build_error;
      co_return r;
    }
    auto& client = *rt_.clients[ex_.thread_index];
    std::unique_ptr<upstream::HttpStream> stream;
    auto st = co_await client.start(h, stream);
    if (!st.ok()) {
      r.cls = upstream::classify_transport(st.error);
      r.message = st.message;
      co_return r;
    }
    const auto& head = stream->head();
    for (const auto& [k, v] : head.headers) {
      if (k.size() > 5 &&
          (k[0] == 'x' || k[0] == 'X' || k[0] == 'r' || k[0] == 'R' || k[0] == 'a' || k[0] == 'A'))
        response_headers_.emplace_back(k, v);
    }
    r.status = head.status;
    if (head.status < 200 || head.status >= 300 || !req_.stream) {
      // Whole body: an error to classify, or a complete non-stream answer.
      std::string body;
      bool done = false;
      while (!done) {
        st = co_await stream->read_some(body, done);
        if (!st.ok()) {
          r.cls = upstream::classify_transport(st.error);
          r.message = st.message;
          co_return r;
        }
        if (body.size() > (64u << 20)) {
          r.cls = ErrorClass::kServerError;
          r.message = "upstream response too large";
          co_return r;
        }
      }
      r.cls = upstream::classify_http(head.status, body);
      if (r.cls != ErrorClass::kSuccess) {
        r.message = "HTTP " + std::to_string(head.status);
        r.body = pr.anthropic ? upstream::anthropic_error_to_openai(body) : std::move(body);
        co_return r;
      }
      if (pr.anthropic) {
        boost::system::error_code ec;
        auto doc = boost::json::parse(body, ec);
        if (ec || !doc.is_object()) {
          r.cls = ErrorClass::kServerError;
          r.message = "upstream sent invalid JSON";
          co_return r;
        }
        auto translated = upstream::anthropic_to_openai_response(doc.as_object(), req_.model,
                                                                 request_id_, std::time(nullptr));
        if (!translated.ok()) {
          r.cls = ErrorClass::kServerError;
          r.message = translated.status().message();
          co_return r;
        }
        r.body = std::move(translated.value());
      } else {
        r.body = std::move(body);
      }
      if (auto u = upstream::extract_openai_usage(r.body)) r.usage = *u;
      co_return r;
    }
    co_return co_await relay_stream(pr, a, lease, *stream);
  }

  // Streams an SSE answer to the client. Events are held until the first content-bearing one, so
  // that a failure before it can still fail over; after it, bytes are relayed as they come.
  asio::awaitable<Attempted> relay_stream(ProviderRuntime& pr, const routing::Attempt& a,
                                          keys::Lease& lease, upstream::HttpStream& stream) {
    Attempted r;
    r.status = 200;
    upstream::SseParser parser;
    std::optional<upstream::AnthropicStreamTranslator> translator;
    if (pr.anthropic)
      translator.emplace(req_.model, request_id_, std::time(nullptr), req_.client_wants_usage);
    std::string pending;  // events not yet sent to the client
    bool started = false, saw_done = false;
    std::string raw;
    std::vector<upstream::SseEvent> events;
    std::vector<std::string> chunks;
    const bool strip_usage = !pr.anthropic && !req_.client_wants_usage;

    auto fail_stream = [&](ErrorClass cls, std::string message) -> asio::awaitable<Attempted> {
      stream.cancel();
      r.cls = cls;
      r.message = std::move(message);
      if (started) {
        // The client already has content: end the stream with an error event and no [DONE].
        std::string ev;
        upstream::append_sse_event(
            ev, upstream::openai_error_json("upstream stream failed: " + r.message, "server_error",
                                            std::string(upstream::to_string(cls))));
        co_await write_chunk(ex_, ev);
        co_await finish_chunks(ex_);
        ex_.close = true;
        r.wrote_response = true;
      }
      co_return r;
    };

    bool done = false;
    while (!done) {
      raw.clear();
      auto st = co_await stream.read_some(raw, done);
      if (!st.ok())
        co_return co_await fail_stream(upstream::classify_transport(st.error), st.message);
      events.clear();
      if (auto ps = parser.feed(raw, events); !ps.ok())
        co_return co_await fail_stream(ErrorClass::kServerError, ps.message());
      std::string out;
      bool content_now = false;
      for (const auto& ev : events) {
        if (translator) {
          chunks.clear();
          auto ts = translator->feed(ev.event, ev.data, chunks);
          if (!ts.ok()) {
            ErrorClass cls = ts.code() == StatusCode::kResourceExhausted ? ErrorClass::kRateLimited
                             : ts.code() == StatusCode::kPermissionDenied
                                 ? ErrorClass::kAuthFailed
                                 : ErrorClass::kServerError;
            co_return co_await fail_stream(cls, ts.message());
          }
          for (const auto& c : chunks) upstream::append_sse_event(out, c);
          if (translator->has_content()) content_now = true;
          if (translator->finished()) {
            out += upstream::kSseDone;
            saw_done = true;
          }
          r.usage = translator->usage();
          continue;
        }
        auto info = upstream::inspect_openai_chunk(ev.data);
        if (info.done) {
          out += upstream::kSseDone;
          saw_done = true;
          continue;
        }
        if (info.is_error) {
          co_return co_await fail_stream(ErrorClass::kServerError,
                                         "upstream reported an error in the stream");
        }
        if (info.usage) r.usage = *info.usage;
        if (info.usage && strip_usage && !info.has_content)
          continue;  // we asked for it, not the client
        if (info.has_content) content_now = true;
        upstream::append_sse_event(out, ev.data, ev.event);
      }
      if (!started) {
        pending += out;
        if (content_now || pending.size() > kMaxHeldStreamBytes) {
          if (!co_await write_stream_head(ex_, http::status::ok, stream_headers(a, lease)) ||
              !co_await write_chunk(ex_, pending)) {
            stream.cancel();
            r.cls = ErrorClass::kCancelled;
            r.wrote_response = true;
            co_return r;
          }
          started = true;
          r.wrote_response = true;
          pending.clear();
        }
      } else if (!out.empty()) {
        if (!co_await write_chunk(ex_, out)) {
          stream.cancel();
          r.cls = ErrorClass::kCancelled;
          co_return r;
        }
      }
    }
    if (!saw_done) {
      co_return co_await fail_stream(ErrorClass::kServerError,
                                     "upstream stream ended without [DONE]");
    }
    if (!started) {
      // A stream that finished without any content (e.g. an empty answer): send what we have.
      co_await write_stream_head(ex_, http::status::ok, stream_headers(a, lease));
      co_await write_chunk(ex_, pending);
      r.wrote_response = true;
    }
    co_await finish_chunks(ex_);
    r.cls = ErrorClass::kSuccess;
    co_return r;
  }

  Runtime& rt_;
  const std::shared_ptr<const Snapshot> snap_;  // the configuration this request runs under
  Exchange& ex_;
  const MonoTime t0_;
  const int gateway_key_;
  uint64_t seq_ = 0;
  uint64_t nonce_ = 0;
  double reserved_usd_ = 0;  // this request's share of its key's reserved budget
  std::string request_id_;
  std::string bucket_;  // see bucket()
  std::string session_;
  ChatRequest req_;
  routing::FallbackPlan plan_;
  int attempts_ = 0;
  int layer_rank_ = 0;
  Micros upstream_time_{0};
  keys::HeaderList response_headers_;
  // The last attempt that failed, for the headers of an error answer (views into plan_).
  std::string_view failed_model_, failed_provider_;
  std::string failed_key_;
  std::vector<store::Event> pending_events_;  // usage events waiting for the outcome
};

}  // namespace

asio::awaitable<void> handle_chat(Runtime& rt, std::shared_ptr<const Snapshot> snap, Exchange& ex,
                                  int gateway_key) {
  ClientWatch watch(ex);
  // Once the client has left (the watch emits the connection's cancellation signal), the
  // operation then pending completes with operation_aborted and every later one throws: the
  // call unwinds, its leases and permits end as `cancelled` and its usage is still stored.
  // (The signal alone could be missed: by an operation that ignores cancellation, such as name
  // resolution, or one that had just completed.)
  co_await asio::this_coro::throw_if_cancelled(true);
  std::exception_ptr failure;
  try {
    ChatCall call(rt, std::move(snap), ex, gateway_key, watch.since());
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

}  // namespace switchboard::gateway
