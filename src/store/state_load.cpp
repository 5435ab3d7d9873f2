// Reading the persisted state back (Store::load and load_state): key state, learned rows, the
// learning journal after them, in one read transaction.
#include <filesystem>

#include "common/json.h"
#include "store/batch_writer.h"
#include "store/sqlite_util.h"
#include "store/store.h"

namespace switchboard::store {

using detail::Db;
using detail::from_ms;
using detail::sqlite_error;
using detail::Stmt;
using detail::to_ms;

Result<LoadedState> detail::read_state(Db& db, WallTime now) {
  // One read transaction: a consistent snapshot while the writer keeps committing.
  if (Status st = db.exec("BEGIN"); !st.ok()) return st;
  LoadedState out;
  const int64_t now_ms = to_ms(now);
  Stmt s;
  if (Status st = s.prepare(db.get(),
                            "SELECT key_id, model, state, cooldown_until_ms, reason, updated_ms "
                            "FROM key_state ORDER BY key_id, model");
      !st.ok()) {
    return st;
  }
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    KeyStateEvent k;
    k.key_id = s.col_text(0);
    k.model = s.col_text(1);
    k.state = s.col_text(2);
    const int64_t until = s.col_int(3);
    k.cooldown_until = until > now_ms ? from_ms(until) : WallTime{};
    k.reason = s.col_text(4);
    k.updated = from_ms(s.col_int(5));
    out.keys.push_back(std::move(k));
  }
  if (rc != SQLITE_DONE) return sqlite_error(db.get(), rc, "load key_state");

  if (Status st = s.prepare(db.get(),
                            "SELECT category, model, alpha, beta, last_outcome_id, updated_ms, "
                            "outcomes, feedback, feedback_reward_sum "
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
    p.last_outcome_id = uint64_t(s.col_int(4));
    p.updated = from_ms(s.col_int(5));
    p.outcomes = uint64_t(s.col_int(6));
    p.feedback = uint64_t(s.col_int(7));
    p.feedback_reward_sum = s.col_double(8);
    out.posteriors.push_back(std::move(p));
  }
  if (rc != SQLITE_DONE) return sqlite_error(db.get(), rc, "load bandit_posteriors");

  if (Status st = s.prepare(db.get(),
                            "SELECT model, requests, successes, latency_ewma_us, latency_p95_us, "
                            "tokens_in, tokens_out, spend_usd, last_outcome_id, updated_ms "
                            "FROM model_stats ORDER BY model");
      !st.ok()) {
    return st;
  }
  while ((rc = s.step()) == SQLITE_ROW) {
    ModelStatsEvent m;
    m.model = s.col_text(0);
    m.requests = uint64_t(s.col_int(1));
    m.successes = uint64_t(s.col_int(2));
    m.latency_ewma_us = s.col_double(3);
    m.latency_p95_us = s.col_double(4);
    m.tokens_in = s.col_int(5);
    m.tokens_out = s.col_int(6);
    m.spend_usd = s.col_double(7);
    m.last_outcome_id = uint64_t(s.col_int(8));
    m.updated = from_ms(s.col_int(9));
    out.model_stats.push_back(std::move(m));
  }
  if (rc != SQLITE_DONE) return sqlite_error(db.get(), rc, "load model_stats");

  if (Status st = s.prepare(db.get(),
                            "SELECT id, kind, category, model, reward, transport_reward, counts, "
                            "success, latency_us, tokens_in, tokens_out, cost_usd, route, features "
                            "FROM learning_log ORDER BY id");
      !st.ok()) {
    return st;
  }
  while ((rc = s.step()) == SQLITE_ROW) {
    LearnRecord r;
    const int64_t kind = s.col_int(1);
    r.kind =
        kind >= 0 && kind <= 3 ? static_cast<LearnRecord::Kind>(kind) : LearnRecord::Kind::kOutcome;
    r.category = s.col_text(2);
    r.model = s.col_text(3);
    r.reward = s.col_double(4);
    r.transport_reward = s.col_double(5);
    r.counts_for_learning = s.col_int(6) != 0;
    r.success = s.col_int(7) != 0;
    r.latency_us = s.col_int(8);
    r.tokens_in = s.col_int(9);
    r.tokens_out = s.col_int(10);
    r.cost_usd = s.col_double(11);
    r.route = s.col_text(12);
    r.features = json::hex_decode(s.col_text(13)).value_or("");
    out.learning.emplace_back(uint64_t(s.col_int(0)), std::move(r));
  }
  if (rc != SQLITE_DONE) return sqlite_error(db.get(), rc, "load learning_log");

  if (Status st = s.prepare(db.get(),
                            "SELECT route, model, means, variances, updates, last_outcome_id, "
                            "updated_ms FROM contextual_models ORDER BY route, model");
      !st.ok()) {
    return st;
  }
  while ((rc = s.step()) == SQLITE_ROW) {
    ContextualModelEvent c;
    c.route = s.col_text(0);
    c.model = s.col_text(1);
    // A row that does not read back whole is skipped: its model starts over.
    if (!detail::floats_from_hex(s.col_text(2), kContextualDim, c.means) ||
        !detail::floats_from_hex(s.col_text(3), kContextualDim, c.variances))
      continue;
    c.updates = uint64_t(s.col_int(4));
    c.last_outcome_id = uint64_t(s.col_int(5));
    c.updated = from_ms(s.col_int(6));
    out.contextual.push_back(std::move(c));
  }
  if (rc != SQLITE_DONE) return sqlite_error(db.get(), rc, "load contextual_models");
  s.finalize();

  auto last = db.query_int("SELECT coalesce(max(id), 0) FROM outcomes");
  if (!last.ok()) return last.status();
  out.last_outcome_id = *last;
  (void)db.exec("COMMIT");
  return out;
}

Result<LoadedState> load_state(const std::string& db_path, WallTime now) {
  std::error_code ec;
  if (!std::filesystem::exists(db_path, ec)) return Status::not_found("no database at " + db_path);
  auto db = Db::open(db_path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX);
  if (!db.ok()) return db.status();
  sqlite3_busy_timeout(db->get(), 5000);
  auto version = db->query_int("PRAGMA user_version");
  if (!version.ok()) return version.status();
  if (*version != schema_version()) {
    return Status::failed_precondition(
        "database " + db_path + " is at schema version " + std::to_string(*version) +
        ", this binary reads version " + std::to_string(schema_version()) +
        (*version < schema_version() ? " (start the gateway on it once to migrate it)" : ""));
  }
  return detail::read_state(*db, now);
}

}  // namespace switchboard::store
