// Provider quotas in the gateway (quotas.h).
#include "gateway/quotas.h"

#include <cstdio>
#include <ctime>
#include <map>

#include "common/json.h"
#include "common/log.h"
#include "common/metrics.h"
#include "gateway/runtime.h"

namespace switchboard::gateway {

namespace {

std::string_view period_name(QuotaPeriod p) {
  return p == QuotaPeriod::kDay ? "day" : "month";
}

std::string utc_text(WallTime t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string limit_text(const quota::Standing& s) {
  char buf[96];
  if (s.measure == "usd") {
    std::snprintf(buf, sizeof buf, "$%.2f of $%.2f", s.used.usd(), s.config.usd);
  } else if (s.measure == "tokens") {
    std::snprintf(buf, sizeof buf, "%lld of %lld tokens", static_cast<long long>(s.used.tokens),
                  static_cast<long long>(s.config.tokens));
  } else {
    std::snprintf(buf, sizeof buf, "%lld of %lld requests", static_cast<long long>(s.used.requests),
                  static_cast<long long>(s.config.requests));
  }
  return buf;
}

// Once per standing and period (QuotaBook reports each crossing once).
void announce(Runtime& rt, std::string_view provider, quota::Level level) {
  auto s = rt.quotas.standing(provider, rt.clock.wall_now());
  if (!s) return;
  const std::string what =
      fmt::format("provider {} quota {}: {} in {} (resets {})", provider, s->summary(),
                  limit_text(*s), s->period.id, utc_text(s->period.end));
  if (level == quota::Level::kExhausted) {
    log::error("{}; its models are skipped until then", what);
  } else if (level == quota::Level::kCritical) {
    log::warn("{}; its models go behind the others of their layers", what);
  } else {
    log::warn("{}", what);
  }
}

}  // namespace

void count_quota(Runtime& rt, std::string_view provider, int64_t tokens, double cost_usd) {
  if (!rt.quotas.any()) return;
  quota::Usage u;
  u.requests = 1;
  u.tokens = std::max<int64_t>(tokens, 0);
  u.nano_usd = quota::to_nano_usd(cost_usd);
  if (auto crossed = rt.quotas.add(provider, u, rt.clock.wall_now()))
    announce(rt, provider, *crossed);
}

void seed_quotas(Runtime& rt) {
  if (!rt.quotas.any() || !rt.store) return;
  const WallTime now = rt.clock.wall_now();
  // One query per kind of period (the month's rows hold the day's).
  std::map<std::string, std::map<std::string, store::ProviderUsage>> by_period;  // id → usage
  for (const auto& s : rt.quotas.standings(now)) {
    if (by_period.count(s.period.id)) continue;
    auto usage = rt.store->provider_usage(s.period.start);
    if (!usage.ok()) {
      if (usage.status().code() != StatusCode::kNotFound)
        log::warn("provider quotas: recorded usage could not be read: {}",
                  usage.status().message());
      by_period[s.period.id];
      continue;
    }
    by_period[s.period.id] = std::move(*usage);
  }
  for (const auto& s : rt.quotas.standings(now)) {
    auto& usage = by_period[s.period.id];
    auto it = usage.find(s.provider);
    if (it == usage.end()) continue;
    quota::Usage u;
    u.requests = it->second.requests;
    u.tokens = it->second.tokens;
    u.nano_usd = quota::to_nano_usd(it->second.cost_usd);
    if (auto crossed = rt.quotas.seed(s.provider, u, s.period.id, now))
      announce(rt, s.provider, *crossed);
  }
}

std::string quota_note(Runtime& rt, std::string_view provider) {
  if (!rt.quotas.any()) return {};
  const WallTime now = rt.clock.wall_now();
  if (rt.quotas.level(provider, now) == quota::Level::kHealthy) return {};
  auto s = rt.quotas.standing(provider, now);
  return s && s->level != quota::Level::kHealthy ? s->summary() : std::string();
}

std::string quota_summary(Runtime& rt, std::string_view provider) {
  if (!rt.quotas.any()) return {};
  auto s = rt.quotas.standing(provider, rt.clock.wall_now());
  return s ? s->summary() : std::string();
}

std::string quotas_json(Runtime& rt) {
  const WallTime now = rt.clock.wall_now();
  std::string out = "{\"quotas\":[";
  bool first = true;
  for (const auto& s : rt.quotas.standings(now)) {
    out += first ? "" : ",";
    first = false;
    out +=
        "{\"provider\":" + json::quote(s.provider) +
        ",\"period\":" + json::quote(period_name(s.config.period)) +
        ",\"period_id\":" + json::quote(s.period.id) +
        ",\"period_start\":" + json::quote(utc_text(s.period.start)) +
        ",\"resets_at\":" + json::quote(utc_text(s.period.end)) +
        ",\"status\":" + json::quote(quota::to_string(s.level)) +
        ",\"used_ratio\":" + json::number(s.used_ratio) + ",\"measure\":" + json::quote(s.measure) +
        ",\"used\":{\"requests\":" + std::to_string(s.used.requests) +
        ",\"tokens\":" + std::to_string(s.used.tokens) + ",\"usd\":" + json::number(s.used.usd()) +
        "},\"limits\":{\"requests\":" + std::to_string(s.config.requests) +
        ",\"tokens\":" + std::to_string(s.config.tokens) +
        ",\"usd\":" + json::number(s.config.usd) +
        "},\"warning\":" + json::number(s.config.warning) +
        ",\"critical\":" + json::number(s.config.critical) + "}";
  }
  return out + "]}";
}

void update_quota_gauges(Runtime& rt) {
  if (!rt.quotas.any()) return;
  static auto& ratio = metrics::gauge_family(
      "switchboard_quota_used_ratio",
      "Used share of the provider's quota this period (the measure nearest its limit)");
  static auto& status =
      metrics::gauge_family("switchboard_quota_status", "1 for the provider quota's standing");
  for (const auto& s : rt.quotas.standings(rt.clock.wall_now())) {
    ratio.Add({{"provider", s.provider}}).Set(s.used_ratio);
    for (auto l : {quota::Level::kHealthy, quota::Level::kWarning, quota::Level::kCritical,
                   quota::Level::kExhausted})
      status.Add({{"provider", s.provider}, {"status", std::string(quota::to_string(l))}})
          .Set(s.level == l ? 1 : 0);
  }
}

// ------------------------------------------------------------------------- SharedQuotas

void SharedQuotas::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      if (cv_.wait_for(lock, interval_, [this] { return stopping_; })) break;
      lock.unlock();
      share_once();
      lock.lock();
    }
  });
}

void SharedQuotas::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  share_once();
}

void SharedQuotas::share_once() {
  if (!rt_.cluster || !rt_.quotas.any()) return;
  const WallTime now = rt_.clock.wall_now();
  // Each provider has at most one share in flight: one still unanswered is left out until it is.
  auto shares = rt_.quotas.take_shares(now);
  if (shares.empty()) return;
  Runtime& rt = rt_;
  rt_.cluster->share_quotas(
      shares, now, [&rt, shares](std::optional<std::vector<quota::Usage>> totals) {
        for (size_t i = 0; i < shares.size(); ++i) {
          if (!totals) {
            rt.quotas.unshared(shares[i]);
            continue;
          }
          if (auto crossed = rt.quotas.shared(shares[i], (*totals)[i], rt.clock.wall_now()))
            announce(rt, shares[i].provider, *crossed);
        }
      });
}

}  // namespace switchboard::gateway
