// Runtime: the shared state behind the gateway's handlers (internal to the gateway module).
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <charconv>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "breaker/breaker.h"
#include "cluster/cluster.h"
#include "common/config.h"
#include "common/metrics.h"
#include "gateway/http.h"
#include "gateway/learning_journal.h"
#include "gateway/mock_provider.h"
#include "keys/keys.h"
#include "net/http_client.h"
#include "routing/routing.h"
#include "store/store.h"
#include "telemetry/telemetry.h"

namespace prometheus {
class Counter;
class Histogram;
class Gauge;
}  // namespace prometheus

namespace switchboard::gateway {

class WorkflowService;  // workflow_api.h
class SharedLearning;   // shared_learning.h
class SharedQuotas;     // quotas.h

// keys::Scheduler on a dedicated timer thread with Asio steady timers.
class AsioScheduler final : public keys::Scheduler {
 public:
  AsioScheduler();
  ~AsioScheduler() override;
  TimerId schedule_at(MonoTime when, std::function<void()> fn) override;
  void cancel(TimerId id) override;

 private:
  asio::io_context ctx_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::atomic<TimerId> next_id_{1};
  std::unordered_map<TimerId, std::unique_ptr<asio::steady_timer>> timers_;  // timer thread only
  std::thread thread_;
};

struct ProviderRuntime {
  std::shared_ptr<const Config> owner;  // keeps `config` alive while a later snapshot reuses this
  const ProviderConfig* config = nullptr;
  std::string base_url;  // effective: a mock's loopback address for kind: mock
  std::string call_url;  // base_url + the chat endpoint of its kind (/chat/completions, /messages)
  bool anthropic = false;
  // Egress, resolved when the snapshot is built: the forward proxy ("" = direct) and the TLS
  // profile (null = the system trust store alone).
  std::string proxy;
  std::shared_ptr<const net::TlsOptions> tls;
  std::unique_ptr<keys::KeyPool> pool;
  std::shared_ptr<MockProvider> mock;
};

// Responses this gateway answered lately (POST /v1/responses), so that a follow-up naming one as
// previous_response_id finds it before the store's writer has committed it (and without a read).
// Bounded by bytes: the oldest entries go first; the store keeps them all until their TTL.
// Thread-safety: all methods are locked.
class ResponseMemory {
 public:
  struct Entry {
    std::string owner;  // the gateway key's name ("" without client auth)
    WallTime expires;
    std::shared_ptr<const std::string> items;  // a JSON array
  };
  static constexpr size_t kMaxBytes = size_t{64} << 20;
  void put(std::string id, Entry e);
  std::optional<Entry> get(std::string_view id, WallTime now) const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  std::deque<std::string> order_;  // oldest first
  size_t bytes_ = 0;
};

// The latest breaker transitions of this gateway, newest last, for the console (GET
// /admin/overview). Bounded: the oldest go first. Thread-safety: all methods are locked.
class RecentTransitions {
 public:
  struct Entry {
    WallTime at;
    std::string target;
    breaker::BreakerState from, to;
  };
  static constexpr size_t kCapacity = 200;
  void add(WallTime at, std::string_view target, breaker::BreakerState from,
           breaker::BreakerState to) {
    std::lock_guard lock(mu_);
    if (entries_.size() == kCapacity) entries_.pop_front();
    entries_.push_back(Entry{at, std::string(target), from, to});
  }
  std::vector<Entry> list() const {
    std::lock_guard lock(mu_);
    return {entries_.begin(), entries_.end()};
  }

 private:
  mutable std::mutex mu_;
  std::deque<Entry> entries_;
};

// Per gateway (client) key: its rpm window and this month's spend.
struct GatewayKeyState {
  std::mutex mu;
  std::deque<MonoTime> window;
  int month = -1;  // UTC year * 12 + month of `spend_usd`
  double spend_usd = 0;
  // Estimated cost of the requests in flight, reserved at admission and released at their end:
  // concurrent requests cannot together spend past the budget that each saw unspent.
  double reserved_usd = 0;
  // With a cluster: the month's spend and holds across the gateways when Redis last answered
  // (-1: not yet this month), and this gateway's spend + reserved then. While Redis is away this
  // gateway adds at most its share of what was left (client_limits.cpp).
  double shared_seen_usd = -1;
  double local_at_seen_usd = 0;
  // What requests still holding a shared budget charged already (in spend_usd, not yet settled in
  // Redis): an emptied Redis starts from spend_usd less this, so their settles count them once.
  double in_hold_usd = 0;
};

// The breakers of every configured (provider, model), resolved once per snapshot: the request
// path (attempts and the router's open-breaker probe) finds them without the registry's lock or
// a reference count that every thread writes. Names outside the catalog (direct
// "provider/anything" requests) share one breaker per provider, "<provider>/*".
class BreakerTable {
 public:
  BreakerTable(std::shared_ptr<breaker::BreakerRegistry> registry, const Config& config);
  breaker::CircuitBreaker& provider(std::string_view provider) const;
  breaker::CircuitBreaker& model(std::string_view provider, std::string_view model) const;
  // Either breaker of the pair is open.
  bool open(std::string_view provider, std::string_view model) const;

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Entry {
    breaker::CircuitBreaker* provider = nullptr;
    std::unordered_map<std::string, breaker::CircuitBreaker*, Hash, std::equal_to<>> models;
  };
  std::shared_ptr<breaker::BreakerRegistry> registry_;
  std::unordered_map<std::string, Entry, Hash, std::equal_to<>> providers_;
};

// Everything that a configuration determines, swapped as a whole by a reload. A request holds
// the snapshot it started with until it ends, so pools of removed keys live until their leases
// end and a request's plan never mixes two configurations.
struct Snapshot {
  std::shared_ptr<const Config> config;
  std::map<std::string, std::shared_ptr<ProviderRuntime>, std::less<>> providers;
  std::shared_ptr<breaker::BreakerRegistry> breakers;
  std::shared_ptr<const BreakerTable> breaker_table;  // over `breakers`
  std::shared_ptr<routing::Router> router;
  std::vector<std::shared_ptr<GatewayKeyState>> gateway_keys;  // parallel to auth.gateway_keys

  ProviderRuntime* provider(std::string_view name) const {
    auto it = providers.find(name);
    return it == providers.end() ? nullptr : it->second.get();
  }
};

// Request metrics, resolved once per label combination: requests and their latency by (route,
// model, provider, status class); each upstream attempt's latency by (model, provider, status
// class); tokens and cost by (model, provider, client key name); a stream's time to first token by
// model. Labels are configured names only (bounded). Counted per thread (sharded counters and
// histograms, merged at scrape time); each thread finds a combination's handles in a cache of its
// own, so recording takes no lock and writes no cache line another thread writes.
class RequestMetrics {
 public:
  RequestMetrics();
  ~RequestMetrics();
  void observe(std::string_view route, std::string_view model, std::string_view provider,
               std::string_view status_class, double seconds, int attempts, bool fallback);
  void observe_attempt(std::string_view model, std::string_view provider,
                       std::string_view status_class, double seconds);
  void observe_usage(std::string_view model, std::string_view provider, std::string_view client,
                     int64_t tokens_in, int64_t tokens_out, double cost_usd);
  void observe_ttft(std::string_view model, double seconds);

  struct Handles {
    virtual ~Handles() = default;
  };

 private:
  // The handles of `family` (a letter) for `labels`, made by `make` on first sight.
  template <typename H, typename Make>
  H& find(char family, std::initializer_list<std::string_view> labels, Make&& make);

  const uint64_t id_;  // tells instances apart in the threads' caches (addresses get reused)
  std::mutex mu_;      // guards all_ (first sight of a combination only)
  std::unordered_map<std::string, std::unique_ptr<Handles>> all_;
  metrics::ShardedCounter attempts_;
  metrics::ShardedCounter fallbacks_;
};

struct Runtime {
  Clock& clock = SystemClock::instance();
  AsioScheduler scheduler;
  std::atomic<std::shared_ptr<const Snapshot>> current;
  std::mutex reload_mu;     // one reload at a time
  std::string config_path;  // what a reload re-reads ("" = no file: reload refused)
  std::unique_ptr<store::Store> store;
  std::unique_ptr<LearningJournal> learning;              // set at start, before traffic
  std::vector<std::unique_ptr<net::HttpClient>> clients;  // one per server thread
  RequestMetrics metrics;
  std::atomic<uint64_t> request_seq{0};
  uint64_t instance_tag = 0;
  std::atomic<bool> store_ok{false};
  std::unique_ptr<routing::FeedbackLedger> ledger;
  // Limits shared with the other gateways on one Redis (cluster.redis); null when alone. Started
  // with the server's io_contexts, stopped once they drained, destroyed after them.
  std::unique_ptr<cluster::Cluster> cluster;
  // With a cluster: this router's learning to the other gateways and theirs to it. Set before
  // the server starts, stopped before the cluster.
  std::unique_ptr<SharedLearning> shared_learning;
  // Provider quotas (quotas.h): configured by every snapshot, counted by every upstream call.
  quota::QuotaBook quotas;
  // With a cluster: the quotas' counts met with the other gateways'. Like shared_learning.
  std::unique_ptr<SharedQuotas> shared_quotas;
  // Durable workflows (workflow_api.h); null when disabled (GatewayOptions::workflows) or the
  // state backend cannot hold them. Set before the server starts, reset after it stopped.
  std::shared_ptr<WorkflowService> workflows;
  // OTLP traces (telemetry.otlp_endpoint at start; null when off). Reset after the server stopped,
  // which sends the spans still queued.
  std::unique_ptr<telemetry::Exporter> tracer;
  // Breaker transitions for the console.
  RecentTransitions breaker_history;
  ResponseMemory responses;
  const WallTime started_at = clock.wall_now();

  std::shared_ptr<const Snapshot> snapshot() const {
    return current.load(std::memory_order_acquire);
  }
  // Installs a new snapshot (start-up and reloads).
  void publish(std::shared_ptr<const Snapshot> snap) {
    current.store(std::move(snap), std::memory_order_release);
    generation.fetch_add(1, std::memory_order_acq_rel);
  }
  // snapshot() for the request path of a server thread: a copy held by the thread under a
  // reference count of its own, refreshed when a reload published a new one. Loading `current`
  // and copying it would write the shared control block twice per request from every thread.
  // The thread keeps the snapshot alive until its next request after a reload.
  std::shared_ptr<const Snapshot> thread_snapshot() const;
  std::atomic<uint64_t> generation{0};
  const uint64_t uid = next_uid();
  // A request id is "sb-<instance>-<sequence>-<nonce>"; the sequence keys the feedback ledger,
  // the random nonce makes the id unguessable.
  std::string request_id(uint64_t seq, uint64_t nonce) const;
  uint64_t next_request_seq() { return request_seq.fetch_add(1) + 1; }
  static uint64_t next_uid();
  struct ParsedId {
    uint64_t seq = 0;  // 0 = not one of this instance's ids
    uint64_t nonce = 0;
  };
  ParsedId parse_request_id(std::string_view id) const;
};

// 64 unpredictable bits (the kernel's CSPRNG, buffered per thread). Thread-safe.
uint64_t secure_random_u64();
// Who made a request, for the feedback ledger: 0 without a gateway key, else a tag of the key's
// name (stable across reloads that keep the key).
uint64_t owner_tag(const Snapshot& snap, int gateway_key);

// Writes key `key_id`'s cooldowns and disabled mark to the store (after a rate limit, an admin
// enable/disable), so that a restart keeps them (key_state.cpp).
void persist_key_state(Runtime& rt, keys::KeyPool& pool, std::string_view key_id);
// At start: the stored cooldowns and disabled marks, and the day windows counted back from the
// usage journal, into the snapshot's pools.
void restore_key_state(Runtime& rt, const Snapshot& snap, const store::LoadedState& loaded);
uint64_t owner_tag(std::string_view gateway_key_name);
// A breaker of another gateway of the cluster opened: this gateway's breaker for that target
// opens too (snapshot.cpp), without announcing it again.
void open_breaker_from_peer(Runtime& rt, const std::string& target);

// What the x-switchboard-* headers of an answer say (DESIGN.md: every response carries them).
// Model, provider and key are empty, and the counts 0, when no attempt was made.
struct AnswerFacts {
  std::string_view request_id, model, provider, key;
  int64_t attempts = 0, layer = 0, overhead_us = 0;
  std::string_view quota;  // x-switchboard-quota ("warning 83%"); "" = no header
};

// Calls emit(name, value) for each x-switchboard-* header, in the one order every answer uses.
template <typename Emit>
void for_each_switchboard_header(const AnswerFacts& f, Emit&& emit) {
  char num[24];
  auto number = [&num](int64_t v) {
    return std::string_view(num,
                            static_cast<size_t>(std::to_chars(num, num + sizeof num, v).ptr - num));
  };
  emit(std::string_view("x-switchboard-request-id"), f.request_id);
  emit(std::string_view("x-switchboard-model"), f.model);
  emit(std::string_view("x-switchboard-provider"), f.provider);
  emit(std::string_view("x-switchboard-key"), f.key);
  emit(std::string_view("x-switchboard-attempts"), number(f.attempts));
  emit(std::string_view("x-switchboard-layer"), number(f.layer));
  emit(std::string_view("x-switchboard-overhead-us"), number(f.overhead_us));
  if (!f.quota.empty()) emit(std::string_view("x-switchboard-quota"), f.quota);
}

// UTC year * 12 + month.
int utc_month(WallTime t);
// The first instant of that month.
WallTime utc_month_start(WallTime t);

// Builds the snapshot for `config`, taking over what can be kept from `previous` (key pools and
// their state, in-process mocks, breakers and learned routing state). Fails only when an
// in-process mock cannot start.
Result<std::shared_ptr<const Snapshot>> build_snapshot(Runtime& rt,
                                                       std::shared_ptr<const Config> config,
                                                       const Snapshot* previous);

struct ReloadResult {
  bool ok = false;
  std::vector<std::string> messages;  // the errors of a rejected configuration, or notes
};
// Validated swap of the running configuration; the old one keeps serving on any error.
ReloadResult reload_runtime(Runtime& rt, const std::shared_ptr<const Config>& config);
ReloadResult reload_from_file(Runtime& rt);

// POST /v1/feedback (feedback_api.cpp). `gateway_key` as for handle_chat.
void handle_feedback(Runtime& rt, const Snapshot& snap, Exchange& ex, int gateway_key);
// /admin/... (admin_api.cpp), once the admin credentials were checked: false when `target` is
// no admin endpoint (the caller answers 404).
bool handle_admin(Runtime& rt, const Snapshot& snap, Exchange& ex, std::string_view target);
// Brings the gauges read at scrape time up to date (request_metrics.cpp).
void update_gauges(Runtime& rt);

// Which API the client speaks: the request path is OpenAI's chat completions either way, and an
// Anthropic client's request was translated into it (messages_api.cpp); its answers, errors and
// streams go back in Anthropic's shape.
enum class Dialect { kOpenAI, kAnthropic };

// POST /v1/chat/completions.
// `gateway_key` is the index of the client's gateway key in auth.gateway_keys, or -1.
// `snap` is the snapshot the request was admitted under (its gateway key index belongs to it).
// For Dialect::kAnthropic, `anthropic_body` is the client's own request (the exchange's body is
// its translation): Anthropic providers get it as it came.
asio::awaitable<void> handle_chat(Runtime& rt, std::shared_ptr<const Snapshot> snap, Exchange& ex,
                                  int gateway_key, Dialect dialect = Dialect::kOpenAI,
                                  std::string anthropic_body = {});
// POST /v1/responses (responses_api.cpp): OpenAI's Responses API over the chat path.
asio::awaitable<void> handle_responses(Runtime& rt, std::shared_ptr<const Snapshot> snap,
                                       Exchange& ex, int gateway_key);
// POST /v1/messages and /v1/messages/count_tokens (messages_api.cpp): Anthropic's Messages API.
asio::awaitable<void> handle_messages(Runtime& rt, std::shared_ptr<const Snapshot> snap,
                                      Exchange& ex, int gateway_key);
void handle_count_tokens(const Snapshot& snap, Exchange& ex, int gateway_key);
// POST /v1/embeddings (chat_call.cpp): the chat path (routing, keys, breakers, fallbacks, budgets,
// quotas, accounting) to OpenAI-format providers' /embeddings; the answer passed through.
asio::awaitable<void> handle_embeddings(Runtime& rt, std::shared_ptr<const Snapshot> snap,
                                        Exchange& ex, int gateway_key);

}  // namespace switchboard::gateway
