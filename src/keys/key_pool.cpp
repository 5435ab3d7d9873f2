// KeyPool: selection, reservation, cooldowns and waiters under one mutex per provider.
//
// Design notes (why it looks like this):
//  * One mutex per pool, with try_lock first so contention is visible in metrics. Everything done
//    under it is arithmetic on a few cache lines; header parsing, metrics increments and waiter
//    callbacks happen outside it.
//  * Time is read under the lock so the observer sees events in time order, and so a grant and
//    the window state it was checked against belong to the same instant.
//  * Timer callbacks hold only a weak_ptr to the core: a timer that fires after the pool is gone
//    does nothing.
#include <algorithm>
#include <cmath>
#include <future>
#include <random>
#include <unordered_map>

#include "common/log.h"
#include "common/metrics.h"
#include "keys/keys.h"
#include "keys/rate_window.h"

namespace switchboard::keys {

std::string_view to_string(OutcomeClass c) {
  switch (c) {
    case OutcomeClass::kSuccess:
      return "success";
    case OutcomeClass::kRateLimited:
      return "rate_limited";
    case OutcomeClass::kAuthFailed:
      return "auth_failed";
    case OutcomeClass::kServerError:
      return "server_error";
    case OutcomeClass::kTimeout:
      return "timeout";
    case OutcomeClass::kConnectionError:
      return "connection_error";
    case OutcomeClass::kClientError:
      return "client_error";
    case OutcomeClass::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

std::string_view to_string(KeyState s) {
  switch (s) {
    case KeyState::kHealthy:
      return "healthy";
    case KeyState::kCooling:
      return "cooling";
    case KeyState::kDisabled:
      return "disabled";
    case KeyState::kDead:
      return "dead";
  }
  return "unknown";
}

std::string_view to_string(CooldownReason r) {
  switch (r) {
    case CooldownReason::kNone:
      return "";
    case CooldownReason::kRetryAfter:
      return "retry_after";
    case CooldownReason::kBackoff:
      return "backoff";
    case CooldownReason::kQuotaExhausted:
      return "quota_exhausted";
  }
  return "unknown";
}

std::string_view to_string(NoKeyReason r) {
  switch (r) {
    case NoKeyReason::kNoUsableKey:
      return "no_usable_key";
    case NoKeyReason::kConcurrency:
      return "concurrency";
    case NoKeyReason::kCooling:
      return "cooling";
    case NoKeyReason::kMinuteWindow:
      return "minute_window";
    case NoKeyReason::kDailyWindow:
      return "daily_window";
    case NoKeyReason::kTooLarge:
      return "too_large";
    case NoKeyReason::kTimeout:
      return "timeout";
    case NoKeyReason::kCancelled:
      return "cancelled";
    case NoKeyReason::kShutdown:
      return "shutdown";
    case NoKeyReason::kNoScheduler:
      return "no_scheduler";
  }
  return "unknown";
}

namespace detail {
namespace {

constexpr int64_t kMinuteBucketNs = 100'000'000;  // 100 ms
constexpr int64_t kMinuteBuckets = 600;
constexpr int64_t kNoDeadline = std::numeric_limits<int64_t>::min();
constexpr size_t kMaxModels = 4096;  // interned model names; beyond, cooldowns go key-wide

int64_t ns(MonoTime t) {
  return std::chrono::duration_cast<Nanos>(t.time_since_epoch()).count();
}
int64_t ns(WallTime t) {
  return std::chrono::duration_cast<Nanos>(t.time_since_epoch()).count();
}
MonoTime mono(int64_t n) {
  if (n == kNever) return MonoTime::max();
  if (n == kNoDeadline) return MonoTime::min();
  return MonoTime(std::chrono::duration_cast<MonoTime::duration>(Nanos(n)));
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

bool permanent(NoKeyReason r) {
  return r == NoKeyReason::kNoUsableKey || r == NoKeyReason::kTooLarge;
}

}  // namespace

struct ScopeCooldown {
  int64_t until = kNoDeadline;
  CooldownReason reason = CooldownReason::kNone;
  int level = 0;  // consecutive 429s without success: the backoff exponent
};

struct KeySlot {
  std::string id;
  std::string secret;
  std::string fingerprint;
  double weight = 1;
  bool disabled = false;
  bool dead = false;
  std::string dead_reason;
  int64_t in_flight = 0;
  ScopeCooldown cd;
  std::vector<ScopeCooldown> model_cd;  // indexed by interned model id
  SlidingWindow minute;
  DailyWindow day;
  double swrr_current = 0;
  int64_t consecutive_failures = 0;
  uint64_t leases_total = 0;
};

struct Waiter {
  AcquireRequest req;
  WaitCallback cb;
  Scheduler::TimerId timer = 0;
  int64_t timer_at = kNever;
  int64_t earliest = kNever;  // from the last failed attempt
};

using Ready = std::vector<std::pair<WaitCallback, AcquireResult>>;

class Core : public std::enable_shared_from_this<Core> {
 public:
  Core(const ProviderConfig& config, Clock& clock, const KeyPoolOptions& options)
      : provider_(config.name),
        limits_(config.limits),
        cooldown_(config.cooldown),
        selection_(config.selection),
        clock_(clock),
        scheduler_(options.scheduler),
        observer_(options.observer),
        max_sessions_(std::max<size_t>(options.max_sessions, 2)),
        rng_(options.rng_seed != 0 ? options.rng_seed : std::random_device{}()) {
    minute_limited_ = limits_.rpm > 0 || limits_.tpm > 0;
    daily_limited_ = limits_.rpd > 0 || limits_.tpd > 0;
    day_template_ = DailyWindow(daily_limited_ ? limits_.daily_reset_hour_utc : 0);
    keys_.reserve(config.keys.size());
    for (const auto& kc : config.keys) {
      KeySlot k;
      k.id = kc.id;
      k.secret = kc.secret;
      k.fingerprint = kc.fingerprint();
      k.weight = kc.weight > 0 ? kc.weight : 1.0;
      k.minute = SlidingWindow(kMinuteBucketNs, kMinuteBuckets);
      if (daily_limited_) k.day = DailyWindow(limits_.daily_reset_hour_utc);
      keys_.push_back(std::move(k));
    }
    auto& leases = metrics::counter_family("switchboard_keys_leases_total",
                                           "Key leases ended, by provider and outcome class");
    for (int i = 0; i < kOutcomeClassCount; ++i) {
      leases_[i] = &leases.Add({{"provider", provider_},
                                {"outcome", std::string(to_string(static_cast<OutcomeClass>(i)))}});
    }
    cooldowns_ = &metrics::counter_family("switchboard_keys_cooldowns_total",
                                          "Key or (key, model) cooldowns started or extended")
                      .Add({{"provider", provider_}});
    contended_ = &metrics::counter_family("switchboard_keys_lock_contended_total",
                                          "Key pool lock acquisitions that had to wait")
                      .Add({{"provider", provider_}});
    parse_errors_ = &metrics::counter_family("switchboard_keys_header_parse_errors_total",
                                             "Malformed rate-limit response headers ignored")
                         .Add({{"provider", provider_}});
    rejected_ = &metrics::counter_family("switchboard_keys_acquire_unavailable_total",
                                         "Acquire attempts that found no eligible key")
                     .Add({{"provider", provider_}});
  }

  const std::string& provider() const { return provider_; }
  size_t size() const { return keys_.size(); }
  const KeySlot& key(uint32_t i) const { return keys_[i]; }

  // ------------------------------------------------------------------ acquire

  AcquireResult acquire(std::string_view model, int64_t est, std::string_view session) {
    Ready ready;
    std::optional<AcquireResult> result;
    {
      auto lock = lock_core();
      // Checked under the lock that adopt() holds while it copies in-flight counts, so no lease
      // is granted here after the hand-over.
      if (successor_) {
        std::shared_ptr<Core> next = successor_;
        lock.unlock();
        return next->acquire(model, est, session);
      }
      Now t = read_now();
      if (!waiters_.empty()) pump(t, ready);
      result.emplace(try_acquire(model, est, session, t));
    }
    if (!result->ok()) rejected_->Increment();
    run(ready);
    return std::move(*result);
  }

  std::shared_ptr<Core> successor() {
    auto lock = lock_core();
    return successor_;
  }

  // Hot reload: this (new, not yet shared) core takes over the keys of `old` that it shares
  // (same secret) with their whole state, in-flight leases included; `old` then forwards new
  // acquisitions and the completions of those leases here. Waiters of `old` get kShutdown (their
  // requests retry against the new pool).
  void adopt(Core& old) {
    std::map<WaitId, Waiter> waiters;
    {
      auto old_lock = old.lock_core();
      auto lock = lock_core();
      old.forward_.assign(old.keys_.size(), -1);
      for (size_t j = 0; j < keys_.size(); ++j) {
        for (size_t i = 0; i < old.keys_.size(); ++i) {
          const KeySlot& o = old.keys_[i];
          if (o.secret != keys_[j].secret || old.forward_[i] >= 0) continue;
          KeySlot& k = keys_[j];
          k.disabled = o.disabled;
          k.dead = o.dead;
          k.dead_reason = o.dead_reason;
          k.in_flight = o.in_flight;
          k.cd = o.cd;
          k.model_cd.clear();
          for (size_t m = 0; m < o.model_cd.size(); ++m) {
            int32_t id = intern(old.model_names_[m]);
            if (id < 0) continue;
            if (k.model_cd.size() <= size_t(id)) k.model_cd.resize(size_t(id) + 1);
            k.model_cd[size_t(id)] = o.model_cd[m];
          }
          k.minute = o.minute;
          if (daily_limited_ && old.daily_limited_ &&
              limits_.daily_reset_hour_utc == old.limits_.daily_reset_hour_utc) {
            k.day = o.day;
          }
          k.consecutive_failures = o.consecutive_failures;
          k.leases_total = o.leases_total;
          old.forward_[i] = static_cast<int32_t>(j);
          break;
        }
      }
      old.successor_ = shared_from_this();
      waiters.swap(old.waiters_);
      for (auto& [id, w] : waiters) {
        if (w.timer != 0) old.scheduler_->cancel(w.timer);
      }
    }
    for (auto& [id, w] : waiters) w.cb(NoKey{NoKeyReason::kShutdown, MonoTime::max()});
  }

  WaitId wait_async(AcquireRequest req, WaitCallback cb) {
    if (auto next = successor()) return next->wait_async(std::move(req), std::move(cb));
    // A hand-over between this check and the queueing below fails the waiter with kShutdown
    // (adopt() takes over the queue), and the caller retries against the new pool.
    Ready ready;
    WaitId id = 0;
    {
      auto lock = lock_core();
      Now t = read_now();
      id = next_wait_id_++;
      Waiter& w = waiters_[id];
      w.req = std::move(req);
      w.cb = std::move(cb);
      pump(t, ready);  // earlier waiters first; serves this one too if it can be
      auto it = waiters_.find(id);
      if (it != waiters_.end() && scheduler_ == nullptr) {
        ready.emplace_back(std::move(it->second.cb),
                           NoKey{NoKeyReason::kNoScheduler, mono(it->second.earliest)});
        waiters_.erase(it);
      } else if (it != waiters_.end()) {
        arm_timer(id, it->second, t.mono);
      }
    }
    run(ready);
    return id;
  }

  bool cancel_wait(WaitId id) {
    WaitCallback cb;
    {
      auto lock = lock_core();
      auto it = waiters_.find(id);
      if (it == waiters_.end()) return false;
      if (it->second.timer != 0) scheduler_->cancel(it->second.timer);
      cb = std::move(it->second.cb);
      waiters_.erase(it);
    }
    cb(NoKey{NoKeyReason::kCancelled, MonoTime::max()});
    return true;
  }

  size_t waiting() {
    auto lock = lock_core();
    return waiters_.size();
  }

  void shutdown() {
    std::map<WaitId, Waiter> waiters;
    {
      auto lock = lock_core();
      waiters.swap(waiters_);
      for (auto& [id, w] : waiters) {
        if (w.timer != 0) scheduler_->cancel(w.timer);
      }
    }
    for (auto& [id, w] : waiters) w.cb(NoKey{NoKeyReason::kShutdown, MonoTime::max()});
  }

  // ------------------------------------------------------------------ complete

  void complete(Lease& lease, const Outcome& outcome) {
    complete_at(lease.key_, lease.model_, nullptr, lease, outcome);
  }

  // Ends a lease on key slot `key`. `model` is this core's interned id, unless `model_name` is
  // given (a lease forwarded from a predecessor pool, whose ids differ). A key handed over to a
  // successor (hot reload) is ended there instead, under the same lock that adopt() holds, so a
  // completion can never land on a copy that has already been handed on.
  void complete_at(uint32_t key, int32_t model, const std::string* model_name, const Lease& lease,
                   const Outcome& outcome) {
    RateLimitInfo info;
    if (!outcome.headers.empty())
      info = parse_rate_limit_headers(outcome.headers, clock_.wall_now());
    Ready ready;
    bool cooled = false;
    {
      auto lock = lock_core();
      if (successor_ && key < forward_.size() && forward_[key] >= 0) {
        std::shared_ptr<Core> next = successor_;
        const uint32_t next_key = static_cast<uint32_t>(forward_[key]);
        std::string name = model_name   ? *model_name
                           : model >= 0 ? model_names_[static_cast<size_t>(model)]
                                        : std::string();
        lock.unlock();
        next->complete_at(next_key, -1, &name, lease, outcome);
        return;
      }
      if (model_name) model = intern(*model_name);
      // The plain success path needs no clock read: adjust() is exact against a stale head
      // (a bucket's cell is only recycled by an advance that also moves it out of range).
      const bool need_time = observer_ != nullptr || !waiters_.empty() ||
                             outcome.status == OutcomeClass::kRateLimited || !info.empty();
      const Now t = need_time ? read_now() : Now{};
      KeySlot& k = keys_[key];
      --k.in_flight;
      const bool keep_request = outcome.status != OutcomeClass::kCancelled &&
                                outcome.status != OutcomeClass::kConnectionError;
      const int64_t tokens = outcome.tokens_used >= 0                   ? outcome.tokens_used
                             : outcome.status == OutcomeClass::kSuccess ? lease.estimated_
                                                                        : 0;
      k.minute.adjust(lease.minute_ref_, keep_request ? 0 : -1, tokens - lease.estimated_);
      if (daily_limited_) {
        k.day.adjust(lease.daily_ref_, keep_request ? 0 : -1, tokens - lease.estimated_);
      }
      cooled = apply_outcome(k, model, outcome, info, t.mono);
      if (observer_ != nullptr) {
        observer_->on_end(EndEvent{lease.id_, key, model, outcome.status, mono(t.mono),
                                   keep_request ? 1 : 0, tokens, mono(k.cd.until),
                                   mono(model_until(k, model))});
      }
      if (!waiters_.empty()) pump(t, ready);
    }
    leases_[static_cast<int>(outcome.status)]->Increment();
    if (cooled) cooldowns_->Increment();
    if (info.parse_errors > 0) parse_errors_->Increment(info.parse_errors);
    run(ready);
  }

  // ------------------------------------------------------------------ admin

  Status set_enabled(std::string_view id, bool enabled) {
    Ready ready;
    {
      auto lock = lock_core();
      KeySlot* k = find_key(id);
      if (k == nullptr) return Status::not_found("no key " + std::string(id));
      if (enabled) {
        k->disabled = false;
        k->dead = false;
        k->dead_reason.clear();
      } else {
        k->disabled = true;
      }
      if (!waiters_.empty()) pump(read_now(), ready);
    }
    log::info("keys: {} {}", enabled ? "enabled" : "disabled", id);
    run(ready);
    return Status::ok_status();
  }

  std::vector<KeySnapshot> snapshot(std::string_view only) {
    std::vector<KeySnapshot> out;
    auto lock = lock_core();
    Now t = read_now(true);
    for (auto& k : keys_) {
      if (!only.empty() && k.id != only) continue;
      KeySnapshot s;
      s.id = k.id;
      s.fingerprint = k.fingerprint;
      s.weight = k.weight;
      s.in_flight = k.in_flight;
      s.max_concurrent = limits_.max_concurrent;
      s.consecutive_failures = k.consecutive_failures;
      s.leases_total = k.leases_total;
      s.dead_reason = k.dead_reason;
      if (k.cd.until > t.mono) {
        s.cooldown_remaining =
            std::chrono::duration_cast<Millis>(Nanos(k.cd.until - t.mono) + Nanos(999'999));
        s.cooldown_reason = k.cd.reason;
      }
      for (size_t m = 0; m < k.model_cd.size(); ++m) {
        if (k.model_cd[m].until > t.mono) {
          s.model_cooldowns.push_back({model_names_[m],
                                       std::chrono::duration_cast<Millis>(
                                           Nanos(k.model_cd[m].until - t.mono) + Nanos(999'999)),
                                       k.model_cd[m].reason});
        }
      }
      s.state = k.dead                ? KeyState::kDead
                : k.disabled          ? KeyState::kDisabled
                : k.cd.until > t.mono ? KeyState::kCooling
                                      : KeyState::kHealthy;
      k.minute.advance_bucket(t.minute_bucket);
      s.minute = {k.minute.requests(), k.minute.tokens()};
      if (daily_limited_) {
        k.day.advance_key(t.day_key);
        s.day = {k.day.requests(), k.day.tokens()};
      }
      out.push_back(std::move(s));
    }
    return out;
  }

  std::vector<KeyUsage> export_usage() {
    std::vector<KeyUsage> out;
    auto lock = lock_core();
    Now t = read_now(true);
    for (auto& k : keys_) {
      KeyUsage u;
      u.key_id = k.id;
      if (daily_limited_) {
        k.day.advance_key(t.day_key);
        k.day.for_each([&](int64_t start, int64_t req, int64_t tok) {
          u.daily.push_back(
              {WallTime(std::chrono::duration_cast<WallTime::duration>(Nanos(start))), req, tok});
        });
      }
      out.push_back(std::move(u));
    }
    return out;
  }

  Status import_usage(const std::vector<KeyUsage>& usage) {
    std::string unknown;
    auto lock = lock_core();
    Now t = read_now(true);
    for (const auto& u : usage) {
      KeySlot* k = find_key(u.key_id);
      if (k == nullptr) {
        unknown += (unknown.empty() ? "" : ", ") + u.key_id;
        continue;
      }
      if (!daily_limited_) continue;
      k->day.advance_key(t.day_key);
      for (const auto& b : u.daily) {
        if (b.requests < 0 || b.tokens < 0) continue;
        k->day.add_at(ns(b.start), b.requests, b.tokens);
      }
    }
    if (!unknown.empty()) return Status::not_found("unknown keys skipped: " + unknown);
    return Status::ok_status();
  }

  void on_timer(WaitId id) {
    Ready ready;
    {
      auto lock = lock_core();
      auto it = waiters_.find(id);
      if (it == waiters_.end()) return;
      it->second.timer = 0;
      it->second.timer_at = kNever;
      Now t = read_now();
      pump(t, ready);
      it = waiters_.find(id);
      if (it != waiters_.end()) arm_timer(id, it->second, t.mono);
    }
    run(ready);
  }

 private:
  struct Now {
    int64_t mono = 0;
    int64_t wall = 0;  // only read when a daily window is in use (or forced)
    int64_t minute_bucket = 0;
    int64_t day_key = 0;
  };

  Now read_now(bool force_wall = false) const {
    Now t;
    t.mono = ns(clock_.now());
    t.minute_bucket = floor_div(t.mono, kMinuteBucketNs);
    if (daily_limited_ || force_wall) t.wall = ns(clock_.wall_now());
    if (daily_limited_) t.day_key = day_template_.key_of(t.wall);
    return t;
  }

  std::unique_lock<std::mutex> lock_core() {
    std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) {
      contended_->Increment();
      lock.lock();
    }
    return lock;
  }

  static void run(Ready& ready) {
    for (auto& [cb, result] : ready) cb(std::move(result));
  }

  KeySlot* find_key(std::string_view id) {
    for (auto& k : keys_) {
      if (k.id == id) return &k;
    }
    return nullptr;
  }

  int32_t intern(std::string_view model) {
    if (model.empty()) return -1;
    auto it = model_ids_.find(model);
    if (it != model_ids_.end()) return it->second;
    if (model_names_.size() >= kMaxModels) return -1;
    auto id = static_cast<int32_t>(model_names_.size());
    model_names_.emplace_back(model);
    model_ids_.emplace(std::string(model), id);
    return id;
  }

  static int64_t model_until(const KeySlot& k, int32_t model) {
    if (model < 0 || static_cast<size_t>(model) >= k.model_cd.size()) return kNoDeadline;
    return k.model_cd[static_cast<size_t>(model)].until;
  }

  bool eligible(KeySlot& k, int32_t model, int64_t est, const Now& t) {
    if (k.disabled || k.dead) return false;
    if (t.mono < k.cd.until || t.mono < model_until(k, model)) return false;
    if (limits_.max_concurrent > 0 && k.in_flight >= limits_.max_concurrent) return false;
    if (minute_limited_) {
      k.minute.advance_bucket(t.minute_bucket);
      if (!k.minute.fits(1, est, limits_.rpm, limits_.tpm)) return false;
    }
    if (daily_limited_) {
      k.day.advance_key(t.day_key);
      if (!k.day.fits(1, est, limits_.rpd, limits_.tpd)) return false;
    }
    return true;
  }

  int select(int32_t model, int64_t est, const Now& t) {
    int best = -1;
    if (selection_ == KeySelection::kLeastLoaded) {
      // Lowest in-flight per unit of weight; the rotating start spreads ties.
      const size_t n = keys_.size();
      double best_load = 0;
      for (size_t j = 0; j < n; ++j) {
        size_t i = (rotate_ + j) % n;
        KeySlot& k = keys_[i];
        if (!eligible(k, model, est, t)) continue;
        double load = static_cast<double>(k.in_flight) / k.weight;
        if (best < 0 || load < best_load) {
          best = static_cast<int>(i);
          best_load = load;
        }
      }
      ++rotate_;
      return best;
    }
    // Smooth weighted round-robin (as in nginx): every eligible key gains its weight, the
    // largest wins and pays the total back. Ineligible keys neither gain nor pay.
    double total = 0;
    for (size_t i = 0; i < keys_.size(); ++i) {
      KeySlot& k = keys_[i];
      if (!eligible(k, model, est, t)) continue;
      k.swrr_current += k.weight;
      total += k.weight;
      if (best < 0 || k.swrr_current > keys_[static_cast<size_t>(best)].swrr_current) {
        best = static_cast<int>(i);
      }
    }
    if (best >= 0) keys_[static_cast<size_t>(best)].swrr_current -= total;
    return best;
  }

  int sticky(std::string_view session, int32_t model, int64_t est, const Now& t) {
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return -1;
    it->second.last_used = t.mono;
    return eligible(keys_[it->second.key], model, est, t) ? static_cast<int>(it->second.key) : -1;
  }

  void remember_session(std::string_view session, uint32_t key, const Now& t) {
    auto it = sessions_.find(session);
    if (it != sessions_.end()) {
      it->second = {key, t.mono};
      return;
    }
    if (sessions_.size() >= max_sessions_) {
      // Drop the least recently used half: amortised O(1) per new session.
      std::vector<int64_t> used;
      used.reserve(sessions_.size());
      for (auto& [s, e] : sessions_) used.push_back(e.last_used);
      auto mid = used.begin() + static_cast<std::ptrdiff_t>(used.size() / 2);
      std::nth_element(used.begin(), mid, used.end());
      int64_t cut = *mid;
      std::erase_if(sessions_, [&](const auto& kv) { return kv.second.last_used <= cut; });
    }
    sessions_.emplace(std::string(session), Session{key, t.mono});
  }

  AcquireResult try_acquire(std::string_view model_name, int64_t est, std::string_view session,
                            const Now& t) {
    if (est < 0) est = 0;
    const int32_t model = intern(model_name);
    int idx = session.empty() ? -1 : sticky(session, model, est, t);
    if (idx < 0) {
      idx = select(model, est, t);
      if (idx < 0) return earliest(model, est, t);
      if (!session.empty()) remember_session(session, static_cast<uint32_t>(idx), t);
    }
    return grant(static_cast<uint32_t>(idx), model, est, t);
  }

  Lease grant(uint32_t idx, int32_t model, int64_t est, const Now& t) {
    KeySlot& k = keys_[idx];
    ++k.in_flight;
    ++k.leases_total;
    Lease lease;
    lease.core_ = this;
    lease.key_ = idx;
    lease.model_ = model;
    lease.estimated_ = est;
    lease.id_ = ++lease_seq_;
    k.minute.advance_bucket(t.minute_bucket);
    lease.minute_ref_ = k.minute.add(1, est);
    if (daily_limited_) {
      k.day.advance_key(t.day_key);
      lease.daily_ref_ = k.day.add(1, est);
    }
    if (observer_ != nullptr) {
      observer_->on_grant(GrantEvent{lease.id_,
                                     idx,
                                     model,
                                     mono(t.mono),
                                     k.in_flight,
                                     est,
                                     mono(k.cd.until),
                                     mono(model_until(k, model)),
                                     {k.minute.requests(), k.minute.tokens()},
                                     {k.day.requests(), k.day.tokens()}});
    }
    return lease;
  }

  // Why nothing is eligible, and when the first key may be.
  NoKey earliest(int32_t model, int64_t est, const Now& t) {
    NoKey out{NoKeyReason::kNoUsableKey, MonoTime::max()};
    int64_t best = kNever;
    bool too_large = false;
    for (auto& k : keys_) {
      if (k.disabled || k.dead) continue;
      int64_t at = t.mono;
      NoKeyReason why = NoKeyReason::kConcurrency;
      auto later = [&](int64_t when, NoKeyReason r) {
        if (when > at) {
          at = when;
          why = r;
        }
      };
      later(k.cd.until, NoKeyReason::kCooling);
      later(model_until(k, model), NoKeyReason::kCooling);
      if (minute_limited_) {
        k.minute.advance_bucket(t.minute_bucket);
        int64_t e = k.minute.earliest_fit(t.mono, 1, est, limits_.rpm, limits_.tpm);
        if (e == kNever) {
          too_large = true;
          continue;
        }
        later(e, NoKeyReason::kMinuteWindow);
      }
      if (daily_limited_) {
        k.day.advance_key(t.day_key);
        int64_t e = k.day.earliest_fit(t.wall, 1, est, limits_.rpd, limits_.tpd);
        if (e == kNever) {
          too_large = true;
          continue;
        }
        later(t.mono + (e - t.wall), NoKeyReason::kDailyWindow);
      }
      if (best == kNever || at < best) {
        best = at;
        out.reason = why;
      }
    }
    if (best == kNever) {
      out.reason = too_large ? NoKeyReason::kTooLarge : NoKeyReason::kNoUsableKey;
      return out;
    }
    out.earliest = mono(best);
    return out;
  }

  // Applies an outcome to the key's state. Returns true when a cooldown started or grew.
  bool apply_outcome(KeySlot& k, int32_t model, const Outcome& o, const RateLimitInfo& info,
                     int64_t now) {
    ScopeCooldown* scope = &k.cd;
    if (model >= 0 && !o.key_wide) {
      if (k.model_cd.size() <= static_cast<size_t>(model)) k.model_cd.resize(model + 1);
      scope = &k.model_cd[static_cast<size_t>(model)];
    }
    std::optional<Nanos> announced = info.exhausted_for();
    CooldownReason reason = CooldownReason::kQuotaExhausted;
    if ((o.status == OutcomeClass::kRateLimited || o.status == OutcomeClass::kServerError) &&
        info.retry_after && (!announced || *info.retry_after >= *announced)) {
      announced = info.retry_after;
      reason = CooldownReason::kRetryAfter;
    }
    bool cooled = false;
    switch (o.status) {
      case OutcomeClass::kSuccess:
        k.consecutive_failures = 0;
        k.cd.level = 0;
        if (model >= 0 && static_cast<size_t>(model) < k.model_cd.size()) {
          k.model_cd[static_cast<size_t>(model)].level = 0;
        }
        break;
      case OutcomeClass::kRateLimited: {
        ++k.consecutive_failures;
        int64_t base = 0;
        if (announced) {
          base = announced->count();
        } else {
          reason = CooldownReason::kBackoff;
          double ms = static_cast<double>(cooldown_.initial_ms) *
                      std::pow(cooldown_.multiplier, static_cast<double>(scope->level));
          ms = std::min(ms, static_cast<double>(cooldown_.max_ms));
          base = static_cast<int64_t>(ms * 1e6);
        }
        if (scope->level < 1000) ++scope->level;
        cooled = extend(*scope, now, base, reason);
        announced.reset();  // applied
        break;
      }
      case OutcomeClass::kAuthFailed:
        ++k.consecutive_failures;
        if (!k.dead) {
          k.dead = true;
          k.dead_reason = "auth_failed";
          log::warn("keys: {} rejected by {} (401/403): marked dead", k.id, provider_);
        }
        break;
      case OutcomeClass::kServerError:
      case OutcomeClass::kTimeout:
      case OutcomeClass::kConnectionError:
        ++k.consecutive_failures;
        break;
      case OutcomeClass::kClientError:
      case OutcomeClass::kCancelled:
        break;
    }
    if (announced) cooled = extend(*scope, now, announced->count(), reason) || cooled;
    return cooled;
  }

  // Never shortens: the later of the old and the new deadline wins.
  bool extend(ScopeCooldown& scope, int64_t now, int64_t base_ns, CooldownReason reason) {
    double jitter = 0;
    if (cooldown_.jitter > 0 && base_ns > 0) {
      jitter = std::uniform_real_distribution<double>(0.0, cooldown_.jitter)(rng_) *
               static_cast<double>(base_ns);
    }
    int64_t until = now + base_ns + static_cast<int64_t>(jitter);
    if (until <= scope.until) return false;
    scope.until = until;
    scope.reason = reason;
    return true;
  }

  // Serves queued waiters in FIFO order, fails those that can never be served or whose deadline
  // passed, and re-arms the timers of the others when they could be served sooner.
  void pump(const Now& t, Ready& ready) {
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      Waiter& w = it->second;
      if (t.mono >= ns(w.req.deadline)) {
        finish(it, NoKey{NoKeyReason::kTimeout, mono(w.earliest)}, ready);
        continue;
      }
      AcquireResult r = try_acquire(w.req.model, w.req.estimated_tokens, w.req.session_id, t);
      if (r.ok() || permanent(r.no_key().reason)) {
        finish(it, std::move(r), ready);
        continue;
      }
      w.earliest = ns(r.no_key().earliest);
      if (w.timer != 0 && wake_time(w, t.mono) < w.timer_at) arm_timer(it->first, w, t.mono);
      ++it;
    }
  }

  void finish(std::map<WaitId, Waiter>::iterator& it, AcquireResult result, Ready& ready) {
    if (it->second.timer != 0) scheduler_->cancel(it->second.timer);
    ready.emplace_back(std::move(it->second.cb), std::move(result));
    it = waiters_.erase(it);
  }

  static int64_t wake_time(const Waiter& w, int64_t now) {
    int64_t deadline = ns(w.req.deadline);
    // Concurrency-bound waiters are woken by completions; only the deadline needs a timer.
    if (w.earliest > now && w.earliest < deadline) return w.earliest;
    return deadline;
  }

  void arm_timer(WaitId id, Waiter& w, int64_t now) {
    int64_t at = wake_time(w, now);
    if (w.timer != 0) scheduler_->cancel(w.timer);
    w.timer_at = at;
    std::weak_ptr<Core> weak = weak_from_this();
    w.timer = scheduler_->schedule_at(mono(at), [weak, id] {
      if (auto core = weak.lock()) core->on_timer(id);
    });
  }

  struct Session {
    uint32_t key;
    int64_t last_used;
  };

  const std::string provider_;
  const RateLimits limits_;
  const CooldownConfig cooldown_;
  const KeySelection selection_;
  Clock& clock_;
  Scheduler* const scheduler_;
  PoolObserver* const observer_;
  const size_t max_sessions_;
  bool minute_limited_ = false;
  bool daily_limited_ = false;
  DailyWindow day_template_;  // computes day keys; holds no usage

  prometheus::Counter* leases_[kOutcomeClassCount] = {};
  prometheus::Counter* cooldowns_ = nullptr;
  prometheus::Counter* contended_ = nullptr;
  prometheus::Counter* parse_errors_ = nullptr;
  prometheus::Counter* rejected_ = nullptr;

  std::mutex mu_;
  // Everything below is guarded by mu_.
  std::vector<KeySlot> keys_;  // never resized after construction: leases index into it
  std::mt19937_64 rng_;
  uint64_t lease_seq_ = 0;
  size_t rotate_ = 0;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> model_ids_;
  std::vector<std::string> model_names_;
  std::unordered_map<std::string, Session, StringHash, std::equal_to<>> sessions_;
  std::map<WaitId, Waiter> waiters_;  // ids increase: iteration order is FIFO
  WaitId next_wait_id_ = 1;
  // Set once this pool has handed its keys over (hot reload); see adopt().
  std::shared_ptr<Core> successor_;
  std::vector<int32_t> forward_;  // old key index → successor's index, or -1 (key removed)
};

}  // namespace detail

// -------------------------------------------------------------------- Lease

namespace {
const Outcome& cancelled_outcome() {
  static const Outcome kCancelled = [] {
    Outcome o;
    o.status = OutcomeClass::kCancelled;
    return o;
  }();
  return kCancelled;
}
}  // namespace

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (active()) complete(cancelled_outcome());
    core_ = std::exchange(other.core_, nullptr);
    key_ = other.key_;
    model_ = other.model_;
    estimated_ = other.estimated_;
    minute_ref_ = other.minute_ref_;
    daily_ref_ = other.daily_ref_;
    id_ = other.id_;
  }
  return *this;
}

Lease::~Lease() {
  if (active()) complete(cancelled_outcome());
}

bool Lease::complete(const Outcome& outcome) {
  if (core_ == nullptr) return false;
  detail::Core* core = std::exchange(core_, nullptr);
  core->complete(*this, outcome);
  return true;
}

const std::string& Lease::key_id() const {
  return core_->key(key_).id;
}
const std::string& Lease::secret() const {
  return core_->key(key_).secret;
}
const std::string& Lease::fingerprint() const {
  return core_->key(key_).fingerprint;
}

// -------------------------------------------------------------------- KeyPool

KeyPool::KeyPool(const ProviderConfig& config, Clock& clock, KeyPoolOptions options)
    : core_(std::make_shared<detail::Core>(config, clock, options)) {}

KeyPool::~KeyPool() {
  core_->shutdown();
}

std::unique_ptr<KeyPool> KeyPool::reconfigured(const ProviderConfig& config, Clock& clock,
                                               KeyPoolOptions options) {
  auto next = std::make_unique<KeyPool>(config, clock, options);
  next->core_->adopt(*core_);
  return next;
}

const std::string& KeyPool::provider() const {
  return core_->provider();
}
size_t KeyPool::size() const {
  return core_->size();
}

AcquireResult KeyPool::acquire(const AcquireRequest& request) {
  return core_->acquire(request.model, request.estimated_tokens, request.session_id);
}

AcquireResult KeyPool::acquire(std::string_view model, int64_t estimated_tokens,
                               MonoTime /*deadline*/, std::string_view session_id) {
  return core_->acquire(model, estimated_tokens, session_id);
}

WaitId KeyPool::wait_async(AcquireRequest request, WaitCallback callback) {
  return core_->wait_async(std::move(request), std::move(callback));
}

bool KeyPool::cancel_wait(WaitId id) {
  return core_->cancel_wait(id);
}
size_t KeyPool::waiting() const {
  return core_->waiting();
}

AcquireResult KeyPool::acquire_blocking(AcquireRequest request) {
  auto promise = std::make_shared<std::promise<AcquireResult>>();
  auto future = promise->get_future();
  wait_async(std::move(request), [promise](AcquireResult r) { promise->set_value(std::move(r)); });
  return future.get();
}

Status KeyPool::disable(std::string_view key_id) {
  return core_->set_enabled(key_id, false);
}
Status KeyPool::enable(std::string_view key_id) {
  return core_->set_enabled(key_id, true);
}

std::vector<KeySnapshot> KeyPool::snapshot() const {
  return core_->snapshot({});
}

std::optional<KeySnapshot> KeyPool::inspect(std::string_view key_id) const {
  if (key_id.empty()) return std::nullopt;
  auto v = core_->snapshot(key_id);
  if (v.empty()) return std::nullopt;
  return std::move(v.front());
}

std::vector<KeyUsage> KeyPool::export_usage() const {
  return core_->export_usage();
}
Status KeyPool::import_usage(const std::vector<KeyUsage>& usage) {
  return core_->import_usage(usage);
}

}  // namespace switchboard::keys
