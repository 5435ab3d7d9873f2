// The engine's PostgreSQL state (run_store.h): runs, step rows and audit events in a database that
// several gateways share, on a connection of this store's own.
//
// Across gateways the guarantees are the SQLite store's, made with row locks instead of a file
// lock: a claim reads and takes the run under `SELECT ... FOR UPDATE`, so two executors never both
// take it; claim_next takes runnable runs with `FOR UPDATE SKIP LOCKED`, so gateways scanning at
// once split the queue instead of queueing behind each other's locks; every fenced write first
// updates the run's row `WHERE owner = <us>` in its transaction, which both checks the owner and
// holds the row until the commit (a takeover waits for it, then finds the write done).
//
// Leases compare the executors' wall clocks (as in SQLite): gateways sharing a database keep
// their clocks in sync (NTP) to well within half a lease.
#include <algorithm>
#include <boost/json.hpp>
#include <mutex>

#include "store/pg_util.h"
#include "store/sqlite_util.h"
#include "workflow/run_store.h"

namespace switchboard::workflow::detail {

using store::detail::PgConn;
using store::detail::PgParams;
using store::detail::PgResult;
using store::detail::to_ms;

namespace {

constexpr int kConnectTimeoutS = 5;

json::value parse_or_null(const std::string& s) {
  if (s.empty()) return nullptr;
  boost::system::error_code ec;
  json::value v = json::parse(s, ec);
  return ec ? json::value(nullptr) : v;
}

constexpr const char* kRunColumns =
    "id, name, version, status, coalesce(owner, ''), cancel_requested, created_ms, updated_ms, "
    "finished_ms, error, client";
constexpr int kRunColumnCount = 11;

RunSummary read_summary(const PgResult& r, int row) {
  RunSummary s;
  s.id = r.text(row, 0);
  s.name = r.text(row, 1);
  s.version = r.integer(row, 2);
  s.status = parse_run_status(r.text(row, 3)).value_or(RunStatus::kFailed);
  s.owner = r.text(row, 4);
  s.cancel_requested = r.integer(row, 5) != 0;
  s.created_ms = r.integer(row, 6);
  s.updated_ms = r.integer(row, 7);
  s.finished_ms = r.integer(row, 8);
  s.error = r.text(row, 9);
  s.client = r.text(row, 10);
  return s;
}

template <typename... Args>
PgParams params(Args&&... args) {
  PgParams p;
  (p.add(std::forward<Args>(args)), ...);
  return p;
}

class PostgresRunStore final : public RunStore {
 public:
  PostgresRunStore(const Clock& clock, std::string owner)
      : clock_(clock), owner_(std::move(owner)) {}
  Status open(const std::string& url);

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
  int64_t now_ms() const { return to_ms(clock_.wall_now()); }
  // A usable connection (mu_ held): reconnects after the server went away.
  Status ready();
  // Runs `body` in one transaction (mu_ held): committed when it returns ok, else rolled back.
  template <typename F>
  Status in_tx(F&& body);
  // Runs `body` in one transaction after checking (and locking) that we still own the run.
  template <typename F>
  Status owned_tx(const std::string& run_id, F&& body);
  Status add_event(const std::string& run_id, const std::string& step_id, int attempt,
                   const std::string& type, const std::string& detail);
  Status read_steps(const std::string& run_id, std::vector<StepRecord>& out);

  const Clock& clock_;
  const std::string owner_;
  std::mutex mu_;  // one connection, used by the run threads, the heartbeats and the API
  PgConn conn_;
};

Status PostgresRunStore::open(const std::string& url) {
  auto conn = PgConn::connect(url, kConnectTimeoutS);
  if (!conn.ok()) return conn.status();
  conn_ = std::move(*conn);
  return store::detail::pg_migrate(conn_);
}

Status PostgresRunStore::ready() {
  if (!conn_.ensure()) return Status::unavailable("postgres: connection lost, reconnecting");
  if (conn_.in_transaction()) (void)conn_.exec("ROLLBACK");
  return Status();
}

template <typename F>
Status PostgresRunStore::in_tx(F&& body) {
  if (Status st = ready(); !st.ok()) return st;
  if (Status st = conn_.exec("BEGIN"); !st.ok()) return st;
  Status st = body();
  if (st.ok()) st = conn_.exec("COMMIT");
  if (!st.ok() && conn_.in_transaction()) (void)conn_.exec("ROLLBACK");
  return st;
}

template <typename F>
Status PostgresRunStore::owned_tx(const std::string& run_id, F&& body) {
  std::lock_guard lock(mu_);
  return in_tx([&]() -> Status {
    auto fence = conn_.query(
        "UPDATE workflow_runs SET updated_ms = $1 WHERE id = $2 AND owner = $3 RETURNING id",
        params(now_ms(), run_id, owner_));
    if (!fence.ok()) return fence.status();
    if (fence->rows() != 1) return Status::failed_precondition("lease of run " + run_id + " lost");
    return body();
  });
}

Status PostgresRunStore::add_event(const std::string& run_id, const std::string& step_id,
                                   int attempt, const std::string& type,
                                   const std::string& detail) {
  return conn_.exec_prepared(
      "wf_event",
      "INSERT INTO workflow_events (run_id, ts_ms, step_id, attempt, type, detail) "
      "VALUES ($1, $2, $3, $4, $5, $6)",
      params(run_id, now_ms(), step_id, attempt, type, detail));
}

Status PostgresRunStore::read_steps(const std::string& run_id, std::vector<StepRecord>& out) {
  auto r = conn_.query(
      "SELECT step_id, seq, attempt, failures, status, output, error, started_ms, finished_ms, "
      "wake_ms FROM workflow_steps WHERE run_id = $1 ORDER BY seq",
      params(run_id));
  if (!r.ok()) return r.status();
  for (int i = 0; i < r->rows(); ++i) {
    StepRecord s;
    s.step_id = r->text(i, 0);
    s.seq = r->integer(i, 1);
    s.attempt = int(r->integer(i, 2));
    s.failures = int(r->integer(i, 3));
    s.status = r->text(i, 4);
    s.output = parse_or_null(r->text(i, 5));
    s.error = r->text(i, 6);
    s.started_ms = r->integer(i, 7);
    s.finished_ms = r->integer(i, 8);
    s.wake_ms = r->integer(i, 9);
    out.push_back(std::move(s));
  }
  return Status();
}

Status PostgresRunStore::create_run(const std::string& id, const Definition& def,
                                    const json::value& input, const std::string& client,
                                    Millis claim_lease) {
  std::lock_guard lock(mu_);
  return in_tx([&]() -> Status {
    const int64_t now = now_ms();
    const bool claimed = claim_lease.count() > 0;
    Status st = conn_.exec_prepared(
        "wf_create",
        "INSERT INTO workflow_runs (id, name, version, definition_hash, definition, input, "
        "status, created_ms, updated_ms, client, owner, lease_expires_ms) VALUES ($1, $2, $3, "
        "$4, $5, $6, 'pending', $7, $7, $8, nullif($9, ''), $10)",
        params(id, def.name, def.version, def.hash, def.body, json::serialize(input), now, client,
               claimed ? owner_ : std::string(), claimed ? now + claim_lease.count() : 0));
    if (!st.ok()) return st;
    return add_event(id, "", 0, "run_created", def.name + " " + def.hash);
  });
}

Result<Claim> PostgresRunStore::claim(const std::string& run_id, const Definition* given,
                                      bool force, Millis lease_period,
                                      const OwnerAlive& owner_alive) {
  Claim c;
  std::lock_guard lock(mu_);
  Status st = in_tx([&]() -> Status {
    auto r = conn_.query(
        "SELECT status, coalesce(owner, ''), lease_expires_ms, cancel_requested, "
        "definition_hash, definition, input, client, error, created_ms FROM workflow_runs "
        "WHERE id = $1 FOR UPDATE",
        params(run_id));
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return Status::not_found("no workflow run " + run_id);
    c.status = r->text(0, 0);
    const std::string owner = r->text(0, 1);
    const int64_t lease = r->integer(0, 2);
    c.cancel_requested = r->integer(0, 3) != 0;
    const std::string hash = r->text(0, 4);
    c.definition = r->text(0, 5);
    c.input = r->text(0, 6);
    c.client = r->text(0, 7);
    c.created_ms = r->integer(0, 9);
    auto status = parse_run_status(c.status);
    if (status && (*status == RunStatus::kCompleted || *status == RunStatus::kFailed ||
                   *status == RunStatus::kCancelled)) {
      c.finished = RunResult{*status, r->text(0, 8)};
      return Status();  // nothing written: the commit only ends the transaction
    }
    const int64_t now = now_ms();
    if (given && given->hash != hash) {
      if (!force)
        return Status::failed_precondition(
            "run " + run_id + " was started with definition " + hash + ", not " + given->hash +
            " (the definition changed; resume with --force to use the new one)");
      c.definition = given->body;
    }
    // As in SQLite: free when unowned, ours, or the lease lapsed; else ours only when its owner
    // is certainly gone (judged under the row lock, so nobody takes the run meanwhile).
    const bool free = owner.empty() || owner == owner_ || lease < now;
    if (!free && !owner_alive(owner)) c.taken_over = owner;
    if (!free && c.taken_over.empty()) {
      c.holder = owner;
      c.lease_left_ms = lease - now;
      return Status();
    }
    const std::string new_hash = given && force ? given->hash : hash;
    Status u = conn_.exec(
        "UPDATE workflow_runs SET owner = $1, lease_expires_ms = $2, status = 'running', "
        "updated_ms = $3, definition = $4, definition_hash = $5 WHERE id = $6",
        params(owner_, now + lease_period.count(), now, c.definition, new_hash, run_id));
    if (!u.ok()) return u;
    if (!c.taken_over.empty()) {
      c.taken_over = "owner " + owner + " is no longer running on this host";
      if (Status e = add_event(run_id, "", 0, "run_taken_over", c.taken_over); !e.ok()) return e;
    }
    std::string detail = owner.empty() ? "" : "previous owner " + owner;
    if (given && force && given->hash != hash) detail += " definition replaced by " + given->hash;
    if (Status e = add_event(run_id, "", 0, "run_claimed", owner_ + " " + detail); !e.ok())
      return e;
    return read_steps(run_id, c.steps);
  });
  if (!st.ok()) return st;
  return c;
}

Result<std::vector<std::string>> PostgresRunStore::claim_next(int limit, Millis lease) {
  std::vector<std::string> ids;
  if (limit <= 0) return ids;
  std::lock_guard lock(mu_);
  if (Status st = ready(); !st.ok()) return st;
  const int64_t now = now_ms();
  // One statement is one transaction: rows locked by another gateway's claim are skipped, and
  // a row another gateway took meanwhile is re-checked against the WHERE clause after its lock.
  auto r = conn_.query(
      "UPDATE workflow_runs SET owner = $1, lease_expires_ms = $2 WHERE id IN (SELECT id FROM "
      "workflow_runs WHERE status IN ('pending', 'running') AND (owner IS NULL OR "
      "lease_expires_ms < $3) ORDER BY created_ms LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING id, "
      "created_ms",
      params(owner_, now + lease.count(), now, limit));
  if (!r.ok()) return r.status();
  std::vector<std::pair<int64_t, std::string>> taken;
  for (int i = 0; i < r->rows(); ++i) taken.emplace_back(r->integer(i, 1), r->text(i, 0));
  std::sort(taken.begin(), taken.end());
  for (auto& [created, id] : taken) ids.push_back(std::move(id));
  return ids;
}

Status PostgresRunStore::fail_claimed(const std::string& run_id, const std::string& why) {
  std::lock_guard lock(mu_);
  return in_tx([&]() -> Status {
    auto r = conn_.query(
        "UPDATE workflow_runs SET status = 'failed', error = $1, finished_ms = $2, owner = NULL "
        "WHERE id = $3 AND owner = $4 RETURNING id",
        params(why, now_ms(), run_id, owner_));
    if (!r.ok()) return r.status();
    if (r->rows() == 1) return add_event(run_id, "", 0, "run_failed", why);
    return Status();
  });
}

void PostgresRunStore::release_claim(const std::string& run_id, const std::string& why) {
  std::lock_guard lock(mu_);
  (void)in_tx([&]() -> Status {
    auto r = conn_.query(
        "UPDATE workflow_runs SET owner = NULL, lease_expires_ms = 0, updated_ms = $1 "
        "WHERE id = $2 AND owner = $3 AND status IN ('pending', 'running') RETURNING id",
        params(now_ms(), run_id, owner_));
    if (!r.ok()) return r.status();
    if (r->rows() == 1) return add_event(run_id, "", 0, "run_released", owner_ + " " + why);
    return Status();
  });
}

Status PostgresRunStore::heartbeat(const std::string& run_id, bool renew, Millis lease) {
  std::lock_guard lock(mu_);
  if (Status st = ready(); !st.ok()) return st;
  // A renewal reads the flags in the same statement and touches only a run that is still ours;
  // the looks between renewals only read (no row version per look).
  auto r = renew ? conn_.query(
                       "UPDATE workflow_runs SET lease_expires_ms = CASE WHEN owner = $2 THEN $3 "
                       "ELSE lease_expires_ms END WHERE id = $1 RETURNING coalesce(owner, ''), "
                       "cancel_requested",
                       params(run_id, owner_, now_ms() + lease.count()))
                 : conn_.query(
                       "SELECT coalesce(owner, ''), cancel_requested FROM workflow_runs WHERE "
                       "id = $1",
                       params(run_id));
  if (!r.ok()) return Status::unavailable(r.status().message());
  if (r->rows() == 1) {
    if (r->text(0, 0) != owner_) return Status::failed_precondition("lease of run lost");
    if (r->integer(0, 1) != 0) return Status::cancelled("run cancelled");
  }
  return Status();
}

Status PostgresRunStore::record_step(const std::string& run_id, const StepRecord& r,
                                     const std::string& event, const std::string& detail) {
  return owned_tx(run_id, [&]() -> Status {
    Status st = conn_.exec_prepared(
        "wf_step",
        "INSERT INTO workflow_steps (run_id, step_id, seq, attempt, failures, status, output, "
        "error, started_ms, finished_ms, wake_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
        "$10, $11) ON CONFLICT (run_id, step_id) DO UPDATE SET seq = excluded.seq, attempt = "
        "excluded.attempt, failures = excluded.failures, status = excluded.status, output = "
        "excluded.output, error = excluded.error, started_ms = excluded.started_ms, "
        "finished_ms = excluded.finished_ms, wake_ms = excluded.wake_ms",
        params(run_id, r.step_id, r.seq, r.attempt, r.failures, r.status, json::serialize(r.output),
               r.error, r.started_ms, r.finished_ms, r.wake_ms));
    if (!st.ok()) return st;
    return add_event(run_id, r.step_id, r.attempt, event, detail);
  });
}

Status PostgresRunStore::record_event(const std::string& run_id, const std::string& step_id,
                                      int attempt, const std::string& event,
                                      const std::string& detail) {
  return owned_tx(run_id, [&] { return add_event(run_id, step_id, attempt, event, detail); });
}

Status PostgresRunStore::finish_run(const std::string& run_id, RunStatus status,
                                    const std::string& error) {
  const std::string name(to_string(status));
  return owned_tx(run_id, [&]() -> Status {
    Status st = conn_.exec(
        "UPDATE workflow_runs SET status = $1, error = $2, finished_ms = $3, owner = NULL, "
        "lease_expires_ms = 0 WHERE id = $4",
        params(name, error, now_ms(), run_id));
    if (!st.ok()) return st;
    return add_event(run_id, "", 0, "run_" + name, error);
  });
}

Status PostgresRunStore::request_cancel(const std::string& run_id) {
  std::lock_guard lock(mu_);
  return in_tx([&]() -> Status {
    auto r = conn_.query(
        "SELECT status, owner IS NOT NULL AND lease_expires_ms >= $2 FROM workflow_runs "
        "WHERE id = $1 FOR UPDATE",
        params(run_id, now_ms()));
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return Status::not_found("no workflow run " + run_id);
    const std::string status = r->text(0, 0);
    const bool owned = r->text(0, 1) == "t";
    if (status != "pending" && status != "running")
      return Status::failed_precondition("run " + run_id + " is already " + status);
    // Nobody executes it: cancel it now. Otherwise its executor sees the flag and stops.
    Status st = conn_.exec(
        owned ? "UPDATE workflow_runs SET cancel_requested = 1, updated_ms = $1 WHERE id = $2"
              : "UPDATE workflow_runs SET cancel_requested = 1, updated_ms = $1, status = "
                "'cancelled', error = 'cancelled', finished_ms = $1, owner = NULL WHERE id = $2",
        params(now_ms(), run_id));
    if (!st.ok()) return st;
    return add_event(run_id, "", 0, owned ? "cancel_requested" : "run_cancelled", "");
  });
}

Result<std::vector<std::string>> PostgresRunStore::interrupted_runs(const OwnerAlive& owner_alive) {
  std::lock_guard lock(mu_);
  if (Status st = ready(); !st.ok()) return st;
  auto r = conn_.query(
      "SELECT id, coalesce(owner, ''), lease_expires_ms FROM workflow_runs "
      "WHERE status IN ('pending', 'running') ORDER BY created_ms");
  if (!r.ok()) return r.status();
  const int64_t now = now_ms();
  std::vector<std::string> ids;
  for (int i = 0; i < r->rows(); ++i) {
    const std::string owner = r->text(i, 1);
    if (owner.empty() || r->integer(i, 2) < now || (owner != owner_ && !owner_alive(owner)))
      ids.push_back(r->text(i, 0));
  }
  return ids;
}

Result<std::vector<RunSummary>> PostgresRunStore::list_runs(int limit, const std::string* client) {
  std::lock_guard lock(mu_);
  if (Status st = ready(); !st.ok()) return st;
  PgParams p;
  p.add(limit);
  if (client) p.add(*client);
  const std::string sql = std::string("SELECT ") + kRunColumns + " FROM workflow_runs" +
                          (client ? " WHERE client = $2" : "") +
                          " ORDER BY created_ms DESC, id LIMIT $1";
  auto r = conn_.query(sql, p);
  if (!r.ok()) return r.status();
  std::vector<RunSummary> out;
  for (int i = 0; i < r->rows(); ++i) out.push_back(read_summary(*r, i));
  return out;
}

Result<RunDetail> PostgresRunStore::get_run(const std::string& run_id) {
  std::lock_guard lock(mu_);
  if (Status st = ready(); !st.ok()) return st;
  RunDetail d;
  auto r = conn_.query(std::string("SELECT ") + kRunColumns +
                           ", definition_hash, definition, input FROM workflow_runs WHERE id = $1",
                       params(run_id));
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return Status::not_found("no workflow run " + run_id);
  d.run = read_summary(*r, 0);
  d.definition_hash = r->text(0, kRunColumnCount);
  d.definition = r->text(0, kRunColumnCount + 1);
  d.input = parse_or_null(r->text(0, kRunColumnCount + 2));
  if (Status st = read_steps(run_id, d.steps); !st.ok()) return st;
  return d;
}

}  // namespace

Result<std::unique_ptr<RunStore>> open_postgres_run_store(const std::string& url,
                                                          const Clock& clock, std::string owner) {
  auto rs = std::make_unique<PostgresRunStore>(clock, std::move(owner));
  if (Status st = rs->open(url); !st.ok()) return st;
  return std::unique_ptr<RunStore>(std::move(rs));
}

}  // namespace switchboard::workflow::detail
