// SqliteStore: the SQLite implementation of Store (see store.h for the contract): the
// statements that write a batch, prune and load. The queue and the writer thread that drive them
// are BatchWriter's (batch_writer.h).
#include <algorithm>
#include <array>
#include <chrono>
#include <mutex>
#include <thread>
#include <type_traits>

#include "common/json.h"
#include "common/log.h"
#include "store/batch_writer.h"
#include "store/reader_pool.h"
#include "store/sqlite_util.h"
#include "store/store.h"

namespace switchboard::store {
namespace {

using detail::Db;
using detail::Entry;
using detail::kEventKinds;
using detail::Ring;
using detail::Stmt;
using detail::to_ms;

// Outcome, usage and learning rows (one of each per request) are inserted this many per
// statement (see write_batch).
constexpr size_t kRowsPerInsert = 16;
constexpr int kOutcomeColumns = 16;
constexpr int kUsageColumns = 9;
constexpr int kLearnColumns = 15;
// The event kinds written by multi-row inserts, and their columns.
constexpr size_t kMultiKinds[] = {0, 1, 7};
constexpr int kMultiColumns[] = {kOutcomeColumns, kUsageColumns, kLearnColumns};
constexpr size_t kLearnCompactKind = 8;
static_assert(
    std::is_same_v<std::variant_alternative_t<0, Event>, OutcomeEvent> &&
    std::is_same_v<std::variant_alternative_t<1, Event>, UsageEvent> &&
    std::is_same_v<std::variant_alternative_t<7, Event>, LearnEvent> &&
    std::is_same_v<std::variant_alternative_t<kLearnCompactKind, Event>, LearnCompactEvent>);
// The multi-row slot of an event kind, or -1.
constexpr int multi_slot(size_t kind) {
  for (size_t i = 0; i < std::size(kMultiKinds); ++i)
    if (kMultiKinds[i] == kind) return int(i);
  return -1;
}

using detail::Overloaded;

// Read connections kept for find_response (more concurrent calls open more, for the call).
constexpr size_t kResponseReaders = 4;
// Expired stored responses deleted per prune batch: fewer than outcomes, as each may be
// megabytes (every page of it is visited to be freed).
constexpr int kResponsePruneRows = 100;

// A read connection of find_response, with its statement.
struct ResponseReader {
  Db db;
  Stmt find;
};

class SqliteStore final : public detail::BatchedStore {
 public:
  SqliteStore(const SqliteStoreOptions& options, Db db)
      : BatchedStore(options.state, *(options.clock ? options.clock : &SystemClock::instance()),
                     options.prune_interval),
        options_(options),
        clock_(options.clock ? options.clock : &SystemClock::instance()),
        db_(std::move(db)) {}

  ~SqliteStore() override { close(); }

  Status init() {
    static constexpr const char* kSql[] = {
        "INSERT INTO outcomes (id, ts_ms, request_id, route, model, provider, key_id, "
        "status_class, category, latency_us, tokens_in, tokens_out, cost_usd, attempts, layer, "
        "gateway_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
        "?16)",
        "INSERT INTO usage (ts_ms, request_id, provider, key_id, model, tokens_in, tokens_out, "
        "cost_usd, gateway_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        "INSERT INTO key_state (key_id, model, state, cooldown_until_ms, reason, updated_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
        "ON CONFLICT (key_id, model) DO UPDATE SET state = excluded.state, "
        "cooldown_until_ms = excluded.cooldown_until_ms, reason = excluded.reason, "
        "updated_ms = excluded.updated_ms",
        "INSERT INTO breaker_transitions (ts_ms, breaker, from_state, to_state, reason) "
        "VALUES (?1, ?2, ?3, ?4, ?5)",
        "INSERT INTO bandit_posteriors (category, model, alpha, beta, last_outcome_id, "
        "updated_ms, outcomes, feedback, feedback_reward_sum) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (category, model) DO UPDATE "
        "SET alpha = excluded.alpha, beta = excluded.beta, "
        "last_outcome_id = excluded.last_outcome_id, updated_ms = excluded.updated_ms, "
        "outcomes = excluded.outcomes, feedback = excluded.feedback, "
        "feedback_reward_sum = excluded.feedback_reward_sum",
        "INSERT INTO model_stats (model, requests, successes, latency_ewma_us, latency_p95_us, "
        "tokens_in, tokens_out, spend_usd, last_outcome_id, updated_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (model) DO UPDATE SET "
        "requests = excluded.requests, successes = excluded.successes, "
        "latency_ewma_us = excluded.latency_ewma_us, latency_p95_us = excluded.latency_p95_us, "
        "tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out, "
        "spend_usd = excluded.spend_usd, last_outcome_id = excluded.last_outcome_id, "
        "updated_ms = excluded.updated_ms",
        "INSERT INTO feedback (ts_ms, request_id, success, score) VALUES (?1, ?2, ?3, ?4)",
        "INSERT INTO learning_log (id, ts_ms, kind, category, model, reward, transport_reward, "
        "counts, success, latency_us, tokens_in, tokens_out, cost_usd, route, features) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        "DELETE FROM learning_log WHERE id <= ?1",
        "INSERT INTO contextual_models (route, model, means, variances, updates, "
        "last_outcome_id, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
        "ON CONFLICT (route, model) DO UPDATE SET means = excluded.means, "
        "variances = excluded.variances, updates = excluded.updates, "
        "last_outcome_id = excluded.last_outcome_id, updated_ms = excluded.updated_ms",
        "INSERT INTO responses (id, owner, created_ms, expires_ms, items) "
        "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, "
        "created_ms = excluded.created_ms, expires_ms = excluded.expires_ms, "
        "items = excluded.items",
    };
    static_assert(std::size(kSql) == kEventKinds);
    for (size_t i = 0; i < kEventKinds; ++i) {
      if (Status st = insert_[i].prepare(db_.get(), kSql[i]); !st.ok()) return st;
    }
    // The multi-row forms: the same column list, kRowsPerInsert value tuples.
    for (size_t slot = 0; slot < std::size(kMultiKinds); ++slot) {
      const char* one = kSql[kMultiKinds[slot]];
      std::string sql(one, std::string_view(one).find("VALUES") + 6);
      for (size_t r = 0; r < kRowsPerInsert; ++r) {
        sql += r == 0 ? " (" : ", (";
        for (int c = 0; c < kMultiColumns[slot]; ++c) sql += c == 0 ? "?" : ", ?";
        sql += ")";
      }
      if (Status st = insert_rows_[slot].prepare(db_.get(), sql.c_str()); !st.ok()) return st;
    }
    if (Status st = begin_.prepare(db_.get(), "BEGIN"); !st.ok()) return st;
    if (Status st = commit_.prepare(db_.get(), "COMMIT"); !st.ok()) return st;
    if (Status st = prune_.prepare(db_.get(),
                                   "DELETE FROM outcomes WHERE id IN "
                                   "(SELECT id FROM outcomes ORDER BY id LIMIT ?1) AND ts_ms < ?2");
        !st.ok()) {
      return st;
    }
    if (Status st = prune_responses_.prepare(
            db_.get(),
            "DELETE FROM responses WHERE rowid IN "
            "(SELECT rowid FROM responses WHERE expires_ms <= ?1 ORDER BY expires_ms LIMIT ?2)");
        !st.ok()) {
      return st;
    }
    // Outcome ids are sequence numbers: continue after everything already referenced.
    auto last = db_.query_int(
        "SELECT max(coalesce((SELECT max(id) FROM outcomes), 0), "
        "coalesce((SELECT max(last_outcome_id) FROM bandit_posteriors), 0), "
        "coalesce((SELECT max(last_outcome_id) FROM model_stats), 0), "
        "coalesce((SELECT max(id) FROM learning_log), 0))");
    if (!last.ok()) return last.status();
    writer_.start(static_cast<uint64_t>(*last));
    return Status();
  }

  Result<LoadedState> load() override;

  Result<std::vector<ServedRequest>> recent_served(WallTime since, size_t limit) override {
    return query_recent_served(options_.state.path, since, limit);
  }
  Result<std::map<std::string, double>> gateway_spend(WallTime since) override {
    return query_gateway_spend(options_.state.path, since);
  }
  Result<std::vector<KeyMinuteUsage>> key_day_usage(WallTime since) override {
    return query_key_day_usage(options_.state.path, since);
  }
  Result<std::map<std::string, ProviderUsage>> provider_usage(WallTime since) override {
    return query_provider_usage(options_.state.path, since);
  }
  Result<std::optional<StoredResponse>> find_response(std::string_view id, WallTime now) override;

  void release_connection() override {
    // The readers first: the write connection, closing last, removes the WAL file.
    readers_.close();
    db_.reset();  // the writer already finalized its statements and checkpointed
  }

 private:
  // ---- BatchSink: called on the writer thread ----

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

  // Binds one learning-journal row (kLearnColumns values) from parameter `base + 1` on.
  static void bind_learn(Stmt& s, int base, uint64_t seq, const LearnEvent& l) {
    s.bind(base + 1, int64_t(seq));
    s.bind(base + 2, to_ms(l.time));
    s.bind(base + 3, int64_t(l.kind));
    s.bind(base + 4, l.category);
    s.bind(base + 5, l.model);
    s.bind(base + 6, l.reward);
    s.bind(base + 7, l.transport_reward);
    s.bind(base + 8, l.counts_for_learning ? 1 : 0);
    s.bind(base + 9, l.success ? 1 : 0);
    s.bind(base + 10, l.latency_us);
    s.bind(base + 11, l.tokens_in);
    s.bind(base + 12, l.tokens_out);
    s.bind(base + 13, l.cost_usd);
    s.bind(base + 14, l.route);
    s.bind_copy(base + 15, json::hex_encode(l.features));
  }

  // Writes the rows gathered for a multi-row insert (slot: see kMultiKinds): full statements of
  // kRowsPerInsert rows, the rest (at the end of a batch) one by one.
  int flush_rows(size_t slot, std::vector<const Entry*>& rows, bool all) {
    const size_t kind = kMultiKinds[slot];
    const int columns = kMultiColumns[slot];
    size_t i = 0;
    auto bind_row = [&](Stmt& s, int base, const Entry& e) {
      if (kind == 0) {
        bind_outcome(s, base, e.seq, std::get<OutcomeEvent>(e.event));
      } else if (kind == 1) {
        bind_usage(s, base, std::get<UsageEvent>(e.event));
      } else {
        bind_learn(s, base, e.seq, std::get<LearnEvent>(e.event));
      }
    };
    for (; i + kRowsPerInsert <= rows.size(); i += kRowsPerInsert) {
      Stmt& s = insert_rows_[slot];
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
                            s.bind(2, k.model);
                            s.bind(3, k.state);
                            s.bind(4, to_ms(k.cooldown_until));
                            s.bind(5, k.reason);
                            s.bind(6, to_ms(k.updated));
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
                            s.bind(5, int64_t(p.last_outcome_id));
                            s.bind(6, to_ms(p.updated));
                            s.bind(7, int64_t(p.outcomes));
                            s.bind(8, int64_t(p.feedback));
                            s.bind(9, p.feedback_reward_sum);
                            return s.run();
                          },
                          [&](const ModelStatsEvent& m) {
                            Stmt& s = insert_[5];
                            s.bind(1, m.model);
                            s.bind(2, int64_t(m.requests));
                            s.bind(3, int64_t(m.successes));
                            s.bind(4, m.latency_ewma_us);
                            s.bind(5, m.latency_p95_us);
                            s.bind(6, m.tokens_in);
                            s.bind(7, m.tokens_out);
                            s.bind(8, m.spend_usd);
                            s.bind(9, int64_t(m.last_outcome_id));
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
                          [&](const LearnEvent& l) {
                            Stmt& s = insert_[7];
                            bind_learn(s, 0, e.seq, l);
                            return s.run();
                          },
                          [&](const LearnCompactEvent& c) {
                            Stmt& s = insert_[8];
                            s.bind(1, int64_t(c.up_to));
                            return s.run();
                          },
                          [&](const ContextualModelEvent& c) {
                            Stmt& s = insert_[9];
                            s.bind(1, c.route);
                            s.bind(2, c.model);
                            s.bind_copy(3, detail::floats_hex(c.means));
                            s.bind_copy(4, detail::floats_hex(c.variances));
                            s.bind(5, int64_t(c.updates));
                            s.bind(6, int64_t(c.last_outcome_id));
                            s.bind(7, to_ms(c.updated));
                            return s.run();
                          },
                          [&](const StoredResponseEvent& r) {
                            Stmt& s = insert_[10];
                            s.bind(1, r.id);
                            s.bind(2, r.owner);
                            s.bind(3, to_ms(r.created));
                            s.bind(4, to_ms(r.expires));
                            s.bind(5, r.items);
                            return s.run();
                          },
                      },
                      e.event);
  }

  // One transaction for the whole batch. Outcomes and usage (one or two rows per request) go
  // in kRowsPerInsert rows per statement, so SQLite's per-statement work (step, reset, halt)
  // is paid once per that many rows; rows of one kind keep their order.
  Status write_batch(const std::vector<Entry>& retry, const Ring& ess, const Ring& norm) override {
    int rc = begin_.run();
    if (rc != SQLITE_OK) return detail::sqlite_error(db_.get(), rc, "begin");
    for (auto& rows : gathered_) rows.clear();
    auto add = [&](const Entry& e) {
      const size_t kind = e.event.index();
      const int slot = multi_slot(kind);
      if (slot < 0) {
        if (kind == kLearnCompactKind) {
          // It deletes journal rows up to an id: the rows gathered before it go in first.
          const size_t learn = size_t(multi_slot(7));
          if (int r = flush_rows(learn, gathered_[learn], true); r != SQLITE_OK) return r;
        }
        return write(e);
      }
      auto& rows = gathered_[size_t(slot)];
      rows.push_back(&e);
      return rows.size() >= kRowsPerInsert ? flush_rows(size_t(slot), rows, false) : SQLITE_OK;
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
    for (size_t slot = 0; slot < std::size(kMultiKinds) && rc == SQLITE_OK; ++slot)
      rc = flush_rows(slot, gathered_[slot], true);
    for (auto& rows : gathered_) rows.clear();
    if (rc == SQLITE_OK) rc = commit_.run();
    if (rc == SQLITE_OK) return Status();
    Status st = detail::sqlite_error(db_.get(), rc, "commit batch");
    if (!sqlite3_get_autocommit(db_.get())) (void)db_.exec("ROLLBACK");
    return st;
  }

  // Deletes one batch of expired stored responses and one of expired outcomes (each in its own
  // small autocommit transaction); returns the number deleted (or -1 on error).
  int64_t prune_batch(Status* error) override {
    // Responses first: their expiry is their own, whatever the outcomes' retention.
    prune_responses_.bind(1, to_ms(clock_->wall_now()));
    prune_responses_.bind(2, int64_t(std::clamp(options_.prune_batch_rows, 1, kResponsePruneRows)));
    if (int rc = prune_responses_.run(); rc != SQLITE_OK) {
      *error = detail::sqlite_error(db_.get(), rc, "prune responses");
      return -1;
    }
    const int64_t responses = sqlite3_changes(db_.get());
    if (options_.state.retention_days <= 0) return responses;
    const auto cutoff = clock_->wall_now() - std::chrono::hours(24) * options_.state.retention_days;
    prune_.bind(1, static_cast<int64_t>(std::max(options_.prune_batch_rows, 1)));
    prune_.bind(2, to_ms(cutoff));
    int rc = prune_.run();  // autocommit: its own small transaction
    if (rc != SQLITE_OK) {
      *error = detail::sqlite_error(db_.get(), rc, "prune outcomes");
      return -1;
    }
    return responses + sqlite3_changes(db_.get());
  }

  void finish() override {
    for (Stmt& s : insert_) s.finalize();
    for (Stmt& s : insert_rows_) s.finalize();
    begin_.finalize();
    commit_.finalize();
    prune_.finalize();
    prune_responses_.finalize();
    // Fold the WAL into the database and truncate it, so a closed store is one file.
    if (Status st = db_.exec("PRAGMA wal_checkpoint(TRUNCATE)"); !st.ok()) {
      log::warn("store: checkpoint at close failed: {}", st.message());
    }
  }

  const SqliteStoreOptions options_;
  const Clock* clock_;
  Db db_;  // the write connection: used only by the writer thread once it runs
  std::array<Stmt, kEventKinds> insert_;
  // Outcomes, usage and learning rows (kMultiKinds), kRowsPerInsert rows per statement.
  std::array<Stmt, std::size(kMultiKinds)> insert_rows_;
  std::array<std::vector<const Entry*>, std::size(kMultiKinds)> gathered_;  // waiting for one
  Stmt begin_, commit_, prune_, prune_responses_;
  detail::ReaderPool<ResponseReader> readers_{kResponseReaders};
};

Result<std::optional<StoredResponse>> SqliteStore::find_response(std::string_view id,
                                                                 WallTime now) {
  using Found = std::optional<StoredResponse>;
  // Such an id is never stored (the writer refuses it).
  if (id.empty() || id.size() > kMaxResponseIdBytes) return Found();
  auto open = [&]() -> Result<std::unique_ptr<ResponseReader>> {
    // Read-write (not SQLITE_OPEN_READONLY, which cannot always use the WAL index) but
    // query_only: this connection never writes.
    auto db = Db::open(options_.state.path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
    if (!db.ok()) return db.status();
    sqlite3_busy_timeout(db->get(), static_cast<int>(options_.state.busy_timeout_ms));
    if (Status st = db->exec("PRAGMA query_only = 1"); !st.ok()) return st;
    auto reader = std::make_unique<ResponseReader>();
    reader->db = std::move(*db);
    if (Status st = reader->find.prepare(reader->db.get(),
                                         "SELECT owner, created_ms, expires_ms, items FROM "
                                         "responses WHERE id = ?1 AND expires_ms > ?2");
        !st.ok()) {
      return st;
    }
    return reader;
  };
  auto find = [&](ResponseReader& r) -> Result<Found> {
    Stmt& q = r.find;
    q.bind(1, id);
    q.bind(2, to_ms(now));
    const int rc = q.step();
    Found out;
    if (rc == SQLITE_ROW) {
      out.emplace();
      out->id = std::string(id);
      out->owner = q.col_text(0);
      out->created = detail::from_ms(q.col_int(1));
      out->expires = detail::from_ms(q.col_int(2));
      out->items = q.col_text(3);
    }
    Status st;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      st = detail::sqlite_error(r.db.get(), rc, "find a stored response");
    q.reset();  // ends the read transaction
    if (!st.ok()) return st;
    return out;
  };
  return readers_.with(open, find);
}

Result<LoadedState> SqliteStore::load() {
  auto db = Db::open(options_.state.path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
  if (!db.ok()) return db.status();
  sqlite3_busy_timeout(db->get(), static_cast<int>(options_.state.busy_timeout_ms));
  return detail::read_state(*db, clock_->wall_now());
}

}  // namespace

Result<std::unique_ptr<Store>> open_sqlite_store(const SqliteStoreOptions& options) {
  const StateConfig& cfg = options.state;
  auto db = Db::open(cfg.path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
  if (!db.ok()) return db.status();
  sqlite3_busy_timeout(db->get(), static_cast<int>(cfg.busy_timeout_ms));
  {
    // journal_mode answers with the mode in force; anything but WAL (e.g. a read-only medium)
    // would silently lose the concurrency and durability this store promises.
    // A file another process is creating right now (two gateways started together on one
    // path) answers BUSY without calling the busy handler: asked again within busy_timeout_ms.
    Stmt s;
    if (Status st = s.prepare(db->get(), "PRAGMA journal_mode = WAL"); !st.ok()) return st;
    const auto until = std::chrono::steady_clock::now() +
                       std::chrono::milliseconds(std::max<int64_t>(cfg.busy_timeout_ms, 0));
    int rc = s.step();
    while ((rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && std::chrono::steady_clock::now() < until) {
      s.reset();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      rc = s.step();
    }
    if (rc != SQLITE_ROW || s.col_text(0) != "wal") {
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
  if (state.backend == "postgres") {
    PostgresStoreOptions options;
    options.state = state;
    options.clock = &clock;
    return open_postgres_store(options);
  }
  if (state.backend != "sqlite") {
    return Status::invalid_argument("unsupported state backend '" + state.backend + "'");
  }
  SqliteStoreOptions options;
  options.state = state;
  options.clock = &clock;
  return open_sqlite_store(options);
}

}  // namespace switchboard::store
