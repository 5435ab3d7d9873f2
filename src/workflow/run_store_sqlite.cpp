// The engine's SQLite state (run_store.h): runs, step rows and audit events on the store's file,
// on a connection of its own.
#include <boost/json.hpp>
#include <mutex>
#include <unordered_map>

#include "store/sqlite_util.h"
#include "store/store.h"
#include "workflow/run_store.h"

namespace switchboard::workflow::detail {

using store::detail::Db;
using store::detail::sqlite_error;
using store::detail::Stmt;
using store::detail::to_ms;

namespace {

json::value parse_or_null(const std::string& s) {
  if (s.empty()) return nullptr;
  boost::system::error_code ec;
  json::value v = json::parse(s, ec);
  return ec ? json::value(nullptr) : v;
}

// Every step row of a run, in commit order (claim/replay and `show` read the same columns).
Status read_step_records(sqlite3* db, const std::string& run_id, std::vector<StepRecord>& out) {
  Stmt sq;
  if (Status st = sq.prepare(db,
                             "SELECT step_id, seq, attempt, failures, status, output, error, "
                             "started_ms, finished_ms, wake_ms FROM workflow_steps "
                             "WHERE run_id = ? ORDER BY seq");
      !st.ok())
    return st;
  sq.bind(1, run_id);
  int rc;
  while ((rc = sq.step()) == SQLITE_ROW) {
    StepRecord r;
    r.step_id = sq.col_text(0);
    r.seq = sq.col_int(1);
    r.attempt = static_cast<int>(sq.col_int(2));
    r.failures = static_cast<int>(sq.col_int(3));
    r.status = sq.col_text(4);
    r.output = parse_or_null(sq.col_text(5));
    r.error = sq.col_text(6);
    r.started_ms = sq.col_int(7);
    r.finished_ms = sq.col_int(8);
    r.wake_ms = sq.col_int(9);
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return sqlite_error(db, rc, "read steps");
  return Status();
}

constexpr const char* kRunColumns =
    "id, name, version, status, owner, cancel_requested, created_ms, updated_ms, "
    "finished_ms, error, client";
constexpr int kRunColumnCount = 11;
RunSummary read_summary(const Stmt& q) {
  RunSummary s;
  s.id = q.col_text(0);
  s.name = q.col_text(1);
  s.version = q.col_int(2);
  s.status = parse_run_status(q.col_text(3)).value_or(RunStatus::kFailed);
  s.owner = q.col_text(4);
  s.cancel_requested = q.col_int(5) != 0;
  s.created_ms = q.col_int(6);
  s.updated_ms = q.col_int(7);
  s.finished_ms = q.col_int(8);
  s.error = q.col_text(9);
  s.client = q.col_text(10);
  return s;
}

// An IMMEDIATE transaction on the store's connection (its mutex held): rolled back when it ends
// without a commit.
class Transaction {
 public:
  explicit Transaction(Db& db) : db_(db) {}
  ~Transaction() { rollback(); }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  Status begin() {
    Status st = db_.exec("BEGIN IMMEDIATE");
    open_ = st.ok();
    return st;
  }
  Status commit() {
    Status st = db_.exec("COMMIT");
    if (st.ok()) open_ = false;
    return st;
  }
  void rollback() {
    if (open_) (void)db_.exec("ROLLBACK");
    open_ = false;
  }

 private:
  Db& db_;
  bool open_ = false;
};

class SqliteRunStore final : public RunStore {
 public:
  SqliteRunStore(const Clock& clock, std::string owner) : clock_(clock), owner_(std::move(owner)) {}
  Status open(const std::string& path, SyncMode synchronous, int64_t busy_timeout_ms);

  Status create_run(const std::string& id, const Definition& def, const json::value& input,
                    const std::string& client, Millis claim_lease) override;
  Result<Claim> claim(const std::string& run_id, const Definition* given, bool force, Millis lease,
                      const OwnerAlive& owner_alive) override;
  Result<std::vector<std::string>> claim_next(int limit, Millis lease) override;
  Status fail_claimed(const std::string& run_id, const std::string& why) override;
  void release_claim(const std::string& run_id, const std::string& why) override;
  Status heartbeat(const std::string& run_id, bool renew, Millis lease) override;
  Status record_step(const std::string& run_id, const StepRecord& r, const std::string& event,
                     const std::string& detail) override;
  Status record_event(const std::string& run_id, const std::string& step_id, int attempt,
                      const std::string& event, const std::string& detail) override;
  Status finish_run(const std::string& run_id, RunStatus status, const std::string& error) override;
  Status request_cancel(const std::string& run_id) override;
  Result<std::vector<std::string>> interrupted_runs(const OwnerAlive& owner_alive) override;
  Result<std::vector<RunSummary>> list_runs(int limit, const std::string* client) override;
  Result<RunDetail> get_run(const std::string& run_id) override;

 private:
  int64_t now_ms() const;
  // A cached prepared statement (mu_ held).
  Result<Stmt*> stmt(const char* sql);
  // An audit event (mu_ held, inside a transaction).
  Status add_event(const std::string& run_id, const std::string& step_id, int attempt,
                   const std::string& type, const std::string& detail);
  // A step row (mu_ held, inside a transaction).
  Status write_step(const std::string& run_id, const StepRecord& r);
  // Runs `body` in one IMMEDIATE transaction after checking that we still own the run.
  template <typename F>
  Status owned_tx(const std::string& run_id, F&& body);

  const Clock& clock_;
  const std::string owner_;
  std::mutex mu_;  // one connection, used by the run threads and the heartbeats
  Db db_;
  std::unordered_map<const char*, Stmt> stmts_;
};

}  // namespace

Status SqliteRunStore::open(const std::string& path, SyncMode synchronous,
                            int64_t busy_timeout_ms) {
  auto db = Db::open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
  if (!db.ok()) return db.status();
  db_ = std::move(*db);
  sqlite3_busy_timeout(db_.get(), static_cast<int>(busy_timeout_ms));
  if (Status st = db_.exec("PRAGMA journal_mode=WAL"); !st.ok()) return st;
  const char* sync =
      synchronous == SyncMode::kFull ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL";
  if (Status st = db_.exec(sync); !st.ok()) return st;
  return store::detail::migrate(db_, store::schema_version());
}

Result<std::unique_ptr<RunStore>> open_sqlite_run_store(const std::string& path,
                                                        SyncMode synchronous,
                                                        int64_t busy_timeout_ms, const Clock& clock,
                                                        std::string owner) {
  auto rs = std::make_unique<SqliteRunStore>(clock, std::move(owner));
  if (Status st = rs->open(path, synchronous, busy_timeout_ms); !st.ok()) return st;
  return std::unique_ptr<RunStore>(std::move(rs));
}

bool is_postgres_url(const std::string& path) {
  return path.rfind("postgresql://", 0) == 0 || path.rfind("postgres://", 0) == 0;
}

}  // namespace switchboard::workflow::detail

namespace switchboard::workflow {
bool is_shared_database(const std::string& db_path) {
  return detail::is_postgres_url(db_path);
}
}  // namespace switchboard::workflow

namespace switchboard::workflow::detail {

Result<std::unique_ptr<RunStore>> RunStore::open(const std::string& path, SyncMode synchronous,
                                                 int64_t busy_timeout_ms, const Clock& clock,
                                                 std::string owner) {
  if (is_postgres_url(path)) return open_postgres_run_store(path, clock, std::move(owner));
  return open_sqlite_run_store(path, synchronous, busy_timeout_ms, clock, std::move(owner));
}

int64_t SqliteRunStore::now_ms() const {
  return to_ms(clock_.wall_now());
}

Result<Stmt*> SqliteRunStore::stmt(const char* sql) {
  auto it = stmts_.find(sql);
  if (it != stmts_.end()) return &it->second;
  Stmt s;
  if (Status st = s.prepare(db_.get(), sql); !st.ok()) return st;
  return &stmts_.emplace(sql, std::move(s)).first->second;
}

Status SqliteRunStore::add_event(const std::string& run_id, const std::string& step_id, int attempt,
                                 const std::string& type, const std::string& detail) {
  auto s = stmt(
      "INSERT INTO workflow_events (run_id, ts_ms, step_id, attempt, type, detail) "
      "VALUES (?, ?, ?, ?, ?, ?)");
  if (!s.ok()) return s.status();
  Stmt& q = **s;
  q.bind(1, run_id);
  q.bind(2, now_ms());
  q.bind(3, step_id);
  q.bind(4, attempt);
  q.bind(5, type);
  q.bind(6, detail);
  if (int rc = q.run(); rc != SQLITE_OK) return sqlite_error(db_.get(), rc, "insert event");
  return Status();
}

template <typename F>
Status SqliteRunStore::owned_tx(const std::string& run_id, F&& body) {
  std::lock_guard lock(mu_);
  Transaction tx(db_);
  if (Status st = tx.begin(); !st.ok()) return st;
  auto s = stmt("UPDATE workflow_runs SET updated_ms = ? WHERE id = ? AND owner = ?");
  if (!s.ok()) return s.status();
  Stmt& q = **s;
  q.bind(1, now_ms());
  q.bind(2, run_id);
  q.bind(3, owner_);
  if (int rc = q.run(); rc != SQLITE_OK) return sqlite_error(db_.get(), rc, "fence");
  if (sqlite3_changes(db_.get()) != 1)
    return Status::failed_precondition("lease of run " + run_id + " lost");
  if (Status st = body(); !st.ok()) return st;
  return tx.commit();
}

Status SqliteRunStore::write_step(const std::string& run_id, const StepRecord& r) {
  auto s = stmt(
      "INSERT OR REPLACE INTO workflow_steps (run_id, step_id, seq, attempt, failures, status, "
      "output, error, started_ms, finished_ms, wake_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
      "?)");
  if (!s.ok()) return s.status();
  Stmt& q = **s;
  std::string out = json::serialize(r.output);
  q.bind(1, run_id);
  q.bind(2, r.step_id);
  q.bind(3, r.seq);
  q.bind(4, r.attempt);
  q.bind(5, r.failures);
  q.bind(6, r.status);
  q.bind(7, out);
  q.bind(8, r.error);
  q.bind(9, r.started_ms);
  q.bind(10, r.finished_ms);
  q.bind(11, r.wake_ms);
  if (int rc = q.run(); rc != SQLITE_OK) return sqlite_error(db_.get(), rc, "write step");
  return Status();
}

Status SqliteRunStore::record_step(const std::string& run_id, const StepRecord& r,
                                   const std::string& event, const std::string& detail) {
  return owned_tx(run_id, [&] {
    if (Status s = write_step(run_id, r); !s.ok()) return s;
    return add_event(run_id, r.step_id, r.attempt, event, detail);
  });
}

Status SqliteRunStore::record_event(const std::string& run_id, const std::string& step_id,
                                    int attempt, const std::string& event,
                                    const std::string& detail) {
  return owned_tx(run_id, [&] { return add_event(run_id, step_id, attempt, event, detail); });
}

Status SqliteRunStore::finish_run(const std::string& run_id, RunStatus status,
                                  const std::string& error) {
  std::string name(to_string(status));
  return owned_tx(run_id, [&]() -> Status {
    auto s = stmt(
        "UPDATE workflow_runs SET status = ?, error = ?, finished_ms = ?, owner = NULL, "
        "lease_expires_ms = 0 WHERE id = ?");
    if (!s.ok()) return s.status();
    Stmt& q = **s;
    q.bind(1, name);
    q.bind(2, error);
    q.bind(3, now_ms());
    q.bind(4, run_id);
    if (int rc = q.run(); rc != SQLITE_OK) return sqlite_error(db_.get(), rc, "finish run");
    return add_event(run_id, "", 0, "run_" + name, error);
  });
}

Status SqliteRunStore::create_run(const std::string& id, const Definition& def,
                                  const json::value& input, const std::string& client,
                                  Millis claim_lease) {
  std::lock_guard lock(mu_);
  Transaction tx(db_);
  if (Status st = tx.begin(); !st.ok()) return st;
  auto s = stmt(
      "INSERT INTO workflow_runs (id, name, version, definition_hash, definition, input, status, "
      "created_ms, updated_ms, client, owner, lease_expires_ms) VALUES (?, ?, ?, ?, ?, ?, "
      "'pending', ?, ?, ?, nullif(?, ''), ?)");
  if (!s.ok()) return s.status();
  Stmt& q = **s;
  std::string in = json::serialize(input);
  int64_t now = now_ms();
  q.bind(1, id);
  q.bind(2, def.name);
  q.bind(3, def.version);
  q.bind(4, def.hash);
  q.bind(5, def.body);
  q.bind(6, in);
  q.bind(7, now);
  q.bind(8, now);
  q.bind(9, client);
  const bool claimed = claim_lease.count() > 0;
  q.bind(10, claimed ? std::string_view(owner_) : std::string_view());
  q.bind(11, claimed ? now + claim_lease.count() : int64_t{0});
  if (int rc = q.run(); rc != SQLITE_OK) return sqlite_error(db_.get(), rc, "insert run");
  if (Status st = add_event(id, "", 0, "run_created", def.name + " " + def.hash); !st.ok())
    return st;
  return tx.commit();
}

Result<Claim> SqliteRunStore::claim(const std::string& run_id, const Definition* given, bool force,
                                    Millis lease_period, const OwnerAlive& owner_alive) {
  Claim c;
  std::lock_guard lock(mu_);
  Transaction tx(db_);
  if (Status st = tx.begin(); !st.ok()) return st;
  Stmt q;
  if (Status st = q.prepare(db_.get(),
                            "SELECT status, owner, lease_expires_ms, cancel_requested, "
                            "definition_hash, definition, input, client, created_ms FROM "
                            "workflow_runs WHERE id = ?");
      !st.ok())
    return st;
  q.bind(1, run_id);
  int rc = q.step();
  if (rc != SQLITE_ROW) {
    return rc == SQLITE_DONE ? Status::not_found("no workflow run " + run_id)
                             : sqlite_error(db_.get(), rc, "read run");
  }
  c.status = q.col_text(0);
  std::string owner = q.col_text(1);
  int64_t lease = q.col_int(2);
  c.cancel_requested = q.col_int(3) != 0;
  std::string hash = q.col_text(4);
  c.definition = q.col_text(5);
  c.input = q.col_text(6);
  c.client = q.col_text(7);
  c.created_ms = q.col_int(8);
  q.finalize();
  auto status = parse_run_status(c.status);
  if (status && (*status == RunStatus::kCompleted || *status == RunStatus::kFailed ||
                 *status == RunStatus::kCancelled)) {
    tx.rollback();
    Stmt e;
    std::string err;
    if (e.prepare(db_.get(), "SELECT error FROM workflow_runs WHERE id = ?").ok()) {
      e.bind(1, run_id);
      if (e.step() == SQLITE_ROW) err = e.col_text(0);
    }
    c.finished = RunResult{*status, err};
    return c;
  }
  int64_t now = now_ms();
  if (given && given->hash != hash) {
    if (!force)
      return Status::failed_precondition(
          "run " + run_id + " was started with definition " + hash + ", not " + given->hash +
          " (the definition changed; resume with --force to use the new one)");
    c.definition = given->body;
  }
  // Free: nobody owns it, we do (a restart with the same owner id), or the lease lapsed.
  // Otherwise it is ours only if its owner is certainly gone (a kill -9 on this host): the
  // lease would make a resume wait for nothing. Judged inside this transaction, so nobody
  // can claim the run between the check and the update.
  const bool free = owner.empty() || owner == owner_ || lease < now;
  if (!free && !owner_alive(owner)) c.taken_over = owner;
  if (!free && c.taken_over.empty()) {
    tx.rollback();
    c.holder = owner;
    c.lease_left_ms = lease - now;
    return c;
  }
  Stmt u;
  if (Status st = u.prepare(db_.get(),
                            "UPDATE workflow_runs SET owner = ?, lease_expires_ms = ?, "
                            "status = 'running', updated_ms = ?, definition = ?, "
                            "definition_hash = ? WHERE id = ? AND status IN ('pending', "
                            "'running') AND coalesce(owner, '') = ?");
      !st.ok())
    return st;
  std::string new_hash = given && force ? given->hash : hash;
  u.bind(1, owner_);
  u.bind(2, now + lease_period.count());
  u.bind(3, now);
  u.bind(4, c.definition);
  u.bind(5, new_hash);
  u.bind(6, run_id);
  u.bind(7, owner);
  if (int rc2 = u.run(); rc2 != SQLITE_OK) return sqlite_error(db_.get(), rc2, "claim");
  if (sqlite3_changes(db_.get()) != 1)  // cannot happen inside the transaction; be safe
    return Status::failed_precondition("run " + run_id + " changed while claimed");
  if (!c.taken_over.empty()) {
    // The audit trail says why the lease was not honoured.
    c.taken_over = "owner " + owner + " is no longer running on this host";
    if (Status st = add_event(run_id, "", 0, "run_taken_over", c.taken_over); !st.ok()) return st;
  }
  std::string detail = owner.empty() ? "" : "previous owner " + owner;
  if (given && force && given->hash != hash) detail += " definition replaced by " + given->hash;
  if (Status st = add_event(run_id, "", 0, "run_claimed", owner_ + " " + detail); !st.ok())
    return st;
  if (Status st = read_step_records(db_.get(), run_id, c.steps); !st.ok()) return st;
  if (Status st = tx.commit(); !st.ok()) return st;
  return c;
}

Result<std::vector<std::string>> SqliteRunStore::claim_next(int limit, Millis lease) {
  std::vector<std::string> ids;
  if (limit <= 0) return ids;
  std::lock_guard lock(mu_);
  Transaction tx(db_);
  if (Status st = tx.begin(); !st.ok()) return st;
  const int64_t now = now_ms();
  {
    Stmt q;
    if (Status st = q.prepare(db_.get(),
                              "SELECT id FROM workflow_runs WHERE status IN ('pending', 'running') "
                              "AND (owner IS NULL OR lease_expires_ms < ?) ORDER BY created_ms "
                              "LIMIT ?");
        !st.ok())
      return st;
    q.bind(1, now);
    q.bind(2, limit);
    int rc;
    while ((rc = q.step()) == SQLITE_ROW) ids.push_back(q.col_text(0));
    if (rc != SQLITE_DONE) return sqlite_error(db_.get(), rc, "find runnable runs");
  }
  for (const std::string& id : ids) {
    auto s = stmt("UPDATE workflow_runs SET owner = ?, lease_expires_ms = ? WHERE id = ?");
    if (!s.ok()) return s.status();
    Stmt& u = **s;
    u.bind(1, owner_);
    u.bind(2, now + lease.count());
    u.bind(3, id);
    if (int rc = u.run(); rc != SQLITE_OK) return sqlite_error(db_.get(), rc, "take run");
  }
  if (Status st = tx.commit(); !st.ok()) return st;
  return ids;
}

Status SqliteRunStore::fail_claimed(const std::string& run_id, const std::string& why) {
  std::lock_guard lock(mu_);
  auto s = stmt(
      "UPDATE workflow_runs SET status = 'failed', error = ?, finished_ms = ?, owner = NULL "
      "WHERE id = ? AND owner = ?");
  if (!s.ok()) return s.status();
  Stmt& u = **s;
  u.bind(1, why);
  u.bind(2, now_ms());
  u.bind(3, run_id);
  u.bind(4, owner_);
  if (int rc = u.run(); rc != SQLITE_OK) return sqlite_error(db_.get(), rc, "fail run");
  (void)add_event(run_id, "", 0, "run_failed", why);
  return Status();
}

void SqliteRunStore::release_claim(const std::string& run_id, const std::string& why) {
  std::lock_guard lock(mu_);
  Stmt u;
  if (u.prepare(db_.get(),
                "UPDATE workflow_runs SET owner = NULL, lease_expires_ms = 0, updated_ms = ? "
                "WHERE id = ? AND owner = ? AND status IN ('pending', 'running')")
          .ok()) {
    u.bind(1, now_ms());
    u.bind(2, run_id);
    u.bind(3, owner_);
    if (u.run() == SQLITE_OK && sqlite3_changes(db_.get()) == 1)
      (void)add_event(run_id, "", 0, "run_released", owner_ + " " + why);
  }
}

Status SqliteRunStore::heartbeat(const std::string& run_id, bool renew, Millis lease) {
  // The first reason wins, as in Interrupt::cancel.
  Status why;
  auto stop = [&](Status st) {
    if (why.ok()) why = std::move(st);
  };
  std::lock_guard lock(mu_);
  Stmt q;
  Status st =
      q.prepare(db_.get(), "SELECT owner, cancel_requested FROM workflow_runs WHERE id = ?");
  if (st.ok()) {
    q.bind(1, run_id);
    const int rc = q.step();
    if (rc == SQLITE_ROW) {
      if (q.col_text(0) != owner_)
        stop(Status::failed_precondition("lease of run lost"));
      else if (q.col_int(1) != 0)
        stop(Status::cancelled("run cancelled"));
    } else if (rc != SQLITE_DONE) {
      stop(Status::unavailable(sqlite_error(db_.get(), rc, "heartbeat").message()));
    }
  } else {
    stop(Status::unavailable(st.message()));
  }
  if (renew) {
    Stmt u;
    st = u.prepare(db_.get(),
                   "UPDATE workflow_runs SET lease_expires_ms = ? WHERE id = ? AND owner = ?");
    if (st.ok()) {
      u.bind(1, now_ms() + lease.count());
      u.bind(2, run_id);
      u.bind(3, owner_);
      const int rc = u.run();
      if (rc == SQLITE_OK && sqlite3_changes(db_.get()) == 0)
        stop(Status::failed_precondition("lease of run lost"));
      else if (rc != SQLITE_OK)
        stop(Status::unavailable(sqlite_error(db_.get(), rc, "renew lease").message()));
    } else {
      stop(Status::unavailable(st.message()));
    }
  }
  return why;
}

Status SqliteRunStore::request_cancel(const std::string& run_id) {
  std::lock_guard lock(mu_);
  Transaction tx(db_);
  if (Status st = tx.begin(); !st.ok()) return st;
  Stmt q;
  if (Status st = q.prepare(
          db_.get(), "SELECT status, owner, lease_expires_ms FROM workflow_runs WHERE id = ?");
      !st.ok())
    return st;
  q.bind(1, run_id);
  if (q.step() != SQLITE_ROW) return Status::not_found("no workflow run " + run_id);
  std::string status = q.col_text(0);
  bool owned = sqlite3_column_type(q.get(), 1) != SQLITE_NULL && q.col_int(2) >= now_ms();
  q.finalize();
  if (status != "pending" && status != "running")
    return Status::failed_precondition("run " + run_id + " is already " + status);
  Stmt u;
  // Nobody executes it: cancel it now. Otherwise its executor sees the flag and stops.
  const char* sql =
      owned ? "UPDATE workflow_runs SET cancel_requested = 1, updated_ms = ? WHERE id = ?"
            : "UPDATE workflow_runs SET cancel_requested = 1, updated_ms = ?, "
              "status = 'cancelled', error = 'cancelled', finished_ms = updated_ms, "
              "owner = NULL WHERE id = ?";
  if (Status st = u.prepare(db_.get(), sql); !st.ok()) return st;
  u.bind(1, now_ms());
  u.bind(2, run_id);
  if (int rc = u.run(); rc != SQLITE_OK) return sqlite_error(db_.get(), rc, "cancel");
  if (Status st = add_event(run_id, "", 0, owned ? "cancel_requested" : "run_cancelled", "");
      !st.ok())
    return st;
  return tx.commit();
}

Result<std::vector<std::string>> SqliteRunStore::interrupted_runs(const OwnerAlive& owner_alive) {
  std::lock_guard lock(mu_);
  Stmt q;
  if (Status st = q.prepare(db_.get(),
                            "SELECT id, coalesce(owner, ''), lease_expires_ms FROM workflow_runs "
                            "WHERE status IN ('pending', 'running') ORDER BY created_ms");
      !st.ok())
    return st;
  const int64_t now = now_ms();
  std::vector<std::string> ids;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    // The same judgement as the claim: what it would take, the recovery scan lists, so a
    // gateway resumes a run whose executor was killed on this host at its next scan.
    const std::string owner = q.col_text(1);
    if (owner.empty() || q.col_int(2) < now || (owner != owner_ && !owner_alive(owner)))
      ids.push_back(q.col_text(0));
  }
  if (rc != SQLITE_DONE) return sqlite_error(db_.get(), rc, "list interrupted runs");
  return ids;
}

Result<std::vector<RunSummary>> SqliteRunStore::list_runs(int limit, const std::string* client) {
  std::lock_guard lock(mu_);
  Stmt q;
  std::string sql = std::string("SELECT ") + kRunColumns + " FROM workflow_runs" +
                    (client ? " WHERE client = ?" : "") + " ORDER BY created_ms DESC, id LIMIT ?";
  if (Status st = q.prepare(db_.get(), sql.c_str()); !st.ok()) return st;
  int arg = 1;
  if (client) q.bind(arg++, *client);
  q.bind(arg, limit);
  std::vector<RunSummary> out;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) out.push_back(read_summary(q));
  if (rc != SQLITE_DONE) return sqlite_error(db_.get(), rc, "list runs");
  return out;
}

Result<RunDetail> SqliteRunStore::get_run(const std::string& run_id) {
  std::lock_guard lock(mu_);
  RunDetail d;
  {
    Stmt q;
    std::string sql = std::string("SELECT ") + kRunColumns +
                      ", definition_hash, definition, input FROM workflow_runs WHERE id = ?";
    if (Status st = q.prepare(db_.get(), sql.c_str()); !st.ok()) return st;
    q.bind(1, run_id);
    if (q.step() != SQLITE_ROW) return Status::not_found("no workflow run " + run_id);
    d.run = read_summary(q);
    d.definition_hash = q.col_text(kRunColumnCount);
    d.definition = q.col_text(kRunColumnCount + 1);
    d.input = parse_or_null(q.col_text(kRunColumnCount + 2));
  }
  if (Status st = read_step_records(db_.get(), run_id, d.steps); !st.ok()) return st;
  return d;
}

}  // namespace switchboard::workflow::detail
