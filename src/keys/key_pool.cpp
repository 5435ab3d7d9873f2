// KeyPool: selection, reservation, cooldowns and waiters.
//
// Design notes (why it looks like this):
//  * A mutex per key, not per pool: a lease touches one key, so threads leasing different keys
//    never wait for each other nor write a shared cache line. Selection state (the smooth
//    weighted round-robin counters) lives in shards, one per thread in practice, each starting
//    its cycle at a different phase so that threads walk different keys. A shard proposes a key
//    from lock-free hints (dead/disabled/cooling), then the key's own lock decides exactly.
//  * try_lock first so contention is visible in metrics. Everything done under a lock is
//    arithmetic on a few cache lines; header parsing, metrics and waiter callbacks happen outside.
//  * Metrics are per-thread sharded counters, merged at scrape time.
//  * Waiters live behind their own mutex; a completion looks at an atomic count after releasing
//    the key, so the common path never touches the queue.
//  * Timer callbacks hold only a weak_ptr to the core: a timer that fires after the pool is gone
//    does nothing.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <future>
#include <random>
#include <unordered_map>

#include "common/log.h"
#include "common/metrics.h"
#include "common/thread_slot.h"
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
constexpr uint32_t kShards = 8;      // selection shards (power of two)
constexpr uint8_t kIneligible = 1;   // Shard::excluded: the exact check said no
constexpr uint8_t kBusy = 2;         // Shard::excluded: another thread held the key's lock

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

// Wait ids are unique across pools, so a cancel can follow a wait that was forwarded.
std::atomic<uint64_t> g_next_wait_id{1};

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// 0, 1/2, 1/4, 3/4, 1/8, …: where shard s starts its round-robin cycle, so that the first few
// threads of a pool start as far apart as possible.
double shard_phase(uint32_t s) {
  uint32_t r = 0;
  for (uint32_t bit = 1, out = kShards / 2; bit < kShards; bit <<= 1, out >>= 1) {
    if (s & bit) r |= out;
  }
  return static_cast<double>(r) / kShards;
}

}  // namespace

// One reading of the clocks, with what the windows need from it.
struct Now {
  int64_t mono = 0;
  int64_t wall = 0;  // only read when a daily window is in use (or forced)
  int64_t minute_bucket = 0;
  int64_t day_key = 0;
};

struct ScopeCooldown {
  int64_t until = kNoDeadline;
  CooldownReason reason = CooldownReason::kNone;
  int level = 0;  // consecutive 429s without success: the backoff exponent
};

// One key. The first cache line is read by every selecting thread and written only when the key
// becomes (un)available for a while; the rest is the key's own state behind its own mutex, so
// two threads leasing different keys share no written cache line.
struct alignas(64) KeySlot {
  // Read without the lock as a selection hint: kNever when dead or disabled, else the key-wide
  // cooldown deadline. Written under `mu` whenever those change; the exact check is under `mu`.
  std::atomic<int64_t> blocked_until{kNoDeadline};
  // Immutable after construction.
  std::string id;
  std::string secret;
  std::string fingerprint;
  double weight = 1;
  uint32_t index = 0;

  // Guarded by mu, grouped so that a lease writes as few cache lines as possible. in_flight is
  // atomic only so least-loaded selection may peek at it.
  alignas(64) std::mutex mu;
  std::atomic<int64_t> in_flight{0};
  uint64_t leases_total = 0;
  bool disabled = false;
  bool dead = false;
  alignas(64) Now last;  // the latest clock reading used for this key
  ScopeCooldown cd;
  int64_t consecutive_failures = 0;
  uint64_t rng = 0;  // jitter (splitmix64 state)
  SlidingWindow minute;
  DailyWindow day;
  std::vector<ScopeCooldown> model_cd;  // indexed by interned model id
  std::string dead_reason;

  // Threads read the clock before taking `mu`, so a key may be handed an older reading after a
  // newer one. The later of the two is still no later than the real time (someone read it
  // already), and using it keeps the key's own timeline monotonic: window advances, grants and
  // ends are seen in time order.
  Now at(const Now& t) {
    if (t.mono > last.mono) {
      last = t;
      return t;
    }
    return last;
  }

  void refresh_hint() {
    blocked_until.store(dead || disabled ? kNever : cd.until, std::memory_order_relaxed);
  }
};

// Whole cache lines, so that two shards' arrays never share one (glibc's malloc packs small blocks
// of different threads side by side).
template <typename T>
struct LineAllocator {
  using value_type = T;
  LineAllocator() = default;
  template <typename U>
  LineAllocator(const LineAllocator<U>&) {}  // NOLINT: rebinding
  static size_t bytes(size_t n) { return (n * sizeof(T) + 63) / 64 * 64; }
  T* allocate(size_t n) { return static_cast<T*>(::operator new (bytes(n), std::align_val_t{64})); }
  void deallocate(T* p, size_t n) { ::operator delete (p, bytes(n), std::align_val_t{64}); }
  template <typename U>
  bool operator==(const LineAllocator<U>&) const {
    return true;
  }
};
template <typename T>
using LineVector = std::vector<T, LineAllocator<T>>;

// Round-robin state of the threads that map to one shard. Each thread keeps to its shard, so the
// selection state a thread writes is its own; every shard's sequence is a full smooth weighted
// round-robin, so the union of all threads' choices follows the weights too.
struct alignas(64) Shard {
  std::mutex mu;
  // Guarded by mu.
  bool primed = false;
  LineVector<double> swrr;
  size_t rotate = 0;             // least-loaded tie spreading
  LineVector<uint8_t> excluded;  // 0, kIneligible or kBusy, for the current acquisition
  LineVector<uint32_t> scratch;  // keys that gained in the current round
  std::string last_model;        // the last model name resolved, and its id
  int32_t last_model_id = -1;
  bool has_last_model = false;
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
        n_(config.keys.size()),
        keys_(std::make_unique<KeySlot[]>(config.keys.size())),
        shards_(std::make_unique<Shard[]>(kShards)) {
    minute_limited_ = limits_.rpm > 0 || limits_.tpm > 0;
    daily_limited_ = limits_.rpd > 0 || limits_.tpd > 0;
    day_template_ = DailyWindow(daily_limited_ ? limits_.daily_reset_hour_utc : 0);
    uint64_t seed = options.rng_seed != 0 ? options.rng_seed : std::random_device{}();
    for (size_t i = 0; i < n_; ++i) {
      const auto& kc = config.keys[i];
      KeySlot& k = keys_[i];
      k.id = kc.id;
      k.secret = kc.secret;
      k.fingerprint = kc.fingerprint();
      k.weight = kc.weight > 0 ? kc.weight : 1.0;
      k.index = static_cast<uint32_t>(i);
      k.rng = seed + 0x9e3779b97f4a7c15ULL * (i + 1);
      k.minute = SlidingWindow(kMinuteBucketNs, kMinuteBuckets);
      if (daily_limited_) k.day = DailyWindow(limits_.daily_reset_hour_utc);
    }
    auto& leases = metrics::counter_family("switchboard_keys_leases_total",
                                           "Key leases ended, by provider and outcome class");
    for (int i = 0; i < kOutcomeClassCount; ++i) {
      leases_[i].bind(
          &leases.Add({{"provider", provider_},
                       {"outcome", std::string(to_string(static_cast<OutcomeClass>(i)))}}));
    }
    auto per_provider = [this](const std::string& name, const std::string& help) {
      return &metrics::counter_family(name, help).Add({{"provider", provider_}});
    };
    cooldowns_.bind(per_provider("switchboard_keys_cooldowns_total",
                                 "Key or (key, model) cooldowns started or extended"));
    contended_.bind(per_provider("switchboard_keys_lock_contended_total",
                                 "Key pool lock acquisitions that had to wait"));
    parse_errors_.bind(per_provider("switchboard_keys_header_parse_errors_total",
                                    "Malformed rate-limit response headers ignored"));
    rejected_.bind(per_provider("switchboard_keys_acquire_unavailable_total",
                                "Acquire attempts that found no eligible key"));
  }

  const std::string& provider() const { return provider_; }
  size_t size() const { return n_; }
  const KeySlot& key(uint32_t i) const { return keys_[i]; }

  // ------------------------------------------------------------------ acquire

  AcquireResult acquire(std::string_view model, int64_t est, std::string_view session) {
    if (handed_over_.load(std::memory_order_acquire)) {
      return successor_->acquire(model, est, session);
    }
    const Now t = read_now();
    bool forwarded = false;
    std::optional<AcquireResult> result;
    if (waiting_.load() > 0) {
      // Queued waiters go first.
      Ready ready;
      {
        auto wl = lock(wait_mu_);
        pump(t, ready);
        result.emplace(try_acquire(model, est, session, t, forwarded));
      }
      run(ready);
    } else {
      result.emplace(try_acquire(model, est, session, t, forwarded));
    }
    if (forwarded) return successor_->acquire(model, est, session);
    if (!result->ok()) rejected_.add();
    return std::move(*result);
  }

  // Hot reload: this (new, not yet shared) core takes over the keys of `old` that it shares
  // (same secret) with their whole state, in-flight leases included; `old` then forwards new
  // acquisitions and the completions of those leases here. Waiters of `old` get kShutdown (their
  // requests retry against the new pool). Every key lock of `old` is held meanwhile, so no lease
  // is granted or ended there against a copy that has already been handed on.
  void adopt(Core& old) {
    std::map<WaitId, Waiter> waiters;
    {
      auto wl = old.lock(old.wait_mu_);
      std::vector<std::unique_lock<std::mutex>> key_locks;
      key_locks.reserve(old.n_);
      for (size_t i = 0; i < old.n_; ++i) key_locks.push_back(old.lock(old.keys_[i].mu));
      std::vector<std::string> old_models = old.model_names();
      old.forward_.assign(old.n_, -1);
      for (size_t j = 0; j < n_; ++j) {
        for (size_t i = 0; i < old.n_; ++i) {
          const KeySlot& o = old.keys_[i];
          if (o.secret != keys_[j].secret || old.forward_[i] >= 0) continue;
          KeySlot& k = keys_[j];
          auto kl = lock(k.mu);
          k.disabled = o.disabled;
          k.dead = o.dead;
          k.dead_reason = o.dead_reason;
          k.in_flight.store(o.in_flight.load(std::memory_order_relaxed), std::memory_order_relaxed);
          k.cd = o.cd;
          k.model_cd.clear();
          for (size_t m = 0; m < o.model_cd.size() && m < old_models.size(); ++m) {
            int32_t id = intern(old_models[m]);
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
          k.refresh_hint();
          old.forward_[i] = static_cast<int32_t>(j);
          break;
        }
      }
      old.successor_ = shared_from_this();
      old.handed_over_.store(true, std::memory_order_release);
      waiters.swap(old.waiters_);
      old.waiting_.store(0);
      for (auto& [id, w] : waiters) {
        if (w.timer != 0) old.scheduler_->cancel(w.timer);
      }
    }
    for (auto& [id, w] : waiters) w.cb(NoKey{NoKeyReason::kShutdown, MonoTime::max()});
  }

  WaitId wait_async(AcquireRequest req, WaitCallback cb) {
    if (handed_over_.load(std::memory_order_acquire)) {
      return successor_->wait_async(std::move(req), std::move(cb));
    }
    // A hand-over between this check and the queueing below leaves the waiter in this pool's
    // queue, where its first attempt finds the pool handed over and fails it with kShutdown
    // (see pump()); the caller retries against the new pool.
    Ready ready;
    WaitId id = 0;
    {
      auto wl = lock(wait_mu_);
      const Now t = read_now();
      id = g_next_wait_id.fetch_add(1, std::memory_order_relaxed);
      Waiter& w = waiters_[id];
      w.req = std::move(req);
      w.cb = std::move(cb);
      // Published before this waiter's first attempt: a completion that frees a key after that
      // attempt looked at it sees the count and pumps (it serialises on the key's mutex).
      waiting_.store(waiters_.size());
      // Pairs with the fence in set_enabled(): either we see the key's hint lowered, or it sees
      // us waiting (a store-buffer race on weakly ordered CPUs otherwise).
      std::atomic_thread_fence(std::memory_order_seq_cst);
      pump(t, ready);  // earlier waiters first; serves this one too if it can be
      auto it = waiters_.find(id);
      if (it != waiters_.end() && scheduler_ == nullptr) {
        ready.emplace_back(std::move(it->second.cb),
                           NoKey{NoKeyReason::kNoScheduler, mono(it->second.earliest)});
        waiters_.erase(it);
      } else if (it != waiters_.end()) {
        arm_timer(id, it->second, t.mono);
      }
      waiting_.store(waiters_.size());
    }
    run(ready);
    return id;
  }

  // The pool this one handed its keys over to, or null.
  std::shared_ptr<Core> handed_over_to() const {
    return handed_over_.load(std::memory_order_acquire) ? successor_ : nullptr;
  }

  bool cancel_wait(WaitId id) {
    WaitCallback cb;
    {
      auto wl = lock(wait_mu_);
      auto it = waiters_.find(id);
      if (it == waiters_.end()) {
        // Queued in the successor when wait_async was forwarded (ids are unique across pools).
        if (!handed_over_.load(std::memory_order_acquire)) return false;
        std::shared_ptr<Core> next = successor_;
        wl.unlock();
        return next->cancel_wait(id);
      }
      if (it->second.timer != 0) scheduler_->cancel(it->second.timer);
      cb = std::move(it->second.cb);
      waiters_.erase(it);
      waiting_.store(waiters_.size());
    }
    cb(NoKey{NoKeyReason::kCancelled, MonoTime::max()});
    return true;
  }

  size_t waiting() {
    auto wl = lock(wait_mu_);
    return waiters_.size();
  }

  void shutdown() {
    std::map<WaitId, Waiter> waiters;
    {
      auto wl = lock(wait_mu_);
      waiters.swap(waiters_);
      waiting_.store(0);
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
  // successor (hot reload) is ended there instead, decided under the key's lock that adopt()
  // holds, so a completion can never land on a copy that has already been handed on.
  void complete_at(uint32_t key, int32_t model, const std::string* model_name, const Lease& lease,
                   const Outcome& outcome) {
    RateLimitInfo info;
    if (!outcome.headers.empty())
      info = parse_rate_limit_headers(outcome.headers, clock_.wall_now());
    bool cooled = false;
    KeySlot& k = keys_[key];
    {
      auto kl = lock(k.mu);
      if (handed_over_.load(std::memory_order_relaxed) && key < forward_.size() &&
          forward_[key] >= 0) {
        std::shared_ptr<Core> next = successor_;
        const uint32_t next_key = static_cast<uint32_t>(forward_[key]);
        std::string name = model_name ? *model_name : model_name_of(model);
        kl.unlock();
        next->complete_at(next_key, -1, &name, lease, outcome);
        return;
      }
      if (model_name) model = intern(*model_name);
      // The plain success path needs no clock read: adjust() is exact against a stale head
      // (a bucket's cell is only recycled by an advance that also moves it out of range).
      const bool need_time =
          observer_ != nullptr || outcome.status == OutcomeClass::kRateLimited || !info.empty();
      const Now t = need_time ? k.at(read_now()) : Now{};
      k.in_flight.store(k.in_flight.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
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
    }
    leases_[static_cast<int>(outcome.status)].add();
    if (cooled) cooldowns_.add();
    if (info.parse_errors > 0) parse_errors_.add(static_cast<uint64_t>(info.parse_errors));
    // Read after the key's mutex was released: a waiter that looked at this key before we freed
    // it had published itself first (see wait_async).
    if (waiting_.load() > 0) pump_waiters();
  }

  // ------------------------------------------------------------------ admin

  Status set_enabled(std::string_view id, bool enabled) {
    KeySlot* k = find_key(id);
    if (k == nullptr) return Status::not_found("no key " + std::string(id));
    {
      auto kl = lock(k->mu);
      if (enabled) {
        k->disabled = false;
        k->dead = false;
        k->dead_reason.clear();
      } else {
        k->disabled = true;
      }
      k->refresh_hint();
    }
    log::info("keys: {} {}", enabled ? "enabled" : "disabled", id);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // see wait_async()
    if (waiting_.load() > 0) pump_waiters();
    return Status::ok_status();
  }

  std::vector<KeySnapshot> snapshot(std::string_view only) {
    std::vector<KeySnapshot> out;
    const Now now = read_now(true);
    for (size_t i = 0; i < n_; ++i) {
      KeySlot& k = keys_[i];
      if (!only.empty() && k.id != only) continue;
      KeySnapshot s;
      s.id = k.id;
      s.fingerprint = k.fingerprint;
      s.weight = k.weight;
      s.max_concurrent = limits_.max_concurrent;
      auto kl = lock(k.mu);
      const Now t = k.at(now);
      s.in_flight = k.in_flight.load(std::memory_order_relaxed);
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
          s.model_cooldowns.push_back({model_name_of(static_cast<int32_t>(m)),
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
    const Now now = read_now(true);
    for (size_t i = 0; i < n_; ++i) {
      KeySlot& k = keys_[i];
      KeyUsage u;
      u.key_id = k.id;
      if (daily_limited_) {
        auto kl = lock(k.mu);
        k.day.advance_key(k.at(now).day_key);
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
    const Now now = read_now(true);
    for (const auto& u : usage) {
      KeySlot* k = find_key(u.key_id);
      if (k == nullptr) {
        unknown += (unknown.empty() ? "" : ", ") + u.key_id;
        continue;
      }
      if (!daily_limited_) continue;
      auto kl = lock(k->mu);
      k->day.advance_key(k->at(now).day_key);
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
      auto wl = lock(wait_mu_);
      auto it = waiters_.find(id);
      if (it == waiters_.end()) return;
      it->second.timer = 0;
      it->second.timer_at = kNever;
      const Now t = read_now();
      pump(t, ready);
      it = waiters_.find(id);
      if (it != waiters_.end()) arm_timer(id, it->second, t.mono);
    }
    run(ready);
  }

 private:
  Now read_now(bool force_wall = false) const {
    Now t;
    t.mono = ns(clock_.now());
    t.minute_bucket = floor_div(t.mono, kMinuteBucketNs);
    if (daily_limited_ || force_wall) t.wall = ns(clock_.wall_now());
    if (daily_limited_) t.day_key = day_template_.key_of(t.wall);
    return t;
  }

  // try_lock first so that contention shows in metrics.
  std::unique_lock<std::mutex> lock(std::mutex& mu) {
    std::unique_lock<std::mutex> l(mu, std::try_to_lock);
    if (!l.owns_lock()) {
      contended_.add();
      l.lock();
    }
    return l;
  }

  static void run(Ready& ready) {
    for (auto& [cb, result] : ready) cb(std::move(result));
  }

  void pump_waiters() {
    Ready ready;
    {
      auto wl = lock(wait_mu_);
      if (!waiters_.empty()) pump(read_now(), ready);
    }
    run(ready);
  }

  KeySlot* find_key(std::string_view id) {
    for (size_t i = 0; i < n_; ++i) {
      if (keys_[i].id == id) return &keys_[i];
    }
    return nullptr;
  }

  // The shard of the calling thread: its thread slot (common/thread_slot.h), so that threads
  // alive at the same time use different shards as long as there are no more than kShards.
  Shard& my_shard() { return shards_[this_thread_slot() & (kShards - 1)]; }

  void prime(Shard& s, uint32_t index) {
    s.primed = true;
    s.swrr.assign(n_, 0.0);
    s.excluded.assign(n_, 0);
    s.scratch.reserve(n_);
    // Start this shard's cycle part-way through, so that threads do not walk the keys in step.
    const auto steps = static_cast<size_t>(shard_phase(index) * static_cast<double>(n_));
    for (size_t step = 0; step < steps; ++step) {
      double total = 0;
      size_t best = 0;
      for (size_t i = 0; i < n_; ++i) {
        s.swrr[i] += keys_[i].weight;
        total += keys_[i].weight;
        if (s.swrr[i] > s.swrr[best]) best = i;
      }
      s.swrr[best] -= total;
    }
  }

  int32_t intern(std::string_view model) {
    if (model.empty()) return -1;
    std::lock_guard l(intern_mu_);
    auto it = model_ids_.find(model);
    if (it != model_ids_.end()) return it->second;
    if (model_names_.size() >= kMaxModels) return -1;
    auto id = static_cast<int32_t>(model_names_.size());
    model_names_.emplace_back(model);
    model_ids_.emplace(std::string(model), id);
    return id;
  }

  int32_t intern_cached(Shard& s, std::string_view model) {
    if (model.empty()) return -1;
    if (s.has_last_model && s.last_model == model) return s.last_model_id;
    s.last_model_id = intern(model);
    s.last_model.assign(model);
    s.has_last_model = true;
    return s.last_model_id;
  }

  std::string model_name_of(int32_t model) {
    if (model < 0) return {};
    std::lock_guard l(intern_mu_);
    return static_cast<size_t>(model) < model_names_.size()
               ? model_names_[static_cast<size_t>(model)]
               : std::string();
  }

  std::vector<std::string> model_names() {
    std::lock_guard l(intern_mu_);
    return model_names_;
  }

  static int64_t model_until(const KeySlot& k, int32_t model) {
    if (model < 0 || static_cast<size_t>(model) >= k.model_cd.size()) return kNoDeadline;
    return k.model_cd[static_cast<size_t>(model)].until;
  }

  // Under k.mu.
  bool eligible(KeySlot& k, int32_t model, int64_t est, const Now& t) {
    if (k.disabled || k.dead) return false;
    if (t.mono < k.cd.until || t.mono < model_until(k, model)) return false;
    if (limits_.max_concurrent > 0 &&
        k.in_flight.load(std::memory_order_relaxed) >= limits_.max_concurrent) {
      return false;
    }
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

  // Candidate for this round: not excluded and not known to be blocked at t.
  bool candidate(const Shard& s, size_t i, const Now& t) const {
    return s.excluded[i] == 0 && t.mono >= keys_[i].blocked_until.load(std::memory_order_relaxed);
  }

  // Proposes a key (or -1), updating the shard's round-robin state as if it were granted;
  // `reject` undoes that when the exact check under the key's lock says no.
  int propose(Shard& s, const Now& t) {
    int best = -1;
    if (selection_ == KeySelection::kLeastLoaded) {
      // Lowest in-flight per unit of weight; the rotating start spreads ties.
      double best_load = 0;
      for (size_t j = 0; j < n_; ++j) {
        size_t i = (s.rotate + j) % n_;
        if (!candidate(s, i, t)) continue;
        const KeySlot& k = keys_[i];
        double load = static_cast<double>(k.in_flight.load(std::memory_order_relaxed)) / k.weight;
        if (best < 0 || load < best_load) {
          best = static_cast<int>(i);
          best_load = load;
        }
      }
      return best;
    }
    // Smooth weighted round-robin (as in nginx): every eligible key gains its weight, the
    // largest wins and pays the total back. Ineligible keys neither gain nor pay.
    s.scratch.clear();
    double total = 0;
    for (size_t i = 0; i < n_; ++i) {
      if (!candidate(s, i, t)) continue;
      s.swrr[i] += keys_[i].weight;
      total += keys_[i].weight;
      s.scratch.push_back(static_cast<uint32_t>(i));
      if (best < 0 || s.swrr[i] > s.swrr[static_cast<size_t>(best)]) best = static_cast<int>(i);
    }
    if (best >= 0) s.swrr[static_cast<size_t>(best)] -= total;
    return best;
  }

  void reject(Shard& s, int idx) {
    if (selection_ == KeySelection::kLeastLoaded) return;
    double total = 0;
    for (uint32_t i : s.scratch) {
      s.swrr[i] -= keys_[i].weight;
      total += keys_[i].weight;
    }
    s.swrr[static_cast<size_t>(idx)] += total;
  }

  // Sets `forwarded` (and returns a placeholder) when this pool was handed over meanwhile.
  AcquireResult try_acquire(std::string_view model_name, int64_t est, std::string_view session,
                            const Now& t, bool& forwarded) {
    if (est < 0) est = 0;
    const uint32_t shard_index = static_cast<uint32_t>(&my_shard() - shards_.get());
    Shard& s = shards_[shard_index];
    auto sl = lock(s.mu);
    if (!s.primed) prime(s, shard_index);
    const int32_t model = intern_cached(s, model_name);
    if (!session.empty()) {
      const int idx = sticky_key(session, t);
      if (idx >= 0) {
        KeySlot& k = keys_[static_cast<size_t>(idx)];
        auto kl = lock(k.mu);
        if (handed_over_.load(std::memory_order_relaxed)) {
          forwarded = true;
          return NoKey{};
        }
        const Now kt = k.at(t);
        if (eligible(k, model, est, kt)) return grant(k, model, est, kt);
      }
    }
    std::optional<AcquireResult> out;
    size_t excluded = 0;
    size_t busy = 0;  // skipped because another thread held the key's lock
    bool wait_for_busy = false;
    while (!out) {
      const int idx = propose(s, t);
      if (idx < 0) {
        if (busy == 0) break;
        // Every free candidate said no: now wait for the ones that were busy.
        for (auto& e : s.excluded) {
          if (e == kBusy) e = 0;
        }
        busy = 0;
        wait_for_busy = true;
        continue;
      }
      KeySlot& k = keys_[static_cast<size_t>(idx)];
      std::unique_lock<std::mutex> kl(k.mu, std::try_to_lock);
      if (!kl.owns_lock()) {
        contended_.add();
        if (!wait_for_busy) {
          // Another thread is on this key: take another rather than queue behind it, which
          // also keeps threads from walking the keys in lockstep.
          reject(s, idx);
          s.excluded[static_cast<size_t>(idx)] = kBusy;
          ++busy;
          ++excluded;
          continue;
        }
        kl.lock();
      }
      if (handed_over_.load(std::memory_order_relaxed)) {
        reject(s, idx);
        forwarded = true;
        out.emplace(NoKey{});
        break;
      }
      const Now kt = k.at(t);
      if (eligible(k, model, est, kt)) {
        out.emplace(grant(k, model, est, kt));
        if (selection_ == KeySelection::kLeastLoaded) ++s.rotate;
        kl.unlock();
        if (!session.empty()) remember_session(session, static_cast<uint32_t>(idx), t);
        break;
      }
      kl.unlock();
      reject(s, idx);
      s.excluded[static_cast<size_t>(idx)] = kIneligible;
      ++excluded;
    }
    if (excluded > 0) std::fill(s.excluded.begin(), s.excluded.end(), 0);
    if (out) return std::move(*out);
    if (handed_over_.load(std::memory_order_acquire)) {
      // Handed over while we looked: the successor may well have room.
      forwarded = true;
      return NoKey{};
    }
    return earliest(model, est, t);
  }

  int sticky_key(std::string_view session, const Now& t) {
    std::lock_guard l(sessions_mu_);
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return -1;
    it->second.last_used = t.mono;
    return static_cast<int>(it->second.key);
  }

  void remember_session(std::string_view session, uint32_t key, const Now& t) {
    std::lock_guard l(sessions_mu_);
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

  // Under k.mu, after eligible().
  Lease grant(KeySlot& k, int32_t model, int64_t est, const Now& t) {
    const int64_t in_flight = k.in_flight.load(std::memory_order_relaxed) + 1;
    k.in_flight.store(in_flight, std::memory_order_relaxed);
    ++k.leases_total;
    Lease lease;
    lease.core_ = this;
    lease.key_ = k.index;
    lease.model_ = model;
    lease.estimated_ = est;
    // Unique per pool without a shared counter: the key's own count, interleaved by key index.
    lease.id_ = k.leases_total * n_ + k.index;
    k.minute.advance_bucket(t.minute_bucket);
    lease.minute_ref_ = k.minute.add(1, est);
    if (daily_limited_) {
      k.day.advance_key(t.day_key);
      lease.daily_ref_ = k.day.add(1, est);
    }
    if (observer_ != nullptr) {
      observer_->on_grant(GrantEvent{lease.id_,
                                     k.index,
                                     model,
                                     mono(t.mono),
                                     in_flight,
                                     est,
                                     mono(k.cd.until),
                                     mono(model_until(k, model)),
                                     {k.minute.requests(), k.minute.tokens()},
                                     {k.day.requests(), k.day.tokens()}});
    }
    return lease;
  }

  // Why nothing is eligible, and when the first key may be.
  NoKey earliest(int32_t model, int64_t est, const Now& now) {
    NoKey out{NoKeyReason::kNoUsableKey, MonoTime::max()};
    int64_t best = kNever;
    bool too_large = false;
    for (size_t i = 0; i < n_; ++i) {
      KeySlot& k = keys_[i];
      auto kl = lock(k.mu);
      if (k.disabled || k.dead) continue;
      const Now t = k.at(now);
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

  // Applies an outcome to the key's state (under k.mu). Returns true when a cooldown started or
  // grew.
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
        // Written only when they change: a store dirties the cache line even when it is a no-op.
        if (k.consecutive_failures != 0) k.consecutive_failures = 0;
        if (k.cd.level != 0) k.cd.level = 0;
        if (model >= 0 && static_cast<size_t>(model) < k.model_cd.size() &&
            k.model_cd[static_cast<size_t>(model)].level != 0) {
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
        cooled = extend(k, *scope, now, base, reason);
        announced.reset();  // applied
        break;
      }
      case OutcomeClass::kAuthFailed:
        ++k.consecutive_failures;
        if (!k.dead) {
          k.dead = true;
          k.dead_reason = "auth_failed";
          k.refresh_hint();
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
    if (announced) cooled = extend(k, *scope, now, announced->count(), reason) || cooled;
    return cooled;
  }

  // Never shortens: the later of the old and the new deadline wins.
  bool extend(KeySlot& k, ScopeCooldown& scope, int64_t now, int64_t base_ns,
              CooldownReason reason) {
    double jitter = 0;
    if (cooldown_.jitter > 0 && base_ns > 0) {
      const double u = static_cast<double>(splitmix64(k.rng) >> 11) * 0x1.0p-53;  // [0, 1)
      jitter = u * cooldown_.jitter * static_cast<double>(base_ns);
    }
    int64_t until = now + base_ns + static_cast<int64_t>(jitter);
    if (until <= scope.until) return false;
    scope.until = until;
    scope.reason = reason;
    if (&scope == &k.cd) k.refresh_hint();
    return true;
  }

  // Under wait_mu_. Serves queued waiters in FIFO order, fails those that can never be served
  // or whose deadline passed, and re-arms the timers of the others when they could be served
  // sooner.
  void pump(const Now& t, Ready& ready) {
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      Waiter& w = it->second;
      if (t.mono >= ns(w.req.deadline)) {
        finish(it, NoKey{NoKeyReason::kTimeout, mono(w.earliest)}, ready);
        continue;
      }
      bool forwarded = false;
      AcquireResult r =
          try_acquire(w.req.model, w.req.estimated_tokens, w.req.session_id, t, forwarded);
      if (forwarded) {
        // A waiter queued just after the hand-over (see wait_async): the caller retries against
        // the new pool.
        finish(it, NoKey{NoKeyReason::kShutdown, MonoTime::max()}, ready);
        continue;
      }
      if (r.ok() || permanent(r.no_key().reason)) {
        finish(it, std::move(r), ready);
        continue;
      }
      w.earliest = ns(r.no_key().earliest);
      if (w.timer != 0 && wake_time(w, t.mono) < w.timer_at) arm_timer(it->first, w, t.mono);
      ++it;
    }
    waiting_.store(waiters_.size());
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

  metrics::ShardedCounter leases_[kOutcomeClassCount];
  metrics::ShardedCounter cooldowns_;
  metrics::ShardedCounter contended_;
  metrics::ShardedCounter parse_errors_;
  metrics::ShardedCounter rejected_;

  // Lock order: wait_mu_ → a shard's mu → a key's mu → intern_mu_ / sessions_mu_ (leaves; a
  // key's mu is never held while taking sessions_mu_). adopt() takes all key locks in index order.
  const size_t n_;
  const std::unique_ptr<KeySlot[]> keys_;  // never resized: leases index into it
  const std::unique_ptr<Shard[]> shards_;

  std::mutex intern_mu_;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> model_ids_;
  std::vector<std::string> model_names_;

  std::mutex sessions_mu_;
  std::unordered_map<std::string, Session, StringHash, std::equal_to<>> sessions_;

  std::mutex wait_mu_;
  std::map<WaitId, Waiter> waiters_;  // ids increase: iteration order is FIFO
  // waiters_.size(), readable without wait_mu_: the fast paths skip the queue when it is 0.
  std::atomic<size_t> waiting_{0};

  // Set once this pool has handed its keys over (hot reload), with every key lock held; see
  // adopt(). successor_ and forward_ are written before handed_over_ and never again.
  std::atomic<bool> handed_over_{false};
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
  // A reload that failed after handing this pool over left it forwarding to a successor that was
  // never published: the keys' live state is at the end of that chain.
  std::shared_ptr<detail::Core> live = core_;
  while (auto successor = live->handed_over_to()) live = std::move(successor);
  next->core_->adopt(*live);
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
