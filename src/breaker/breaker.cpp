#include "breaker/breaker.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <iterator>
#include <utility>

#include "common/log.h"
#include "common/metrics.h"

namespace switchboard::breaker {
namespace {

// head_ layout: | generation (18 bits) | state (2 bits) | sequence (44 bits) |
// 44 bits of sequence last 5.5 years at 100k results/s on one breaker; if it ever runs out the
// window is rebased (see record_closed). 18 bits of generation make a permit look current again
// only after 262144 transitions, far longer than any call is in flight.
constexpr int kSeqBits = 44;
constexpr int kStateBits = 2;
constexpr int kGenBits = 64 - kSeqBits - kStateBits;
constexpr uint64_t kSeqMask = (uint64_t{1} << kSeqBits) - 1;
constexpr uint64_t kStateMask = (uint64_t{1} << kStateBits) - 1;
constexpr uint64_t kGenMask = (uint64_t{1} << kGenBits) - 1;

constexpr uint64_t seq_of(uint64_t h) {
  return h & kSeqMask;
}
constexpr BreakerState state_of(uint64_t h) {
  return static_cast<BreakerState>((h >> kSeqBits) & kStateMask);
}
constexpr uint32_t gen_of(uint64_t h) {
  return static_cast<uint32_t>(h >> (kSeqBits + kStateBits));
}
constexpr uint64_t make_head(uint32_t gen, BreakerState s, uint64_t seq) {
  return (uint64_t{gen & kGenMask} << (kSeqBits + kStateBits)) |
         (uint64_t{static_cast<uint8_t>(s)} << kSeqBits) | (seq & kSeqMask);
}

// Ring slot codes (low two bits of a slot; 0 marks an empty slot).
constexpr uint64_t kCodeSuccess = 1;
constexpr uint64_t kCodeSlow = 2;
constexpr uint64_t kCodeFailure = 3;
// A slot whose sequence is this far ahead of a writer's was left by a writer that claimed it
// before a rebase; it is garbage and may be overwritten.
constexpr uint64_t kFarAhead = uint64_t{1} << 40;

constexpr int kMaxWindow = 1 << 16;

int64_t ns_since_epoch(MonoTime t) {
  return std::chrono::duration_cast<Nanos>(t.time_since_epoch()).count();
}

BreakerConfig sanitize(BreakerConfig c) {
  c.window = std::clamp(c.window, 1, kMaxWindow);
  c.min_calls = std::clamp(c.min_calls, 1, c.window);
  c.half_open_probes = std::max(c.half_open_probes, 1);
  // Zero durations would let the lazy state machine cycle open -> half-open -> open forever.
  c.open_ms = std::max<int64_t>(c.open_ms, 1);
  c.max_open_ms = std::max(c.max_open_ms, c.open_ms);
  c.half_open_timeout_ms = std::max<int64_t>(c.half_open_timeout_ms, 1);
  c.slow_call_ms = std::max<int64_t>(c.slow_call_ms, 0);
  if (!(c.open_multiplier >= 1.0)) c.open_multiplier = 1.0;  // also catches NaN
  return c;
}

prometheus::Family<prometheus::Counter>& transitions_family() {
  static auto& f = metrics::counter_family("switchboard_breaker_transitions_total",
                                           "Circuit breaker state transitions");
  return f;
}

prometheus::Family<prometheus::Gauge>& state_family() {
  static auto& f =
      metrics::gauge_family("switchboard_breaker_state", "1 for the breaker's current state");
  return f;
}

}  // namespace

std::string_view to_string(BreakerState s) {
  switch (s) {
    case BreakerState::kClosed:
      return "closed";
    case BreakerState::kOpen:
      return "open";
    case BreakerState::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

std::string_view to_string(TargetKind k) {
  switch (k) {
    case TargetKind::kProvider:
      return "provider";
    case TargetKind::kModel:
      return "model";
    case TargetKind::kKey:
      return "key";
  }
  return "unknown";
}

Verdict classify(OutcomeClass outcome, TargetKind kind, const BreakerConfig& config) {
  switch (outcome) {
    case OutcomeClass::kSuccess:
      return Verdict::kSuccess;
    case OutcomeClass::kServerError:
    case OutcomeClass::kTimeout:
    case OutcomeClass::kConnectionError:
      return Verdict::kFailure;
    case OutcomeClass::kRateLimited:
      return config.count_rate_limits ? Verdict::kFailure : Verdict::kIgnored;
    case OutcomeClass::kAuthFailed:
      return kind == TargetKind::kKey ? Verdict::kFailure : Verdict::kIgnored;
    case OutcomeClass::kClientError:
    case OutcomeClass::kCancelled:
      return Verdict::kIgnored;
  }
  return Verdict::kIgnored;
}

std::string provider_target(std::string_view provider) {
  std::string s = "provider:";
  s += provider;
  return s;
}

std::string model_target(std::string_view provider, std::string_view model) {
  std::string s = "model:";
  s += provider;
  s += '/';
  s += model;
  return s;
}

std::string key_target(std::string_view key_id) {
  std::string s = "key:";
  s += key_id;
  return s;
}

// ---------------------------------------------------------------------------------------------
// Permit

Permit& Permit::operator=(Permit&& other) noexcept {
  if (this != &other) {
    if (breaker_) breaker_->on_result(generation_, probe_, OutcomeClass::kCancelled, Nanos(0));
    breaker_ = std::exchange(other.breaker_, nullptr);
    generation_ = other.generation_;
    probe_ = other.probe_;
  }
  return *this;
}

Permit::~Permit() {
  if (breaker_) breaker_->on_result(generation_, probe_, OutcomeClass::kCancelled, Nanos(0));
}

void Permit::record(OutcomeClass outcome, Nanos latency) {
  if (CircuitBreaker* b = std::exchange(breaker_, nullptr)) {
    b->on_result(generation_, probe_, outcome, latency);
  }
}

// ---------------------------------------------------------------------------------------------
// CircuitBreaker

CircuitBreaker::CircuitBreaker(std::string target, TargetKind kind, const BreakerConfig& config,
                               Clock& clock, std::shared_ptr<const TransitionObserver> observer)
    : target_(std::move(target)),
      kind_(kind),
      config_(sanitize(config)),
      clock_(clock),
      slow_call_ns_(config_.slow_call_ms * 1'000'000),
      observer_(std::move(observer)),
      ring_mask_(std::bit_ceil(static_cast<uint64_t>(config_.window)) - 1),
      head_(make_head(0, BreakerState::kClosed, 0)),
      ring_(std::make_unique<std::atomic<uint64_t>[]>(ring_mask_ + 1)),
      state_gauges_{&state_family().Add({{"target", target_}, {"state", "closed"}}),
                    &state_family().Add({{"target", target_}, {"state", "open"}}),
                    &state_family().Add({{"target", target_}, {"state", "half_open"}})} {
  set_state_gauges(BreakerState::kClosed);
  lock_counted_metric();  // the series exists (at 0) from the first breaker on
}

CircuitBreaker::~CircuitBreaker() = default;

void CircuitBreaker::set_state_gauges(BreakerState current) const {
  for (int i = 0; i < 3; ++i) state_gauges_[i]->Set(i == static_cast<int>(current) ? 1 : 0);
}

namespace {
prometheus::Counter& contended_counter();
}  // namespace

void CircuitBreaker::lock_counted_metric() {
  contended_counter();
}

namespace {
prometheus::Counter& contended_counter() {
  static auto& c = metrics::counter_family("switchboard_breaker_lock_contended_total",
                                           "Breaker lock acquisitions that had to wait")
                       .Add({});
  return c;
}
}  // namespace

std::unique_lock<std::mutex> CircuitBreaker::lock_counted(std::mutex& mu) {
  std::unique_lock<std::mutex> lock(mu, std::try_to_lock);
  if (!lock.owns_lock()) {
    contended_counter().Increment();
    lock.lock();
  }
  return lock;
}

Permit CircuitBreaker::try_acquire() {
  const uint64_t h = head_.load(std::memory_order_acquire);
  const BreakerState s = state_of(h);
  if (s == BreakerState::kClosed) return Permit(this, gen_of(h), false);
  if (s == BreakerState::kOpen &&
      ns_since_epoch(clock_.now()) < open_until_ns_.load(std::memory_order_acquire)) {
    return Permit();  // the common rejection: no lock
  }

  TransitionLog log;
  Permit permit;
  {
    auto lock = lock_counted(mu_);
    advance_locked(clock_.now(), log);
    const uint64_t cur = head_.load(std::memory_order_relaxed);
    switch (state_of(cur)) {
      case BreakerState::kClosed:
        permit = Permit(this, gen_of(cur), false);
        break;
      case BreakerState::kHalfOpen:
        if (probes_admitted_ < config_.half_open_probes) {
          ++probes_admitted_;
          permit = Permit(this, gen_of(cur), true);
        }
        break;
      case BreakerState::kOpen:
        break;
    }
  }
  emit(log);
  return permit;
}

BreakerState CircuitBreaker::state() const {
  const uint64_t h = head_.load(std::memory_order_acquire);
  const BreakerState s = state_of(h);
  if (s == BreakerState::kClosed) return s;  // nothing time-based leaves closed
  const int64_t now = ns_since_epoch(clock_.now());
  if (s == BreakerState::kOpen && now < open_until_ns_.load(std::memory_order_acquire)) return s;
  if (s == BreakerState::kHalfOpen && now < half_open_until_ns_.load(std::memory_order_acquire)) {
    return s;
  }
  TransitionLog log;
  BreakerState result;
  {
    auto lock = lock_counted(mu_);
    advance_locked(clock_.now(), log);
    result = state_of(head_.load(std::memory_order_relaxed));
  }
  emit(log);
  return result;
}

BreakerSnapshot CircuitBreaker::snapshot() const {
  BreakerSnapshot snap;
  snap.target = target_;
  snap.kind = kind_;
  TransitionLog log;
  {
    auto lock = lock_counted(mu_);
    const MonoTime now = clock_.now();
    advance_locked(now, log);
    snap.state = state_of(head_.load(std::memory_order_relaxed));
    snap.consecutive_openings = consecutive_openings_;
    if (snap.state == BreakerState::kOpen) {
      const int64_t left = open_until_ns_.load(std::memory_order_relaxed) - ns_since_epoch(now);
      snap.until_half_open = std::chrono::ceil<Millis>(Nanos(std::max<int64_t>(left, 0)));
      snap.open_duration = std::chrono::duration_cast<Millis>(Nanos(open_duration_ns_));
    }
    if (snap.state == BreakerState::kHalfOpen) {
      snap.probes_admitted = probes_admitted_;
      snap.probes_succeeded = probes_succeeded_;
    }
  }
  emit(log);
  const WindowCounts c = count_window();
  snap.calls_in_window = c.calls;
  snap.failures_in_window = c.failures;
  snap.slow_in_window = c.slow;
  if (c.calls > 0) {
    snap.failure_rate = static_cast<double>(c.failures) / c.calls;
    snap.slow_call_rate = static_cast<double>(c.slow) / c.calls;
  }
  return snap;
}

void CircuitBreaker::reset() {
  TransitionLog log;
  {
    auto lock = lock_counted(mu_);
    transition_locked(BreakerState::kClosed, clock_.now(), log);
  }
  emit(log);
}

bool CircuitBreaker::open_from_peer() {
  TransitionLog log;
  bool opened = false;
  {
    auto lock = lock_counted(mu_);
    const MonoTime now = clock_.now();
    advance_locked(now, log);
    if (state_of(head_.load(std::memory_order_relaxed)) != BreakerState::kOpen) {
      transition_locked(BreakerState::kOpen, now, log);
      opened = true;
    }
  }
  emit(log);
  return opened;
}

void CircuitBreaker::on_result(uint32_t generation, bool probe, OutcomeClass outcome,
                               Nanos latency) {
  const Verdict verdict = classify(outcome, kind_, config_);
  const bool slow = verdict == Verdict::kSuccess && latency.count() > slow_call_ns_;
  if (!probe) {
    // A closed-state permit: ignored outcomes leave no trace; the rest go into the window.
    if (verdict == Verdict::kIgnored) return;
    record_closed(generation, verdict == Verdict::kFailure ? kCodeFailure
                              : slow                       ? kCodeSlow
                                                           : kCodeSuccess);
    return;
  }
  TransitionLog log;
  {
    auto lock = lock_counted(mu_);
    record_slow_path(generation, verdict, slow, log);
  }
  emit(log);
}

// The lock-free closed-state path. A result is first given a sequence number by a CAS on head_
// that succeeds only while the permit's generation is current: that CAS is the moment the result
// counts, so a permit from an earlier generation can never claim a place in the current window.
// The result is then stored in its ring slot. Slots are written out of order under contention,
// so a writer never replaces a newer result, and readers only count slots whose sequence lies in
// the window [max(window_start, head - window), head).
void CircuitBreaker::record_closed(uint32_t generation, uint64_t code) {
  uint64_t h = head_.load(std::memory_order_acquire);
  for (;;) {
    // The generation identifies the state, so a match also means the breaker is still closed.
    if (gen_of(h) != generation) return;  // stale: the breaker moved on since the permit
    if (seq_of(h) == kSeqMask) {
      // Out of sequence numbers (after ~1.7e13 results): start a fresh window in a new
      // generation. This result, like any in flight, then belongs to the old one and is dropped.
      auto lock = lock_counted(mu_);
      const uint64_t cur = head_.load(std::memory_order_relaxed);
      if (cur == h) {
        for (uint64_t i = 0; i <= ring_mask_; ++i) ring_[i].store(0, std::memory_order_relaxed);
        window_start_.store(0, std::memory_order_relaxed);
        head_.store(make_head(gen_of(h) + 1, BreakerState::kClosed, 0), std::memory_order_release);
      }
      return;
    }
    if (head_.compare_exchange_weak(h, h + 1, std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
      break;
    }
  }
  const uint64_t seq = seq_of(h);
  const uint64_t value = (seq << 2) | code;
  std::atomic<uint64_t>& slot = ring_[seq & ring_mask_];
  uint64_t old = slot.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t old_seq = old >> 2;
    if (old != 0 && old_seq > seq && old_seq - seq < kFarAhead) break;  // a newer lap won
    // seq_cst so that of two concurrent failures at least one sees the other when it counts.
    if (slot.compare_exchange_weak(old, value, std::memory_order_seq_cst,
                                   std::memory_order_relaxed)) {
      break;
    }
  }

  // Successes can only lower the rates, except while the window is still filling, when one can
  // bring the count up to min_calls: only then and after failures or slow calls is it counted.
  if (code == kCodeSuccess && seq - window_start_.load(std::memory_order_acquire) >=
                                  static_cast<uint64_t>(config_.window)) {
    return;
  }
  if (!should_trip(count_window())) return;

  TransitionLog log;
  {
    auto lock = lock_counted(mu_);
    const uint64_t cur = head_.load(std::memory_order_relaxed);
    // Another result may already have opened it (then the generation moved on).
    if (gen_of(cur) == generation && state_of(cur) == BreakerState::kClosed) {
      transition_locked(BreakerState::kOpen, clock_.now(), log);
    }
  }
  emit(log);
}

void CircuitBreaker::record_slow_path(uint32_t generation, Verdict verdict, bool slow,
                                      TransitionLog& log) {
  advance_locked(clock_.now(), log);  // a half-open period may have timed out meanwhile
  const uint64_t h = head_.load(std::memory_order_relaxed);
  if (gen_of(h) != generation || state_of(h) != BreakerState::kHalfOpen) return;  // stale
  switch (verdict) {
    case Verdict::kIgnored:
      // The probe told us nothing about the target: hand its slot to another caller.
      --probes_admitted_;
      return;
    case Verdict::kFailure:
      transition_locked(BreakerState::kOpen, clock_.now(), log);
      return;
    case Verdict::kSuccess:
      ++probes_succeeded_;
      if (slow) ++probes_slow_;
      if (probes_succeeded_ >= config_.half_open_probes) {
        const bool too_slow =
            probes_slow_ > 0 &&
            static_cast<double>(probes_slow_) / probes_succeeded_ >= config_.slow_call_rate;
        transition_locked(too_slow ? BreakerState::kOpen : BreakerState::kClosed, clock_.now(),
                          log);
      }
      return;
  }
}

bool CircuitBreaker::should_trip(const WindowCounts& c) const {
  if (c.calls < config_.min_calls || c.calls == 0) return false;
  const double calls = c.calls;
  // A zero count never trips, even with a threshold of 0.
  return (c.failures > 0 && c.failures / calls >= config_.failure_rate) ||
         (c.slow > 0 && c.slow / calls >= config_.slow_call_rate);
}

CircuitBreaker::WindowCounts CircuitBreaker::count_window() const {
  const uint64_t end = seq_of(head_.load(std::memory_order_seq_cst));
  const uint64_t start = window_start_.load(std::memory_order_acquire);
  const uint64_t window = static_cast<uint64_t>(config_.window);
  const uint64_t lo = std::max(start, end > window ? end - window : 0);
  WindowCounts c;
  for (uint64_t i = 0; i <= ring_mask_; ++i) {
    const uint64_t v = ring_[i].load(std::memory_order_seq_cst);
    const uint64_t s = v >> 2;
    if (v == 0 || s < lo || s >= end) continue;
    ++c.calls;
    const uint64_t code = v & 3;
    c.failures += code == kCodeFailure;
    c.slow += code == kCodeSlow;
  }
  return c;
}

void CircuitBreaker::advance_locked(MonoTime now, TransitionLog& log) const {
  const int64_t t = ns_since_epoch(now);
  // Bounded: each transition sets a deadline in the future (durations are at least 1 ms).
  for (int i = 0; i < 4; ++i) {
    const BreakerState s = state_of(head_.load(std::memory_order_relaxed));
    if (s == BreakerState::kOpen && t >= open_until_ns_.load(std::memory_order_relaxed)) {
      transition_locked(BreakerState::kHalfOpen, now, log);
    } else if (s == BreakerState::kHalfOpen &&
               t >= half_open_until_ns_.load(std::memory_order_relaxed)) {
      // Probes never reported back: treat as a failed half-open, so the open time grows.
      transition_locked(BreakerState::kOpen, now, log);
    } else {
      return;
    }
  }
}

Nanos CircuitBreaker::next_open_duration_locked() const {
  // consecutive_openings_ is already counting this opening.
  const double base = static_cast<double>(config_.open_ms);
  const double cap = static_cast<double>(config_.max_open_ms);
  const double grown = base * std::pow(config_.open_multiplier, consecutive_openings_ - 1);
  const double ms = std::min(grown, cap);  // pow overflowing to inf is capped here too
  return std::chrono::duration_cast<Nanos>(std::chrono::duration<double, std::milli>(ms));
}

void CircuitBreaker::transition_locked(BreakerState to, MonoTime now, TransitionLog& log) const {
  const int64_t t = ns_since_epoch(now);
  uint64_t h = head_.load(std::memory_order_relaxed);
  const BreakerState from = state_of(h);
  switch (to) {
    case BreakerState::kOpen:
      ++consecutive_openings_;
      open_duration_ns_ = next_open_duration_locked().count();
      open_until_ns_.store(t + open_duration_ns_, std::memory_order_relaxed);
      break;
    case BreakerState::kHalfOpen:
      probes_admitted_ = probes_succeeded_ = probes_slow_ = 0;
      // Counted from now, not from when the open time ended: probes can only start now.
      half_open_until_ns_.store(t + config_.half_open_timeout_ms * 1'000'000,
                                std::memory_order_relaxed);
      break;
    case BreakerState::kClosed:
      consecutive_openings_ = 0;
      open_duration_ns_ = 0;
      // Fresh window: results before this sequence number no longer count. Outside closed no
      // result claims a sequence number, so it is stable here (except for reset() while closed,
      // handled after the switch below).
      window_start_.store(seq_of(h), std::memory_order_relaxed);
      break;
  }
  // The release publishes the deadlines and window_start_ stored above with the new state.
  for (;;) {
    const uint64_t next = make_head(gen_of(h) + 1, to, seq_of(h));
    if (head_.compare_exchange_weak(h, next, std::memory_order_acq_rel,
                                    std::memory_order_relaxed)) {
      if (to == BreakerState::kClosed) {
        window_start_.store(seq_of(h), std::memory_order_release);
      }
      break;
    }
  }
  set_state_gauges(to);
  if (from != to) {
    prometheus::Counter*& c = transitions_[static_cast<int>(from)][static_cast<int>(to)];
    if (c == nullptr) {
      c = &transitions_family().Add({{"target", target_},
                                     {"from", std::string(to_string(from))},
                                     {"to", std::string(to_string(to))}});
    }
    c->Increment();
    if (log.count < static_cast<int>(std::size(log.items))) log.items[log.count++] = {from, to};
  }
}

void CircuitBreaker::emit(const TransitionLog& log) const {
  for (int i = 0; i < log.count; ++i) {
    const Transition& t = log.items[i];
    if (t.to == BreakerState::kOpen) {
      log::warn("breaker {}: {} -> open", target_, to_string(t.from));
    } else {
      log::info("breaker {}: {} -> {}", target_, to_string(t.from), to_string(t.to));
    }
    if (observer_) (*observer_)(target_, t.from, t.to);
  }
}

// ---------------------------------------------------------------------------------------------
// BreakerRegistry

namespace {
BreakerRegistry::PerProvider per_provider_from(const Config& config) {
  BreakerRegistry::PerProvider m;
  for (const ProviderConfig& p : config.providers) m.emplace(p.name, p.breaker);
  return m;
}
}  // namespace

BreakerRegistry::BreakerRegistry(Clock& clock, BreakerConfig defaults, PerProvider per_provider,
                                 std::shared_ptr<const TransitionObserver> observer)
    : clock_(clock),
      defaults_(defaults),
      per_provider_(std::move(per_provider)),
      observer_(std::move(observer)) {}

BreakerRegistry::BreakerRegistry(Clock& clock, const Config& config,
                                 std::shared_ptr<const TransitionObserver> observer)
    : BreakerRegistry(clock, config.breaker, per_provider_from(config), std::move(observer)) {}

const BreakerConfig& BreakerRegistry::config_for(std::string_view provider) const {
  auto it = per_provider_.find(provider);
  return it == per_provider_.end() ? defaults_ : it->second;
}

BreakerRegistry::ProviderEntry& BreakerRegistry::entry_locked(std::string_view provider) {
  auto it = providers_.find(provider);
  if (it == providers_.end()) it = providers_.emplace(std::string(provider), ProviderEntry{}).first;
  return it->second;
}

std::shared_ptr<CircuitBreaker> BreakerRegistry::provider(std::string_view provider) {
  {
    std::shared_lock lock(mu_);
    auto it = providers_.find(provider);
    if (it != providers_.end() && it->second.provider) return it->second.provider;
  }
  std::unique_lock lock(mu_);
  ProviderEntry& e = entry_locked(provider);
  if (!e.provider) {
    std::string target = provider_target(provider);
    auto& slot = by_target_[target];
    if (!slot) {
      slot = std::make_shared<CircuitBreaker>(std::move(target), TargetKind::kProvider,
                                              config_for(provider), clock_, observer_);
    }
    e.provider = slot;
  }
  return e.provider;
}

std::shared_ptr<CircuitBreaker> BreakerRegistry::model(std::string_view provider,
                                                       std::string_view model) {
  {
    std::shared_lock lock(mu_);
    auto it = providers_.find(provider);
    if (it != providers_.end()) {
      auto m = it->second.models.find(model);
      if (m != it->second.models.end()) return m->second;
    }
  }
  std::unique_lock lock(mu_);
  BreakerMap& models = entry_locked(provider).models;
  auto m = models.find(model);
  if (m != models.end()) return m->second;
  std::string target = model_target(provider, model);
  auto& slot = by_target_[target];
  if (!slot) {
    slot = std::make_shared<CircuitBreaker>(std::move(target), TargetKind::kModel,
                                            config_for(provider), clock_, observer_);
  }
  models.emplace(std::string(model), slot);
  return slot;
}

std::shared_ptr<CircuitBreaker> BreakerRegistry::key(std::string_view provider,
                                                     std::string_view key_id) {
  {
    std::shared_lock lock(mu_);
    auto it = providers_.find(provider);
    if (it != providers_.end()) {
      auto k = it->second.keys.find(key_id);
      if (k != it->second.keys.end()) return k->second;
    }
  }
  std::unique_lock lock(mu_);
  BreakerMap& keys = entry_locked(provider).keys;
  auto k = keys.find(key_id);
  if (k != keys.end()) return k->second;
  std::string target = key_target(key_id);
  auto& slot = by_target_[target];
  if (!slot) {
    slot = std::make_shared<CircuitBreaker>(std::move(target), TargetKind::kKey,
                                            config_for(provider), clock_, observer_);
  }
  keys.emplace(std::string(key_id), slot);
  return slot;
}

std::shared_ptr<CircuitBreaker> BreakerRegistry::find(std::string_view target) const {
  std::shared_lock lock(mu_);
  auto it = by_target_.find(target);
  return it == by_target_.end() ? nullptr : it->second;
}

std::vector<BreakerSnapshot> BreakerRegistry::snapshot() const {
  std::vector<std::shared_ptr<CircuitBreaker>> all;
  {
    std::shared_lock lock(mu_);
    all.reserve(by_target_.size());
    for (const auto& [name, b] : by_target_) all.push_back(b);
  }
  // Outside the registry lock: snapshots take each breaker's mutex and may log transitions.
  std::vector<BreakerSnapshot> out;
  out.reserve(all.size());
  for (const auto& b : all) out.push_back(b->snapshot());
  return out;
}

}  // namespace switchboard::breaker
