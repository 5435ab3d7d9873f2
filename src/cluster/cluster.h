// Cluster: the keys' limits shared by every gateway on one Redis (DESIGN.md invariant 13).
//
// Admission is one round trip: a server-side script walks the candidate keys that the local pool
// offers (keys::KeyPool::shared_candidates) and reserves, atomically across every gateway, the
// concurrency slot and the rpm/tpm/rpd/tpd windows on the first that has room, or says when the
// first could. A reservation is a lease with an expiry (`lease_ttl_ms`), renewed in one batch per
// connection while its request runs, so a crashed gateway's slots come back after the TTL.
// Settling replaces the estimate with the real usage and shares the cooldown the outcome started.
// A gateway told "no room until T" waits on its own until T or until another gateway publishes
// a release of that provider: it never polls Redis in a loop.
//
// A client key's monthly budget is shared the same way (reserve_budget): the request's worst-case
// cost is held while it runs, beside every other gateway's holds, and settled to its real cost.
//
// Redis down: `up()` is false and callers use their local limits (or refuse, by configuration);
// the connections reconnect by themselves, and the first full reconnection is logged.
//
// Thread-safety: one connection per io_context given to start(); reserve(), wait_release() and
// the settling run on the calling coroutine's io_context, which must be one of them. A
// Reservation may be settled or dropped on any thread (it is posted to its connection).
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "keys/keys.h"
#include "quota/quota.h"

namespace switchboard::cluster {

namespace asio = boost::asio;

class Cluster;
struct Node;

// A lease held in Redis. Move-only; ends exactly once: settle(), or the destructor (which
// releases it as cancelled: the request slot and its tokens are given back).
class Reservation {
 public:
  Reservation() = default;
  Reservation(Reservation&& o) noexcept { *this = std::move(o); }
  Reservation& operator=(Reservation&& o) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation();

  bool active() const { return node_ != nullptr; }
  const std::string& key_id() const { return key_id_; }
  // Ends the lease in Redis with what the local pool decided (keys::Lease::complete's report).
  void settle(const keys::EndReport& report);
  // Ends it as reserved (the request and its estimate stay counted) without a round trip, when
  // it holds no concurrency slot (max_concurrent 0, e.g. a client key's rpm); else as settle()
  // with the request counted.
  void commit();

 private:
  friend class Cluster;
  Node* node_ = nullptr;
  std::string prefix_;  // "<prefix>:{<provider>}"
  std::string provider_;
  std::string key_id_;
  std::string token_;
  int64_t minute_ref_ = 0;
  int64_t day_ref_ = 0;
  int64_t estimated_ = 0;
  RateLimits limits_;
};

// A client key's monthly budget held in Redis for one request (Cluster::reserve_budget).
// Move-only; ends exactly once: settle() with the request's real cost, or the destructor (which
// releases the hold, charging nothing). Like a Reservation it is renewed while held and expires
// after the lease TTL when its gateway dies.
class BudgetHold {
 public:
  BudgetHold() = default;
  BudgetHold(BudgetHold&& o) noexcept { *this = std::move(o); }
  BudgetHold& operator=(BudgetHold&& o) noexcept;
  BudgetHold(const BudgetHold&) = delete;
  BudgetHold& operator=(const BudgetHold&) = delete;
  ~BudgetHold();

  bool active() const { return node_ != nullptr; }
  void settle(double cost_usd);

 private:
  friend class Cluster;
  Node* node_ = nullptr;
  Cluster* owner_ = nullptr;
  std::string base_;  // "<prefix>:{#budget}:<name>"
  std::string token_;
};

struct BudgetRequest {
  std::string_view name;      // the client key's configured name
  double estimate_usd = 0;    // the request's worst-case cost
  double budget_usd = 0;      // per UTC month
  double seed_spend_usd = 0;  // this month's spend as this gateway knows it (its store)
};

struct BudgetResult {
  // kSpent: nothing is left; kNoRoom: this estimate does not fit beside the spend and the holds
  // of the requests in flight in every gateway.
  enum class Status { kGranted, kSpent, kNoRoom, kUnavailable };
  Status status = Status::kUnavailable;
  BudgetHold hold;  // kGranted
  // The month's spend and the holds in flight (all gateways) before this request's, when known.
  double spend_usd = 0;
  double held_usd = 0;
};

struct ReserveRequest {
  std::string_view provider;
  const RateLimits* limits = nullptr;        // per key, as configured (not divided)
  std::vector<std::string_view> candidates;  // key ids, in the order to try
  std::string_view model;                    // upstream model name ("" = not model-specific)
  int64_t estimated_tokens = 0;
};

struct ReserveResult {
  enum class Status { kGranted, kFull, kUnavailable };
  Status status = Status::kUnavailable;
  Reservation reservation;  // kGranted
  // kFull: why the keys are full (keys::NoKeyReason's terms) and how long until the first may
  // have room (for kConcurrency: until a lease expires, unless a release comes first). Never for
  // kTooLarge and kNoUsableKey.
  keys::NoKeyReason reason = keys::NoKeyReason::kNoUsableKey;
  std::optional<Nanos> retry_in;
};

class Cluster {
 public:
  explicit Cluster(const ClusterConfig& config);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // One connection per io_context (plus the subscriber on the first). Before any traffic.
  void start(const std::vector<asio::io_context*>& contexts);
  // Closes every connection, on their own threads; call while the io_contexts still run, then
  // let them drain. Reservations still held expire after the TTL.
  void stop();

  // Redis answers on the calling thread's connection (false on a thread without one).
  bool up() const;
  // Every connection is up.
  bool all_up() const;
  const ClusterConfig& config() const { return config_; }

  // By value: the coroutine keeps its own copy (the views must outlive the call).
  asio::awaitable<ReserveResult> reserve(ReserveRequest request);
  // A client key's monthly budget, exact across the gateways: holds the estimate when it fits.
  asio::awaitable<BudgetResult> reserve_budget(BudgetRequest request);
  // Spend of a client key that could not reach Redis (admitted on the local share while Redis was
  // away): the key's next budget admission adds it to the month's spend. Any thread. A settle
  // that fails is kept the same way.
  void add_unsynced_spend(std::string_view name, double cost_usd);
  // Returns at `until`, or earlier when a gateway releases a lease of `provider` (or the wait is
  // cancelled).
  asio::awaitable<void> wait_release(std::string provider, MonoTime until);

  // Provider quotas: adds each share's delta to its period's totals in Redis (a period Redis
  // does not hold starts from the share's base) and gives back every total, in the order of
  // `shares`, in one round trip. `done` runs once, on a cluster thread (or on the caller's when
  // there is no connection), with nullopt when Redis did not answer. Any thread.
  void share_quotas(std::vector<quota::QuotaBook::Share> shares, WallTime now,
                    std::function<void(std::optional<std::vector<quota::Usage>>)> done);

  // An operator's disable/enable, shared with every gateway (fire and forget).
  void set_disabled(std::string_view provider, std::string_view key_id, bool disabled);

  // Breakers: a breaker that opens here is announced to every gateway (fire and forget, from any
  // thread), and `listener` hears every announcement, this gateway's own included (on the
  // subscriber's thread). Set the listener before start().
  void publish_breaker_open(std::string_view target);
  void publish(std::string channel, std::string message, const char* what);
  void set_breaker_listener(std::function<void(const std::string& target)> listener) {
    breaker_listener_ = std::move(listener);
  }

  // Learned routing: `batch` (the gateway's own encoding of what it learned) goes to every other
  // gateway (fire and forget, from any thread; lost while Redis is away: the posteriors are
  // allowed to lag). `listener` hears the other gateways' batches, never this one's own, on the
  // subscriber's thread. Set the listener before start().
  void publish_learning(std::string batch);
  void set_learning_listener(std::function<void(std::string_view batch)> listener) {
    learning_listener_ = std::move(listener);
  }

 private:
  friend class Reservation;
  friend class BudgetHold;
  void add_unsynced_nano(const std::string& base, int64_t nano);
  Node* this_node() const;
  // This thread's node once its connection is up (the first requests wait for the first
  // connection, up to the connect timeout); nullptr when Redis cannot be asked.
  asio::awaitable<Node*> ready_node();
  std::string next_token();  // unique across gateways and their restarts
  void on_state(bool up);
  void on_release(const std::string& provider);

  const ClusterConfig config_;
  std::string channel_;           // releases: the provider's name
  std::string breaker_channel_;   // breaker openings: the breaker's target name
  std::string learning_channel_;  // "<instance>\n<batch>"
  std::function<void(const std::string&)> breaker_listener_;
  std::function<void(std::string_view)> learning_listener_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::atomic<int> up_count_{0};
  std::atomic<bool> logged_down_{false};
  std::atomic<bool> stopping_{false};
  std::mutex unsynced_mu_;
  std::unordered_map<std::string, int64_t> unsynced_;  // budget key → nano-USD not yet in Redis
  std::atomic<uint64_t> seq_{0};
  MonoTime startup_deadline_{};  // set by start(): until then a connecting Redis is waited for
  uint64_t instance_ = 0;
};

}  // namespace switchboard::cluster
