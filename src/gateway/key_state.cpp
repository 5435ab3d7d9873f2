// Key state across restarts (issue 25): cooldowns and the operator's disabled marks are written
// when they change and put back at start; day windows are counted back from the usage journal.
#include <map>

#include "common/log.h"
#include "gateway/runtime.h"

namespace switchboard::gateway {

void persist_key_state(Runtime& rt, keys::KeyPool& pool, std::string_view key_id) {
  if (!rt.store) return;
  auto k = pool.inspect(key_id);
  if (!k) return;
  const WallTime now = rt.clock.wall_now();
  store::KeyStateEvent e;
  e.key_id = k->id;
  e.state = std::string(keys::to_string(k->state));
  if (k->cooldown_remaining.count() > 0) {
    e.cooldown_until = now + k->cooldown_remaining;
    e.reason = std::string(keys::to_string(k->cooldown_reason));
  }
  e.updated = now;
  rt.store->enqueue(e);
  for (const auto& mc : k->model_cooldowns) {
    store::KeyStateEvent m = e;
    m.model = mc.model;
    m.state = "cooling";
    m.cooldown_until = now + mc.remaining;
    m.reason = std::string(keys::to_string(mc.reason));
    rt.store->enqueue(std::move(m));
  }
}

void restore_key_state(Runtime& rt, const Snapshot& snap, const store::LoadedState& loaded) {
  auto pool_of = [&snap](const std::string& key_id) -> keys::KeyPool* {
    ProviderRuntime* pr = snap.provider(key_id.substr(0, key_id.find('#')));
    return pr && pr->pool && pr->pool->inspect(key_id) ? pr->pool.get() : nullptr;
  };
  for (const auto& k : loaded.keys) {
    keys::KeyPool* pool = pool_of(k.key_id);
    if (!pool) continue;  // a key since removed from the configuration
    if (k.model.empty() && k.state == "disabled") {
      (void)pool->disable(k.key_id);
      log::info("keys: {} stays disabled (restored)", k.key_id);
    }
    if (k.cooldown_until != WallTime{}) {
      (void)pool->restore_cooldown(k.key_id, k.model, k.cooldown_until,
                                   keys::cooldown_reason_from(k.reason));
    }
  }
  // Day windows: what each key answered in the last 24 h (a fixed day takes what falls in it).
  if (!rt.store) return;
  auto usage = rt.store->key_day_usage(rt.clock.wall_now() - std::chrono::hours(24));
  if (!usage.ok()) {
    if (usage.status().code() != StatusCode::kNotFound)
      log::warn("key day usage could not be loaded: {}", usage.status().message());
    return;
  }
  std::map<keys::KeyPool*, std::vector<keys::KeyUsage>> per_pool;
  for (const auto& u : *usage) {
    keys::KeyPool* pool = pool_of(u.key_id);
    if (!pool) continue;
    auto& list = per_pool[pool];
    if (list.empty() || list.back().key_id != u.key_id)
      list.push_back(keys::KeyUsage{u.key_id, {}});
    list.back().daily.push_back(keys::UsageBucket{u.minute, u.requests, u.tokens});
  }
  for (auto& [pool, list] : per_pool) (void)pool->import_usage(list);
}

}  // namespace switchboard::gateway
