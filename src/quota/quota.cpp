// QuotaBook (quota.h): provider quotas per UTC period, counted here, seeded from the store and
// shared through the cluster.
#include "quota/quota.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace switchboard::quota {

std::string_view to_string(Level level) {
  switch (level) {
    case Level::kHealthy:
      return "healthy";
    case Level::kWarning:
      return "warning";
    case Level::kCritical:
      return "critical";
    case Level::kExhausted:
      return "exhausted";
  }
  return "healthy";
}

Usage& Usage::operator+=(const Usage& o) {
  requests += o.requests;
  tokens += o.tokens;
  nano_usd += o.nano_usd;
  return *this;
}

Usage& Usage::operator-=(const Usage& o) {
  requests -= o.requests;
  tokens -= o.tokens;
  nano_usd -= o.nano_usd;
  return *this;
}

int64_t to_nano_usd(double usd) {
  if (!(usd > 0)) return 0;  // NaN and negatives count nothing
  return static_cast<int64_t>(std::llround(std::min(usd, 9e6) * 1e9));
}

Period period_at(QuotaPeriod kind, WallTime t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
  char id[48];  // room for any int the compiler can imagine
  if (kind == QuotaPeriod::kMonth) {
    tm.tm_mday = 1;
    std::snprintf(id, sizeof id, "%04d-%02d", tm.tm_year + 1900, tm.tm_mon + 1);
  } else {
    std::snprintf(id, sizeof id, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
  }
  Period p;
  p.start = std::chrono::system_clock::from_time_t(timegm(&tm));
  if (kind == QuotaPeriod::kMonth) {
    tm.tm_mon += 1;  // timegm normalises December + 1 into January of the next year
  } else {
    tm.tm_mday += 1;
  }
  p.end = std::chrono::system_clock::from_time_t(timegm(&tm));
  p.id = id;
  return p;
}

std::string Standing::summary() const {
  const int percent = int(std::floor(std::min(used_ratio, 9.99) * 100.0));
  return std::string(to_string(level)) + " " + std::to_string(percent) + "%";
}

namespace {

int64_t ms_of(WallTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

struct Ratio {
  double value = 0;
  std::string_view measure = "requests";
};

Ratio ratio_of(const QuotaConfig& q, const Usage& u) {
  Ratio r;
  auto consider = [&r](double used, double limit, std::string_view measure) {
    if (limit <= 0) return;
    const double v = used / limit;
    if (v > r.value || r.measure.empty()) {
      r.value = v;
      r.measure = measure;
    }
  };
  r.measure = {};
  consider(double(u.requests), double(q.requests), "requests");
  consider(double(u.tokens), double(q.tokens), "tokens");
  consider(u.usd(), q.usd, "usd");
  if (r.measure.empty()) r.measure = "requests";
  return r;
}

Level level_of(const QuotaConfig& q, double ratio) {
  if (ratio >= 1.0) return Level::kExhausted;
  if (ratio >= q.critical) return Level::kCritical;
  if (ratio >= q.warning) return Level::kWarning;
  return Level::kHealthy;
}

}  // namespace

struct QuotaBook::Entry {
  std::mutex mu;
  QuotaConfig config;  // guarded by mu
  Period period;       // guarded by mu
  // The count is base + in_flight + pending: base is what the store or the cluster said, pending
  // what this gateway added since, in_flight what it is sharing right now.
  Usage base, in_flight, pending;
  Level announced = Level::kHealthy;  // the highest level reported this period
  bool sharing = false;               // a share of this entry is in flight
  std::atomic<bool> enabled{false};
  std::atomic<uint8_t> level{0};
  std::atomic<int64_t> period_end_ms{0};

  Usage used_locked() const { return base + in_flight + pending; }

  // Starts the period holding `now` over when the current one has ended.
  void roll_locked(WallTime now) {
    if (now < period.end && now >= period.start) return;
    period = period_at(config.period, now);
    base = in_flight = pending = Usage{};
    announced = Level::kHealthy;
    period_end_ms.store(ms_of(period.end), std::memory_order_release);
    level.store(uint8_t(Level::kHealthy), std::memory_order_release);
  }

  // Recomputes the level; returns it when it is higher than any reported this period.
  std::optional<Level> update_locked() {
    const Level l = level_of(config, ratio_of(config, used_locked()).value);
    level.store(uint8_t(l), std::memory_order_release);
    if (l <= announced) return std::nullopt;
    announced = l;
    return l;
  }

  Standing standing_locked(std::string_view name) const {
    Standing s;
    s.provider = std::string(name);
    s.config = config;
    s.period = period;
    s.used = used_locked();
    const Ratio r = ratio_of(config, s.used);
    s.used_ratio = r.value;
    s.measure = r.measure;
    s.level = level_of(config, r.value);
    return s;
  }
};

QuotaBook::QuotaBook() = default;
QuotaBook::~QuotaBook() = default;

QuotaBook::Entry* QuotaBook::find(std::string_view provider) const {
  const Table* t = table_.load(std::memory_order_acquire);
  if (t == nullptr) return nullptr;
  auto it = t->find(provider);
  return it == t->end() ? nullptr : it->second;
}

std::vector<std::pair<std::string, QuotaBook::Entry*>> QuotaBook::enabled() const {
  std::vector<std::pair<std::string, Entry*>> list;
  if (const Table* t = table_.load(std::memory_order_acquire))
    for (const auto& [name, e] : *t)
      if (e->enabled.load(std::memory_order_acquire)) list.emplace_back(name, e);
  std::sort(list.begin(), list.end());
  return list;
}

void QuotaBook::configure(const std::vector<ProviderConfig>& providers, WallTime now) {
  std::lock_guard lock(config_mu_);
  const Table* current = table_.load(std::memory_order_acquire);
  auto next = std::make_unique<Table>(current ? *current : Table{});
  bool any = false;
  // Entries are never removed (a request may hold one): a provider without a quota is disabled.
  for (auto& [name, e] : *next) e->enabled.store(false, std::memory_order_release);
  for (const auto& p : providers) {
    if (!p.quota.enabled()) continue;
    any = true;
    Entry*& slot = (*next)[p.name];
    if (slot == nullptr) {
      entries_.push_back(std::make_unique<Entry>());
      slot = entries_.back().get();
    }
    Entry& e = *slot;
    std::lock_guard entry_lock(e.mu);
    const bool kind_changed = e.config.period != p.quota.period;
    e.config = p.quota;
    if (kind_changed) e.period = Period{};  // counted afresh in the new kind of period
    e.roll_locked(now);
    // New thresholds may move the level either way; what was announced stays announced.
    e.level.store(uint8_t(level_of(e.config, ratio_of(e.config, e.used_locked()).value)),
                  std::memory_order_release);
    e.enabled.store(true, std::memory_order_release);
  }
  tables_.push_back(std::move(next));
  table_.store(tables_.back().get(), std::memory_order_release);
  any_.store(any, std::memory_order_release);
}

Level QuotaBook::level(std::string_view provider, WallTime now) const {
  if (!any()) return Level::kHealthy;
  const Entry* e = find(provider);
  if (e == nullptr || !e->enabled.load(std::memory_order_acquire)) return Level::kHealthy;
  // A period that has ended holds nothing of the new one.
  if (ms_of(now) >= e->period_end_ms.load(std::memory_order_acquire)) return Level::kHealthy;
  return Level(e->level.load(std::memory_order_acquire));
}

std::optional<Standing> QuotaBook::standing(std::string_view provider, WallTime now) const {
  Entry* e = find(provider);
  if (e == nullptr || !e->enabled.load(std::memory_order_acquire)) return std::nullopt;
  std::lock_guard lock(e->mu);
  e->roll_locked(now);
  return e->standing_locked(provider);
}

std::vector<Standing> QuotaBook::standings(WallTime now) const {
  std::vector<Standing> out;
  for (auto& [name, e] : enabled()) {
    std::lock_guard lock(e->mu);
    e->roll_locked(now);
    out.push_back(e->standing_locked(name));
  }
  return out;
}

std::optional<Level> QuotaBook::add(std::string_view provider, const Usage& used, WallTime now) {
  if (!any()) return std::nullopt;
  Entry* e = find(provider);
  if (e == nullptr || !e->enabled.load(std::memory_order_acquire)) return std::nullopt;
  std::lock_guard lock(e->mu);
  e->roll_locked(now);
  e->pending += used;
  return e->update_locked();
}

std::optional<Level> QuotaBook::seed(std::string_view provider, const Usage& recorded,
                                     const std::string& period_id, WallTime now) {
  Entry* e = find(provider);
  if (e == nullptr || !e->enabled.load(std::memory_order_acquire)) return std::nullopt;
  std::lock_guard lock(e->mu);
  e->roll_locked(now);
  if (e->period.id != period_id) return std::nullopt;
  e->base += recorded;
  return e->update_locked();
}

std::vector<QuotaBook::Share> QuotaBook::take_shares(WallTime now) {
  std::vector<Share> out;
  for (auto& [name, e] : enabled()) {
    std::lock_guard lock(e->mu);
    if (e->sharing) continue;
    e->roll_locked(now);
    Share s;
    s.provider = name;
    s.period_id = e->period.id;
    s.period_end = e->period.end;
    s.delta = e->pending;
    s.base = e->base;
    e->in_flight = e->pending;
    e->pending = Usage{};
    e->sharing = true;
    out.push_back(std::move(s));
  }
  return out;
}

std::optional<Level> QuotaBook::shared(const Share& sent, const Usage& totals, WallTime now) {
  Entry* e = find(sent.provider);
  if (e == nullptr) return std::nullopt;
  std::lock_guard lock(e->mu);
  e->sharing = false;
  e->roll_locked(now);
  if (e->period.id != sent.period_id) return std::nullopt;  // a period that is over
  e->in_flight = Usage{};
  e->base = totals;
  return e->update_locked();
}

void QuotaBook::unshared(const Share& sent) {
  Entry* e = find(sent.provider);
  if (e == nullptr) return;
  std::lock_guard lock(e->mu);
  e->sharing = false;
  if (e->period.id != sent.period_id) return;
  e->pending += e->in_flight;
  e->in_flight = Usage{};
}

}  // namespace switchboard::quota
