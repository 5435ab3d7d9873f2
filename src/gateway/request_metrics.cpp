// Request metrics (RequestMetrics in runtime.h) and the gauges read at scrape time.
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <unistd.h>

#include <cstdio>

#include "common/metrics.h"
#include "gateway/quotas.h"
#include "gateway/runtime.h"

namespace switchboard::gateway {

// ---- metrics
// -------------------------------------------------------------------------------------

namespace {
std::atomic<uint64_t> g_request_metrics_ids{1};
}  // namespace

struct RequestMetrics::Handles {
  Handles(prometheus::Counter* r, prometheus::Histogram* l)
      : requests(r), latency(l, metrics::latency_buckets_seconds()) {}
  metrics::ShardedCounter requests;
  metrics::ShardedHistogram latency;
};

RequestMetrics::RequestMetrics()
    : id_(g_request_metrics_ids.fetch_add(1, std::memory_order_relaxed)),
      attempts_(&metrics::counter_family("switchboard_gateway_attempts_total",
                                         "Upstream attempts made for client requests")
                     .Add({})),
      fallbacks_(&metrics::counter_family("switchboard_gateway_fallbacks_total",
                                          "Requests answered by a layer after the first")
                      .Add({})) {}

RequestMetrics::~RequestMetrics() = default;

RequestMetrics::Handles& RequestMetrics::handles(const std::string& key, std::string_view route,
                                                 std::string_view model, std::string_view provider,
                                                 std::string_view status_class) {
  std::lock_guard lock(mu_);
  auto it = all_.find(key);
  if (it == all_.end()) {
    std::map<std::string, std::string> labels = {{"route", std::string(route)},
                                                 {"model", std::string(model)},
                                                 {"provider", std::string(provider)},
                                                 {"status", std::string(status_class)}};
    auto h = std::make_unique<Handles>(
        &metrics::counter_family("switchboard_gateway_requests_total", "Client requests by outcome")
             .Add(labels),
        &metrics::histogram_family("switchboard_gateway_request_duration_seconds",
                                   "Client request latency, all attempts included")
             .Add(labels, metrics::latency_buckets_seconds()));
    it = all_.emplace(key, std::move(h)).first;
  }
  return *it->second;
}

void RequestMetrics::observe(std::string_view route, std::string_view model,
                             std::string_view provider, std::string_view status_class,
                             double seconds, int attempts, bool fallback) {
  // Per thread: this instance's combinations seen so far. The key buffer is reused, so a lookup
  // allocates nothing once warm.
  struct Cache {
    uint64_t owner = 0;
    std::string key;
    std::unordered_map<std::string, Handles*> seen;
  };
  thread_local Cache cache;
  if (cache.owner != id_) {
    cache.owner = id_;
    cache.seen.clear();
  }
  std::string& key = cache.key;
  key.assign(route);
  key += '\x1f';
  key.append(model);
  key += '\x1f';
  key.append(provider);
  key += '\x1f';
  key.append(status_class);
  auto it = cache.seen.find(key);
  if (it == cache.seen.end()) {
    it = cache.seen.emplace(key, &handles(key, route, model, provider, status_class)).first;
  }
  it->second->requests.add();
  it->second->latency.observe(seconds);
  attempts_.add(static_cast<uint64_t>(std::max(attempts, 0)));
  if (fallback) fallbacks_.add();
}

// Gauges read at scrape time: resident memory, and each key's state, in-flight and cooldown.
void update_gauges(Runtime& rt) {
  static auto& rss =
      metrics::gauge_family("switchboard_process_resident_memory_bytes", "Resident set size")
          .Add({});
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    long pages = 0, resident = 0;
    if (std::fscanf(f, "%ld %ld", &pages, &resident) == 2)
      rss.Set(double(resident) * double(sysconf(_SC_PAGESIZE)));
    std::fclose(f);
  }
  static auto& state =
      metrics::gauge_family("switchboard_keys_state", "1 for the key's current state");
  static auto& in_flight =
      metrics::gauge_family("switchboard_keys_in_flight_requests", "Leases in flight per key");
  static auto& cooldown = metrics::gauge_family("switchboard_keys_cooldown_remaining_seconds",
                                                "Time until the key's cooldown ends");
  for (auto& [name, pr] : rt.snapshot()->providers) {
    for (const auto& k : pr->pool->snapshot()) {
      for (auto s : {keys::KeyState::kHealthy, keys::KeyState::kCooling, keys::KeyState::kDisabled,
                     keys::KeyState::kDead}) {
        state.Add({{"key", k.id}, {"state", std::string(keys::to_string(s))}})
            .Set(k.state == s ? 1 : 0);
      }
      in_flight.Add({{"key", k.id}}).Set(double(k.in_flight));
      cooldown.Add({{"key", k.id}}).Set(double(k.cooldown_remaining.count()) / 1000.0);
    }
  }
  update_quota_gauges(rt);
}

}  // namespace switchboard::gateway
