// detail::Core, the administrative side: enabling and disabling keys, snapshots, daily usage export
// and import, and the hand-over of live key state to a reconfigured pool (pool_core.h has the
// class).
#include "common/log.h"
#include "keys/pool_core.h"

namespace switchboard::keys::detail {

void Core::adopt(Core& old) {
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

Status Core::set_enabled(std::string_view id, bool enabled) {
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

Status Core::restore_cooldown(std::string_view id, std::string_view model, WallTime until,
                              CooldownReason reason) {
  KeySlot* k = find_key(id);
  if (k == nullptr) return Status::not_found("no key " + std::string(id));
  const Now now = read_now(true);
  const int64_t left = ns(until) - now.wall;
  if (left <= 0) return Status::ok_status();
  const int64_t mono_until = now.mono + left;
  const int32_t m = intern(model);  // a leaf lock: before the key's (lock order)
  {
    auto kl = lock(k->mu);
    ScopeCooldown* scope = &k->cd;
    if (m >= 0) {
      if (k->model_cd.size() <= size_t(m)) k->model_cd.resize(size_t(m) + 1);
      scope = &k->model_cd[size_t(m)];
    }
    // Never shortens a deadline the key already has.
    if (mono_until > scope->until) {
      scope->until = mono_until;
      scope->reason = reason;
    }
    k->refresh_hint();
  }
  log::info("keys: {}{}{} cooling {} s more, restored", id, model.empty() ? "" : " for ", model,
            left / 1'000'000'000);
  return Status::ok_status();
}

std::vector<KeySnapshot> Core::snapshot(std::string_view only) {
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

std::vector<KeyUsage> Core::export_usage() {
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

Status Core::import_usage(const std::vector<KeyUsage>& usage) {
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

KeySlot* Core::find_key(std::string_view id) {
  for (size_t i = 0; i < n_; ++i) {
    if (keys_[i].id == id) return &keys_[i];
  }
  return nullptr;
}

}  // namespace switchboard::keys::detail
