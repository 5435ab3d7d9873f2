// Circuit breakers: stop sending calls to a provider, a model or a key that keeps failing, and find
// out by probing when it has recovered.
//
// A CircuitBreaker guards one target and has three states:
//
//   closed     Every call is admitted. The outcomes of the last `window` calls form a count-based
//              sliding window. Once at least `min_calls` are in it, the breaker opens when the
//              failure rate >= `failure_rate` or the slow-call rate (successes slower than
//              `slow_call_ms`) >= `slow_call_rate`. Both rates are over the counted calls.
//   open       Every call is rejected at once, for an open time that starts at `open_ms` and is
//              multiplied by `open_multiplier` on each opening that follows without a successful
//              half-open, up to `max_open_ms`. A successful close resets it to `open_ms`.
//   half_open  Exactly `half_open_probes` permits are handed out (taken atomically; callers beyond
//              them are rejected). Any failed probe opens the breaker again at once. When every
//              probe has succeeded the breaker closes with a fresh window, unless the probes' own
//              slow-call rate reaches `slow_call_rate`, which opens it again. Probes that never
//              report back cannot wedge it: `half_open_timeout_ms` after entering half-open it
//              returns to open (counted as a further opening).
//
// Time advances the state lazily, on every state read and permit request, from the injected
// monotonic Clock: `state()` is always true and no timer or thread exists.
//
// Every call goes through a Permit. The permit remembers the generation of the state it was
// taken in (every transition starts a new generation), so a result reported late (a slow call
// taken before the breaker opened, a probe from a half-open period that already timed out) is
// ignored instead of being counted against the current state. A Permit dropped without a result
// counts as cancelled, which is ignored; in half-open that returns the probe slot.
//
// Which outcomes count (see `classify`):
//   success                                  success (slow if latency > slow_call_ms)
//   server_error, timeout, connection_error  failure
//   client_error, cancelled                  ignored: the request was bad or abandoned, the
//                                            target is not to blame
//   rate_limited                             ignored (cooldowns are the key pool's business),
//                                            failure when `count_rate_limits` is set
//   auth_failed                              failure for a key breaker (that key is unusable);
//                                            ignored for provider and model breakers, so one
//                                            revoked key does not take a whole provider out
// An ignored outcome in half-open hands the probe slot back, so another caller can probe.
//
// Metrics: `switchboard_breaker_transitions_total{target,from,to}` counts every transition and
// `switchboard_breaker_state{target,state}` is 1 for the current state and 0 for the other two
// (closed, open, half_open: the same representation as `switchboard_keys_state`). Like `state()`,
// the gauge moves when the breaker is touched; `BreakerRegistry::snapshot()` touches every breaker,
// so calling it before serialising metrics makes the gauge current.
//
// Thread-safety: every method of CircuitBreaker and BreakerRegistry may be called from any thread.
// In the closed state `try_acquire` is one atomic load and recording a result is two
// compare-and-swaps, with no lock; a failure or slow call also rescans the window (a few cache
// lines). Transitions, half-open permits and reads of an open breaker past its open time take a
// per-breaker mutex that guards a few field updates only (logging happens after it is released).
// A Permit is a move-only value owned by one caller at a time; it must not outlive its breaker
// (breakers from a registry live as long as the registry).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/outcome.h"

namespace prometheus {
class Counter;
class Gauge;
}  // namespace prometheus

namespace switchboard::breaker {

// How a call ended. The names match the key pool's status classes one to one, so the gateway
// maps between them with a switch.
enum class BreakerState : uint8_t { kClosed = 0, kOpen = 1, kHalfOpen = 2 };

// What a breaker guards; decides how `kAuthFailed` is classified.
enum class TargetKind : uint8_t { kProvider, kModel, kKey };

// How an outcome counts for a breaker.
enum class Verdict : uint8_t { kSuccess, kFailure, kIgnored };

std::string_view to_string(BreakerState s);  // "closed", "open", "half_open"
std::string_view to_string(TargetKind k);    // "provider", "model", "key"

// The classification policy described above. Slowness is judged separately, from the latency.
Verdict classify(OutcomeClass outcome, TargetKind kind, const BreakerConfig& config);

// Target names, used as the `target` metric label and in the admin API:
// "provider:openai", "model:openai/gpt-4o", "key:openai#2".
std::string provider_target(std::string_view provider);
std::string model_target(std::string_view provider, std::string_view model);
std::string key_target(std::string_view key_id);

// Told of every transition, after the breaker's mutex is released, on the thread that caused it
// (a request's, or an admin reset's): keep it short and never call back into the breaker. The
// gateway records transitions in the store (breaker_transitions) through it.
using TransitionObserver =
    std::function<void(std::string_view target, BreakerState from, BreakerState to)>;

// A breaker's state as the admin API shows it.
struct BreakerSnapshot {
  std::string target;
  TargetKind kind = TargetKind::kProvider;
  BreakerState state = BreakerState::kClosed;
  // Over the sliding window. After opening, the window that tripped the breaker is kept (and
  // shown) until the breaker closes again with a fresh one.
  int calls_in_window = 0;  // counted calls (successes and failures)
  int failures_in_window = 0;
  int slow_in_window = 0;
  double failure_rate = 0;       // failures / calls, 0 when there are no calls
  double slow_call_rate = 0;     // slow / calls
  Millis until_half_open{0};     // open: time left before probes are admitted; else 0
  Millis open_duration{0};       // open: length of the current open period; else 0
  int consecutive_openings = 0;  // openings since the last successful close
  int probes_admitted = 0;       // half-open: permits handed out and not handed back
  int probes_succeeded = 0;      // half-open: of those, reported successes
};

class CircuitBreaker;

// Admission to make one call. Empty (false) when the breaker rejected the call; then make no call
// and `record` does nothing. Report the call's result with `record` exactly once; later calls are
// ignored. Dropping an unrecorded permit records `kCancelled`.
class [[nodiscard]] Permit {
 public:
  Permit() = default;
  Permit(Permit&& other) noexcept
      : breaker_(other.breaker_), generation_(other.generation_), probe_(other.probe_) {
    other.breaker_ = nullptr;
  }
  Permit& operator=(Permit&& other) noexcept;
  Permit(const Permit&) = delete;
  Permit& operator=(const Permit&) = delete;
  ~Permit();

  bool admitted() const { return breaker_ != nullptr; }
  explicit operator bool() const { return admitted(); }
  // True for a half-open probe (only meaningful while admitted).
  bool is_probe() const { return probe_; }
  // The state generation the permit was taken in (diagnostics and tests).
  uint32_t generation() const { return generation_; }

  // Reports how the call ended and how long it took (the latency decides slowness).
  void record(OutcomeClass outcome, Nanos latency = Nanos(0));

 private:
  friend class CircuitBreaker;
  Permit(CircuitBreaker* b, uint32_t generation, bool probe)
      : breaker_(b), generation_(generation), probe_(probe) {}

  CircuitBreaker* breaker_ = nullptr;  // null once recorded or when rejected
  uint32_t generation_ = 0;
  bool probe_ = false;
};

class CircuitBreaker {
 public:
  // `target` names the breaker in metrics and logs (see provider_target & co). Out-of-range
  // numbers in `config` are clamped: window to [1, 65536], min_calls to [1, window],
  // half_open_probes to >= 1, max_open_ms to >= open_ms, open_multiplier to >= 1.
  // `observer` (may be null) is told of every transition.
  CircuitBreaker(std::string target, TargetKind kind, const BreakerConfig& config, Clock& clock,
                 std::shared_ptr<const TransitionObserver> observer = nullptr);
  ~CircuitBreaker();
  CircuitBreaker(const CircuitBreaker&) = delete;
  CircuitBreaker& operator=(const CircuitBreaker&) = delete;

  // Admits a call (closed, or a free half-open probe slot) or rejects it (open, or half-open with
  // every probe slot taken). An open breaker whose open time has passed becomes half-open here.
  Permit try_acquire();

  // The current state, after applying any transition that time has made due.
  BreakerState state() const;

  BreakerSnapshot snapshot() const;

  // Forces the breaker closed with a fresh window and a reset open time (admin action).
  void reset();

  // Opens the breaker because the same target's breaker opened elsewhere (another gateway of a
  // cluster): closed or half-open becomes open for this breaker's own next open time, as if its
  // window had tripped; an open breaker stays as it is. True when it opened. The observer hears
  // of the transition like any other.
  bool open_from_peer();

  const std::string& target() const { return target_; }
  TargetKind kind() const { return kind_; }
  const BreakerConfig& config() const { return config_; }

 private:
  friend class Permit;
  struct Transition {
    BreakerState from;
    BreakerState to;
  };
  // A few transitions collected under the mutex and logged after it is released.
  struct TransitionLog {
    Transition items[4];
    int count = 0;
  };
  struct WindowCounts {
    int calls = 0;
    int failures = 0;
    int slow = 0;
  };

  void on_result(uint32_t generation, bool probe, OutcomeClass outcome, Nanos latency);
  void record_closed(uint32_t generation, uint64_t code);
  void record_slow_path(uint32_t generation, Verdict verdict, bool slow, TransitionLog& log);
  bool should_trip(const WindowCounts& c) const;
  WindowCounts count_window() const;

  // Locks `mu`, counting in switchboard_breaker_lock_contended_total when it had to wait.
  static std::unique_lock<std::mutex> lock_counted(std::mutex& mu);
  static void lock_counted_metric();

  // All *_locked functions need mu_.
  void advance_locked(MonoTime now, TransitionLog& log) const;
  void transition_locked(BreakerState to, MonoTime now, TransitionLog& log) const;
  Nanos next_open_duration_locked() const;
  void emit(const TransitionLog& log) const;

  const std::string target_;
  const TargetKind kind_;
  const BreakerConfig config_;
  Clock& clock_;
  const int64_t slow_call_ns_;
  const std::shared_ptr<const TransitionObserver> observer_;
  const uint64_t ring_mask_;  // ring size is a power of two >= window

  // State, generation and the sequence number of the next closed-state result, in one word so
  // that a closed-state result is claimed by one compare-and-swap that also checks the permit's
  // generation. Layout in breaker.cpp.
  alignas(64) mutable std::atomic<uint64_t> head_;
  // Sequence number of the first result of the current closed period (results before it belong
  // to an earlier window). Published before head_ switches to closed.
  mutable std::atomic<uint64_t> window_start_{0};
  // Slot i holds the newest result whose sequence number is i modulo the ring size, as
  // (sequence << 2 | code); 0 = empty.
  std::unique_ptr<std::atomic<uint64_t>[]> ring_;

  // Deadlines read without the lock to reject quickly (nanoseconds since the clock's epoch).
  mutable std::atomic<int64_t> open_until_ns_{0};
  mutable std::atomic<int64_t> half_open_until_ns_{0};

  mutable std::mutex mu_;
  // Guarded by mu_.
  mutable int consecutive_openings_ = 0;
  mutable int64_t open_duration_ns_ = 0;
  mutable int probes_admitted_ = 0;
  mutable int probes_succeeded_ = 0;
  mutable int probes_slow_ = 0;
  mutable prometheus::Counter* transitions_[3][3] = {};  // resolved on first use

  // switchboard_breaker_state{target,state}: closed, open, half_open (BreakerState's order);
  // set under the transition lock, so exactly one is 1.
  std::array<prometheus::Gauge*, 3> state_gauges_;
  void set_state_gauges(BreakerState current) const;
};

// Creates breakers on demand, one per target, with the provider's configuration (a per-provider
// override, else the default). Breakers are never destroyed before the registry, so callers may
// keep the returned pointers (and take them off the request path).
class BreakerRegistry {
 public:
  using PerProvider = std::map<std::string, BreakerConfig, std::less<>>;

  // Every breaker it creates tells `observer` (may be null) of its transitions.
  BreakerRegistry(Clock& clock, BreakerConfig defaults, PerProvider per_provider = {},
                  std::shared_ptr<const TransitionObserver> observer = nullptr);
  // Defaults from `config.breaker`, overrides from each provider's (already merged) `breaker`.
  BreakerRegistry(Clock& clock, const Config& config,
                  std::shared_ptr<const TransitionObserver> observer = nullptr);
  BreakerRegistry(const BreakerRegistry&) = delete;
  BreakerRegistry& operator=(const BreakerRegistry&) = delete;

  std::shared_ptr<CircuitBreaker> provider(std::string_view provider);
  std::shared_ptr<CircuitBreaker> model(std::string_view provider, std::string_view model);
  // `key_id` is the key's public id, e.g. "openai#2"; `provider` selects its configuration.
  std::shared_ptr<CircuitBreaker> key(std::string_view provider, std::string_view key_id);

  // The breaker with this target name (as in BreakerSnapshot::target), or null if none exists.
  std::shared_ptr<CircuitBreaker> find(std::string_view target) const;

  // Every breaker, advanced to the current time, sorted by target name.
  std::vector<BreakerSnapshot> snapshot() const;

  const BreakerConfig& config_for(std::string_view provider) const;

 private:
  using BreakerMap = std::map<std::string, std::shared_ptr<CircuitBreaker>, std::less<>>;
  struct ProviderEntry {
    std::shared_ptr<CircuitBreaker> provider;
    BreakerMap models;  // by model name
    BreakerMap keys;    // by key id
  };

  ProviderEntry& entry_locked(std::string_view provider);

  Clock& clock_;
  const BreakerConfig defaults_;
  const PerProvider per_provider_;
  const std::shared_ptr<const TransitionObserver> observer_;
  mutable std::shared_mutex mu_;
  std::map<std::string, ProviderEntry, std::less<>> providers_;  // guarded by mu_
  BreakerMap by_target_;                                         // guarded by mu_
};

}  // namespace switchboard::breaker
