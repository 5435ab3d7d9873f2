// Store: crash-safe persistence of gateway state that never makes a request wait for the disk.
//
// The request path calls `enqueue(event)`: the event is moved into a bounded in-memory queue and
// the call returns (tens of nanoseconds; no I/O, no allocation once the queue has warmed up). One
// writer thread per store owns the only write connection and commits queued events in batches
// (group commit every `StateConfig::batch_ms` or `batch_max` events, one transaction per batch).
//
// Every accepted event gets a sequence number, strictly increasing within a store's life; an
// outcome's number is its outcome id, which keeps increasing across restarts. An event is
// "acknowledged" once `committed_seq()` >= its number: it is then committed (or, for a
// non-essential event, counted in `switchboard_store_dropped_total`). Durability of a commit:
// with `synchronous=NORMAL` it survives `kill -9` of the process; with `FULL` it also survives
// power loss. With NORMAL a power loss may roll back the last commits, never corrupt the file.
//
// Queue full: the oldest queued non-essential event (outcome, breaker transition, learning
// record: the next learned-state snapshot, within seconds, covers a dropped one) is dropped and
// counted. Essential events (usage/spend, feedback, key state, stored responses, the learned
// state's snapshot rows and the journal compaction that must follow them) are not dropped: their
// `enqueue` waits for space at most 200 µs, then queues the event over the capacity (counted in
// `switchboard_store_overflow_total`), where the writer takes it first; only a writer four
// capacities behind (a dead disk) makes it drop one, counted and logged. So a request never waits
// for the disk beyond that bound.
//
// Secrets never reach the store: events carry key ids (`openai#2`), never key material.
//
// Thread-safety: every method of `Store` may be called from any thread, concurrently. `close()`
// (also run by the destructor) stops accepting, drains the queue, commits, checkpoints the WAL,
// closes the database and joins the writer thread; it is idempotent.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/learned.h"
#include "common/status.h"

namespace switchboard::store {

// ---- Events -------------------------------------------------------------------------------

// Status classes used in `OutcomeEvent::status_class`; only kStatusOk counts as a success in the
// statistics. Other modules may use further free-text classes.
inline constexpr const char* kStatusOk = "ok";

// The result of one client request (after all its attempts).
struct OutcomeEvent {
  WallTime time;
  std::string request_id;
  std::string route;
  std::string model;
  std::string provider;
  std::string key_id;        // "openai#2", never the secret
  std::string status_class;  // "ok", "rate_limited", "server_error", "timeout", ...
  std::string category;      // routing category ("" when none)
  int64_t latency_us = 0;
  int64_t tokens_in = 0;
  int64_t tokens_out = 0;
  double cost_usd = 0;
  int attempts = 1;
  int layer = 0;
  std::string gateway_key;  // the client key's name ("" = none); who may send its verdict
};

// Tokens and money spent on one upstream call. Essential: never dropped.
struct UsageEvent {
  WallTime time;
  std::string request_id;
  std::string provider;
  std::string key_id;
  std::string model;
  int64_t tokens_in = 0;
  int64_t tokens_out = 0;
  double cost_usd = 0;
  std::string gateway_key;  // the client's gateway key by name ("" without client auth)
};

// What of a key's state outlives a restart, upserted by (key id, model) (latest wins): a
// cooldown as a wall-clock deadline with its reason ("" model = key-wide), and the operator's
// disabled mark (state "disabled"). Day windows are not here: they are counted back from the usage
// journal (query_key_day_usage), which records every request that counts against a key.
struct KeyStateEvent {
  std::string key_id;
  std::string model;          // "" = the whole key
  std::string state;          // "healthy", "cooling", "disabled", ...
  WallTime cooldown_until{};  // epoch = no cooldown
  std::string reason;         // "retry_after", "backoff", "quota_exhausted"
  WallTime updated{};
};

struct BreakerTransitionEvent {
  WallTime time;
  std::string breaker;  // e.g. "openai" or "openai/gpt-4o"
  std::string from_state;
  std::string to_state;
  std::string reason;
};

// A snapshot row of the learned state (common/learned.h), upserted by (category, model) or model.
// Its `last_outcome_id` is the newest learning record it includes: a restart replays only the
// journal's newer records onto it, so nothing counts twice.
struct BanditPosteriorEvent : Posterior {
  WallTime updated{};
};
struct ModelStatsEvent : ModelStats {
  WallTime updated{};
};

// One record the router learned from, journaled in the order the router applied it; the event's
// sequence number is its id (the router hands it to the rows it changed).
struct LearnEvent : LearnRecord {
  WallTime time{};
};
// A snapshot row of one contextual model (routing/contextual.h): its weights' means and variances
// (FeatureVector::kDim each), upserted by (route, model) like the posteriors.
struct ContextualModelEvent {
  std::string route;
  std::string model;
  std::vector<float> means, variances;
  uint64_t updates = 0;
  uint64_t last_outcome_id = 0;
  WallTime updated{};
};
// Forgets the journal's records up to `up_to`: a snapshot written before it holds them.
struct LearnCompactEvent {
  uint64_t up_to = 0;
};

// The caller's verdict on a request (POST /v1/feedback). Essential: never dropped.
struct FeedbackEvent {
  WallTime time;
  std::string request_id;
  bool success = false;
  double score = 0;
};

// A Responses API answer's conversation (the input items it was given, its previous responses'
// included, and its output items), kept until `expires` so that a request naming it as
// previous_response_id continues it, on any gateway sharing the store. Upserted by id (the
// latest wins). Essential: never dropped, except one whose id is empty or longer than
// kMaxResponseIdBytes (refused by enqueue, which returns 0, counted and logged).
struct StoredResponseEvent {
  std::string id;     // "resp_…" (the gateway's or a native upstream's id), <= 128 bytes
  std::string owner;  // the gateway key's name that created it ("" without client auth)
  WallTime created{};
  WallTime expires{};
  // A JSON array (opaque to the store), may be several MB. PostgreSQL keeps text as UTF-8 only:
  // there, bytes that are not UTF-8 (and NULs) in `items` or `owner` are stored as U+FFFD (JSON
  // from a JSON library is UTF-8 already); SQLite keeps the bytes as they are.
  std::string items;
};
inline constexpr size_t kMaxResponseIdBytes = 128;

using Event = std::variant<OutcomeEvent, UsageEvent, KeyStateEvent, BreakerTransitionEvent,
                           BanditPosteriorEvent, ModelStatsEvent, FeedbackEvent, LearnEvent,
                           LearnCompactEvent, ContextualModelEvent, StoredResponseEvent>;

// Label value of `switchboard_store_dropped_total{kind=...}` ("outcome", "usage", ...).
const char* event_kind_name(const Event& e);
bool is_essential(const Event& e);

// ---- State loaded at start ------------------------------------------------------------------

struct LoadedState {
  // Every stored key state; `cooldown_until` is reset to epoch when it is no longer in the future.
  std::vector<KeyStateEvent> keys;
  std::vector<BanditPosteriorEvent> posteriors;
  std::vector<ModelStatsEvent> model_stats;
  std::vector<ContextualModelEvent> contextual;
  // The journal's records not yet compacted into the rows above, oldest first, with their ids.
  std::vector<std::pair<uint64_t, LearnRecord>> learning;
  int64_t last_outcome_id = 0;  // the newest committed outcome
};

// Per-store counters (the Prometheus metrics are process-wide sums over all stores).
struct StoreCounters {
  uint64_t enqueued = 0;
  uint64_t committed = 0;  // events committed
  uint64_t dropped = 0;    // queue full, store closed, or a failed non-essential write
  uint64_t write_errors = 0;
  uint64_t overflowed = 0;  // essential events queued over the capacity
};

// A request that may get the caller's verdict (POST /v1/feedback): answered ok within the
// feedback window (`judged` when a verdict is stored already). Read at start so that verdicts
// survive a restart.
struct ServedRequest {
  std::string request_id;
  std::string model;
  std::string category;
  int layer = 0;
  std::string gateway_key;
  WallTime time;
  bool judged = false;
};
// Requests and tokens per key and wall-clock minute (query_key_day_usage, Store::key_day_usage).
struct KeyMinuteUsage {
  std::string key_id;
  WallTime minute;
  int64_t requests = 0;
  int64_t tokens = 0;
};

// Upstream calls, tokens (in + out) and spend of one provider (query_provider_usage).
struct ProviderUsage {
  int64_t requests = 0;
  int64_t tokens = 0;
  double cost_usd = 0;
};

// A stored response (StoredResponseEvent), as read back by Store::find_response.
struct StoredResponse {
  std::string id, owner;
  WallTime created{}, expires{};
  std::string items;
};

// ---- The interface --------------------------------------------------------------------------

class Store {
 public:
  virtual ~Store() = default;

  // Reads the persisted state on a separate read connection (safe while the writer runs).
  virtual Result<LoadedState> load() = 0;

  // Queues an event; never waits for the disk. Returns its sequence number (for an outcome, its
  // outcome id), or 0 when the event was not accepted and counted as dropped: the store is
  // closed, or the queue is full of essential events and this one is not essential (or, for an
  // essential one, the overflow is full too). See the file comment for the bounded wait.
  virtual uint64_t enqueue(Event event) = 0;
  // enqueue() for each event, in order, taking the queue's lock once (a request's events
  // together). The events are moved from.
  virtual void enqueue_batch(std::span<Event> events) {
    for (Event& e : events) enqueue(std::move(e));
  }

  // Waits until every event enqueued before the call is acknowledged. Not ok when a commit that
  // covers them failed (essential events are retried by the writer) or the store is closed.
  virtual Status flush() = 0;

  // Highest acknowledged sequence number (see the file comment).
  virtual uint64_t committed_seq() const = 0;

  // Deletes outcomes older than the retention age and stored responses whose `expires` has
  // passed, now, in small batches, and waits until done. (The writer also does this by itself
  // every `prune_interval`.)
  virtual Status prune() = 0;

  virtual StoreCounters counters() const = 0;

  // What a starting gateway reads back, on a connection of their own (safe while the writer
  // runs); see the free functions of the same names below for each one's meaning.
  virtual Result<std::vector<ServedRequest>> recent_served(WallTime since, size_t limit) = 0;
  virtual Result<std::map<std::string, double>> gateway_spend(WallTime since) = 0;
  virtual Result<std::vector<KeyMinuteUsage>> key_day_usage(WallTime since) = 0;
  virtual Result<std::map<std::string, ProviderUsage>> provider_usage(WallTime since) = 0;
  // The stored response `id` (StoredResponseEvent), nullopt when there is none or it expired
  // (expires <= now); a committed event is visible to every store on the same database (see
  // flush() for when an enqueued one is). May be called from any thread, concurrently with the
  // writer and with other calls: it blocks the calling thread (run it off an event loop) for
  // one read by primary key with a prepared statement, on one of a few read connections the
  // store keeps open for these calls (a connection is opened when none is idle: more
  // concurrent calls than kept connections pay for an open). Cost: SQLite, tens of
  // microseconds plus copying the items (a WAL reader never waits for the writer); PostgreSQL,
  // one round trip to the server plus the items' transfer. Unavailable once the store is closed.
  virtual Result<std::optional<StoredResponse>> find_response(std::string_view id,
                                                              WallTime now) = 0;

  virtual void close() = 0;
};

struct SqliteStoreOptions {
  StateConfig state;
  const Clock* clock = nullptr;  // ages for retention; nullptr = SystemClock
  Millis prune_interval{60'000};
  int prune_batch_rows = 2000;
  int wal_autocheckpoint_pages = 1000;
  int64_t journal_size_limit_bytes = 64ll << 20;
  // Test hook: caps the database size (PRAGMA max_page_count) to simulate a full disk. 0 = none.
  int64_t max_page_count = 0;
};

// Opens (creating when missing) and migrates the database, then starts the writer thread.
Result<std::unique_ptr<Store>> open_sqlite_store(const SqliteStoreOptions& options);

// PostgreSQL (postgres_store.cpp): one database shared by several gateways. Outcomes, usage,
// feedback, breaker transitions and key state are common to all; the learned rows, the learning
// journal and the sequence numbers are `state.node`'s own (each gateway restores what its own
// journal acknowledged). Migrations run once, under an advisory lock.
struct PostgresStoreOptions {
  StateConfig state;             // url, node
  const Clock* clock = nullptr;  // nullptr = SystemClock
  Millis prune_interval{60'000};
  int prune_batch_rows = 2000;
  int64_t connect_timeout_s = 5;
};
Result<std::unique_ptr<Store>> open_postgres_store(const PostgresStoreOptions& options);
int postgres_schema_version();

// By `state.backend`: "sqlite" or "postgres".
Result<std::unique_ptr<Store>> open_store(const StateConfig& state, const Clock& clock);

// ---- Schema ---------------------------------------------------------------------------------

// Forward-only migrations: migration i brings `PRAGMA user_version` from i to i+1 and runs once,
// in one transaction. Append new ones (workflow tables, ...) at the end; never edit a released
// one. Opening a database newer than this binary fails.
struct Migration {
  int version;  // user_version after it ran
  const char* name;
  const char* sql;
};
const std::vector<Migration>& schema_migrations();
int schema_version();  // the version this binary migrates to

// ---- Statistics (`switchboard stats --db PATH`) ------------------------------------------------

struct ModelStatsRow {
  std::string model;
  int64_t requests = 0;
  int64_t successes = 0;
  double success_rate = 0;
  double avg_latency_ms = 0;
  double p95_latency_ms = 0;
  int64_t tokens_in = 0;
  int64_t tokens_out = 0;
  double spend_usd = 0;
};

// Aggregates the outcomes table per model, opening the database read-only (no gateway needed).
// `db_path` may also be a postgresql:// URL: every gateway's outcomes in that database.
Result<std::vector<ModelStatsRow>> query_model_stats(const std::string& db_path);
Result<std::vector<ModelStatsRow>> query_postgres_model_stats(const std::string& url);
// The same as an aligned text table, or as a JSON array of objects when `json`.
Result<std::string> format_model_stats(const std::string& db_path, bool json);

// Spend (USD) per gateway key name recorded since `since`, for monthly budgets across restarts.
// Reads on its own connection (safe while a store writes). NotFound when there is no database.
// The newest `limit` such requests since `since`, newest first. NotFound when there is no
// database yet.
Result<std::vector<ServedRequest>> query_recent_served(const std::string& db_path, WallTime since,
                                                       size_t limit);

Result<std::map<std::string, double>> query_gateway_spend(const std::string& db_path,
                                                          WallTime since);

// Requests and tokens per key and wall-clock minute since `since`, from the usage journal (one row
// per request that counted against a key): the keys' day windows after a restart. Finds the
// first row by a binary search on the row id (rows are appended in time order), so it reads only
// the last day's rows however long the journal. NotFound when there is no database.
Result<std::vector<KeyMinuteUsage>> query_key_day_usage(const std::string& db_path, WallTime since);

// Per provider, the upstream calls (usage rows), tokens and spend recorded since `since`: the
// provider quotas' counts after a restart. Reads only the rows from `since` on (found like
// query_key_day_usage's). NotFound when there is no database.
Result<std::map<std::string, ProviderUsage>> query_provider_usage(const std::string& db_path,
                                                                  WallTime since);

// What a gateway would restore from `db_path` (`switchboard route --db`), read-only: NotFound
// when there is no file (none is created), FailedPrecondition when its schema is not this
// binary's (an older one is migrated by starting the gateway on it).
Result<LoadedState> load_state(const std::string& db_path, WallTime now);

}  // namespace switchboard::store
