// Request metrics (RequestMetrics in runtime.h) and the gauges read at scrape time.
#include <dirent.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "common/metrics.h"
#include "common/version.h"
#include "gateway/quotas.h"
#include "gateway/runtime.h"

namespace switchboard::gateway {

// ---- metrics
// -------------------------------------------------------------------------------------

namespace {
std::atomic<uint64_t> g_request_metrics_ids{1};
}  // namespace

namespace {

struct RequestHandles final : RequestMetrics::Handles {
  RequestHandles(prometheus::Counter* r, prometheus::Histogram* l)
      : requests(r), latency(l, metrics::latency_buckets_seconds()) {}
  metrics::ShardedCounter requests;
  metrics::ShardedHistogram latency;
};

struct HistogramHandles final : RequestMetrics::Handles {
  explicit HistogramHandles(prometheus::Histogram* h)
      : histogram(h, metrics::latency_buckets_seconds()) {}
  metrics::ShardedHistogram histogram;
};

struct UsageHandles final : RequestMetrics::Handles {
  UsageHandles(prometheus::Counter* in, prometheus::Counter* out, prometheus::Counter* usd)
      : tokens_in(in), tokens_out(out), nano_usd(usd) {
    nano_usd.set_scale(1e-9);
  }
  metrics::ShardedCounter tokens_in, tokens_out, nano_usd;
};

std::map<std::string, std::string> label_map(
    std::initializer_list<std::pair<const char*, std::string_view>> labels) {
  std::map<std::string, std::string> m;
  for (const auto& [k, v] : labels) m.emplace(k, std::string(v));
  return m;
}

}  // namespace

RequestMetrics::RequestMetrics()
    : id_(g_request_metrics_ids.fetch_add(1, std::memory_order_relaxed)),
      attempts_(&metrics::counter_family("switchboard_gateway_attempts_total",
                                         "Upstream attempts made for client requests")
                     .Add({})),
      fallbacks_(&metrics::counter_family("switchboard_gateway_fallbacks_total",
                                          "Requests answered by a layer after the first")
                      .Add({})) {}

RequestMetrics::~RequestMetrics() = default;

template <typename H, typename Make>
H& RequestMetrics::find(char family, std::initializer_list<std::string_view> labels, Make&& make) {
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
  key.assign(1, family);
  for (auto l : labels) {
    key += '\x1f';
    key.append(l);
  }
  auto it = cache.seen.find(key);
  if (it == cache.seen.end()) {
    Handles* h;
    {
      std::lock_guard lock(mu_);
      auto all = all_.find(key);
      if (all == all_.end()) all = all_.emplace(key, make()).first;
      h = all->second.get();
    }
    it = cache.seen.emplace(key, h).first;
  }
  return static_cast<H&>(*it->second);
}

void RequestMetrics::observe(std::string_view route, std::string_view model,
                             std::string_view provider, std::string_view status_class,
                             double seconds, int attempts, bool fallback) {
  auto& h = find<RequestHandles>('r', {route, model, provider, status_class}, [&] {
    auto labels = label_map(
        {{"route", route}, {"model", model}, {"provider", provider}, {"status", status_class}});
    return std::make_unique<RequestHandles>(
        &metrics::counter_family("switchboard_gateway_requests_total", "Client requests by outcome")
             .Add(labels),
        &metrics::histogram_family("switchboard_gateway_request_duration_seconds",
                                   "Client request latency, all attempts included")
             .Add(labels, metrics::latency_buckets_seconds()));
  });
  h.requests.add();
  h.latency.observe(seconds);
  attempts_.add(static_cast<uint64_t>(std::max(attempts, 0)));
  if (fallback) fallbacks_.add();
}

void RequestMetrics::observe_attempt(std::string_view model, std::string_view provider,
                                     std::string_view status_class, double seconds) {
  find<HistogramHandles>('a', {model, provider, status_class}, [&] {
    return std::make_unique<HistogramHandles>(
        &metrics::histogram_family("switchboard_gateway_upstream_attempt_duration_seconds",
                                   "One upstream attempt's latency, by its outcome")
             .Add(label_map({{"model", model}, {"provider", provider}, {"status", status_class}}),
                  metrics::latency_buckets_seconds()));
  }).histogram.observe(seconds);
}

void RequestMetrics::observe_usage(std::string_view model, std::string_view provider,
                                   std::string_view client, int64_t tokens_in, int64_t tokens_out,
                                   double cost_usd) {
  auto& h = find<UsageHandles>('u', {model, provider, client}, [&] {
    auto labels = label_map({{"model", model}, {"provider", provider}, {"client", client}});
    return std::make_unique<UsageHandles>(
        &metrics::counter_family("switchboard_gateway_input_tokens_total",
                                 "Prompt tokens upstreams counted, by client key name")
             .Add(labels),
        &metrics::counter_family("switchboard_gateway_output_tokens_total",
                                 "Completion tokens upstreams counted, by client key name")
             .Add(labels),
        &metrics::counter_family("switchboard_gateway_cost_usd_total",
                                 "Cost at the models' configured prices, by client key name")
             .Add(labels));
  });
  if (tokens_in > 0) h.tokens_in.add(uint64_t(tokens_in));
  if (tokens_out > 0) h.tokens_out.add(uint64_t(tokens_out));
  if (cost_usd > 0 && std::isfinite(cost_usd))
    h.nano_usd.add(uint64_t(std::llround(cost_usd * 1e9)));
}

void RequestMetrics::observe_ttft(std::string_view model, double seconds) {
  find<HistogramHandles>('t', {model}, [&] {
    return std::make_unique<HistogramHandles>(
        &metrics::histogram_family("switchboard_gateway_time_to_first_token_seconds",
                                   "Streams: from the request to its first content sent")
             .Add(label_map({{"model", model}}), metrics::latency_buckets_seconds()));
  }).histogram.observe(seconds);
}

namespace {

// The process's CPU time (user + system) and start time in seconds since the epoch, from
// /proc/self/stat; false when it cannot be read.
bool read_proc_stat(double& cpu_seconds, double& start_seconds) {
  FILE* f = std::fopen("/proc/self/stat", "r");
  if (!f) return false;
  char buf[1024];
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // Fields after the command name, which is in parentheses and may hold spaces.
  const char* p = std::strrchr(buf, ')');
  if (!p) return false;
  unsigned long long utime = 0, stime = 0, start = 0;
  // state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime
  // cstime priority nice threads itrealvalue starttime
  if (std::sscanf(p + 1,
                  " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                  "%*d %llu",
                  &utime, &stime, &start) != 3)
    return false;
  const double tick = double(sysconf(_SC_CLK_TCK));
  cpu_seconds = double(utime + stime) / tick;
  static const double boot = [] {
    double btime = 0;
    if (FILE* s = std::fopen("/proc/stat", "r")) {
      char line[256];
      while (std::fgets(line, sizeof(line), s)) {
        unsigned long long b = 0;
        if (std::sscanf(line, "btime %llu", &b) == 1) {
          btime = double(b);
          break;
        }
      }
      std::fclose(s);
    }
    return btime;
  }();
  start_seconds = boot + double(start) / tick;
  return true;
}

size_t count_open_fds() {
  size_t count = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++count;
    }
    ::closedir(d);
    if (count > 0) --count;  // the directory's own descriptor
  }
  return count;
}

// The standard process metrics of Prometheus' client libraries (process_*), and the build.
void update_process_gauges() {
  static auto& rss =
      metrics::gauge_family("switchboard_process_resident_memory_bytes", "Resident set size")
          .Add({});
  static auto& rss_std =
      metrics::gauge_family("process_resident_memory_bytes", "Resident memory size in bytes")
          .Add({});
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    long pages = 0, resident = 0;
    if (std::fscanf(f, "%ld %ld", &pages, &resident) == 2) {
      const double bytes = double(resident) * double(sysconf(_SC_PAGESIZE));
      rss.Set(bytes);
      rss_std.Set(bytes);
    }
    std::fclose(f);
  }
  static auto& cpu = metrics::counter_family("process_cpu_seconds_total",
                                             "Total user and system CPU time spent in seconds")
                         .Add({});
  static auto& start = metrics::gauge_family("process_start_time_seconds",
                                             "Start time of the process since the epoch in seconds")
                           .Add({});
  static std::mutex cpu_mu;  // two scrapes at once add each CPU second once
  static double cpu_counted = 0;
  double cpu_seconds = 0, start_seconds = 0;
  if (read_proc_stat(cpu_seconds, start_seconds)) {
    std::lock_guard lock(cpu_mu);
    if (cpu_seconds > cpu_counted) {
      cpu.Increment(cpu_seconds - cpu_counted);
      cpu_counted = cpu_seconds;
    }
    start.Set(start_seconds);
  }
  static auto& fds =
      metrics::gauge_family("process_open_fds", "Number of open file descriptors").Add({});
  fds.Set(double(count_open_fds()));
  static auto& max_fds =
      metrics::gauge_family("process_max_fds", "Maximum number of open file descriptors").Add({});
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) max_fds.Set(double(rl.rlim_cur));
  static auto& build = metrics::gauge_family("switchboard_build_info",
                                             "1, labelled with the version and git commit built")
                           .Add({{"version", kVersion}, {"commit", build_commit()}});
  build.Set(1);
}

}  // namespace

// Gauges read at scrape time: the process, and each key's state, in-flight and cooldown.
void update_gauges(Runtime& rt) {
  update_process_gauges();
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
