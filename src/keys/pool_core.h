// Internal to src/keys: the state behind a KeyPool (detail::Core) and the layout it works on: key
// slots, selection shards, waiters. The class is defined across pool_core.cpp (construction,
// acquire, complete, and Lease), pool_waiters.cpp (the wait queue and its timers) and
// pool_admin.cpp (views, enable/disable, usage export/import, hot-reload hand-over); key_pool.cpp
// is the KeyPool facade. The few small functions of the acquire/complete path are defined in the
// class, here, so that every file's callers can inline them.
//
// Thread-safety: a Core is shared by every thread using its KeyPool and by its Leases; each member
// function takes the locks it needs (lock order at the members). The helpers that say "under
// k.mu" or "under wait_mu_" expect their caller to hold that lock.
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
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/metrics.h"
#include "common/thread_slot.h"
#include "keys/keys.h"
#include "keys/rate_window.h"

namespace switchboard::keys::detail {

inline constexpr int64_t kMinuteBucketNs = 100'000'000;  // 100 ms
inline constexpr int64_t kMinuteBuckets = 600;
inline constexpr int64_t kNoDeadline = std::numeric_limits<int64_t>::min();
inline constexpr size_t kMaxModels = 4096;  // interned model names; beyond, cooldowns go key-wide
inline constexpr uint32_t kShards = 8;      // selection shards (power of two)
inline constexpr uint8_t kIneligible = 1;   // Shard::excluded: the exact check said no
inline constexpr uint8_t kBusy = 2;         // Shard::excluded: another thread held the key's lock

inline int64_t ns(MonoTime t) {
  return std::chrono::duration_cast<Nanos>(t.time_since_epoch()).count();
}
inline int64_t ns(WallTime t) {
  return std::chrono::duration_cast<Nanos>(t.time_since_epoch()).count();
}
inline MonoTime mono(int64_t n) {
  if (n == kNever) return MonoTime::max();
  if (n == kNoDeadline) return MonoTime::min();
  return MonoTime(std::chrono::duration_cast<MonoTime::duration>(Nanos(n)));
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

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
  Core(const ProviderConfig& config, Clock& clock, const KeyPoolOptions& options);

  const std::string& provider() const { return provider_; }
  size_t size() const { return n_; }
  const KeySlot& key(uint32_t i) const { return keys_[i]; }

  // ------------------------------------------------------------------ acquire (pool_core.cpp)

  AcquireResult acquire(std::string_view model, int64_t est, std::string_view session);

  // ------------------------------------------------------------------ complete (pool_core.cpp)

  void complete(Lease& lease, const Outcome& outcome, EndReport* report) {
    complete_at(lease.key_, lease.model_, nullptr, lease, outcome, report);
  }

  // Ends a lease on key slot `key`. `model` is this core's interned id, unless `model_name` is
  // given (a lease forwarded from a predecessor pool, whose ids differ). A key handed over to a
  // successor (hot reload) is ended there instead, decided under the key's lock that adopt()
  // holds, so a completion can never land on a copy that has already been handed on.
  void complete_at(uint32_t key, int32_t model, const std::string* model_name, const Lease& lease,
                   const Outcome& outcome, EndReport* report = nullptr);

  // ------------------------------------------------------------------ shared limits
  // (pool_shared.cpp)

  std::vector<std::string_view> shared_candidates(const AcquireRequest& request, NoKey* none);
  AcquireResult acquire_on(std::string_view key_id, const AcquireRequest& request);

  // ------------------------------------------------------------------ waiters (pool_waiters.cpp)

  WaitId wait_async(AcquireRequest req, WaitCallback cb);
  bool cancel_wait(WaitId id);
  size_t waiting();
  void shutdown();
  void on_timer(WaitId id);

  // ------------------------------------------------------------------ admin (pool_admin.cpp)

  // Hot reload: this (new, not yet shared) core takes over the keys of `old` that it shares
  // (same secret) with their whole state, in-flight leases included; `old` then forwards new
  // acquisitions and the completions of those leases here. Waiters of `old` get kShutdown (their
  // requests retry against the new pool). Every key lock of `old` is held meanwhile, so no lease
  // is granted or ended there against a copy that has already been handed on.
  void adopt(Core& old);

  // The pool this one handed its keys over to, or null.
  std::shared_ptr<Core> handed_over_to() const {
    return handed_over_.load(std::memory_order_acquire) ? successor_ : nullptr;
  }

  Status set_enabled(std::string_view id, bool enabled);
  Status restore_cooldown(std::string_view id, std::string_view model, WallTime until,
                          CooldownReason reason);
  std::vector<KeySnapshot> snapshot(std::string_view only);
  std::vector<KeyUsage> export_usage();
  Status import_usage(const std::vector<KeyUsage>& usage);

 private:
  // Small and on the acquire/complete path: defined here so that their callers in every file
  // can inline them, as when the class was one file.
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

  // The shard of the calling thread: its thread slot (common/thread_slot.h), so that threads
  // alive at the same time use different shards as long as there are no more than kShards.
  Shard& my_shard() { return shards_[this_thread_slot() & (kShards - 1)]; }

  int32_t intern_cached(Shard& s, std::string_view model) {
    if (model.empty()) return -1;
    if (s.has_last_model && s.last_model == model) return s.last_model_id;
    s.last_model_id = intern(model);
    s.last_model.assign(model);
    s.has_last_model = true;
    return s.last_model_id;
  }

  static int64_t model_until(const KeySlot& k, int32_t model) {
    if (model < 0 || static_cast<size_t>(model) >= k.model_cd.size()) return kNoDeadline;
    return k.model_cd[static_cast<size_t>(model)].until;
  }

  // Candidate for this round: not excluded and not known to be blocked at t.
  bool candidate(const Shard& s, size_t i, const Now& t) const {
    return s.excluded[i] == 0 && t.mono >= keys_[i].blocked_until.load(std::memory_order_relaxed);
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

  int sticky_key(std::string_view session, const Now& t) {
    std::lock_guard l(sessions_mu_);
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return -1;
    it->second.last_used = t.mono;
    return static_cast<int>(it->second.key);
  }

  // ------------------------------------------------------------------ pool_core.cpp

  void prime(Shard& s, uint32_t index);
  int32_t intern(std::string_view model);
  std::string model_name_of(int32_t model);
  std::vector<std::string> model_names();

  // Under k.mu.
  bool eligible(KeySlot& k, int32_t model, int64_t est, const Now& t);

  // Proposes a key (or -1), updating the shard's round-robin state as if it were granted;
  // `reject` undoes that when the exact check under the key's lock says no.
  int propose(Shard& s, const Now& t);

  // Sets `forwarded` (and returns a placeholder) when this pool was handed over meanwhile.
  AcquireResult try_acquire(std::string_view model_name, int64_t est, std::string_view session,
                            const Now& t, bool& forwarded);
  void remember_session(std::string_view session, uint32_t key, const Now& t);

  // Under k.mu, after eligible().
  Lease grant(KeySlot& k, int32_t model, int64_t est, const Now& t);

  // Why nothing is eligible, and when the first key may be.
  NoKey earliest(int32_t model, int64_t est, const Now& now);

  // Applies an outcome to the key's state (under k.mu). Returns true when a cooldown started or
  // grew.
  bool apply_outcome(KeySlot& k, int32_t model, const Outcome& o, const RateLimitInfo& info,
                     int64_t now);

  // Never shortens: the later of the old and the new deadline wins.
  bool extend(KeySlot& k, ScopeCooldown& scope, int64_t now, int64_t base_ns,
              CooldownReason reason);

  // ------------------------------------------------------------------ pool_waiters.cpp

  void pump_waiters();

  // Under wait_mu_. Serves queued waiters in FIFO order, fails those that can never be served
  // or whose deadline passed, and re-arms the timers of the others when they could be served
  // sooner.
  void pump(const Now& t, Ready& ready);
  void finish(std::map<WaitId, Waiter>::iterator& it, AcquireResult result, Ready& ready);
  static int64_t wake_time(const Waiter& w, int64_t now);
  void arm_timer(WaitId id, Waiter& w, int64_t now);

  // ------------------------------------------------------------------ pool_admin.cpp

  KeySlot* find_key(std::string_view id);

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
  std::atomic<uint32_t> shared_rotation_{0};  // shared_candidates' starting key
  std::shared_ptr<Core> successor_;
  std::vector<int32_t> forward_;  // old key index → successor's index, or -1 (key removed)
};

}  // namespace switchboard::keys::detail
