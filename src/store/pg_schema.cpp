// The PostgreSQL schema (postgres_store.cpp's tables) and its migrations, run once under an
// advisory lock whichever gateway starts first.
#include <vector>

#include "store/pg_util.h"
#include "store/store.h"

namespace switchboard::store {
namespace {

// pg_advisory_xact_lock's key for migrations: any constant of our own ("swbd").
constexpr int64_t kMigrationLock = 0x73776264;
struct PgMigration {
  int version;
  const char* sql;
};

// Append-only, like the SQLite list; the tables mirror SQLite's latest schema plus `node`.
const std::vector<PgMigration>& pg_migrations() {
  static const std::vector<PgMigration> kMigrations = {
      {1, R"sql(
CREATE TABLE outcomes (
  id BIGSERIAL PRIMARY KEY,
  node TEXT NOT NULL,
  seq BIGINT NOT NULL,                -- the gateway's sequence number (its outcome id)
  ts_ms BIGINT NOT NULL,
  request_id TEXT NOT NULL,
  route TEXT NOT NULL DEFAULT '',
  model TEXT NOT NULL,
  provider TEXT NOT NULL DEFAULT '',
  key_id TEXT NOT NULL DEFAULT '',
  status_class TEXT NOT NULL,
  category TEXT NOT NULL DEFAULT '',
  latency_us BIGINT NOT NULL DEFAULT 0,
  tokens_in BIGINT NOT NULL DEFAULT 0,
  tokens_out BIGINT NOT NULL DEFAULT 0,
  cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 1,
  layer INTEGER NOT NULL DEFAULT 0,
  gateway_key TEXT NOT NULL DEFAULT ''
);
CREATE INDEX outcomes_ts ON outcomes (ts_ms);
CREATE UNIQUE INDEX outcomes_node_seq ON outcomes (node, seq);
CREATE TABLE usage (
  id BIGSERIAL PRIMARY KEY,
  node TEXT NOT NULL,
  seq BIGINT NOT NULL,
  ts_ms BIGINT NOT NULL,
  request_id TEXT NOT NULL,
  provider TEXT NOT NULL,
  key_id TEXT NOT NULL,
  model TEXT NOT NULL,
  tokens_in BIGINT NOT NULL DEFAULT 0,
  tokens_out BIGINT NOT NULL DEFAULT 0,
  cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
  gateway_key TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX usage_node_seq ON usage (node, seq);
CREATE INDEX usage_key_ts ON usage (key_id, ts_ms);
CREATE INDEX usage_gateway_key_ts ON usage (gateway_key, ts_ms) WHERE gateway_key <> '';
CREATE TABLE key_state (
  key_id TEXT NOT NULL,
  model TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  cooldown_until_ms BIGINT NOT NULL DEFAULT 0,
  reason TEXT NOT NULL DEFAULT '',
  updated_ms BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (key_id, model)
);
CREATE TABLE breaker_transitions (
  id BIGSERIAL PRIMARY KEY,
  node TEXT NOT NULL,
  ts_ms BIGINT NOT NULL,
  breaker TEXT NOT NULL,
  from_state TEXT NOT NULL,
  to_state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE feedback (
  id BIGSERIAL PRIMARY KEY,
  node TEXT NOT NULL,
  seq BIGINT NOT NULL,
  ts_ms BIGINT NOT NULL,
  request_id TEXT NOT NULL,
  success INTEGER NOT NULL,
  score DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX feedback_node_seq ON feedback (node, seq);
CREATE INDEX feedback_request ON feedback (request_id);
CREATE TABLE bandit_posteriors (
  node TEXT NOT NULL,
  category TEXT NOT NULL,
  model TEXT NOT NULL,
  alpha DOUBLE PRECISION NOT NULL,
  beta DOUBLE PRECISION NOT NULL,
  last_outcome_id BIGINT NOT NULL DEFAULT 0,
  updated_ms BIGINT NOT NULL DEFAULT 0,
  outcomes BIGINT NOT NULL DEFAULT 0,
  feedback BIGINT NOT NULL DEFAULT 0,
  feedback_reward_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
  PRIMARY KEY (node, category, model)
);
CREATE TABLE model_stats (
  node TEXT NOT NULL,
  model TEXT NOT NULL,
  requests BIGINT NOT NULL DEFAULT 0,
  successes BIGINT NOT NULL DEFAULT 0,
  latency_ewma_us DOUBLE PRECISION NOT NULL DEFAULT 0,
  latency_p95_us DOUBLE PRECISION NOT NULL DEFAULT 0,
  tokens_in BIGINT NOT NULL DEFAULT 0,
  tokens_out BIGINT NOT NULL DEFAULT 0,
  spend_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
  last_outcome_id BIGINT NOT NULL DEFAULT 0,
  updated_ms BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (node, model)
);
CREATE TABLE learning_log (
  node TEXT NOT NULL,
  id BIGINT NOT NULL,
  ts_ms BIGINT NOT NULL,
  kind INTEGER NOT NULL,             -- 0 outcome, 1 caller verdict, 2/3 another gateway's
  category TEXT NOT NULL,
  model TEXT NOT NULL,
  reward DOUBLE PRECISION NOT NULL,
  transport_reward DOUBLE PRECISION NOT NULL DEFAULT 0,
  counts INTEGER NOT NULL DEFAULT 1,
  success INTEGER NOT NULL DEFAULT 0,
  latency_us BIGINT NOT NULL DEFAULT 0,
  tokens_in BIGINT NOT NULL DEFAULT 0,
  tokens_out BIGINT NOT NULL DEFAULT 0,
  cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
  PRIMARY KEY (node, id)
);
)sql"},
      // Workflow runs, steps and audit events, shared by every gateway on the database: any
      // gateway claims a pending run (SELECT ... FOR UPDATE SKIP LOCKED) or one whose lease
      // lapsed. Times are the executors' wall clocks in ms, as in SQLite.
      {2, R"sql(
CREATE TABLE workflow_runs (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  version BIGINT NOT NULL DEFAULT 0,
  definition_hash TEXT NOT NULL,
  definition TEXT NOT NULL,
  input TEXT NOT NULL DEFAULT 'null',
  status TEXT NOT NULL,              -- pending | running | completed | failed | cancelled
  owner TEXT,                        -- executor holding the lease; NULL when none
  lease_expires_ms BIGINT NOT NULL DEFAULT 0,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL,
  finished_ms BIGINT NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT '',
  client TEXT NOT NULL DEFAULT ''
);
-- Only unfinished runs are scanned for claims: finished ones stay out of this index.
CREATE INDEX workflow_runs_open ON workflow_runs (created_ms)
  WHERE status IN ('pending', 'running');
CREATE INDEX workflow_runs_created ON workflow_runs (created_ms);
CREATE INDEX workflow_runs_client ON workflow_runs (client, created_ms);
CREATE TABLE workflow_steps (
  run_id TEXT NOT NULL,
  step_id TEXT NOT NULL,
  seq BIGINT NOT NULL,
  attempt INTEGER NOT NULL DEFAULT 0,
  failures INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL,
  output TEXT NOT NULL DEFAULT 'null',
  error TEXT NOT NULL DEFAULT '',
  started_ms BIGINT NOT NULL DEFAULT 0,
  finished_ms BIGINT NOT NULL DEFAULT 0,
  wake_ms BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (run_id, step_id)
);
CREATE TABLE workflow_events (
  id BIGSERIAL PRIMARY KEY,
  run_id TEXT NOT NULL,
  ts_ms BIGINT NOT NULL,
  step_id TEXT NOT NULL DEFAULT '',
  attempt INTEGER NOT NULL DEFAULT 0,
  type TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX workflow_events_run ON workflow_events (run_id, id);
)sql"},
      // The contextual router (issue 30), as SQLite's migration 10: each journal record's route
      // and features, and each (route, model) model's weights, per node like the posteriors.
      {3, R"sql(
ALTER TABLE learning_log ADD COLUMN route TEXT NOT NULL DEFAULT '';
ALTER TABLE learning_log ADD COLUMN features TEXT NOT NULL DEFAULT '';
CREATE TABLE contextual_models (
  node TEXT NOT NULL,
  route TEXT NOT NULL,
  model TEXT NOT NULL,
  means TEXT NOT NULL,
  variances TEXT NOT NULL,
  updates BIGINT NOT NULL DEFAULT 0,
  last_outcome_id BIGINT NOT NULL DEFAULT 0,
  updated_ms BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (node, route, model)
);
)sql"},
      // Responses API answers for previous_response_id, as SQLite's migration 11: common to
      // every gateway (any of them continues a conversation), pruned by expires_ms. TEXT: a
      // JSON array, TOASTed (compressed, out of line) when large.
      {4, R"sql(
CREATE TABLE responses (
  id TEXT NOT NULL PRIMARY KEY,
  owner TEXT NOT NULL DEFAULT '',
  created_ms BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  items TEXT NOT NULL
);
CREATE INDEX responses_expiry ON responses (expires_ms);
)sql"},
      // Later migrations go here, in order.
  };
  return kMigrations;
}

}  // namespace

namespace detail {

Status pg_migrate(PgConn& conn) {
  const int target = pg_migrations().empty() ? 0 : pg_migrations().back().version;
  // One gateway migrates; the others wait on the lock, then find the work done.
  if (Status st = conn.exec("BEGIN"); !st.ok()) return st;
  PgParams lock;
  lock.add(kMigrationLock);
  Status st = conn.exec("SELECT pg_advisory_xact_lock($1)", lock);
  if (st.ok())
    st = conn.exec("CREATE TABLE IF NOT EXISTS switchboard_schema (version INTEGER NOT NULL)");
  int version = 0;
  if (st.ok()) {
    auto v = conn.query("SELECT COALESCE(MAX(version), 0) FROM switchboard_schema");
    if (v.ok())
      version = int(v->integer(0, 0));
    else
      st = v.status();
  }
  if (st.ok() && version > target)
    st = Status::failed_precondition("the database's schema (version " + std::to_string(version) +
                                     ") is newer than this switchboard's (" +
                                     std::to_string(target) + ")");
  for (const auto& m : pg_migrations()) {
    if (!st.ok()) break;
    if (m.version <= version) continue;
    st = conn.exec_script(m.sql);
    if (st.ok()) {
      PgParams v;
      v.add(m.version);
      st = conn.exec("DELETE FROM switchboard_schema");
      if (st.ok()) st = conn.exec("INSERT INTO switchboard_schema (version) VALUES ($1)", v);
    }
  }
  if (st.ok()) return conn.exec("COMMIT");
  (void)conn.exec("ROLLBACK");
  return st;
}

}  // namespace detail

int postgres_schema_version() {
  return pg_migrations().empty() ? 0 : pg_migrations().back().version;
}

}  // namespace switchboard::store
