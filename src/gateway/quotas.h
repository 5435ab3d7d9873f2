// Provider quotas in the gateway (internal to the gateway module; the counting is
// quota/quota.h's QuotaBook, held by the Runtime): each upstream call counted, the period's
// usage read back from the store at start, the `x-switchboard-quota` header, GET /admin/quotas,
// the switchboard_quota_* gauges, and SharedQuotas, which meets the other gateways' counts in
// the cluster's Redis.
//
// Thread-safety: the free functions may be called from any thread. SharedQuotas: start/stop
// from one controlling thread; its own thread shares.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "common/clock.h"

namespace switchboard::gateway {

struct Runtime;

// Counts one upstream call of `provider`: its tokens (prompt + completion) and cost. A crossing
// into a higher standing is logged, once per standing and period.
void count_quota(Runtime& rt, std::string_view provider, int64_t tokens, double cost_usd);

// At start: what the store recorded in each quota's current period (every gateway's calls when
// the store is a shared PostgreSQL database).
void seed_quotas(Runtime& rt);

// The value of `x-switchboard-quota` for an answer served by `provider`: "warning 83%" when its
// quota stands at warning or above, else "" (no header).
std::string quota_note(Runtime& rt, std::string_view provider);

// The standing of `provider`'s quota ("healthy 12%"), or "" when it has none.
std::string quota_summary(Runtime& rt, std::string_view provider);

// The body of GET /admin/quotas.
std::string quotas_json(Runtime& rt);

// switchboard_quota_used_ratio{provider} and switchboard_quota_status{provider,status}, set at
// scrape time.
void update_quota_gauges(Runtime& rt);

// Every `interval`, sends what this gateway counted since the last time to the cluster's Redis
// and takes back the totals of every gateway (one round trip for all providers). While Redis
// cannot be reached the counts stay here and go with the next round that reaches it.
class SharedQuotas {
 public:
  SharedQuotas(Runtime& rt, Millis interval) : rt_(rt), interval_(interval) {}
  ~SharedQuotas() { stop(); }
  SharedQuotas(const SharedQuotas&) = delete;
  SharedQuotas& operator=(const SharedQuotas&) = delete;

  void start();
  // Shares what is left (without waiting for the answer), then stops the thread. Before the
  // cluster stops.
  void stop();

 private:
  void share_once();

  Runtime& rt_;
  const Millis interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace switchboard::gateway
