// Key pool: fair, limit-respecting rotation of one provider's API keys (DESIGN.md invariants 1, 2,
// 3, 5).
//
// A KeyPool owns the keys of one provider. `acquire` picks an eligible key (not dead, not disabled,
// not cooling for the requested model, under `max_concurrent`, with room in every rate window for
// the estimate) and reserves the concurrency slot and every window in one critical section, giving
// back a move-only RAII `Lease`. `Lease::complete` reports the outcome (status class, real token
// usage, the response's rate-limit headers); a Lease destroyed without `complete` is recorded as
// `cancelled`. Either way every lease ends exactly once and releases what it reserved.
//
// Rate windows:
//   * rpm/tpm: sliding window of 600 buckets of 100 ms on the monotonic clock. A request counts
//     for between 60.0 and 60.1 s after it was admitted, so the pool is never more permissive than
//     an exact sliding minute and at most 100 ms more conservative.
//   * rpd/tpd (tracked only when a daily limit is set): either a fixed day that resets at
//     `daily_reset_hour_utc` on the wall clock, or (hour < 0) a rolling 24 h of 1-minute buckets
//     on the wall clock. Wall time is used so `export_usage`/`import_usage` survive a restart.
//   Accounting: admission reserves 1 request and the estimate. Completion replaces the estimate
//   with `Outcome::tokens_used` when given; without it a success keeps the estimate and any other
//   outcome releases the tokens. The request slot is released only for `cancelled` and
//   `connection_error` (the request may never have reached the provider); every other outcome
//   keeps it counted, as providers count rejected requests too.
//
// Cooldowns: a deadline and reason per key and per (key, model). Rate-limit signals of a lease
// that named a model cool that (key, model) unless `Outcome::key_wide` is set; otherwise the key.
// A cooldown is `base + U[0, jitter * base]` where base is the announced wait (Retry-After,
// retry-after-ms, or the longest reset among exhausted x-ratelimit-* / anthropic-ratelimit-*
// categories) or, for a 429 without any, `initial_ms * multiplier^streak` capped at `max_ms`.
// Never earlier than announced; a new deadline never shortens an existing one. Success resets the
// streak. auth_failed (401/403) marks the key dead; server errors and timeouts never kill or cool a
// key (they feed the circuit breaker) except through an announced Retry-After.
//
// Waiting: `wait_async` queues a request; its callback runs exactly once, with a lease (FIFO among
// waiters when capacity frees or a cooldown/window expires) or with a timeout at its deadline.
// Timers come from an injected `Scheduler` so the gateway can plug Asio timers and tests can use
// `ManualScheduler` with a `ManualClock`. The module depends on neither Boost nor Beast.
//
// Thread-safety: a KeyPool may be used from any number of threads without external
// synchronization. Each key has its own mutex, held for a few field updates (never across I/O, a
// wait or a callback); threads that lease different keys do not contend, and each thread keeps
// its own round-robin state (see pool_core.h). A Lease is a value owned by one thread at a time
// (like std::unique_ptr); distinct leases may be completed concurrently. Callbacks of `wait_async`
// run on whichever thread frees capacity, fires the timer, or calls `wait_async` itself, never
// under the pool's mutex; they should only hand the result over (e.g. post to an io_context). The
// KeyPool must outlive every Lease it handed out.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/outcome.h"
#include "common/status.h"

namespace switchboard::keys {

// ---------------------------------------------------------------------------------------------
// Rate-limit header parsing (usable on its own).

using Header = std::pair<std::string, std::string>;  // (name, value); names case-insensitive
using HeaderList = std::vector<Header>;

struct LimitCategory {
  std::optional<int64_t> remaining;
  std::optional<Nanos> reset;  // relative to the parse time, never negative
};

struct RateLimitInfo {
  // Retry-After (seconds or HTTP date) or retry-after-ms; the longer when both are present.
  std::optional<Nanos> retry_after;
  // Each category holds its binding window when a response reports several (see below).
  LimitCategory requests;       // x-ratelimit-*-requests, anthropic-ratelimit-requests-*, bare
                                // x-ratelimit-*, RateLimit-*, RateLimit
  LimitCategory tokens;         // x-ratelimit-*-tokens, anthropic-ratelimit-tokens-*,
                                // x-tokenlimit-*, [x-]ratelimitbysize-*
  LimitCategory input_tokens;   // anthropic-ratelimit-input-tokens-*, x-ratelimit-*-tokens-prompt
  LimitCategory output_tokens;  // anthropic-ratelimit-output-tokens-*,
                                // x-ratelimit-*-tokens-generated
  int parse_errors = 0;         // recognised headers whose values were malformed (then ignored)

  // The longest reset among categories whose remaining is 0 and whose reset is known.
  std::optional<Nanos> exhausted_for() const;
  bool empty() const;
};

// Recognises (names in any case):
//   Retry-After (seconds or HTTP date), retry-after-ms;
//   x-ratelimit-{remaining,reset}-<category>[-<window>] (OpenAI, Groq, Cerebras, Fireworks,
//     Mistral): category requests | req | tokens | tokens-prompt | tokens-cache-adjusted-prompt
//     (input) | tokens-generated (output); window [N-]second|minute|hour|day|week|month;
//   bare x-ratelimit-{remaining,reset} (OpenRouter, Together, many OpenAI-compatible servers):
//     requests;
//   anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{remaining,reset} (resets
//     RFC 3339 only);
//   x-tokenlimit-{remaining,reset} (Together) and Mistral's ratelimitbysize-{remaining,reset},
//     x-ratelimitbysize-{remaining,reset}[-<window>]: tokens;
//   the IETF draft's RateLimit-{Remaining,Reset} and combined RateLimit (`limit=10, remaining=0,
//     reset=30` or `"default";r=0;t=30`): requests. RateLimit-Limit, RateLimit-Policy and every
//     *-limit-* header carry no state and are ignored.
// Resets other than Anthropic's may be delta seconds, a Unix time in seconds (a plain number from
// 1e9) or milliseconds (from 1e12), a Go-style duration, an RFC 3339 time or an HTTP date; times
// are measured from `wall_now` and a time in the past is 0. A remaining count pairs with the
// reset of its own window; per category, the binding window is kept: an exhausted one (the
// longest reset among several), else the one with the fewest remaining. Malformed values are
// skipped, logged (name only) and counted in `parse_errors` (once per header); unknown headers
// are ignored. Never throws.
RateLimitInfo parse_rate_limit_headers(std::span<const Header> headers, WallTime wall_now);

// Go-style durations as OpenAI sends them: "1s", "6m0s", "20ms", "1h2m3.5s", "0", "250us". A
// bare non-negative number is taken as seconds. nullopt when malformed or negative.
std::optional<Nanos> parse_duration(std::string_view text);
// IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), RFC 850 and asctime forms.
std::optional<WallTime> parse_http_date(std::string_view text);
// "2024-05-01T12:00:30Z", "2024-05-01T12:00:30.25+02:00" (a space or 't' also separates).
std::optional<WallTime> parse_rfc3339(std::string_view text);

// ---------------------------------------------------------------------------------------------
// Outcomes, leases, results.

struct Outcome {
  OutcomeClass status = OutcomeClass::kSuccess;
  Millis latency{0};
  int64_t tokens_used = -1;  // real usage (input + output); < 0 = unknown
  HeaderList headers;        // the response's rate-limit headers (any headers are fine)
  bool key_wide = false;     // the provider said the whole key is limited, not just this model
};

enum class KeyState : uint8_t { kHealthy, kCooling, kDisabled, kDead };
std::string_view to_string(KeyState s);

enum class CooldownReason : uint8_t {
  kNone,
  kRetryAfter,      // 429/503 with Retry-After or retry-after-ms
  kBackoff,         // 429 without any header: exponential backoff
  kQuotaExhausted,  // remaining = 0 with a reset time
};
std::string_view to_string(CooldownReason r);
// The reverse of to_string; kNone for an unknown name.
CooldownReason cooldown_reason_from(std::string_view name);

// Why `acquire` gave no lease.
enum class NoKeyReason : uint8_t {
  kNoUsableKey,   // every key is dead or disabled (or the pool is empty): never
  kConcurrency,   // every candidate is at max_concurrent: when a lease ends
  kCooling,       // candidates are cooling (for this model)
  kMinuteWindow,  // rpm/tpm full
  kDailyWindow,   // rpd/tpd full
  kTooLarge,      // the estimate exceeds a window's whole limit: never
  kTimeout,       // wait_async: the deadline passed
  kCancelled,     // wait_async: cancel_wait
  kShutdown,      // wait_async: the pool was destroyed
  kNoScheduler,   // wait_async: would have to wait but the pool has no Scheduler
};
std::string_view to_string(NoKeyReason r);

struct NoKey {
  NoKeyReason reason = NoKeyReason::kNoUsableKey;
  // Earliest monotonic time a key may serve this request; MonoTime::max() when never. For
  // kConcurrency it is `now` (really: when a lease ends).
  MonoTime earliest = MonoTime::max();
};

namespace detail {
class Core;
}

// What ending a lease did, for a limiter that shares the key's state with other gateways.
struct EndReport {
  bool request_counted = false;  // the request stays in the windows (see Accounting above)
  int64_t tokens_counted = 0;    // what stays in the token windows for this lease
  // A cooldown this outcome started or extended: how long from now, and its scope ("" = the
  // whole key, else the model).
  std::optional<Nanos> cooldown;
  std::string cooldown_model;
  CooldownReason cooldown_reason = CooldownReason::kNone;
};

class Lease {
 public:
  Lease() = default;
  Lease(Lease&& other) noexcept { *this = std::move(other); }
  Lease& operator=(Lease&& other) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  // Records `cancelled` if still active.
  ~Lease();

  bool active() const { return core_ != nullptr; }
  explicit operator bool() const { return active(); }
  // Ends the lease (once): releases the concurrency slot, settles the windows, applies
  // cooldowns. Returns false (and does nothing) when the lease is not active.
  bool complete(const Outcome& outcome);
  // The same, telling `report` (when not null and the lease was active) what it did.
  bool complete(const Outcome& outcome, EndReport* report);

  // Valid while active.
  const std::string& key_id() const;       // "openai#2"
  const std::string& secret() const;       // for the upstream request only: never log it
  const std::string& fingerprint() const;  // "sha256:…"
  uint64_t id() const { return id_; }      // unique per pool, for tracing
  int64_t estimated_tokens() const { return estimated_; }

 private:
  friend class detail::Core;
  detail::Core* core_ = nullptr;
  uint32_t key_ = 0;
  int32_t model_ = -1;  // interned model id, -1 when none
  int64_t estimated_ = 0;
  int64_t minute_ref_ = 0;  // window bucket that holds the reservation
  int64_t daily_ref_ = 0;
  uint64_t id_ = 0;
};

class AcquireResult {
 public:
  AcquireResult(Lease lease) : v_(std::move(lease)) {}  // NOLINT: implicit by design
  AcquireResult(NoKey none) : v_(none) {}               // NOLINT
  bool ok() const { return std::holds_alternative<Lease>(v_); }
  explicit operator bool() const { return ok(); }
  Lease& lease() { return std::get<Lease>(v_); }
  Lease take_lease() { return std::move(std::get<Lease>(v_)); }
  const NoKey& no_key() const { return std::get<NoKey>(v_); }

 private:
  std::variant<Lease, NoKey> v_;
};

struct AcquireRequest {
  std::string model;  // the upstream model name ("" = not model-specific)
  int64_t estimated_tokens = 0;
  MonoTime deadline = MonoTime::max();
  std::string session_id;  // "" = no stickiness
};

// ---------------------------------------------------------------------------------------------
// Timers for wait_async.

class Scheduler {
 public:
  using TimerId = uint64_t;
  virtual ~Scheduler() = default;
  // Runs `fn` once, on any thread, no earlier than `when` (monotonic time of the pool's clock),
  // unless cancelled. Called with the pool's waiter mutex held: it must not run `fn` (or anything
  // else of the pool) synchronously and must not block.
  virtual TimerId schedule_at(MonoTime when, std::function<void()> fn) = 0;
  // Best effort: `fn` may still run afterwards and must then find nothing to do. Same rules as
  // schedule_at.
  virtual void cancel(TimerId id) = 0;
};

// Timers fired by hand, for tests and simulations driven by a ManualClock.
class ManualScheduler final : public Scheduler {
 public:
  TimerId schedule_at(MonoTime when, std::function<void()> fn) override;
  void cancel(TimerId id) override;
  // Runs every timer due at `now`, earliest first (including ones scheduled meanwhile), outside
  // the scheduler's lock. Returns how many ran.
  int run_due(MonoTime now);
  size_t pending() const;
  std::optional<MonoTime> next_due() const;

 private:
  mutable std::mutex mu_;
  TimerId next_id_ = 1;
  std::multimap<MonoTime, std::pair<TimerId, std::function<void()>>> timers_;
};

// ---------------------------------------------------------------------------------------------
// Inspection, persistence, test hooks.

struct WindowUsage {
  int64_t requests = 0;
  int64_t tokens = 0;
};

struct ModelCooldown {
  std::string model;
  Millis remaining{0};
  CooldownReason reason = CooldownReason::kNone;
};

// What the admin API shows. Never contains the secret.
struct KeySnapshot {
  std::string id;
  std::string fingerprint;
  double weight = 1;
  KeyState state = KeyState::kHealthy;
  Millis cooldown_remaining{0};
  CooldownReason cooldown_reason = CooldownReason::kNone;
  std::vector<ModelCooldown> model_cooldowns;  // only those still cooling
  int64_t in_flight = 0;
  int64_t max_concurrent = 0;  // 0 = no limit
  WindowUsage minute;
  WindowUsage day;  // zero unless rpd or tpd is set
  int64_t consecutive_failures = 0;
  uint64_t leases_total = 0;
  std::string dead_reason;  // "" unless dead
};

struct UsageBucket {
  WallTime start;  // start of the bucket (a minute, or the day's period start)
  int64_t requests = 0;
  int64_t tokens = 0;
};

// Daily-window usage of one key, for the store.
struct KeyUsage {
  std::string key_id;
  std::vector<UsageBucket> daily;
};

// Test and audit hook, called with the key's mutex held: the events of one key are totally
// ordered, events of different keys may come from several threads at once. Must be fast,
// thread-safe and must not call into the pool.
struct GrantEvent {
  uint64_t lease_id;
  size_t key_index;
  int32_t model;  // interned id or -1
  MonoTime now;
  int64_t in_flight;  // after this grant
  int64_t estimated_tokens;
  MonoTime key_cooldown_until;
  MonoTime model_cooldown_until;  // MonoTime::min() when none
  WindowUsage minute;             // after the reservation
  WindowUsage day;
};
struct EndEvent {
  uint64_t lease_id;
  size_t key_index;
  int32_t model;
  OutcomeClass status;
  MonoTime now;
  int64_t requests_counted;  // 0 or 1: what stays in the windows for this lease
  int64_t tokens_counted;
  MonoTime key_cooldown_until;  // after applying the outcome
  MonoTime model_cooldown_until;
};
class PoolObserver {
 public:
  virtual ~PoolObserver() = default;
  virtual void on_grant(const GrantEvent&) {}
  virtual void on_end(const EndEvent&) {}
};

struct KeyPoolOptions {
  Scheduler* scheduler = nullptr;  // needed for wait_async to wait; must outlive the pool
  uint64_t rng_seed = 0;           // jitter; 0 = seed from std::random_device
  size_t max_sessions = 65536;     // sticky sessions remembered (oldest half dropped beyond)
  PoolObserver* observer = nullptr;
};

using WaitId = uint64_t;
using WaitCallback = std::function<void(AcquireResult)>;

// ---------------------------------------------------------------------------------------------

class KeyPool {
 public:
  // Keys, limits, cooldown and selection come from `config`. `clock` must outlive the pool.
  KeyPool(const ProviderConfig& config, Clock& clock, KeyPoolOptions options = {});
  // Pending waiters get kShutdown. Leases must already have ended.
  ~KeyPool();

  // Hot reload: a new pool for `config` that takes over this pool's keys (matched by secret) with
  // their state — cooldowns, rate windows, failure streaks, disabled/dead marks and in-flight
  // leases, which keep counting against the new pool's limits and end there. Keys that are not in
  // `config` finish their leases here. From then on this pool forwards acquisitions and waits to
  // the new one; its queued waiters get kShutdown. This pool must outlive its leases, as always.
  std::unique_ptr<KeyPool> reconfigured(const ProviderConfig& config, Clock& clock,
                                        KeyPoolOptions options = {});
  KeyPool(const KeyPool&) = delete;
  KeyPool& operator=(const KeyPool&) = delete;

  const std::string& provider() const;
  size_t size() const;

  // A lease now, or why not and the earliest time worth retrying. Waiters queued by wait_async
  // are served first. Never blocks beyond the pool's short critical section.
  AcquireResult acquire(const AcquireRequest& request);
  AcquireResult acquire(std::string_view model, int64_t estimated_tokens,
                        MonoTime deadline = MonoTime::max(), std::string_view session_id = {});

  // Calls `callback` exactly once: with a lease as soon as one is available (FIFO among
  // waiters), with NoKey{kTimeout} at request.deadline, kCancelled on cancel_wait, kShutdown when
  // the pool is destroyed, or immediately with the NoKey when no key can ever serve (kNoUsableKey,
  // kTooLarge) or the pool has no scheduler. May call `callback` before returning.
  WaitId wait_async(AcquireRequest request, WaitCallback callback);
  // True when the waiter was still queued (its callback then ran with kCancelled).
  bool cancel_wait(WaitId id);
  size_t waiting() const;

  // Blocking helper (tests, CLI): wait_async and block the calling thread until the callback.
  // Someone else must drive time (the scheduler) or release leases.
  AcquireResult acquire_blocking(AcquireRequest request);

  // Admin. enable also revives a dead key (an operator override); cooldowns stay.
  Status disable(std::string_view key_id);
  Status enable(std::string_view key_id);

  // A cooldown stored before a restart: the key (or the key for `model`, "" = key-wide) cools
  // until the wall time `until`, counted on this pool's clock from now; never shortens one the
  // key has. NotFound for an unknown key.
  Status restore_cooldown(std::string_view key_id, std::string_view model, WallTime until,
                          CooldownReason reason);

  std::vector<KeySnapshot> snapshot() const;
  std::optional<KeySnapshot> inspect(std::string_view key_id) const;

  // ------------------------------------------------------------- shared limits (cluster/)
  // When several gateways share the keys' limits, a limiter elsewhere checks and reserves them
  // in one atomic step over every gateway (DESIGN.md invariant 13); the pool keeps its own view.
  //
  // The keys that this pool could use for `request` ignoring their limits (not dead, disabled or
  // cooling, key-wide or for the model), in the order to try them: the session's key first,
  // then a rotation that starts one key later on every call. Empty when none; `none` (if given)
  // then says why and when the first may be usable.
  // The views name keys of this pool (or of the pool it handed its keys over to) and stay valid
  // as long as this pool.
  std::vector<std::string_view> shared_candidates(const AcquireRequest& request,
                                                  NoKey* none = nullptr);
  // A lease on key `key_id` counted in this pool's view (in flight, windows, snapshot) without
  // checking the local limits, which the caller reserved elsewhere. NoKey when the key is unknown
  // or became dead, disabled or cooling meanwhile.
  AcquireResult acquire_on(std::string_view key_id, const AcquireRequest& request);

  std::vector<KeyUsage> export_usage() const;
  // Adds stored daily usage (still inside the current day or rolling 24 h) to the windows.
  // Unknown key ids are skipped and reported as NotFound after the others were applied.
  Status import_usage(const std::vector<KeyUsage>& usage);

 private:
  std::shared_ptr<detail::Core> core_;
};

}  // namespace switchboard::keys
