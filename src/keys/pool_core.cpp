// detail::Core, the hot path: construction, key selection and acquisition, completion and
// cooldowns (pool_core.h has the class and its design notes); and Lease, which that path creates
// and ends, defined here so that its moves and destructor inline into it.
#include "keys/pool_core.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "common/log.h"

namespace switchboard::keys {
namespace detail {
namespace {

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

Core::Core(const ProviderConfig& config, Clock& clock, const KeyPoolOptions& options)
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

AcquireResult Core::acquire(std::string_view model, int64_t est, std::string_view session) {
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

AcquireResult Core::try_acquire(std::string_view model_name, int64_t est, std::string_view session,
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

void Core::prime(Shard& s, uint32_t index) {
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

int32_t Core::intern(std::string_view model) {
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

std::string Core::model_name_of(int32_t model) {
  if (model < 0) return {};
  std::lock_guard l(intern_mu_);
  return static_cast<size_t>(model) < model_names_.size() ? model_names_[static_cast<size_t>(model)]
                                                          : std::string();
}

std::vector<std::string> Core::model_names() {
  std::lock_guard l(intern_mu_);
  return model_names_;
}

bool Core::eligible(KeySlot& k, int32_t model, int64_t est, const Now& t) {
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

int Core::propose(Shard& s, const Now& t) {
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

void Core::remember_session(std::string_view session, uint32_t key, const Now& t) {
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

Lease Core::grant(KeySlot& k, int32_t model, int64_t est, const Now& t) {
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

NoKey Core::earliest(int32_t model, int64_t est, const Now& now) {
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

void Core::complete_at(uint32_t key, int32_t model, const std::string* model_name,
                       const Lease& lease, const Outcome& outcome, EndReport* report) {
  RateLimitInfo info;
  if (!outcome.headers.empty()) info = parse_rate_limit_headers(outcome.headers, clock_.wall_now());
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
      next->complete_at(next_key, -1, &name, lease, outcome, report);
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
    if (report != nullptr) {
      report->request_counted = keep_request;
      report->tokens_counted = tokens;
      if (cooled) {
        const bool model_scope =
            model >= 0 && !outcome.key_wide && static_cast<size_t>(model) < k.model_cd.size();
        const ScopeCooldown& scope = model_scope ? k.model_cd[static_cast<size_t>(model)] : k.cd;
        report->cooldown = Nanos(std::max<int64_t>(0, scope.until - t.mono));
        report->cooldown_reason = scope.reason;
        if (model_scope) report->cooldown_model = model_name_of(model);
      }
    }
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

bool Core::apply_outcome(KeySlot& k, int32_t model, const Outcome& o, const RateLimitInfo& info,
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

bool Core::extend(KeySlot& k, ScopeCooldown& scope, int64_t now, int64_t base_ns,
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
  return complete(outcome, nullptr);
}

bool Lease::complete(const Outcome& outcome, EndReport* report) {
  if (core_ == nullptr) return false;
  detail::Core* core = std::exchange(core_, nullptr);
  core->complete(*this, outcome, report);
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

}  // namespace switchboard::keys
