// Gateway assembly: runtime construction, routing of HTTP paths to handlers, lifecycle.
#include "gateway/gateway.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <sys/random.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/json.hpp>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>

#include "common/json.h"
#include "common/log.h"
#include "common/metrics.h"
#include "gateway/auth.h"
#include "gateway/runtime.h"
#include "gateway/workflow_api.h"

namespace switchboard::gateway {

// ---- AsioScheduler ----------------------------------------------------------------------------

AsioScheduler::AsioScheduler() : work_(asio::make_work_guard(ctx_)) {
  thread_ = std::thread([this] { ctx_.run(); });
}

AsioScheduler::~AsioScheduler() {
  work_.reset();
  ctx_.stop();
  thread_.join();
}

keys::Scheduler::TimerId AsioScheduler::schedule_at(MonoTime when, std::function<void()> fn) {
  TimerId id = next_id_.fetch_add(1);
  // Called under a key pool's mutex: only post, never run `fn` here.
  asio::post(ctx_, [this, id, when, fn = std::move(fn)]() mutable {
    auto timer = std::make_unique<asio::steady_timer>(ctx_, when);
    timer->async_wait([this, id, fn = std::move(fn)](const boost::system::error_code& ec) {
      timers_.erase(id);
      if (!ec) fn();
    });
    timers_[id] = std::move(timer);
  });
  return id;
}

void AsioScheduler::cancel(TimerId id) {
  asio::post(ctx_, [this, id] {
    if (auto it = timers_.find(id); it != timers_.end()) it->second->cancel();
  });
}

// ---- metrics
// -------------------------------------------------------------------------------------

namespace {
std::atomic<uint64_t> g_request_metrics_ids{1};
}  // namespace

struct RequestMetrics::Handles {
  Handles(prometheus::Counter* r, prometheus::Histogram* l)
      : requests(r), latency(l, metrics::latency_buckets_seconds()) {}
  metrics::ShardedCounter requests;
  metrics::ShardedHistogram latency;
};

RequestMetrics::RequestMetrics()
    : id_(g_request_metrics_ids.fetch_add(1, std::memory_order_relaxed)),
      attempts_(&metrics::counter_family("switchboard_gateway_attempts_total",
                                         "Upstream attempts made for client requests")
                     .Add({})),
      fallbacks_(&metrics::counter_family("switchboard_gateway_fallbacks_total",
                                          "Requests answered by a layer after the first")
                      .Add({})) {}

RequestMetrics::~RequestMetrics() = default;

RequestMetrics::Handles& RequestMetrics::handles(const std::string& key, std::string_view route,
                                                 std::string_view model, std::string_view provider,
                                                 std::string_view status_class) {
  std::lock_guard lock(mu_);
  auto it = all_.find(key);
  if (it == all_.end()) {
    std::map<std::string, std::string> labels = {{"route", std::string(route)},
                                                 {"model", std::string(model)},
                                                 {"provider", std::string(provider)},
                                                 {"status", std::string(status_class)}};
    auto h = std::make_unique<Handles>(
        &metrics::counter_family("switchboard_gateway_requests_total", "Client requests by outcome")
             .Add(labels),
        &metrics::histogram_family("switchboard_gateway_request_duration_seconds",
                                   "Client request latency, all attempts included")
             .Add(labels, metrics::latency_buckets_seconds()));
    it = all_.emplace(key, std::move(h)).first;
  }
  return *it->second;
}

void RequestMetrics::observe(std::string_view route, std::string_view model,
                             std::string_view provider, std::string_view status_class,
                             double seconds, int attempts, bool fallback) {
  // Per thread: this instance's combinations seen so far. The key buffer is reused, so a lookup
  // allocates nothing once warm.
  struct Cache {
    uint64_t owner = 0;
    std::string key;
    std::unordered_map<std::string, Handles*> seen;
  };
  thread_local Cache cache;
  if (cache.owner != id_) {
    cache.owner = id_;
    cache.seen.clear();
  }
  std::string& key = cache.key;
  key.assign(route);
  key += '\x1f';
  key.append(model);
  key += '\x1f';
  key.append(provider);
  key += '\x1f';
  key.append(status_class);
  auto it = cache.seen.find(key);
  if (it == cache.seen.end()) {
    it = cache.seen.emplace(key, &handles(key, route, model, provider, status_class)).first;
  }
  it->second->requests.add();
  it->second->latency.observe(seconds);
  attempts_.add(static_cast<uint64_t>(std::max(attempts, 0)));
  if (fallback) fallbacks_.add();
}

BreakerTable::BreakerTable(std::shared_ptr<breaker::BreakerRegistry> registry, const Config& config)
    : registry_(std::move(registry)) {
  for (const auto& m : config.models) {
    Entry& e = providers_[m.provider];
    if (e.provider == nullptr) e.provider = registry_->provider(m.provider).get();
    e.models[m.name] = registry_->model(m.provider, m.name).get();
  }
}

breaker::CircuitBreaker& BreakerTable::provider(std::string_view provider) const {
  if (auto it = providers_.find(provider); it != providers_.end()) return *it->second.provider;
  return *registry_->provider(provider);
}

breaker::CircuitBreaker& BreakerTable::model(std::string_view provider,
                                             std::string_view model) const {
  if (auto it = providers_.find(provider); it != providers_.end()) {
    if (auto m = it->second.models.find(model); m != it->second.models.end()) return *m->second;
  }
  // A name outside the catalog comes from a client (provider/anything): every such name of a
  // provider shares one breaker, so client input never creates breakers (or their metrics).
  return *registry_->model(provider, "*");
}

bool BreakerTable::open(std::string_view provider, std::string_view model) const {
  return this->provider(provider).state() == breaker::BreakerState::kOpen ||
         this->model(provider, model).state() == breaker::BreakerState::kOpen;
}

uint64_t Runtime::next_uid() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

std::shared_ptr<const Snapshot> Runtime::thread_snapshot() const {
  struct Local {
    uint64_t runtime = 0;  // Runtime::uid (an address could be reused by the next runtime)
    uint64_t generation = 0;
    std::shared_ptr<const Snapshot> snap;
  };
  thread_local Local local;
  const uint64_t gen = generation.load(std::memory_order_acquire);
  if (local.runtime != uid || local.generation != gen || !local.snap) {
    // A control block of this thread's own (aliasing the snapshot) that keeps the shared one.
    auto holder = std::make_shared<std::shared_ptr<const Snapshot>>(snapshot());
    local.snap = std::shared_ptr<const Snapshot>(holder, holder->get());
    local.runtime = uid;
    local.generation = gen;
  }
  return local.snap;
}

std::string Runtime::request_id(uint64_t seq, uint64_t nonce) const {
  // "sb-" + the instance tag in 8 hex digits + "-" + the sequence in at least 10 + "-" + the
  // nonce in 16 (lowercase, as parse_request_id reads them). The nonce makes ids unguessable:
  // the sequence alone would let anyone send verdicts on other clients' requests. Formatted by
  // hand: this runs for every request.
  auto put_hex = [](char* out, uint64_t v, int width) {
    char digits[16];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, v, 16);
    const int n = static_cast<int>(end - digits);
    for (int i = n; i < width; ++i) *out++ = '0';
    std::memcpy(out, digits, static_cast<size_t>(n));
    return out + n;
  };
  char buf[64] = {'s', 'b', '-'};
  char* p = put_hex(buf + 3, instance_tag & 0xffffffff, 8);
  *p++ = '-';
  p = put_hex(p, seq, 10);
  *p++ = '-';
  p = put_hex(p, nonce, 16);
  return std::string(buf, p);
}

Runtime::ParsedId Runtime::parse_request_id(std::string_view id) const {
  // Strictly the form request_id writes: anything else is unknown.
  auto hex_field = [&id](size_t& pos, size_t min_len, size_t max_len, uint64_t& out) {
    size_t end = pos;
    while (end < id.size() && end - pos < max_len + 1 &&
           ((id[end] >= '0' && id[end] <= '9') || (id[end] >= 'a' && id[end] <= 'f')))
      ++end;
    if (end - pos < min_len || end - pos > max_len) return false;
    auto [ptr, ec] = std::from_chars(id.data() + pos, id.data() + end, out, 16);
    if (ec != std::errc() || ptr != id.data() + end) return false;
    pos = end;
    return true;
  };
  ParsedId none;
  if (id.size() > 64 || id.substr(0, 3) != "sb-") return none;
  size_t pos = 3;
  uint64_t tag = 0, seq = 0, nonce = 0;
  if (!hex_field(pos, 8, 8, tag) || pos >= id.size() || id[pos++] != '-') return none;
  if (!hex_field(pos, 10, 16, seq) || pos >= id.size() || id[pos++] != '-') return none;
  if (!hex_field(pos, 16, 16, nonce) || pos != id.size()) return none;
  if (tag != (instance_tag & 0xffffffff)) return none;  // another instance's (or a restarted one's)
  return ParsedId{seq, nonce};
}

uint64_t secure_random_u64() {
  // getrandom() per 64 ids, kept per thread: unpredictable (the kernel's CSPRNG, not a PRNG
  // whose outputs reveal its state) at the cost of one system call per 64 requests.
  struct Pool {
    uint64_t values[64];
    size_t next = 64;
  };
  thread_local Pool pool;
  if (pool.next == 64) {
    size_t got = 0;
    auto* bytes = reinterpret_cast<unsigned char*>(pool.values);
    while (got < sizeof pool.values) {
      ssize_t n = getrandom(bytes + got, sizeof pool.values - got, 0);
      if (n > 0) {
        got += size_t(n);
      } else if (errno != EINTR) {
        // No kernel randomness (cannot happen on Linux >= 3.17): fail closed, not predictably.
        std::abort();
      }
    }
    pool.next = 0;
  }
  return pool.values[pool.next++];
}

uint64_t owner_tag(std::string_view gateway_key_name) {
  if (gateway_key_name.empty()) return 0;
  // FNV-1a of the key's name: stable across reloads that keep the key (indexes may move) and
  // across restarts (stored with each outcome).
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : gateway_key_name) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h | 1;
}

uint64_t owner_tag(const Snapshot& snap, int gateway_key) {
  if (gateway_key < 0) return 0;
  return owner_tag(snap.config->auth.gateway_policies[size_t(gateway_key)].name);
}

// ---- handlers
// --------------------------------------------------------------------------------------

namespace {

// %XX escapes decoded; a malformed escape is kept as it is.
std::string percent_decode(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The routes and models a client may request: a restricted key sees only its own.
std::string models_json(const Config& cfg, int gateway_key) {
  std::string out = "{\"object\":\"list\",\"data\":[";
  bool first = true;
  auto add = [&](const std::string& id, const std::string& owner) {
    if (!key_may_use(cfg, gateway_key, id)) return;
    out += first ? "" : ",";
    first = false;
    out += "{\"id\":" + json::quote(id) +
           ",\"object\":\"model\",\"created\":0,\"owned_by\":" + json::quote(owner) + "}";
  };
  for (const auto& r : cfg.routes) add(r.name, "switchboard");
  for (const auto& m : cfg.models) add(m.name, m.provider);
  out += "]}";
  return out;
}

std::string keys_json(Runtime& rt) {
  std::string out = "{\"keys\":[";
  bool first = true;
  auto snap = rt.snapshot();
  for (auto& [name, pr] : snap->providers) {
    for (const auto& k : pr->pool->snapshot()) {
      out += first ? "" : ",";
      first = false;
      out += "{\"id\":" + json::quote(k.id) + ",\"provider\":" + json::quote(name) +
             ",\"fingerprint\":" + json::quote(k.fingerprint) +
             ",\"state\":" + json::quote(keys::to_string(k.state)) +
             ",\"cooldown_remaining_ms\":" + std::to_string(k.cooldown_remaining.count()) +
             ",\"cooldown_reason\":" + json::quote(keys::to_string(k.cooldown_reason)) +
             ",\"in_flight\":" + std::to_string(k.in_flight) +
             ",\"max_concurrent\":" + std::to_string(k.max_concurrent) +
             ",\"minute\":{\"requests\":" + std::to_string(k.minute.requests) +
             ",\"tokens\":" + std::to_string(k.minute.tokens) +
             "},\"day\":{\"requests\":" + std::to_string(k.day.requests) +
             ",\"tokens\":" + std::to_string(k.day.tokens) +
             "},\"consecutive_failures\":" + std::to_string(k.consecutive_failures) +
             ",\"leases_total\":" + std::to_string(k.leases_total) + ",\"model_cooldowns\":[";
      for (size_t i = 0; i < k.model_cooldowns.size(); ++i) {
        const auto& mc = k.model_cooldowns[i];
        out += (i ? "," : "") + std::string("{\"model\":") + json::quote(mc.model) +
               ",\"remaining_ms\":" + std::to_string(mc.remaining.count()) +
               ",\"reason\":" + json::quote(keys::to_string(mc.reason)) + "}";
      }
      out += "]}";
    }
  }
  return out + "]}";
}

std::string breakers_json(Runtime& rt) {
  std::string out = "{\"breakers\":[";
  bool first = true;
  for (const auto& b : rt.snapshot()->breakers->snapshot()) {
    out += first ? "" : ",";
    first = false;
    out += "{\"target\":" + json::quote(b.target) +
           ",\"kind\":" + json::quote(breaker::to_string(b.kind)) +
           ",\"state\":" + json::quote(breaker::to_string(b.state)) +
           ",\"calls_in_window\":" + std::to_string(b.calls_in_window) +
           ",\"failure_rate\":" + json::number(b.failure_rate) +
           ",\"slow_call_rate\":" + json::number(b.slow_call_rate) +
           ",\"until_half_open_ms\":" + std::to_string(b.until_half_open.count()) +
           ",\"consecutive_openings\":" + std::to_string(b.consecutive_openings) + "}";
  }
  return out + "]}";
}

std::string admin_models_json(Runtime& rt) {
  auto snap = rt.snapshot();
  auto state = snap->router->export_state();
  std::string out = "{\"models\":[";
  bool first = true;
  for (const auto& m : snap->config->models) {
    auto s = snap->router->stats(m.name);
    out += first ? "" : ",";
    first = false;
    out += "{\"model\":" + json::quote(m.name) + ",\"provider\":" + json::quote(m.provider) +
           ",\"tier\":" + json::quote(to_string(m.tier)) +
           ",\"requests\":" + std::to_string(s ? s->requests : 0) +
           ",\"success_rate\":" + json::number(s ? s->success_rate() : 0) +
           ",\"latency_ewma_ms\":" + json::number(s ? s->latency_ewma_us / 1000 : 0) +
           ",\"latency_p95_ms\":" + json::number(s ? s->latency_p95_us / 1000 : 0) +
           ",\"spend_usd\":" + json::number(s ? s->spend_usd : 0) + ",\"cost_per_request_usd\":" +
           json::number(s && s->requests ? s->spend_usd / double(s->requests) : 0) + "}";
  }
  out += "],\"posteriors\":[";
  first = true;
  for (const auto& p : state.posteriors) {
    out += first ? "" : ",";
    first = false;
    out += "{\"category\":" + json::quote(p.category) + ",\"model\":" + json::quote(p.model) +
           ",\"alpha\":" + json::number(p.alpha) + ",\"beta\":" + json::number(p.beta) +
           ",\"mean\":" + json::number(p.mean()) + ",\"outcomes\":" + std::to_string(p.outcomes) +
           ",\"feedback\":" + std::to_string(p.feedback) + ",\"feedback_success\":" +
           json::number(p.feedback ? p.feedback_reward_sum / double(p.feedback) : 0) + "}";
  }
  return out + "]}";
}

}  // namespace

void handle_feedback(Runtime& rt, const Snapshot& snap, Exchange& ex, int gateway_key) {
  auto bad = [&](std::string_view message) {
    ex.response = error_response(http::status::bad_request, message, "invalid_request_error",
                                 "invalid_feedback");
  };
  boost::system::error_code ec;
  auto doc = boost::json::parse(ex.request.body(), ec);
  if (ec || !doc.is_object()) return bad("body must be a JSON object");
  const auto& o = doc.as_object();
  const auto* id = o.if_contains("request_id");
  if (!id || !id->is_string() || id->as_string().empty())
    return bad("'request_id' must be a non-empty string");
  const auto* success = o.if_contains("success");
  if (!success || !success->is_bool()) return bad("'success' must be a boolean");
  double reward = success->as_bool() ? 1.0 : 0.0;
  std::optional<double> score;
  if (const auto* sc = o.if_contains("score"); sc && !sc->is_null()) {
    if (!sc->is_number()) return bad("'score' must be a number between 0 and 1");
    double v = sc->to_number<double>();
    if (!(v >= 0 && v <= 1)) return bad("'score' must be a number between 0 and 1");
    score = v;
    reward = v;
  }
  const std::string request_id(id->as_string());
  routing::FeedbackLedger::Served served;
  // Only the client that made the request may judge it (its key's tag must match), and only
  // with the id it was given (the nonce must match): others get the same 404 as a wrong id.
  const auto parsed = rt.parse_request_id(request_id);
  const uint64_t owner = owner_tag(snap, gateway_key);
  // Not one of this instance's ids: perhaps served before a restart (restored from the store).
  auto claim = parsed.seq != 0 ? rt.ledger->claim(parsed.seq, served, {parsed.nonce, owner})
                               : rt.ledger->claim_restored(request_id, served, owner);
  if (claim == routing::FeedbackLedger::Claim::kUnknown) {
    ex.response = error_response(http::status::not_found,
                                 "unknown or expired request id '" + request_id + "'",
                                 "invalid_request_error", "unknown_request_id");
    return;
  }
  if (claim == routing::FeedbackLedger::Claim::kDuplicate) {
    ex.response =
        error_response(http::status::conflict, "request '" + request_id + "' already has a verdict",
                       "invalid_request_error", "duplicate_feedback");
    return;
  }
  if (served.learned)
    snap.router->record_feedback(served.category, served.model, served.transport_reward, reward);
  if (rt.store) {
    store::FeedbackEvent e;
    e.time = rt.clock.wall_now();
    e.request_id = request_id;
    e.success = success->as_bool();
    e.score = score.value_or(reward);
    rt.store->enqueue(std::move(e));
  }
  static auto& feedback_total =
      metrics::counter_family("switchboard_routing_feedback_total", "Caller verdicts received")
          .Add({});
  feedback_total.Increment();
  ex.response = json_response(
      http::status::ok,
      "{\"request_id\":" + json::quote(request_id) + ",\"model\":" + json::quote(served.model) +
          ",\"category\":" + json::quote(served.category) + ",\"accepted\":true}");
}

namespace {

// Gauges read at scrape time: resident memory, and each key's state, in-flight and cooldown.
void update_gauges(Runtime& rt) {
  static auto& rss =
      metrics::gauge_family("switchboard_process_resident_memory_bytes", "Resident set size")
          .Add({});
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    long pages = 0, resident = 0;
    if (std::fscanf(f, "%ld %ld", &pages, &resident) == 2)
      rss.Set(double(resident) * double(sysconf(_SC_PAGESIZE)));
    std::fclose(f);
  }
  static auto& state =
      metrics::gauge_family("switchboard_keys_state", "1 for the key's current state");
  static auto& in_flight =
      metrics::gauge_family("switchboard_keys_in_flight_requests", "Leases in flight per key");
  static auto& cooldown = metrics::gauge_family("switchboard_keys_cooldown_remaining_seconds",
                                                "Time until the key's cooldown ends");
  for (auto& [name, pr] : rt.snapshot()->providers) {
    for (const auto& k : pr->pool->snapshot()) {
      for (auto s : {keys::KeyState::kHealthy, keys::KeyState::kCooling, keys::KeyState::kDisabled,
                     keys::KeyState::kDead}) {
        state.Add({{"key", k.id}, {"state", std::string(keys::to_string(s))}})
            .Set(k.state == s ? 1 : 0);
      }
      in_flight.Add({{"key", k.id}}).Set(double(k.in_flight));
      cooldown.Add({{"key", k.id}}).Set(double(k.cooldown_remaining.count()) / 1000.0);
    }
  }
}

asio::awaitable<void> handle(Runtime& rt, Exchange& ex) {
  const auto method = ex.request.method();
  std::string_view target = ex.request.target();
  target = target.substr(0, target.find('?'));
  const auto snap = rt.thread_snapshot();
  const Config& cfg = *snap->config;

  // One authorization step for every path (auth.h); the server ran the same check on the head.
  std::string_view path;
  const Area area = classify_path(target, path);
  Principal who;
  if (auto refusal = authorize(cfg, ex.request, area, ex.stream.socket(), who)) {
    ex.response = std::move(*refusal);
    co_return;
  }
  if (path == "/v1/chat/completions") {
    if (method != http::verb::post) {
      ex.response = error_response(http::status::method_not_allowed, "use POST",
                                   "invalid_request_error", "method_not_allowed");
      co_return;
    }
    co_await handle_chat(rt, snap, ex, who.gateway_key);
    co_return;
  }
  if (path == "/v1/feedback") {
    if (method != http::verb::post) {
      ex.response = error_response(http::status::method_not_allowed, "use POST",
                                   "invalid_request_error", "method_not_allowed");
      co_return;
    }
    handle_feedback(rt, *snap, ex, who.gateway_key);
    co_return;
  }
  if (area == Area::kWorkflows) {
    if (!rt.workflows) {
      ex.response = error_response(http::status::service_unavailable,
                                   "workflows are not available on this gateway", "server_error",
                                   "workflows_unavailable");
      co_return;
    }
    WorkflowCaller caller{workflow_client(cfg, who), who.admin};
    co_await rt.workflows->handle(ex, path, caller);
    co_return;
  }
  if (method == http::verb::get && path == "/v1/models") {
    ex.response = json_response(http::status::ok, models_json(cfg, who.gateway_key));
    co_return;
  }
  if (target == "/healthz") {
    ex.response = json_response(http::status::ok, "{\"status\":\"ok\"}");
    co_return;
  }
  if (target == "/readyz") {
    bool ready = !rt.store || rt.store_ok.load();
    ex.response =
        json_response(ready ? http::status::ok : http::status::service_unavailable,
                      ready ? "{\"status\":\"ready\"}" : "{\"status\":\"store unavailable\"}");
    co_return;
  }
  if (target == "/metrics") {
    snap->breakers->snapshot();  // brings breaker state gauges up to date
    update_gauges(rt);
    ex.response = Response{http::status::ok, ex.request.version()};
    ex.response.set(http::field::content_type, "text/plain; version=0.0.4");
    ex.response.body() = metrics::serialize();
    co_return;
  }
  if (area == Area::kAdmin) {
    if (method == http::verb::get && target == "/admin/keys") {
      ex.response = json_response(http::status::ok, keys_json(rt));
      co_return;
    }
    if (method == http::verb::get && target == "/admin/breakers") {
      ex.response = json_response(http::status::ok, breakers_json(rt));
      co_return;
    }
    if (method == http::verb::get && target == "/admin/models") {
      ex.response = json_response(http::status::ok, admin_models_json(rt));
      co_return;
    }
    if (method == http::verb::post && target == "/admin/reload") {
      auto r = reload_from_file(rt);
      std::string body =
          "{\"reloaded\":" + std::string(r.ok ? "true" : "false") + ",\"messages\":[";
      for (size_t i = 0; i < r.messages.size(); ++i)
        body += (i ? "," : "") + json::quote(r.messages[i]);
      body += "]}";
      ex.response = json_response(r.ok ? http::status::ok : http::status::bad_request, body);
      co_return;
    }
    // POST /admin/keys/{id}/disable|enable
    constexpr std::string_view kKeys = "/admin/keys/";
    if (method == http::verb::post && target.rfind(kKeys, 0) == 0) {
      std::string_view rest = target.substr(kKeys.size());
      auto slash = rest.rfind('/');
      if (slash != std::string_view::npos) {
        // Key ids contain '#', which a URL carries as %23 (a raw '#' starts the fragment).
        std::string id = percent_decode(rest.substr(0, slash));
        std::string_view action = rest.substr(slash + 1);
        std::string provider = id.substr(0, id.find('#'));
        ProviderRuntime* pr = snap->provider(provider);
        if (pr && (action == "disable" || action == "enable")) {
          Status st = action == "disable" ? pr->pool->disable(id) : pr->pool->enable(id);
          if (st.ok()) {
            log::info("admin: key {} {}d", id, action);
            ex.response =
                json_response(http::status::ok, "{\"id\":" + json::quote(id) +
                                                    ",\"action\":" + json::quote(action) + "}");
          } else {
            ex.response = error_response(http::status::not_found, st.message(),
                                         "invalid_request_error", "unknown_key");
          }
          co_return;
        }
      }
    }
  }
  ex.response = error_response(http::status::not_found, "no such endpoint: " + std::string(target),
                               "invalid_request_error", "not_found");
}

}  // namespace

// ---- lifecycle ---------------------------------------------------------------------------------

struct Gateway::Impl {
  GatewayOptions options;
  std::unique_ptr<Runtime> rt;
  std::unique_ptr<HttpServer> server;
  std::string listen;
};

Gateway::Gateway(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Gateway::~Gateway() {
  stop(Millis(0));
}

int utc_month(WallTime t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  return (tm.tm_year + 1900) * 12 + tm.tm_mon;
}

WallTime utc_month_start(WallTime t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  tm.tm_mday = 1;
  tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

namespace {

// A pool can be kept as it is across a reload only when nothing it was built from changed.
bool same_pool(const ProviderConfig& a, const ProviderConfig& b) {
  if (a.kind != b.kind || a.base_url != b.base_url || a.keys.size() != b.keys.size() ||
      a.selection != b.selection || a.timeout_ms != b.timeout_ms)
    return false;
  for (size_t i = 0; i < a.keys.size(); ++i) {
    if (a.keys[i].id != b.keys[i].id || a.keys[i].secret != b.keys[i].secret ||
        a.keys[i].weight != b.keys[i].weight)
      return false;
  }
  const auto& la = a.limits;
  const auto& lb = b.limits;
  const auto& ca = a.cooldown;
  const auto& cb = b.cooldown;
  return la.rpm == lb.rpm && la.tpm == lb.tpm && la.rpd == lb.rpd && la.tpd == lb.tpd &&
         la.max_concurrent == lb.max_concurrent &&
         la.daily_reset_hour_utc == lb.daily_reset_hour_utc && ca.initial_ms == cb.initial_ms &&
         ca.multiplier == cb.multiplier && ca.max_ms == cb.max_ms && ca.jitter == cb.jitter;
}

bool same_breaker(const BreakerConfig& a, const BreakerConfig& b) {
  return a.window == b.window && a.min_calls == b.min_calls && a.failure_rate == b.failure_rate &&
         a.slow_call_ms == b.slow_call_ms && a.slow_call_rate == b.slow_call_rate &&
         a.open_ms == b.open_ms && a.open_multiplier == b.open_multiplier &&
         a.max_open_ms == b.max_open_ms && a.half_open_probes == b.half_open_probes &&
         a.half_open_timeout_ms == b.half_open_timeout_ms &&
         a.count_rate_limits == b.count_rate_limits;
}

bool same_breakers(const Config& a, const Config& b) {
  if (!same_breaker(a.breaker, b.breaker)) return false;
  for (const auto& p : b.providers) {
    const ProviderConfig* old = a.find_provider(p.name);
    if (old && !same_breaker(old->breaker, p.breaker)) return false;
  }
  return true;
}

}  // namespace

Result<std::shared_ptr<const Snapshot>> build_snapshot(Runtime& rt,
                                                       std::shared_ptr<const Config> config,
                                                       const Snapshot* previous) {
  auto snap = std::make_shared<Snapshot>();
  snap->config = config;
  for (const auto& [secret, id] : config->secrets()) log::add_secret(secret, id);
  for (const auto& pc : config->providers) {
    ProviderRuntime* old = previous ? previous->provider(pc.name) : nullptr;
    const bool mock_same = old && old->mock && pc.kind == ProviderKind::kMock &&
                           old->config->kind == ProviderKind::kMock;
    if (old && same_pool(*old->config, pc) && (pc.kind != ProviderKind::kMock || mock_same)) {
      snap->providers.emplace(pc.name, previous->providers.find(pc.name)->second);  // kept whole
      continue;
    }
    auto pr = std::make_shared<ProviderRuntime>();
    pr->owner = config;
    pr->config = &pc;
    pr->anthropic = pc.kind == ProviderKind::kAnthropic;
    pr->base_url = pc.base_url;
    if (pc.kind == ProviderKind::kMock) {
      pr->mock = std::make_shared<MockProvider>(pc.mock);
      if (auto st = pr->mock->start("127.0.0.1:0", 1); !st.ok()) return st;
      pr->base_url = "http://127.0.0.1:" + std::to_string(pr->mock->port()) + "/v1";
      log::info("provider {}: in-process mock{} at {}", pc.name,
                pc.mock_substitute ? " (no API keys set)" : "", pr->base_url);
    } else {
      log::info("provider {}: {} at {} with {} key(s)", pc.name, to_string(pc.kind), pc.base_url,
                pc.keys.size());
    }
    pr->call_url = pr->base_url + (pr->anthropic ? "/messages" : "/chat/completions");
    snap->providers.emplace(pc.name, std::move(pr));
  }
  // Pools last, once nothing can fail any more (above, a mock may not start): a pool handed over
  // belongs to a snapshot that will be published.
  for (const auto& pc : config->providers) {
    ProviderRuntime& pr = *snap->providers.find(pc.name)->second;
    if (pr.pool) continue;  // kept whole from the previous snapshot
    ProviderRuntime* old = previous ? previous->provider(pc.name) : nullptr;
    keys::KeyPoolOptions ko;
    ko.scheduler = &rt.scheduler;
    // Keys that stay keep their state and in-flight leases (the old pool hands them over).
    pr.pool = old ? old->pool->reconfigured(pc, rt.clock, ko)
                  : std::make_unique<keys::KeyPool>(pc, rt.clock, ko);
  }
  for (size_t i = 0; i < config->auth.gateway_keys.size(); ++i) {
    // A gateway key that stays (same secret) keeps its rpm window and spend.
    std::shared_ptr<GatewayKeyState> state;
    if (previous) {
      const auto& old_keys = previous->config->auth.gateway_keys;
      for (size_t j = 0; j < old_keys.size(); ++j)
        if (old_keys[j] == config->auth.gateway_keys[i]) state = previous->gateway_keys[j];
    }
    snap->gateway_keys.push_back(state ? state : std::make_shared<GatewayKeyState>());
  }
  snap->breakers = previous && same_breakers(*previous->config, *config)
                       ? previous->breakers
                       : std::make_shared<breaker::BreakerRegistry>(rt.clock, *config);
  snap->breaker_table = std::make_shared<const BreakerTable>(snap->breakers, *config);
  snap->router = std::make_shared<routing::Router>(
      config, [table = snap->breaker_table](std::string_view provider, std::string_view model) {
        return table->open(provider, model);
      });
  if (previous)
    snap->router->import_state(previous->router->export_state());  // what was learned stays
  return std::shared_ptr<const Snapshot>(std::move(snap));
}

Result<std::unique_ptr<Gateway>> Gateway::create(std::shared_ptr<const Config> config,
                                                 GatewayOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->listen = options.listen.empty() ? config->listen : options.listen;
  impl->rt = std::make_unique<Runtime>();
  Runtime& rt = *impl->rt;
  rt.instance_tag = std::random_device{}();
  rt.config_path = options.config_path;
  auto snap = build_snapshot(rt, config, nullptr);
  if (!snap.ok()) return snap.status();
  rt.publish(snap.value());
  rt.ledger =
      std::make_unique<routing::FeedbackLedger>(size_t(config->learning.feedback_max_requests),
                                                Millis(config->learning.feedback_ttl_ms), rt.clock);

  auto store = store::open_store(config->state, rt.clock);
  if (!store.ok())
    return Status::io_error("cannot open the store at " + config->state.path + ": " +
                            store.status().message());
  rt.store = std::move(store.value());
  if (auto loaded = rt.store->load(); loaded.ok()) {
    routing::RouterState rs;
    for (const auto& p : loaded->posteriors)
      rs.posteriors.push_back(
          routing::Posterior{p.category, p.model, p.alpha, p.beta, 0, uint64_t(p.last_outcome_id)});
    for (const auto& s : loaded->model_stats)
      rs.stats.push_back(routing::ModelStats{
          s.model, uint64_t(s.requests), uint64_t(s.successes), s.latency_ewma_us, s.latency_p95_us,
          s.tokens_in, s.tokens_out, s.spend_usd, uint64_t(s.last_outcome_id)});
    snap.value()->router->import_state(rs);
    rt.store_ok = true;
  } else {
    log::warn("store state could not be loaded: {}", loaded.status().message());
  }
  // Verdicts may come for requests served before a restart, within the feedback window.
  {
    const WallTime now = rt.clock.wall_now();
    auto served = store::query_recent_served(config->state.path,
                                             now - Millis(config->learning.feedback_ttl_ms),
                                             size_t(config->learning.feedback_max_requests));
    if (served.ok()) {
      for (auto& r : *served) {
        routing::FeedbackLedger::Served s;
        s.model = std::move(r.model);
        s.category = std::move(r.category);
        s.layer = r.layer;
        s.transport_reward = 1.0;  // only answered requests are remembered, as on the request path
        s.learned = true;
        rt.ledger->restore(std::move(r.request_id), s, owner_tag(r.gateway_key), r.time, r.judged);
      }
    } else if (served.status().code() != StatusCode::kNotFound) {
      log::warn("requests awaiting feedback could not be loaded: {}", served.status().message());
    }
  }
  // Monthly budgets count what each gateway key spent this month before a restart too.
  if (!config->auth.gateway_keys.empty()) {
    const WallTime now = rt.clock.wall_now();
    auto spend = store::query_gateway_spend(config->state.path, utc_month_start(now));
    if (spend.ok()) {
      for (size_t i = 0; i < config->auth.gateway_policies.size(); ++i) {
        auto it = spend->find(config->auth.gateway_policies[i].name);
        if (it == spend->end()) continue;
        auto& st = *snap.value()->gateway_keys[i];
        std::lock_guard lock(st.mu);
        st.month = utc_month(now);
        st.spend_usd = it->second;
      }
    } else if (spend.status().code() != StatusCode::kNotFound) {
      log::warn("gateway key spend could not be loaded: {}", spend.status().message());
    }
  }
  return std::unique_ptr<Gateway>(new Gateway(std::move(impl)));
}

ReloadResult reload_runtime(Runtime& rt, const std::shared_ptr<const Config>& config) {
  std::lock_guard lock(rt.reload_mu);
  auto previous = rt.snapshot();
  auto next = build_snapshot(rt, config, previous.get());
  if (!next.ok()) return ReloadResult{false, {next.status().message()}};
  std::vector<std::string> notes;
  const Config& old = *previous->config;
  if (old.listen != config->listen) notes.push_back("listen changes take effect on restart");
  if (old.state.path != config->state.path || old.state.backend != config->state.backend)
    notes.push_back("state changes take effect on restart");
  rt.publish(next.value());
  log::info("configuration reloaded ({} providers, {} models, {} routes)", config->providers.size(),
            config->models.size(), config->routes.size());
  for (const auto& n : notes) log::warn("reload: {}", n);
  return ReloadResult{true, notes};
}

ReloadResult reload_from_file(Runtime& rt) {
  if (rt.config_path.empty()) {
    return ReloadResult{
        false, {"the gateway was started without a configuration file; nothing to reload"}};
  }
  auto load = load_config_file(rt.config_path, Environment::from_process());
  if (!load.ok()) {
    ReloadResult r{false, {}};
    for (const auto& e : load.errors) r.messages.push_back(e.to_string());
    log::error("reload rejected, the running configuration stays: {}", r.messages.front());
    return r;
  }
  return reload_runtime(rt, std::make_shared<const Config>(std::move(*load.config)));
}

Status Gateway::reload(std::shared_ptr<const Config> config) {
  auto r = reload_runtime(*impl_->rt, std::move(config));
  if (!r.ok)
    return Status::invalid_argument(r.messages.empty() ? "reload failed" : r.messages.front());
  return Status();
}

Status Gateway::reload_from_file() {
  auto r = gateway::reload_from_file(*impl_->rt);
  if (!r.ok)
    return Status::invalid_argument(r.messages.empty() ? "reload failed" : r.messages.front());
  return Status();
}

Status Gateway::start() {
  Runtime& rt = *impl_->rt;
  const Config& cfg = *rt.snapshot()->config;
  int threads = cfg.server.threads > 0 ? cfg.server.threads
                                       : std::max(1, int(std::thread::hardware_concurrency()));
  impl_->server =
      std::make_unique<HttpServer>(cfg.server, [&rt](Exchange& ex) { return handle(rt, ex); });
  // Answers the server gives before any handler (malformed HTTP, limits) carry the
  // x-switchboard-* headers too (DESIGN.md: every response), with no attempt made.
  // The same authorization as the handlers', on the head alone: a request without a valid key
  // is refused before its body is read (a keyless client cannot make the gateway buffer bodies).
  impl_->server->set_head_check(
      [&rt](const Request& req, const asio::ip::tcp::socket& peer) -> std::optional<Response> {
        std::string_view target = req.target();
        target = target.substr(0, target.find('?'));
        std::string_view path;
        const Area area = classify_path(target, path);
        if (area == Area::kOpen) return std::nullopt;
        Principal who;
        return authorize(*rt.thread_snapshot()->config, req, area, peer, who);
      });
  impl_->server->set_error_decorator([&rt](Response& res) {
    const std::string id = rt.request_id(rt.next_request_seq(), secure_random_u64());
    AnswerFacts none;
    none.request_id = id;
    for_each_switchboard_header(none, [&res](std::string_view n, std::string_view v) {
      res.set(beast::string_view(n.data(), n.size()), beast::string_view(v.data(), v.size()));
    });
  });
  // Each thread owns its upstream client (pools, DNS cache, TLS context) for its whole life.
  rt.clients.resize(size_t(threads));
  impl_->server->set_thread_hooks(
      [&rt](int i, asio::io_context& ctx) {
        rt.clients[size_t(i)] = std::make_unique<upstream::HttpClient>(ctx.get_executor());
      },
      [&rt](int i) { rt.clients[size_t(i)].reset(); });
  if (impl_->options.workflows) {
    // llm steps and verdicts go through this gateway's own port, on loopback when it listens
    // on every interface; the port is read at each call, so it is known by then.
    std::string host;
    uint16_t unused = 0;
    split_host_port(impl_->listen, host, unused);
    if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
    if (host == "::" || host == "[::]") host = "[::1]";
    Impl* impl = impl_.get();
    auto resolve = [impl, host](const std::string& client) -> Result<GatewayTarget> {
      if (!impl->server || impl->server->port() == 0)
        return Status::unavailable("the gateway is not serving");
      GatewayTarget t;
      t.base_url = "http://" + host + ":" + std::to_string(impl->server->port());
      const auto& auth = impl->rt->snapshot()->config->auth;
      if (auth.gateway_keys.empty() || client == "anonymous") return t;
      if (client.rfind("key:", 0) == 0) {
        // The run's own key: its routes, rpm and budget apply to its steps.
        const std::string name = client.substr(4);
        for (size_t i = 0; i < auth.gateway_policies.size(); ++i)
          if (auth.gateway_policies[i].name == name) {
            t.gateway_key = auth.gateway_keys[i];
            return t;
          }
        return Status::permission_denied("the gateway key '" + name +
                                         "' that submitted this run is no longer configured");
      }
      // The local user's runs ("", from the CLI) and the admin's go out under the first key.
      t.gateway_key = auth.gateway_keys.front();
      return t;
    };
    auto service = WorkflowService::open(cfg, std::move(resolve),
                                         [impl] { return impl->rt->snapshot()->config; });
    if (service.ok()) {
      rt.workflows = std::move(*service);
    } else if (service.status().code() == StatusCode::kFailedPrecondition) {
      log::info("workflows disabled: {}", service.status().message());
    } else {
      return service.status();
    }
  }
  auto st = impl_->server->start(impl_->listen, threads);
  if (!st.ok()) {
    rt.workflows.reset();
    return st;
  }
  if (rt.workflows) rt.workflows->start();
  return Status();
}

uint16_t Gateway::port() const {
  return impl_->server ? impl_->server->port() : 0;
}

std::string Gateway::base_url() const {
  return "http://127.0.0.1:" + std::to_string(port());
}

void Gateway::stop(Millis grace) {
  if (!impl_ || !impl_->rt) return;
  Runtime& rt = *impl_->rt;
  // Workflows first: their llm steps post to this server, so it must outlive them. Handlers
  // still awaiting the service's pool finish before the server's io_contexts are destroyed.
  if (rt.workflows) rt.workflows->stop();
  if (impl_->server) {
    impl_->server->stop(grace);
    rt.workflows.reset();
    impl_->server.reset();
  }
  rt.workflows.reset();
  auto snap = rt.snapshot();
  // Persist what was learned, then drain and close the store.
  if (rt.store) {
    auto state = snap->router->export_state();
    for (const auto& p : state.posteriors) {
      store::BanditPosteriorEvent e;
      e.category = p.category;
      e.model = p.model;
      e.alpha = p.alpha;
      e.beta = p.beta;
      e.last_outcome_id = int64_t(p.last_outcome_id);
      e.updated = rt.clock.wall_now();
      rt.store->enqueue(std::move(e));
    }
    for (const auto& s : state.stats) {
      store::ModelStatsEvent e;
      e.model = s.model;
      e.requests = int64_t(s.requests);
      e.successes = int64_t(s.successes);
      e.latency_ewma_us = s.latency_ewma_us;
      e.latency_p95_us = s.latency_p95_us;
      e.tokens_in = s.tokens_in;
      e.tokens_out = s.tokens_out;
      e.spend_usd = s.spend_usd;
      e.last_outcome_id = int64_t(s.last_outcome_id);
      e.updated = rt.clock.wall_now();
      rt.store->enqueue(std::move(e));
    }
    rt.store->close();
  }
  rt.clients.clear();
  for (auto& [name, pr] : snap->providers) {
    if (pr->mock) pr->mock->stop();
  }
  snap.reset();
  impl_->rt.reset();
}

int run_serve(const std::string& config_path, const std::string& listen_override) {
  auto env = Environment::from_process();
  ConfigLoad load;
  std::string source;
  std::string file;  // what SIGHUP and /admin/reload re-read
  if (!config_path.empty()) {
    load = load_config_file(config_path, env);
    source = file = config_path;
  } else if (std::filesystem::exists("switchboard.yaml")) {
    load = load_config_file("switchboard.yaml", env);
    source = "./switchboard.yaml";
    file = "switchboard.yaml";
  } else {
    load = default_config(env);
    source = "built-in defaults";
  }
  if (!load.ok()) {
    for (const auto& e : load.errors) std::fprintf(stderr, "%s\n", e.to_string().c_str());
    return 2;
  }
  auto config = std::make_shared<const Config>(std::move(*load.config));
  log::init(config->log.level, config->log.json ? log::Format::kJson : log::Format::kText);
  std::string listen = listen_override.empty() ? config->listen : listen_override;
  std::string host;
  uint16_t port = 0;
  if (!split_host_port(listen, host, port)) {
    std::fprintf(stderr, "switchboard serve: bad listen address '%s'\n", listen.c_str());
    return 2;
  }
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (config->auth.gateway_keys.empty() && !config->auth.allow_open &&
      (ec || !addr.is_loopback())) {
    std::fprintf(stderr,
                 "switchboard serve: refusing to listen on %s without gateway keys; set "
                 "auth.gateway_keys or "
                 "auth.allow_open: true\n",
                 listen.c_str());
    return 2;
  }
  log::info("switchboard {} starting with {} ({} providers, {} models, {} routes)",
            SWITCHBOARD_VERSION, source, config->providers.size(), config->models.size(),
            config->routes.size());
  auto gw = Gateway::create(config, GatewayOptions{listen, file});
  if (!gw.ok()) {
    log::error("{}", gw.status().message());
    return 1;
  }
  if (auto st = (*gw)->start(); !st.ok()) {
    log::error("{}", st.message());
    return 1;
  }
  log::info("listening on {} (port {})", listen, (*gw)->port());
  asio::io_context signals_ctx;
  asio::signal_set signals(signals_ctx, SIGINT, SIGTERM);
  asio::signal_set hangup(signals_ctx, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_hangup =
      [&](const boost::system::error_code& ec, int) {
        if (ec) return;
        if (auto st = (*gw)->reload_from_file(); !st.ok())
          log::error("SIGHUP reload: {}", st.message());
        hangup.async_wait(on_hangup);
      };
  hangup.async_wait(on_hangup);
  signals.async_wait([&](const boost::system::error_code&, int sig) {
    log::info("signal {}: draining (a second signal exits at once)", sig);
    hangup.cancel();
    signals.async_wait([](const boost::system::error_code&, int) { std::_Exit(1); });
    std::thread([&] {
      (*gw)->stop(Millis(config->server.shutdown_grace_ms));
      signals_ctx.stop();
    }).detach();
  });
  signals_ctx.run();
  log::info("stopped");
  return 0;
}

}  // namespace switchboard::gateway
