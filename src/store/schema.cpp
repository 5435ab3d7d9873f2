// The schema, as an append-only list of migrations (see store.h "Schema").
#include <vector>

#include "store/store.h"

namespace switchboard::store {

const std::vector<Migration>& schema_migrations() {
  // Times are milliseconds since the Unix epoch (UTC). Key ids only: never key material.
  static const std::vector<Migration> kMigrations = {
      {1, "core tables", R"sql(
CREATE TABLE outcomes (
  id INTEGER PRIMARY KEY,          -- the event's sequence number (the outcome id)
  ts_ms INTEGER NOT NULL,
  request_id TEXT NOT NULL,
  route TEXT NOT NULL DEFAULT '',
  model TEXT NOT NULL,
  provider TEXT NOT NULL DEFAULT '',
  key_id TEXT NOT NULL DEFAULT '',
  status_class TEXT NOT NULL,
  category TEXT NOT NULL DEFAULT '',
  latency_us INTEGER NOT NULL DEFAULT 0,
  tokens_in INTEGER NOT NULL DEFAULT 0,
  tokens_out INTEGER NOT NULL DEFAULT 0,
  cost_usd REAL NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 1,
  layer INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE usage (
  id INTEGER PRIMARY KEY,
  ts_ms INTEGER NOT NULL,
  request_id TEXT NOT NULL,
  provider TEXT NOT NULL,
  key_id TEXT NOT NULL,
  model TEXT NOT NULL,
  tokens_in INTEGER NOT NULL DEFAULT 0,
  tokens_out INTEGER NOT NULL DEFAULT 0,
  cost_usd REAL NOT NULL DEFAULT 0
);
CREATE TABLE key_state (
  key_id TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  cooldown_until_ms INTEGER NOT NULL DEFAULT 0,
  reason TEXT NOT NULL DEFAULT '',
  day_window_start_ms INTEGER NOT NULL DEFAULT 0,
  day_requests INTEGER NOT NULL DEFAULT 0,
  day_tokens INTEGER NOT NULL DEFAULT 0,
  updated_ms INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE breaker_transitions (
  id INTEGER PRIMARY KEY,
  ts_ms INTEGER NOT NULL,
  breaker TEXT NOT NULL,
  from_state TEXT NOT NULL,
  to_state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE feedback (
  id INTEGER PRIMARY KEY,
  ts_ms INTEGER NOT NULL,
  request_id TEXT NOT NULL,
  success INTEGER NOT NULL,
  score REAL NOT NULL DEFAULT 0
);
)sql"},
      {2, "learning state", R"sql(
CREATE TABLE bandit_posteriors (
  category TEXT NOT NULL,
  model TEXT NOT NULL,
  alpha REAL NOT NULL,
  beta REAL NOT NULL,
  last_outcome_id INTEGER NOT NULL DEFAULT 0,
  updated_ms INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (category, model)
) WITHOUT ROWID;
CREATE TABLE model_stats (
  model TEXT PRIMARY KEY,
  requests INTEGER NOT NULL DEFAULT 0,
  successes INTEGER NOT NULL DEFAULT 0,
  latency_ewma_us REAL NOT NULL DEFAULT 0,
  latency_p95_us REAL NOT NULL DEFAULT 0,
  tokens_in INTEGER NOT NULL DEFAULT 0,
  tokens_out INTEGER NOT NULL DEFAULT 0,
  spend_usd REAL NOT NULL DEFAULT 0,
  last_outcome_id INTEGER NOT NULL DEFAULT 0,
  updated_ms INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX feedback_request ON feedback (request_id);
)sql"},
      {3, "workflow tables", R"sql(
CREATE TABLE workflow_runs (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  version INTEGER NOT NULL DEFAULT 0,
  definition_hash TEXT NOT NULL,   -- "sha256:..." of the definition body
  definition TEXT NOT NULL,        -- the body (YAML or JSON) the run executes
  input TEXT NOT NULL DEFAULT 'null',
  status TEXT NOT NULL,            -- pending | running | completed | failed | cancelled
  owner TEXT,                      -- executor holding the lease; NULL when none
  lease_expires_ms INTEGER NOT NULL DEFAULT 0,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  finished_ms INTEGER NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX workflow_runs_status ON workflow_runs (status, created_ms);
CREATE TABLE workflow_steps (
  run_id TEXT NOT NULL,
  step_id TEXT NOT NULL,           -- "build", or "reviews[3]" / "checks.lint" for parallel children
  seq INTEGER NOT NULL,            -- order of first record within the run
  attempt INTEGER NOT NULL DEFAULT 0,
  failures INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL,            -- running | retry_wait | completed | failed | skipped | cancelled
  output TEXT NOT NULL DEFAULT 'null',
  error TEXT NOT NULL DEFAULT '',
  started_ms INTEGER NOT NULL DEFAULT 0,
  finished_ms INTEGER NOT NULL DEFAULT 0,
  wake_ms INTEGER NOT NULL DEFAULT 0,  -- durable sleep / retry wake-up time, 0 = none
  PRIMARY KEY (run_id, step_id)
) WITHOUT ROWID;
CREATE TABLE workflow_events (
  id INTEGER PRIMARY KEY,
  run_id TEXT NOT NULL,
  ts_ms INTEGER NOT NULL,
  step_id TEXT NOT NULL DEFAULT '',
  attempt INTEGER NOT NULL DEFAULT 0,
  type TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX workflow_events_run ON workflow_events (run_id, id);
)sql"},
      {4, "spend per gateway key", R"sql(
ALTER TABLE usage ADD COLUMN gateway_key TEXT NOT NULL DEFAULT '';
CREATE INDEX usage_gateway_key_ts ON usage (gateway_key, ts_ms);
)sql"},
      // Only rows of a gateway key take part in budgets: the others (no gateway keys, the
      // common case on a loopback gateway) are left out of the index and cost no index write.
      {5, "index only gateway-key usage", R"sql(
DROP INDEX usage_gateway_key_ts;
CREATE INDEX usage_gateway_key_ts ON usage (gateway_key, ts_ms) WHERE gateway_key != '';
)sql"},
      // Workflow runs belong to the client that created them (workflow.h "Clients"): '' is the
      // local user, "key:<name>" a gateway key. Runs from before this version get ''.
      {6, "workflow run clients", R"sql(
ALTER TABLE workflow_runs ADD COLUMN client TEXT NOT NULL DEFAULT '';
CREATE INDEX workflow_runs_client ON workflow_runs (client, created_ms);
)sql"},
      // Who made each request, so that only that client's verdict is accepted, also after a
      // restart (issue 17: feedback comes only from the key that made the request).
      {7, "outcome gateway keys", R"sql(
ALTER TABLE outcomes ADD COLUMN gateway_key TEXT NOT NULL DEFAULT '';
)sql"},
      // The router's journal (issue 25): every record it learned from, by id (the store's
      // sequence number), until a snapshot of the posteriors and statistics holds it. Posterior
      // rows also keep their counts, which the admin API shows after a restart.
      {8, "learning journal", R"sql(
CREATE TABLE learning_log (
  id INTEGER PRIMARY KEY,
  ts_ms INTEGER NOT NULL,
  kind INTEGER NOT NULL,            -- 0 outcome, 1 caller verdict, 2/3 another gateway's
  category TEXT NOT NULL,
  model TEXT NOT NULL,
  reward REAL NOT NULL,
  transport_reward REAL NOT NULL DEFAULT 0,
  counts INTEGER NOT NULL DEFAULT 1,
  success INTEGER NOT NULL DEFAULT 0,
  latency_us INTEGER NOT NULL DEFAULT 0,
  tokens_in INTEGER NOT NULL DEFAULT 0,
  tokens_out INTEGER NOT NULL DEFAULT 0,
  cost_usd REAL NOT NULL DEFAULT 0
);
ALTER TABLE bandit_posteriors ADD COLUMN outcomes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE bandit_posteriors ADD COLUMN feedback INTEGER NOT NULL DEFAULT 0;
ALTER TABLE bandit_posteriors ADD COLUMN feedback_reward_sum REAL NOT NULL DEFAULT 0;
)sql"},
      // Key state by (key, model), without day windows (counted back from usage). The old
      // table was never written by a gateway, so nothing is lost.
      {9, "key cooldowns by model", R"sql(
DROP TABLE key_state;
CREATE TABLE key_state (
  key_id TEXT NOT NULL,
  model TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  cooldown_until_ms INTEGER NOT NULL DEFAULT 0,
  reason TEXT NOT NULL DEFAULT '',
  updated_ms INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (key_id, model)
) WITHOUT ROWID;
)sql"},
      // The contextual router (issue 30): the journal keeps each record's route and features
      // (hex of FeatureVector::encode), and each (route, model) model's weights are snapshot
      // rows like the posteriors (hex of their floats).
      {10, "contextual routing", R"sql(
ALTER TABLE learning_log ADD COLUMN route TEXT NOT NULL DEFAULT '';
ALTER TABLE learning_log ADD COLUMN features TEXT NOT NULL DEFAULT '';
CREATE TABLE contextual_models (
  route TEXT NOT NULL,
  model TEXT NOT NULL,
  means TEXT NOT NULL,
  variances TEXT NOT NULL,
  updates INTEGER NOT NULL DEFAULT 0,
  last_outcome_id INTEGER NOT NULL DEFAULT 0,
  updated_ms INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (route, model)
) WITHOUT ROWID;
)sql"},
      // Responses API answers for previous_response_id: one row per response, kept until
      // expires_ms (pruned by that index). A rowid table, not WITHOUT ROWID: its rows (the
      // conversation) run to megabytes, which SQLite keeps best in a table's overflow pages.
      {11, "stored responses", R"sql(
CREATE TABLE responses (
  id TEXT NOT NULL PRIMARY KEY,
  owner TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  items TEXT NOT NULL
);
CREATE INDEX responses_expiry ON responses (expires_ms);
)sql"},
      // Later migrations go here, in order.
  };
  return kMigrations;
}

int schema_version() {
  return schema_migrations().empty() ? 0 : schema_migrations().back().version;
}

}  // namespace switchboard::store
