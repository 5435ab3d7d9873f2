// Cluster (cluster.h): admission, settling and renewal of shared key leases over Redis, and the
// release notifications that wake waiting requests.
#include "cluster/cluster.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cmath>
#include <future>
#include <list>
#include <random>
#include <unordered_map>

#include "cluster/redis.h"
#include "cluster/scripts.h"
#include "common/log.h"
#include "common/metrics.h"

namespace switchboard::cluster {

namespace {
constexpr auto kNothrow = asio::as_tuple(asio::use_awaitable);

enum Script : size_t {
  kAdmitScript,
  kSettleScript,
  kRenewScript,
  kBudgetAdmitScript,
  kBudgetSettleScript,
  kQuotaShareScript,
  kScripts
};
const std::string& script_text(size_t i) {
  switch (i) {
    case kAdmitScript:
      return scripts::admit();
    case kSettleScript:
      return scripts::settle();
    case kBudgetAdmitScript:
      return scripts::budget_admit();
    case kBudgetSettleScript:
      return scripts::budget_settle();
    case kQuotaShareScript:
      return scripts::quota_share();
    default:
      return scripts::renew();
  }
}

// Budgets count in integer nano-USD in Redis (HINCRBY), compared as Lua numbers (doubles):
// exact up to 2^53 nano-USD, about $9M, which amounts are clamped to.
int64_t nano_usd(double usd) {
  return static_cast<int64_t>(std::llround(std::clamp(usd, 0.0, 9e6) * 1e9));
}
double usd_of(int64_t nano) {
  return double(nano) / 1e9;
}

// switchboard_cluster_admissions_total{result}: granted, full (no key had room), unavailable
// (Redis did not answer: the request used the local share).
prometheus::Counter& admissions(const char* result) {
  return metrics::counter_family("switchboard_cluster_admissions_total",
                                 "Shared-limit admissions asked of Redis, by result")
      .Add({{"result", result}});
}

keys::NoKeyReason reason_of(int64_t code) {
  switch (code) {
    case 1:
      return keys::NoKeyReason::kConcurrency;
    case 2:
      return keys::NoKeyReason::kCooling;
    case 3:
      return keys::NoKeyReason::kMinuteWindow;
    case 4:
      return keys::NoKeyReason::kDailyWindow;
    case 5:
      return keys::NoKeyReason::kTooLarge;
    default:
      return keys::NoKeyReason::kNoUsableKey;
  }
}
}  // namespace

// The state of one io_context's thread. Everything but `stopped` is touched only there. A Node
// holds no Asio object of its own once stopped (its connections are released on its thread), so
// the Cluster may outlive the io_contexts.
struct Node {
  Node(Cluster& c, asio::io_context& x) : owner(c), ctx(x) {}
  Cluster& owner;
  asio::io_context& ctx;
  std::shared_ptr<RedisConnection> conn;
  std::shared_ptr<RedisConnection> subscriber;  // the first node only
  std::string sha[kScripts];
  // Leases this thread's requests hold: token → the lease set's key (for renewal).
  std::unordered_map<std::string, std::string> held;
  asio::steady_timer* renew_timer = nullptr;  // the renewal loop's, while it runs
  struct Waiter {
    std::string provider;
    asio::steady_timer* timer;
  };
  std::list<Waiter> waiters;
  std::atomic<bool> stopped{false};
  bool ever_up = false;  // a reservation found the connection up once

  // EVALSHA, or EVAL when Redis lost the script (SCRIPT FLUSH, a restart between handshakes).
  void eval(size_t script, Command args, std::function<void(Reply)> done) {
    Command c;
    c.reserve(args.size() + 2);
    c.emplace_back("EVALSHA");
    c.emplace_back(sha[script]);
    for (auto& a : args) c.push_back(std::move(a));
    if (!conn) {
      asio::post(ctx, [done = std::move(done)] { done(Reply::failed("stopped")); });
      return;
    }
    auto retry = std::make_shared<Command>(c);
    conn->send(std::move(c), [this, script, retry, done = std::move(done)](Reply r) {
      if (r.type == Reply::Type::kError && r.str.rfind("NOSCRIPT", 0) == 0 && conn) {
        (*retry)[0] = "EVAL";
        (*retry)[1] = script_text(script);
        conn->send(std::move(*retry), done);
        return;
      }
      done(std::move(r));
    });
  }

  asio::awaitable<Reply> eval_await(size_t script, Command args) {
    return await_reply(
        ctx, [this, script, a = std::move(args)](std::function<void(Reply)> done) mutable {
          eval(script, std::move(a), std::move(done));
        });
  }

  asio::awaitable<void> renew_loop(std::chrono::milliseconds ttl) {
    const auto period = std::max(ttl / 3, std::chrono::milliseconds(10));
    asio::steady_timer timer(ctx);
    renew_timer = &timer;
    while (!stopped) {
      timer.expires_after(period);
      (void)co_await timer.async_wait(kNothrow);
      if (stopped) break;
      if (held.empty() || !conn->up()) continue;
      Command args{"0", std::to_string(ttl.count())};
      args.reserve(2 + held.size() * 2);
      for (const auto& [token, set] : held) {
        args.push_back(set);
        args.push_back(token);
      }
      eval(kRenewScript, std::move(args), [](Reply r) {
        if (!r.ok()) log::warn("cluster: lease renewal failed: {}", r.str);
      });
    }
    renew_timer = nullptr;
  }

  // Ends a hold on this node's thread (from any thread): forgets its renewal and runs `script`.
  // Not ended (stopped, Redis away): the hold expires after its TTL, and `failed` runs (on any
  // thread) for what the TTL does not give back.
  void end_hold(std::string token, size_t script, Command args, const char* what,
                std::function<void()> failed = nullptr) {
    if (stopped.load(std::memory_order_acquire)) {
      if (failed) failed();
      return;
    }
    asio::dispatch(ctx, [this, token = std::move(token), script, args = std::move(args), what,
                         failed = std::move(failed)]() mutable {
      held.erase(token);
      if (stopped) {
        if (failed) failed();
        return;
      }
      eval(script, std::move(args), [what, failed = std::move(failed)](Reply r) {
        if (r.ok()) return;
        log::debug("cluster: ending {} failed: {}", what, r.str);
        if (failed) failed();
      });
    });
  }

  void wake(const std::string& provider) {
    for (auto& w : waiters) {
      if (w.provider == provider) w.timer->cancel();
    }
  }
};

// ------------------------------------------------------------------------------- Reservation

Reservation& Reservation::operator=(Reservation&& o) noexcept {
  if (this != &o) {
    if (active()) settle(keys::EndReport{});
    node_ = std::exchange(o.node_, nullptr);
    prefix_ = std::move(o.prefix_);
    provider_ = std::move(o.provider_);
    key_id_ = std::move(o.key_id_);
    token_ = std::move(o.token_);
    minute_ref_ = o.minute_ref_;
    day_ref_ = o.day_ref_;
    estimated_ = o.estimated_;
    limits_ = o.limits_;
  }
  return *this;
}

Reservation::~Reservation() {
  if (active()) settle(keys::EndReport{});
}

void Reservation::commit() {
  if (node_ == nullptr) return;
  if (limits_.max_concurrent > 0) {
    keys::EndReport report;
    report.request_counted = true;
    report.tokens_counted = estimated_;
    settle(report);
    return;
  }
  node_ = nullptr;  // nothing in Redis to end: the windows already count it
}

void Reservation::settle(const keys::EndReport& report) {
  if (node_ == nullptr) return;
  Node* node = std::exchange(node_, nullptr);
  const bool minute = limits_.rpm > 0 || limits_.tpm > 0;
  const bool day = limits_.rpd > 0 || limits_.tpd > 0;
  const int64_t cooldown_ms =
      report.cooldown
          ? std::chrono::duration_cast<std::chrono::milliseconds>(*report.cooldown).count()
          : -1;
  Command args{"1",
               prefix_,
               key_id_,
               token_,
               report.request_counted ? "1" : "0",
               std::to_string(report.tokens_counted - estimated_),
               std::to_string(minute_ref_),
               std::to_string(day_ref_),
               std::to_string(limits_.max_concurrent),
               std::to_string(cooldown_ms),
               report.cooldown_model,
               std::to_string(limits_.daily_reset_hour_utc),
               node->owner.channel_,
               provider_,
               minute ? "1" : "0",
               day ? "1" : "0"};
  node->end_hold(token_, kSettleScript, std::move(args), "a lease");
}

// ------------------------------------------------------------------------------- BudgetHold

BudgetHold& BudgetHold::operator=(BudgetHold&& o) noexcept {
  if (this != &o) {
    if (active()) settle(0);
    node_ = std::exchange(o.node_, nullptr);
    owner_ = o.owner_;
    base_ = std::move(o.base_);
    token_ = std::move(o.token_);
  }
  return *this;
}

BudgetHold::~BudgetHold() {
  if (active()) settle(0);
}

void BudgetHold::settle(double cost_usd) {
  if (node_ == nullptr) return;
  Node* node = std::exchange(node_, nullptr);
  const int64_t cost = nano_usd(cost_usd);
  // A settle that does not reach Redis would lose the cost: the next admission adds it.
  std::function<void()> failed;
  if (cost > 0)
    failed = [owner = owner_, base = base_, cost] { owner->add_unsynced_nano(base, cost); };
  node->end_hold(token_, kBudgetSettleScript, Command{"1", base_, token_, std::to_string(cost)},
                 "a budget hold", std::move(failed));
}

// ------------------------------------------------------------------------------- Cluster

Cluster::Cluster(const ClusterConfig& config) : config_(config) {
  channel_ = config_.prefix + ":release";
  breaker_channel_ = config_.prefix + ":breaker";
  learning_channel_ = config_.prefix + ":learning";
  std::random_device rd;
  instance_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

Cluster::~Cluster() = default;

void Cluster::start(const std::vector<asio::io_context*>& contexts) {
  static auto& up_gauge = metrics::gauge_family(
      "switchboard_cluster_redis_up", "1 while every connection to the cluster's Redis is up");
  up_gauge.Add({}).Set(0);
  RedisConnection::Options base;
  base.host = config_.redis_host;
  base.port = config_.redis_port;
  base.db = config_.redis_db;
  base.password = config_.redis_password;
  base.connect_timeout = std::chrono::milliseconds(config_.connect_timeout_ms);
  base.command_timeout = std::chrono::milliseconds(config_.command_timeout_ms);
  for (auto* ctx : contexts) {
    auto node = std::make_unique<Node>(*this, *ctx);
    Node* n = node.get();
    RedisConnection::Options o = base;
    for (size_t i = 0; i < kScripts; ++i)
      o.on_connect.push_back({"SCRIPT", "LOAD", script_text(i)});
    o.on_handshake_reply = [n](size_t i, const Reply& r) {
      if (i < kScripts && r.type == Reply::Type::kString) n->sha[i] = r.str;
    };
    o.on_state = [this](bool up) { on_state(up); };
    n->conn = std::make_shared<RedisConnection>(*ctx, std::move(o));
    nodes_.push_back(std::move(node));
  }
  if (!nodes_.empty()) {
    Node* first = nodes_.front().get();
    RedisConnection::Options o = base;
    // One channel per command: SUBSCRIBE answers once per channel.
    o.on_connect.push_back({"SUBSCRIBE", channel_});
    o.on_connect.push_back({"SUBSCRIBE", breaker_channel_});
    o.on_connect.push_back({"SUBSCRIBE", learning_channel_});
    o.on_message = [this, own = fmt::format("{:x}\n", instance_)](const Reply& r) {
      const std::string& channel = r.elements[1].str;
      const std::string& message = r.elements[2].str;
      if (channel == breaker_channel_) {
        if (breaker_listener_) breaker_listener_(message);
      } else if (channel == learning_channel_) {
        const size_t eol = message.find('\n');
        if (learning_listener_ && eol != std::string::npos && message.compare(0, eol + 1, own) != 0)
          learning_listener_(std::string_view(message).substr(eol + 1));
      } else {
        on_release(r.elements[2].str);
      }
    };
    first->subscriber = std::make_shared<RedisConnection>(first->ctx, std::move(o));
  }
  startup_deadline_ = MonoClock::now() + std::chrono::milliseconds(config_.connect_timeout_ms);
  const auto ttl = std::chrono::milliseconds(config_.lease_ttl_ms);
  for (auto& node : nodes_) {
    Node* n = node.get();
    asio::post(n->ctx, [n, ttl] {
      n->conn->start();
      if (n->subscriber) n->subscriber->start();
      asio::co_spawn(n->ctx, n->renew_loop(ttl), asio::detached);
    });
  }
}

void Cluster::stop() {
  stopping_ = true;
  std::vector<std::future<void>> done;
  for (auto& node : nodes_) {
    Node* n = node.get();
    if (n->stopped.exchange(true)) continue;
    auto finished = std::make_shared<std::promise<void>>();
    done.push_back(finished->get_future());
    asio::dispatch(n->ctx, [n, finished] {
      if (n->renew_timer) n->renew_timer->cancel();
      for (auto& w : n->waiters) w.timer->cancel();
      n->held.clear();
      n->conn->stop();
      if (n->subscriber) n->subscriber->stop();
      // Their coroutines keep them until they end, inside the io_context.
      n->conn.reset();
      n->subscriber.reset();
      finished->set_value();
    });
  }
  // The io_contexts run (stop() is called before they stop); a context that no longer runs
  // leaves its node's connections to its own destruction.
  for (auto& f : done) f.wait_for(std::chrono::seconds(2));
}

void Cluster::on_state(bool up) {
  static auto& up_gauge = metrics::gauge_family(
      "switchboard_cluster_redis_up", "1 while every connection to the cluster's Redis is up");
  const int count = up_count_.fetch_add(up ? 1 : -1) + (up ? 1 : -1);
  const bool all = count == static_cast<int>(nodes_.size());
  up_gauge.Add({}).Set(all ? 1 : 0);
  if (stopping_) return;  // our own closing, not an outage
  if (!up && !logged_down_.exchange(true)) {
    log::warn("cluster: redis {}:{} unreachable; {} until it returns", config_.redis_host,
              config_.redis_port,
              config_.on_redis_down == RedisDownPolicy::kRefuse
                  ? "refusing requests"
                  : fmt::format("serving on local limits (1/{} of each key's)",
                                config_.expected_gateways));
  }
  if (all && logged_down_.exchange(false)) {
    log::info("cluster: redis {}:{} reachable; key limits are shared", config_.redis_host,
              config_.redis_port);
  }
}

void Cluster::on_release(const std::string& provider) {
  for (auto& node : nodes_) {
    Node* n = node.get();
    asio::post(n->ctx, [n, provider] { n->wake(provider); });
  }
}

Node* Cluster::this_node() const {
  for (const auto& n : nodes_) {
    if (n->ctx.get_executor().running_in_this_thread()) return n.get();
  }
  return nullptr;
}

bool Cluster::up() const {
  Node* n = this_node();
  return n != nullptr && !n->stopped && n->conn->up();
}

bool Cluster::all_up() const {
  return !nodes_.empty() && up_count_.load() == static_cast<int>(nodes_.size());
}

asio::awaitable<Node*> Cluster::ready_node() {
  Node* n = this_node();
  if (n == nullptr || n->stopped) co_return nullptr;
  if (!n->conn->up() && !n->ever_up) {
    // Starting: the first requests wait for the first connection (up to the connect timeout)
    // rather than slip past the shared limits on the local share.
    asio::steady_timer pause(n->ctx);
    while (!n->conn->up() && !n->stopped && MonoClock::now() < startup_deadline_) {
      pause.expires_after(std::chrono::milliseconds(5));
      (void)co_await pause.async_wait(kNothrow);
    }
  }
  if (n->stopped || !n->conn->up()) co_return nullptr;
  n->ever_up = true;
  co_return n;
}

std::string Cluster::next_token() {
  return fmt::format("{:x}-{:x}", instance_, seq_.fetch_add(1, std::memory_order_relaxed));
}

asio::awaitable<BudgetResult> Cluster::reserve_budget(BudgetRequest request) {
  BudgetResult out;
  Node* n = co_await ready_node();
  if (n == nullptr) co_return out;
  std::string base = config_.prefix + ":{#budget}:" + std::string(request.name);
  std::string token = next_token();
  int64_t unsynced = 0;
  {
    std::lock_guard lock(unsynced_mu_);
    if (auto it = unsynced_.find(base); it != unsynced_.end()) {
      unsynced = it->second;
      unsynced_.erase(it);
    }
  }
  Command args{"1",
               base,
               token,
               std::to_string(config_.lease_ttl_ms),
               std::to_string(nano_usd(request.estimate_usd)),
               std::to_string(nano_usd(request.budget_usd)),
               std::to_string(nano_usd(request.seed_spend_usd)),
               std::to_string(unsynced)};
  Reply r = co_await n->eval_await(kBudgetAdmitScript, std::move(args));
  if (!r.ok() || r.type != Reply::Type::kArray || r.elements.size() < 3) {
    if (r.type == Reply::Type::kError) log::warn("cluster: budget script failed: {}", r.str);
    if (unsynced > 0) add_unsynced_nano(base, unsynced);  // not applied: next time
    co_return out;
  }
  out.spend_usd = usd_of(r.elements[1].integer);
  out.held_usd = usd_of(r.elements[2].integer);
  switch (r.elements[0].integer) {
    case 1:
      out.status = BudgetResult::Status::kGranted;
      out.hold.node_ = n;
      out.hold.owner_ = this;
      n->held.emplace(token, base + ":l");
      out.hold.base_ = std::move(base);
      out.hold.token_ = std::move(token);
      break;
    case 0:
      out.status = BudgetResult::Status::kSpent;
      break;
    default:
      out.status = BudgetResult::Status::kNoRoom;
  }
  co_return out;
}

void Cluster::add_unsynced_nano(const std::string& base, int64_t nano) {
  if (nano <= 0) return;
  std::lock_guard lock(unsynced_mu_);
  // Bounded: one entry per configured client key name.
  unsynced_[base] += nano;
}

void Cluster::add_unsynced_spend(std::string_view name, double cost_usd) {
  add_unsynced_nano(config_.prefix + ":{#budget}:" + std::string(name), nano_usd(cost_usd));
}

asio::awaitable<ReserveResult> Cluster::reserve(ReserveRequest request) {
  static prometheus::Counter& granted = admissions("granted");
  static prometheus::Counter& full = admissions("full");
  static prometheus::Counter& unavailable = admissions("unavailable");
  ReserveResult out;
  if (request.limits == nullptr) co_return out;
  Node* n = co_await ready_node();
  if (n == nullptr) {
    unavailable.Increment();
    co_return out;
  }
  const RateLimits& l = *request.limits;
  std::string prefix = config_.prefix + ":{" + std::string(request.provider) + "}";
  std::string token = next_token();
  Command args{"1",
               prefix,
               token,
               std::to_string(config_.lease_ttl_ms),
               std::to_string(l.max_concurrent),
               std::to_string(l.rpm),
               std::to_string(l.tpm),
               std::to_string(l.rpd),
               std::to_string(l.tpd),
               std::to_string(l.daily_reset_hour_utc),
               std::to_string(std::max<int64_t>(0, request.estimated_tokens)),
               std::string(request.model)};
  for (auto id : request.candidates) args.emplace_back(id);
  Reply r = co_await n->eval_await(kAdmitScript, std::move(args));
  if (!r.ok() || r.type != Reply::Type::kArray || r.elements.size() < 3) {
    if (r.type == Reply::Type::kError) log::warn("cluster: admission script failed: {}", r.str);
    unavailable.Increment();
    co_return out;
  }
  if (r.elements[0].integer == 1 && r.elements.size() >= 4) {
    Reservation& res = out.reservation;
    res.node_ = n;
    res.key_id_ = r.elements[1].str;
    res.provider_ = std::string(request.provider);
    res.token_ = token;
    res.minute_ref_ = r.elements[2].integer;
    res.day_ref_ = r.elements[3].integer;
    res.estimated_ = std::max<int64_t>(0, request.estimated_tokens);
    res.limits_ = l;
    if (l.max_concurrent > 0) n->held.emplace(token, prefix + ":" + res.key_id_ + ":l");
    res.prefix_ = std::move(prefix);
    out.status = ReserveResult::Status::kGranted;
    granted.Increment();
    co_return out;
  }
  out.status = ReserveResult::Status::kFull;
  full.Increment();
  out.reason = reason_of(r.elements[1].integer);
  if (r.elements[2].integer >= 0) out.retry_in = std::chrono::milliseconds(r.elements[2].integer);
  co_return out;
}

asio::awaitable<void> Cluster::wait_release(std::string provider, MonoTime until) {
  Node* n = this_node();
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer timer(ex);
  timer.expires_at(until);
  if (n == nullptr || n->stopped) {
    (void)co_await timer.async_wait(kNothrow);
    co_return;
  }
  auto it = n->waiters.insert(n->waiters.end(), Node::Waiter{std::move(provider), &timer});
  struct Unlist {
    Node* n;
    std::list<Node::Waiter>::iterator it;
    ~Unlist() { n->waiters.erase(it); }
  } unlist{n, it};
  (void)co_await timer.async_wait(kNothrow);
}

void Cluster::publish(std::string channel, std::string message, const char* what) {
  if (nodes_.empty()) return;
  Node* n = this_node();
  if (n == nullptr) n = nodes_.front().get();
  if (n->stopped) return;
  asio::dispatch(n->ctx, [n, what, c = Command{"PUBLISH", std::move(channel), std::move(message)}] {
    if (n->stopped) return;
    n->conn->send(c, [what](Reply r) {
      if (!r.ok()) log::debug("cluster: publishing {} failed: {}", what, r.str);
    });
  });
}

void Cluster::publish_breaker_open(std::string_view target) {
  publish(breaker_channel_, std::string(target), "a breaker opening");
}

void Cluster::publish_learning(std::string batch) {
  publish(learning_channel_, fmt::format("{:x}\n", instance_) + batch, "learning");
}

void Cluster::share_quotas(std::vector<quota::QuotaBook::Share> shares, WallTime now,
                           std::function<void(std::optional<std::vector<quota::Usage>>)> done) {
  Node* n = nodes_.empty() ? nullptr : nodes_.front().get();
  if (n == nullptr || n->stopped || shares.empty()) {
    done(std::nullopt);
    return;
  }
  Command c;
  c.reserve(3 + shares.size() * 8);
  c.emplace_back("1");  // placeholder for the key count, set below
  for (const auto& s : shares)
    c.push_back(config_.prefix + ":{#quota}:" + s.provider + ":" + s.period_id);
  c[0] = std::to_string(shares.size());
  for (const auto& s : shares) {
    // Kept a day past its period: a gateway whose clock lags a little still finds it.
    const auto ttl = std::chrono::duration_cast<std::chrono::milliseconds>(s.period_end - now +
                                                                           std::chrono::hours(24));
    c.push_back(std::to_string(std::max<int64_t>(ttl.count(), 1000)));
    for (const quota::Usage* u : {&s.delta, &s.base}) {
      c.push_back(std::to_string(u->requests));
      c.push_back(std::to_string(u->tokens));
      c.push_back(std::to_string(u->nano_usd));
    }
  }
  const size_t count = shares.size();
  asio::dispatch(n->ctx, [n, count, c = std::move(c), done = std::move(done)]() mutable {
    if (n->stopped) {
      done(std::nullopt);
      return;
    }
    n->eval(kQuotaShareScript, std::move(c), [count, done = std::move(done)](Reply r) {
      if (!r.ok() || r.type != Reply::Type::kArray || r.elements.size() != count * 3) {
        if (r.type == Reply::Type::kError) log::warn("cluster: quota script failed: {}", r.str);
        done(std::nullopt);
        return;
      }
      std::vector<quota::Usage> totals(count);
      for (size_t i = 0; i < count; ++i) {
        totals[i].requests = r.elements[i * 3].integer;
        totals[i].tokens = r.elements[i * 3 + 1].integer;
        totals[i].nano_usd = r.elements[i * 3 + 2].integer;
      }
      done(std::move(totals));
    });
  });
}

void Cluster::set_disabled(std::string_view provider, std::string_view key_id, bool disabled) {
  if (nodes_.empty()) return;
  Node* n = nodes_.front().get();
  std::string key =
      config_.prefix + ":{" + std::string(provider) + "}:" + std::string(key_id) + ":off";
  if (n->stopped) return;
  asio::dispatch(n->ctx, [n, key = std::move(key), disabled] {
    if (n->stopped) return;
    Command c = disabled ? Command{"SET", key, "1"} : Command{"DEL", key};
    n->conn->send(std::move(c), [](Reply r) {
      if (!r.ok()) log::warn("cluster: sharing a key's disabled mark failed: {}", r.str);
    });
  });
}

}  // namespace switchboard::cluster
