// Quota: provider-wide usage quotas per UTC calendar period (DESIGN.md `providers.*.quota`).
//
// A QuotaBook counts, per provider with a quota, the upstream calls of the current period (a UTC
// day from 00:00 or a UTC month from the 1st): requests, tokens (prompt + completion) and spend
// at the models' prices, over every key. The count starts from what the store recorded earlier
// in the period (seed), so a restart keeps it; with a cluster, every gateway's counts meet in
// Redis (take_shares / shared), so N gateways count one quota.
//
// A provider's standing is the highest of its measures' used ratios (used / limit):
//   healthy < warning <= warning < critical <= critical < 1 <= exhausted.
// The router moves a critical provider's models behind the other candidates of their layer and
// skips an exhausted one's (like an open breaker); a crossing into a higher standing is reported
// once per period (add and seed return it) so that it is logged once.
//
// Periods roll over at the UTC boundary of the time passed in: the count of a new period starts
// at zero whatever the previous one held. Times are parameters (no clock inside), so tests run on
// simulated time.
//
// Thread-safety: every method may be called from any thread. level() is lock-free (it is on the
// request path: the provider table is immutable once published, and a reconfiguration publishes
// a new one); the rest take the provider's short mutex, or the book's to (re)configure.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/config.h"

namespace switchboard::quota {

enum class Level : uint8_t { kHealthy, kWarning, kCritical, kExhausted };
std::string_view to_string(Level level);

// Amounts of one provider's use. Spend is in integer nano-USD so that sums are exact (in Redis
// too) and the order in which gateways add them does not matter.
struct Usage {
  int64_t requests = 0;
  int64_t tokens = 0;
  int64_t nano_usd = 0;

  double usd() const { return double(nano_usd) / 1e9; }
  bool empty() const { return requests == 0 && tokens == 0 && nano_usd == 0; }
  Usage& operator+=(const Usage& o);
  Usage& operator-=(const Usage& o);
  friend Usage operator+(Usage a, const Usage& b) { return a += b; }
  friend bool operator==(const Usage&, const Usage&) = default;
};
// Clamped to [0, $9M] (Lua numbers stay exact below 2^53 nano-USD).
int64_t to_nano_usd(double usd);

// The UTC calendar period holding `t`: [start, end), and an id naming it ("2026-12" for a
// month, "2026-12-05" for a day).
struct Period {
  WallTime start;
  WallTime end;
  std::string id;
};
Period period_at(QuotaPeriod kind, WallTime t);

// A provider's quota as it stands.
struct Standing {
  std::string provider;
  QuotaConfig config;
  Period period;
  Usage used;
  double used_ratio = 0;     // the highest of the measures' used / limit
  std::string_view measure;  // the measure that ratio is of: "requests", "tokens" or "usd"
  Level level = Level::kHealthy;
  // "warning 83%": the level and the used ratio in whole percent (rounded down).
  std::string summary() const;
};

class QuotaBook {
 public:
  QuotaBook();
  QuotaBook(const QuotaBook&) = delete;
  QuotaBook& operator=(const QuotaBook&) = delete;
  ~QuotaBook();

  // The providers' quotas (at start and on reloads): a provider that keeps a quota keeps its
  // count (a change of period kind starts it over); one without a quota is no longer counted.
  void configure(const std::vector<ProviderConfig>& providers, WallTime now);
  // True when some provider has a quota (nothing else is worth asking otherwise).
  bool any() const { return any_.load(std::memory_order_acquire); }

  // The provider's level at `now` (healthy for one without a quota). Lock-free.
  Level level(std::string_view provider, WallTime now) const;
  std::optional<Standing> standing(std::string_view provider, WallTime now) const;
  std::vector<Standing> standings(WallTime now) const;  // by provider name

  // Counts one upstream call at `now`. Returns the level the provider crossed into when it is
  // higher than any reported before in this period.
  std::optional<Level> add(std::string_view provider, const Usage& used, WallTime now);
  // What the store recorded for the provider in the period `period_id` before this process
  // started (ignored when that is not the current period): added to the count.
  std::optional<Level> seed(std::string_view provider, const Usage& recorded,
                            const std::string& period_id, WallTime now);

  // ---- Sharing the counts with other gateways (a cluster) --------------------------------
  // One provider's count not yet shared: `delta` was counted here since the last share, `base`
  // is what this book held before it (the count to start a period from where none is shared).
  struct Share {
    std::string provider;
    std::string period_id;
    WallTime period_end;
    Usage delta;
    Usage base;
  };
  // Takes every provider's unshared count (one share in flight per provider: call again only
  // after shared() or unshared() for each). Providers with nothing new are included too, so
  // that their totals are refreshed.
  std::vector<Share> take_shares(WallTime now);
  // The shared totals of `sent`'s period, `sent.delta` included: they replace this book's count
  // (ignored once the period is over). Returns a crossing like add().
  std::optional<Level> shared(const Share& sent, const Usage& totals, WallTime now);
  // `sent` did not reach the others: counted again in the next share.
  void unshared(const Share& sent);

 private:
  struct Entry;
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using Table = std::unordered_map<std::string, Entry*, Hash, std::equal_to<>>;
  Entry* find(std::string_view provider) const;
  // The providers with a quota now (enabled entries), sorted by name.
  std::vector<std::pair<std::string, Entry*>> enabled() const;

  std::mutex config_mu_;  // one configure() at a time
  // Every entry and table ever made, kept for the book's life: a reader may still hold one
  // (reconfigurations are an operator's reloads, so these stay few).
  std::vector<std::unique_ptr<Entry>> entries_;
  std::vector<std::unique_ptr<const Table>> tables_;
  std::atomic<const Table*> table_{nullptr};
  std::atomic<bool> any_{false};
};

}  // namespace switchboard::quota
