// SqliteStore: the SQLite implementation of Store (see store.h for the contract).
//
// Queue design: two rings (essential, non-essential) behind one mutex. `enqueue` holds the lock
// for one move into a slot; the writer swaps both rings out whole under the lock (O(1)) and
// writes them without it, so producers never wait for the disk. Rings keep their slots across
// swaps, so a warmed-up queue allocates nothing. Memory is bounded: each of the four rings (two
// queued, two being written) holds at most `queue_capacity` slots.
#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <type_traits>

#include "common/log.h"
#include "common/metrics.h"
#include "store/sqlite_util.h"
#include "store/store.h"

namespace switchboard::store {
namespace {

using detail::Db;
using detail::Stmt;
using detail::to_ms;

constexpr size_t kKinds = std::variant_size_v<Event>;
// Outcome and usage rows are inserted this many per statement (see commit_batch).
constexpr size_t kRowsPerInsert = 16;
constexpr int kOutcomeColumns = 16;
constexpr int kUsageColumns = 9;
constexpr std::array<const char*, kKinds> kKindNames = {
    "outcome",          "usage",       "key_state", "breaker_transition",
    "bandit_posterior", "model_stats", "feedback"};

// Prometheus handles, resolved once per process (shared by every store instance).
struct StoreMetrics {
  prometheus::Gauge* queue_depth;
  prometheus::Histogram* commit_seconds;
  std::array<prometheus::Counter*, kKinds> dropped;
  prometheus::Counter* write_errors;
  prometheus::Counter* committed;

  StoreMetrics() {
    queue_depth = &metrics::gauge_family("switchboard_store_queue_depth",
                                         "Events waiting for the store writer")
                       .Add({});
    commit_seconds = &metrics::histogram_family("switchboard_store_commit_seconds",
                                                "Duration of one group-commit transaction")
                          .Add({}, metrics::latency_buckets_seconds());
    auto& d = metrics::counter_family("switchboard_store_dropped_total",
                                      "Events not persisted (queue full, closed, write failed)");
    for (size_t i = 0; i < kKinds; ++i) dropped[i] = &d.Add({{"kind", kKindNames[i]}});
    write_errors = &metrics::counter_family("switchboard_store_write_errors_total",
                                            "Failed store transactions")
                        .Add({});
    committed = &metrics::counter_family("switchboard_store_committed_events_total",
                                         "Events committed by the store writer")
                     .Add({});
  }
};

StoreMetrics& store_metrics() {
  static StoreMetrics m;
  return m;
}

struct Entry {
  uint64_t seq;
  Event event;
};

// A FIFO ring of entries. Slots stay constructed (and keep their capacity) when entries leave,
// so a warmed-up ring never allocates; it grows by doubling up to the queue capacity. Dropping
// the oldest entry is O(1).
class Ring {
 public:
  size_t size() const { return count_; }
  Entry& at(size_t i) { return slots_[(head_ + i) & (slots_.size() - 1)]; }
  const Entry& at(size_t i) const { return slots_[(head_ + i) & (slots_.size() - 1)]; }

  void push(uint64_t seq, Event&& event) {
    if (count_ == slots_.size()) grow();
    Entry& e = at(count_);
    e.seq = seq;
    e.event = std::move(event);
    ++count_;
  }
  // Removes the oldest entry and returns its kind; its memory is released right away.
  size_t drop_oldest() {
    Entry& e = slots_[head_];
    const size_t kind = e.event.index();
    e.event = Event{};
    head_ = (head_ + 1) & (slots_.size() - 1);
    --count_;
    return kind;
  }
  // Empties the ring, releasing what the entries held (long strings) but keeping the slots.
  void clear() {
    for (size_t i = 0; i < count_; ++i) at(i).event = Event{};
    head_ = 0;
    count_ = 0;
  }

 private:
  void grow() {
    std::vector<Entry> bigger(slots_.empty() ? 256 : slots_.size() * 2);
    for (size_t i = 0; i < count_; ++i) bigger[i] = std::move(at(i));
    slots_ = std::move(bigger);
    head_ = 0;
  }

  std::vector<Entry> slots_;  // size is zero or a power of two
  size_t head_ = 0;
  size_t count_ = 0;
};

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

class SqliteStore final : public Store {
 public:
  SqliteStore(const SqliteStoreOptions& options, Db db)
      : options_(options),
        clock_(options.clock ? options.clock : &SystemClock::instance()),
        db_(std::move(db)),
        capacity_(static_cast<size_t>(std::max<int64_t>(options.state.queue_capacity, 1))),
        batch_max_(static_cast<size_t>(std::max<int64_t>(options.state.batch_max, 1))),
        batch_interval_(std::max<int64_t>(options.state.batch_ms, 1)),
        metrics_(store_metrics()) {}

  ~SqliteStore() override { close(); }

  Status init() {
    static constexpr const char* kSql[] = {
        "INSERT INTO outcomes (id, ts_ms, request_id, route, model, provider, key_id, "
        "status_class, category, latency_us, tokens_in, tokens_out, cost_usd, attempts, layer, "
        "gateway_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
        "?16)",
        "INSERT INTO usage (ts_ms, request_id, provider, key_id, model, tokens_in, tokens_out, "
        "cost_usd, gateway_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        "INSERT INTO key_state (key_id, state, cooldown_until_ms, reason, day_window_start_ms, "
        "day_requests, day_tokens, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
        "ON CONFLICT (key_id) DO UPDATE SET state = excluded.state, "
        "cooldown_until_ms = excluded.cooldown_until_ms, reason = excluded.reason, "
        "day_window_start_ms = excluded.day_window_start_ms, "
        "day_requests = excluded.day_requests, day_tokens = excluded.day_tokens, "
        "updated_ms = excluded.updated_ms",
        "INSERT INTO breaker_transitions (ts_ms, breaker, from_state, to_state, reason) "
        "VALUES (?1, ?2, ?3, ?4, ?5)",
        "INSERT INTO bandit_posteriors (category, model, alpha, beta, last_outcome_id, "
        "updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (category, model) DO UPDATE "
        "SET alpha = excluded.alpha, beta = excluded.beta, "
        "last_outcome_id = excluded.last_outcome_id, updated_ms = excluded.updated_ms",
        "INSERT INTO model_stats (model, requests, successes, latency_ewma_us, latency_p95_us, "
        "tokens_in, tokens_out, spend_usd, last_outcome_id, updated_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (model) DO UPDATE SET "
        "requests = excluded.requests, successes = excluded.successes, "
        "latency_ewma_us = excluded.latency_ewma_us, latency_p95_us = excluded.latency_p95_us, "
        "tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out, "
        "spend_usd = excluded.spend_usd, last_outcome_id = excluded.last_outcome_id, "
        "updated_ms = excluded.updated_ms",
        "INSERT INTO feedback (ts_ms, request_id, success, score) VALUES (?1, ?2, ?3, ?4)",
    };
    static_assert(std::size(kSql) == kKinds);
    for (size_t i = 0; i < kKinds; ++i) {
      if (Status st = insert_[i].prepare(db_.get(), kSql[i]); !st.ok()) return st;
    }
    // The multi-row forms of the first two: the same column list, kRowsPerInsert value tuples.
    for (size_t kind = 0; kind < 2; ++kind) {
      std::string sql(kSql[kind], std::string_view(kSql[kind]).find("VALUES") + 6);
      const int columns = kind == 0 ? kOutcomeColumns : kUsageColumns;
      for (size_t r = 0; r < kRowsPerInsert; ++r) {
        sql += r == 0 ? " (" : ", (";
        for (int c = 0; c < columns; ++c) sql += c == 0 ? "?" : ", ?";
        sql += ")";
      }
      if (Status st = insert_rows_[kind].prepare(db_.get(), sql.c_str()); !st.ok()) return st;
    }
    if (Status st = begin_.prepare(db_.get(), "BEGIN"); !st.ok()) return st;
    if (Status st = commit_.prepare(db_.get(), "COMMIT"); !st.ok()) return st;
    if (Status st = prune_.prepare(db_.get(),
                                   "DELETE FROM outcomes WHERE id IN "
                                   "(SELECT id FROM outcomes ORDER BY id LIMIT ?1) AND ts_ms < ?2");
        !st.ok()) {
      return st;
    }
    // Outcome ids are sequence numbers: continue after everything already referenced.
    auto last = db_.query_int(
        "SELECT max(coalesce((SELECT max(id) FROM outcomes), 0), "
        "coalesce((SELECT max(last_outcome_id) FROM bandit_posteriors), 0), "
        "coalesce((SELECT max(last_outcome_id) FROM model_stats), 0))");
    if (!last.ok()) return last.status();
    next_seq_ = static_cast<uint64_t>(*last);
    committed_seq_.store(next_seq_, std::memory_order_release);
    writer_ = std::thread([this] { run(); });
    return Status();
  }

  Result<LoadedState> load() override;

  uint64_t enqueue(Event event) override {
    std::unique_lock lock(mu_);
    bool wake = false;
    const uint64_t seq = enqueue_locked(lock, std::move(event), wake);
    lock.unlock();
    if (wake) writer_cv_.notify_one();
    return seq;
  }

  void enqueue_batch(std::span<Event> events) override {
    std::unique_lock lock(mu_);
    bool wake = false;
    for (Event& e : events) enqueue_locked(lock, std::move(e), wake);
    lock.unlock();
    if (wake) writer_cv_.notify_one();
  }

  Status flush() override {
    std::unique_lock lock(mu_);
    const uint64_t target = next_seq_;
    if (committed_seq_.load(std::memory_order_acquire) >= target) return Status();
    if (writer_exited_) return Status::unavailable("store closed");
    const uint64_t gen = failure_gen_;
    flush_requested_ = true;
    writer_cv_.notify_one();
    done_cv_.wait(lock, [&] {
      return committed_seq_.load(std::memory_order_acquire) >= target || failure_gen_ != gen ||
             writer_exited_;
    });
    if (committed_seq_.load(std::memory_order_acquire) >= target) return Status();
    if (failure_gen_ != gen) return last_failure_;
    return Status::unavailable("store closed before the flush completed");
  }

  uint64_t committed_seq() const override { return committed_seq_.load(std::memory_order_acquire); }

  Status prune() override {
    std::unique_lock lock(mu_);
    if (stopping_ || writer_exited_) return Status::unavailable("store closed");
    const uint64_t gen = prune_gen_;
    prune_requested_ = true;
    writer_cv_.notify_one();
    done_cv_.wait(lock, [&] { return prune_gen_ != gen || writer_exited_; });
    if (prune_gen_ == gen) return Status::unavailable("store closed before pruning");
    return prune_status_;
  }

  StoreCounters counters() const override {
    StoreCounters c;
    {
      std::lock_guard lock(mu_);
      c.enqueued = enqueued_;
    }
    c.committed = committed_.load(std::memory_order_relaxed);
    c.dropped = dropped_.load(std::memory_order_relaxed);
    c.write_errors = write_errors_.load(std::memory_order_relaxed);
    return c;
  }

  void close() override {
    std::lock_guard close_lock(close_mu_);
    if (closed_) return;
    closed_ = true;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    writer_cv_.notify_all();
    space_cv_.notify_all();
    if (writer_.joinable()) writer_.join();
    db_.reset();  // the writer already finalized its statements and checkpointed
  }

 private:
  size_t queued() const { return essential_.size() + normal_.size(); }

  // enqueue() with mu_ held (it may wait for space, releasing it meanwhile). Sets `wake` when
  // the writer should be woken once the lock is released.
  uint64_t enqueue_locked(std::unique_lock<std::mutex>& lock, Event&& event, bool& wake) {
    const bool essential = is_essential(event);
    if (stopping_) {
      count_drop(event.index());
      return 0;
    }
    if (queued() >= capacity_) {
      if (normal_.size() > 0) {
        // Drop the oldest non-essential event; release its memory now.
        count_drop(normal_.drop_oldest());
      } else if (!essential) {
        // Only essential events are queued: this one is the oldest non-essential.
        count_drop(event.index());
        return 0;
      } else {
        if (wake) {
          writer_cv_.notify_one();  // it frees the space we wait for
          wake = false;
        }
        space_cv_.wait(lock, [&] { return stopping_ || queued() < capacity_; });
        if (stopping_) {
          log::error("store: essential {} event refused: store closing", kKindNames[event.index()]);
          count_drop(event.index());
          return 0;
        }
      }
    }
    const uint64_t seq = ++next_seq_;
    (essential ? essential_ : normal_).push(seq, std::move(event));
    if (queued() == batch_max_) wake = true;
    ++enqueued_;
    return seq;
  }

  void count_drop(size_t kind) {
    metrics_.dropped[kind]->Increment();
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }

  // Publishes progress to flush()/prune() waiters. Taking the lock orders the update before any
  // waiter's predicate check, so no wake-up is lost.
  template <typename F>
  void publish(F&& f) {
    {
      std::lock_guard lock(mu_);
      f();
    }
    done_cv_.notify_all();
  }

  // Binds one outcome (kOutcomeColumns values) from parameter `base + 1` on.
  static void bind_outcome(Stmt& s, int base, uint64_t seq, const OutcomeEvent& o) {
    s.bind(base + 1, static_cast<int64_t>(seq));
    s.bind(base + 2, to_ms(o.time));
    s.bind(base + 3, o.request_id);
    s.bind(base + 4, o.route);
    s.bind(base + 5, o.model);
    s.bind(base + 6, o.provider);
    s.bind(base + 7, o.key_id);
    s.bind(base + 8, o.status_class);
    s.bind(base + 9, o.category);
    s.bind(base + 10, o.latency_us);
    s.bind(base + 11, o.tokens_in);
    s.bind(base + 12, o.tokens_out);
    s.bind(base + 13, o.cost_usd);
    s.bind(base + 14, o.attempts);
    s.bind(base + 15, o.layer);
    s.bind(base + 16, o.gateway_key);
  }
  // Binds one usage row (kUsageColumns values) from parameter `base + 1` on.
  static void bind_usage(Stmt& s, int base, const UsageEvent& u) {
    s.bind(base + 1, to_ms(u.time));
    s.bind(base + 2, u.request_id);
    s.bind(base + 3, u.provider);
    s.bind(base + 4, u.key_id);
    s.bind(base + 5, u.model);
    s.bind(base + 6, u.tokens_in);
    s.bind(base + 7, u.tokens_out);
    s.bind(base + 8, u.cost_usd);
    s.bind(base + 9, u.gateway_key);
  }

  // Writes the rows gathered for a multi-row insert: full statements of kRowsPerInsert rows,
  // the rest (at the end of a batch) one by one.
  int flush_rows(size_t kind, std::vector<const Entry*>& rows, bool all) {
    const int columns = kind == 0 ? kOutcomeColumns : kUsageColumns;
    size_t i = 0;
    auto bind_row = [&](Stmt& s, int base, const Entry& e) {
      if (kind == 0) {
        bind_outcome(s, base, e.seq, std::get<OutcomeEvent>(e.event));
      } else {
        bind_usage(s, base, std::get<UsageEvent>(e.event));
      }
    };
    for (; i + kRowsPerInsert <= rows.size(); i += kRowsPerInsert) {
      Stmt& s = insert_rows_[kind];
      for (size_t r = 0; r < kRowsPerInsert; ++r) bind_row(s, int(r) * columns, *rows[i + r]);
      if (int rc = s.run(); rc != SQLITE_OK) return rc;
    }
    if (all) {
      for (; i < rows.size(); ++i) {
        bind_row(insert_[kind], 0, *rows[i]);
        if (int rc = insert_[kind].run(); rc != SQLITE_OK) return rc;
      }
    }
    rows.erase(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(i));
    return SQLITE_OK;
  }

  int write(const Entry& e) {
    return std::visit(Overloaded{
                          [&](const OutcomeEvent& o) {
                            Stmt& s = insert_[0];
                            bind_outcome(s, 0, e.seq, o);
                            return s.run();
                          },
                          [&](const UsageEvent& u) {
                            Stmt& s = insert_[1];
                            bind_usage(s, 0, u);
                            return s.run();
                          },
                          [&](const KeyStateEvent& k) {
                            Stmt& s = insert_[2];
                            s.bind(1, k.key_id);
                            s.bind(2, k.state);
                            s.bind(3, to_ms(k.cooldown_until));
                            s.bind(4, k.reason);
                            s.bind(5, to_ms(k.day_window_start));
                            s.bind(6, k.day_requests);
                            s.bind(7, k.day_tokens);
                            s.bind(8, to_ms(k.updated));
                            return s.run();
                          },
                          [&](const BreakerTransitionEvent& b) {
                            Stmt& s = insert_[3];
                            s.bind(1, to_ms(b.time));
                            s.bind(2, b.breaker);
                            s.bind(3, b.from_state);
                            s.bind(4, b.to_state);
                            s.bind(5, b.reason);
                            return s.run();
                          },
                          [&](const BanditPosteriorEvent& p) {
                            Stmt& s = insert_[4];
                            s.bind(1, p.category);
                            s.bind(2, p.model);
                            s.bind(3, p.alpha);
                            s.bind(4, p.beta);
                            s.bind(5, p.last_outcome_id);
                            s.bind(6, to_ms(p.updated));
                            return s.run();
                          },
                          [&](const ModelStatsEvent& m) {
                            Stmt& s = insert_[5];
                            s.bind(1, m.model);
                            s.bind(2, m.requests);
                            s.bind(3, m.successes);
                            s.bind(4, m.latency_ewma_us);
                            s.bind(5, m.latency_p95_us);
                            s.bind(6, m.tokens_in);
                            s.bind(7, m.tokens_out);
                            s.bind(8, m.spend_usd);
                            s.bind(9, m.last_outcome_id);
                            s.bind(10, to_ms(m.updated));
                            return s.run();
                          },
                          [&](const FeedbackEvent& f) {
                            Stmt& s = insert_[6];
                            s.bind(1, to_ms(f.time));
                            s.bind(2, f.request_id);
                            s.bind(3, f.success ? 1 : 0);
                            s.bind(4, f.score);
                            return s.run();
                          },
                      },
                      e.event);
  }

  // One transaction for the whole batch. Returns ok or the first error (rolled back).
  // One transaction for the whole batch. Outcomes and usage (one or two rows per request) go
  // in kRowsPerInsert rows per statement, so SQLite's per-statement work (step, reset, halt)
  // is paid once per that many rows; rows of one kind keep their order.
  Status commit_batch(const std::vector<Entry>& retry, const Ring& ess, const Ring& norm) {
    int rc = begin_.run();
    if (rc != SQLITE_OK) return detail::sqlite_error(db_.get(), rc, "begin");
    for (auto& rows : gathered_) rows.clear();
    auto add = [&](const Entry& e) {
      const size_t kind = e.event.index();
      if (kind > 1) return write(e);
      gathered_[kind].push_back(&e);
      return gathered_[kind].size() >= kRowsPerInsert ? flush_rows(kind, gathered_[kind], false)
                                                      : SQLITE_OK;
    };
    auto add_all = [&](const Ring& ring) {
      for (size_t i = 0; i < ring.size(); ++i) {
        if (int r = add(ring.at(i)); r != SQLITE_OK) return r;
      }
      return SQLITE_OK;
    };
    for (const Entry& e : retry) {
      if (rc = add(e); rc != SQLITE_OK) break;
    }
    if (rc == SQLITE_OK) rc = add_all(ess);
    if (rc == SQLITE_OK) rc = add_all(norm);
    for (size_t kind = 0; kind < 2 && rc == SQLITE_OK; ++kind)
      rc = flush_rows(kind, gathered_[kind], true);
    for (auto& rows : gathered_) rows.clear();
    if (rc == SQLITE_OK) rc = commit_.run();
    if (rc == SQLITE_OK) return Status();
    Status st = detail::sqlite_error(db_.get(), rc, "commit batch");
    if (!sqlite3_get_autocommit(db_.get())) (void)db_.exec("ROLLBACK");
    return st;
  }

  // Deletes one batch of expired outcomes; returns the number deleted (or -1 on error).
  int64_t prune_batch(Status* error) {
    if (options_.state.retention_days <= 0) return 0;
    const auto cutoff = clock_->wall_now() - std::chrono::hours(24) * options_.state.retention_days;
    prune_.bind(1, static_cast<int64_t>(std::max(options_.prune_batch_rows, 1)));
    prune_.bind(2, to_ms(cutoff));
    int rc = prune_.run();  // autocommit: its own small transaction
    if (rc != SQLITE_OK) {
      *error = detail::sqlite_error(db_.get(), rc, "prune outcomes");
      return -1;
    }
    return sqlite3_changes(db_.get());
  }

  // Counts and logs a failed write. `events` > 0: a batch failed, which fails pending flushes;
  // a failed prune (events == 0) does not concern them.
  void record_failure(const Status& st, size_t events) {
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    metrics_.write_errors->Increment();
    // A full disk fails every batch: log the first failures and then every 100th.
    const uint64_t n = ++failures_logged_;
    if (n <= 5 || n % 100 == 0) {
      log::error("store: write of {} events failed ({} failures so far): {}", events, n,
                 st.message());
    }
    if (events == 0) return;
    publish([&] {
      ++failure_gen_;
      last_failure_ = st;
    });
  }

  void run() {
    Ring ess, norm;
    std::vector<Entry> retry;  // essential events whose commit failed, retried before new ones
    uint64_t retry_seq = 0;    // the last sequence number of the failed batch
    int retry_failures = 0;
    bool prune_more = true;  // prune once at start, then every prune_interval
    MonoTime next_prune = clock_->now();
    for (;;) {
      bool stop = false;
      bool prune_req = false;
      uint64_t last_seq = 0;
      {
        std::unique_lock lock(mu_);
        if (retry.empty()) {
          auto ready = [&] {
            return stopping_ || flush_requested_ || prune_requested_ || queued() >= batch_max_;
          };
          if (!ready()) writer_cv_.wait_for(lock, batch_interval_, ready);
          metrics_.queue_depth->Set(static_cast<double>(queued()));
          std::swap(ess, essential_);
          std::swap(norm, normal_);
          flush_requested_ = false;
          last_seq = next_seq_;
        } else {
          // Back off while the disk refuses writes; essential events stay queued meanwhile,
          // so producers of essential events feel the back-pressure.
          auto backoff =
              std::min<Millis>(Millis(1000), batch_interval_ * (1 << std::min(retry_failures, 6)));
          writer_cv_.wait_for(lock, stopping_ ? batch_interval_ : backoff,
                              [&] { return prune_requested_; });
          last_seq = retry_seq;
        }
        stop = stopping_;
        prune_req = prune_requested_;
      }
      space_cv_.notify_all();

      const size_t n = retry.size() + ess.size() + norm.size();
      if (n > 0) {
        const auto t0 = MonoClock::now();
        Status st = commit_batch(retry, ess, norm);
        if (st.ok()) {
          metrics_.commit_seconds->Observe(
              std::chrono::duration<double>(MonoClock::now() - t0).count());
          metrics_.committed->Increment(static_cast<double>(n));
          committed_.fetch_add(n, std::memory_order_relaxed);
          retry.clear();
          retry_failures = 0;
          publish([&] { committed_seq_.store(last_seq, std::memory_order_release); });
        } else {
          // Non-essential events of the failed batch are given up (and counted); essential
          // ones are kept and retried.
          for (size_t i = 0; i < norm.size(); ++i) count_drop(norm.at(i).event.index());
          for (size_t i = 0; i < ess.size(); ++i) retry.push_back(std::move(ess.at(i)));
          retry_seq = last_seq;
          ++retry_failures;
          record_failure(st, n);
          if (stop && retry_failures > 5) {
            for (const Entry& e : retry) count_drop(e.event.index());
            log::error("store: closing with {} essential events that could not be written",
                       retry.size());
            retry.clear();
            publish([&] { committed_seq_.store(last_seq, std::memory_order_release); });
          }
        }
        ess.clear();
        norm.clear();
      } else if (last_seq > committed_seq_.load(std::memory_order_relaxed)) {
        // Everything up to last_seq was dropped before the writer saw it.
        publish([&] { committed_seq_.store(last_seq, std::memory_order_release); });
      }

      // Retention: one small batch per cycle while there is more, so new events keep flowing.
      // The next prune is due an interval after the time of this decision, read before the
      // prune reads the wall clock: a later reading could already be past what this prune saw,
      // and old rows would wait a whole interval more.
      const MonoTime decided = clock_->now();
      if (prune_req) {
        Status st;
        while (true) {
          int64_t deleted = prune_batch(&st);
          if (deleted <= 0) break;
        }
        if (!st.ok()) record_failure(st, 0);
        prune_more = false;
        next_prune = decided + options_.prune_interval;
        publish([&] {
          prune_requested_ = false;
          ++prune_gen_;
          prune_status_ = st;
        });
      } else if (!stop && (prune_more || decided >= next_prune)) {
        Status st;
        const int64_t deleted = prune_batch(&st);
        if (deleted < 0) record_failure(st, 0);
        prune_more = deleted > 0;
        if (!prune_more) next_prune = decided + options_.prune_interval;
      }

      if (stop && retry.empty()) {
        std::lock_guard lock(mu_);
        if (queued() == 0) break;
      }
    }

    for (Stmt& s : insert_) s.finalize();
    for (Stmt& s : insert_rows_) s.finalize();
    begin_.finalize();
    commit_.finalize();
    prune_.finalize();
    // Fold the WAL into the database and truncate it, so a closed store is one file.
    if (Status st = db_.exec("PRAGMA wal_checkpoint(TRUNCATE)"); !st.ok()) {
      log::warn("store: checkpoint at close failed: {}", st.message());
    }
    metrics_.queue_depth->Set(0);
    publish([&] { writer_exited_ = true; });
    space_cv_.notify_all();
  }

  const SqliteStoreOptions options_;
  const Clock* clock_;
  Db db_;  // the write connection: used only by the writer thread once it runs
  std::array<Stmt, kKinds> insert_;
  std::array<Stmt, 2> insert_rows_;  // outcomes and usage, kRowsPerInsert rows per statement
  std::array<std::vector<const Entry*>, 2> gathered_;  // rows waiting for a multi-row insert
  Stmt begin_, commit_, prune_;
  const size_t capacity_;
  const size_t batch_max_;
  const Millis batch_interval_;
  StoreMetrics& metrics_;

  mutable std::mutex mu_;
  std::condition_variable writer_cv_;  // wakes the writer
  std::condition_variable space_cv_;   // essential producers waiting for queue space
  std::condition_variable done_cv_;    // flush()/prune() waiters
  Ring essential_;                     // guarded by mu_
  Ring normal_;                        // guarded by mu_
  uint64_t next_seq_ = 0;              // last assigned; guarded by mu_
  bool stopping_ = false;
  bool flush_requested_ = false;
  bool prune_requested_ = false;
  bool writer_exited_ = false;
  uint64_t failure_gen_ = 0;
  Status last_failure_;
  uint64_t prune_gen_ = 0;
  Status prune_status_;
  std::atomic<uint64_t> committed_seq_{0};

  uint64_t failures_logged_ = 0;  // writer thread only
  uint64_t enqueued_ = 0;         // guarded by mu_
  std::atomic<uint64_t> committed_{0}, dropped_{0}, write_errors_{0};

  std::mutex close_mu_;
  bool closed_ = false;
  std::thread writer_;
};

Result<LoadedState> SqliteStore::load() {
  auto db = Db::open(options_.state.path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
  if (!db.ok()) return db.status();
  sqlite3_busy_timeout(db->get(), static_cast<int>(options_.state.busy_timeout_ms));
  // One read transaction: a consistent snapshot while the writer keeps committing.
  if (Status st = db->exec("BEGIN"); !st.ok()) return st;
  LoadedState out;
  const int64_t now_ms = to_ms(clock_->wall_now());
  Stmt s;
  if (Status st = s.prepare(db->get(),
                            "SELECT key_id, state, cooldown_until_ms, reason, day_window_start_ms, "
                            "day_requests, day_tokens, updated_ms FROM key_state ORDER BY key_id");
      !st.ok()) {
    return st;
  }
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    KeyStateEvent k;
    k.key_id = s.col_text(0);
    k.state = s.col_text(1);
    const int64_t until = s.col_int(2);
    k.cooldown_until = until > now_ms ? detail::from_ms(until) : WallTime{};
    k.reason = s.col_text(3);
    k.day_window_start = detail::from_ms(s.col_int(4));
    k.day_requests = s.col_int(5);
    k.day_tokens = s.col_int(6);
    k.updated = detail::from_ms(s.col_int(7));
    out.keys.push_back(std::move(k));
  }
  if (rc != SQLITE_DONE) return detail::sqlite_error(db->get(), rc, "load key_state");

  if (Status st = s.prepare(db->get(),
                            "SELECT category, model, alpha, beta, last_outcome_id, updated_ms "
                            "FROM bandit_posteriors ORDER BY category, model");
      !st.ok()) {
    return st;
  }
  while ((rc = s.step()) == SQLITE_ROW) {
    BanditPosteriorEvent p;
    p.category = s.col_text(0);
    p.model = s.col_text(1);
    p.alpha = s.col_double(2);
    p.beta = s.col_double(3);
    p.last_outcome_id = s.col_int(4);
    p.updated = detail::from_ms(s.col_int(5));
    out.posteriors.push_back(std::move(p));
  }
  if (rc != SQLITE_DONE) return detail::sqlite_error(db->get(), rc, "load bandit_posteriors");

  if (Status st = s.prepare(db->get(),
                            "SELECT model, requests, successes, latency_ewma_us, latency_p95_us, "
                            "tokens_in, tokens_out, spend_usd, last_outcome_id, updated_ms "
                            "FROM model_stats ORDER BY model");
      !st.ok()) {
    return st;
  }
  while ((rc = s.step()) == SQLITE_ROW) {
    ModelStatsEvent m;
    m.model = s.col_text(0);
    m.requests = s.col_int(1);
    m.successes = s.col_int(2);
    m.latency_ewma_us = s.col_double(3);
    m.latency_p95_us = s.col_double(4);
    m.tokens_in = s.col_int(5);
    m.tokens_out = s.col_int(6);
    m.spend_usd = s.col_double(7);
    m.last_outcome_id = s.col_int(8);
    m.updated = detail::from_ms(s.col_int(9));
    out.model_stats.push_back(std::move(m));
  }
  if (rc != SQLITE_DONE) return detail::sqlite_error(db->get(), rc, "load model_stats");
  s.finalize();

  auto last = db->query_int("SELECT coalesce(max(id), 0) FROM outcomes");
  if (!last.ok()) return last.status();
  out.last_outcome_id = *last;
  (void)db->exec("COMMIT");
  return out;
}

}  // namespace

const char* event_kind_name(const Event& e) {
  return kKindNames[e.index()];
}

bool is_essential(const Event& e) {
  return std::holds_alternative<UsageEvent>(e) || std::holds_alternative<FeedbackEvent>(e);
}

Result<std::unique_ptr<Store>> open_sqlite_store(const SqliteStoreOptions& options) {
  const StateConfig& cfg = options.state;
  auto db = Db::open(cfg.path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
  if (!db.ok()) return db.status();
  sqlite3_busy_timeout(db->get(), static_cast<int>(cfg.busy_timeout_ms));
  {
    // journal_mode answers with the mode in force; anything but WAL (e.g. a read-only medium)
    // would silently lose the concurrency and durability this store promises.
    Stmt s;
    if (Status st = s.prepare(db->get(), "PRAGMA journal_mode = WAL"); !st.ok()) return st;
    if (s.step() != SQLITE_ROW || s.col_text(0) != "wal") {
      return Status::io_error("cannot enable WAL mode on " + cfg.path);
    }
  }
  std::string pragmas =
      std::string("PRAGMA synchronous = ") +
      (cfg.synchronous == SyncMode::kFull ? "FULL" : "NORMAL") + "; PRAGMA foreign_keys = ON" +
      "; PRAGMA wal_autocheckpoint = " + std::to_string(options.wal_autocheckpoint_pages) +
      "; PRAGMA journal_size_limit = " + std::to_string(options.journal_size_limit_bytes) + ";";
  if (Status st = db->exec(pragmas.c_str()); !st.ok()) return st;
  if (Status st = detail::migrate(*db, schema_version()); !st.ok()) return st;
  if (options.max_page_count > 0) {
    std::string p = "PRAGMA max_page_count = " + std::to_string(options.max_page_count);
    if (Status st = db->exec(p.c_str()); !st.ok()) return st;
  }
  auto store = std::make_unique<SqliteStore>(options, std::move(*db));
  if (Status st = store->init(); !st.ok()) return st;
  return std::unique_ptr<Store>(std::move(store));
}

Result<std::unique_ptr<Store>> open_store(const StateConfig& state, const Clock& clock) {
  if (state.backend != "sqlite") {
    return Status::invalid_argument("unsupported state backend '" + state.backend + "'");
  }
  SqliteStoreOptions options;
  options.state = state;
  options.clock = &clock;
  return open_sqlite_store(options);
}

}  // namespace switchboard::store
