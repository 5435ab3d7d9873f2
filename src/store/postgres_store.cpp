// PostgresStore: the PostgreSQL implementation of Store (store.h), for gateways that share one
// database. The queue, group commit, retries and pruning are BatchWriter's, as for SQLite; this
// file supplies the statements.
//
// Sharing: outcomes, usage, breaker transitions, feedback and key state are the gateways' common
// record (`switchboard stats` sees them all). The learned state (posterior and statistics
// snapshot rows, the learning journal) and the sequence numbers are per gateway, under its
// `state.node` name: each gateway restores exactly what its own journal acknowledged (the
// cluster's learning channel merges the posteriors themselves). Schema migrations run once,
// under an advisory lock, whichever gateway starts first.
#include <algorithm>
#include <mutex>
#include <type_traits>

#include "common/json.h"
#include "common/log.h"
#include "store/batch_writer.h"
#include "store/pg_util.h"
#include "store/reader_pool.h"
#include "store/sqlite_util.h"
#include "store/store.h"

namespace switchboard::store {
namespace {

using detail::Entry;
using detail::from_ms;
using detail::PgConn;
using detail::PgParams;
using detail::Ring;
using detail::to_ms;

// Rows per multi-row INSERT (PostgreSQL takes at most 65535 parameters per statement).
constexpr size_t kRowsPerInsert = 256;

// The multi-row kinds: their INSERT's head, column count and conflict clause. A batch whose
// COMMIT went through but whose answer was lost is written again by the retry: the rows that
// carry the gateway's sequence number are then skipped, so none counts twice.
struct RowKind {
  const char* name;  // of its prepared full-size statement
  const char* head;
  int columns;
  const char* conflict;
};
constexpr RowKind kOutcomeRows = {
    "outcome_rows",
    "INSERT INTO outcomes (node, seq, ts_ms, request_id, route, model, provider, key_id, "
    "status_class, category, latency_us, tokens_in, tokens_out, cost_usd, attempts, layer, "
    "gateway_key) VALUES ",
    17, " ON CONFLICT (node, seq) DO NOTHING"};
constexpr RowKind kUsageRows = {
    "usage_rows",
    "INSERT INTO usage (node, seq, ts_ms, request_id, provider, key_id, model, tokens_in, "
    "tokens_out, cost_usd, gateway_key) VALUES ",
    11, " ON CONFLICT (node, seq) DO NOTHING"};
constexpr RowKind kLearnRows = {
    "learn_rows",
    "INSERT INTO learning_log (node, id, ts_ms, kind, category, model, reward, transport_reward, "
    "counts, success, latency_us, tokens_in, tokens_out, cost_usd, route, features) VALUES ",
    16, " ON CONFLICT (node, id) DO NOTHING"};

using detail::Overloaded;

// Read connections kept for find_response (more concurrent calls open more, for the call).
constexpr size_t kResponseReaders = 4;
// Expired stored responses deleted per prune batch (each may be megabytes).
constexpr int kResponsePruneRows = 100;

class PostgresStore final : public detail::BatchedStore {
 public:
  PostgresStore(const PostgresStoreOptions& options, PgConn conn)
      : BatchedStore(options.state, *(options.clock ? options.clock : &SystemClock::instance()),
                     options.prune_interval),
        options_(options),
        clock_(options.clock ? options.clock : &SystemClock::instance()),
        conn_(std::move(conn)) {}

  ~PostgresStore() override { close(); }

  // Two live gateways under one node name would hand out the same sequence numbers (and one's
  // rows would be skipped as retries of the other's): the write connection holds a session lock
  // on the name, taken again after a reconnection.
  Status lock_node() {
    PgParams p;
    p.add(options_.state.node);
    auto r = conn_.query("SELECT pg_try_advisory_lock(1937207909, hashtext($1))", p);
    if (!r.ok()) return r.status();
    if (r->text(0, 0) != "t")
      return Status::failed_precondition("another gateway is running as node '" +
                                         options_.state.node +
                                         "' on this database: give each its own state.node");
    locked_resets_ = conn_.resets();
    return Status();
  }

  Status init() {
    if (Status st = lock_node(); !st.ok()) return st;
    PgParams p;
    p.add(options_.state.node);
    // Sequence numbers continue after everything of this node already referenced.
    auto last = conn_.query(
        "SELECT GREATEST("
        "(SELECT COALESCE(MAX(seq), 0) FROM outcomes WHERE node = $1), "
        "(SELECT COALESCE(MAX(seq), 0) FROM usage WHERE node = $1), "
        "(SELECT COALESCE(MAX(seq), 0) FROM feedback WHERE node = $1), "
        "(SELECT COALESCE(MAX(last_outcome_id), 0) FROM bandit_posteriors WHERE node = $1), "
        "(SELECT COALESCE(MAX(last_outcome_id), 0) FROM model_stats WHERE node = $1), "
        "(SELECT COALESCE(MAX(id), 0) FROM learning_log WHERE node = $1))",
        p);
    if (!last.ok()) return last.status();
    writer_.start(static_cast<uint64_t>(last->integer(0, 0)));
    return Status();
  }

  Result<LoadedState> load() override;

  Result<std::vector<ServedRequest>> recent_served(WallTime since, size_t limit) override;
  Result<std::map<std::string, double>> gateway_spend(WallTime since) override;
  Result<std::optional<StoredResponse>> find_response(std::string_view id, WallTime now) override;
  Result<std::vector<KeyMinuteUsage>> key_day_usage(WallTime since) override;
  Result<std::map<std::string, ProviderUsage>> provider_usage(WallTime since) override;

  void release_connection() override {
    readers_.close();
    conn_ = PgConn();
  }

 private:
  // ---- BatchSink: called on the writer thread ----

  // Rows gathered for one multi-row INSERT of `kind`, written before any other statement so
  // that the batch's order is kept.
  struct Pending {
    const RowKind* kind = nullptr;
    size_t rows = 0;
    PgParams params;
  };

  Status flush_rows() {
    if (pending_.rows == 0) return Status();
    std::string sql(pending_.kind->head);
    int n = 0;
    for (size_t r = 0; r < pending_.rows; ++r) {
      sql += r == 0 ? "(" : ", (";
      for (int c = 0; c < pending_.kind->columns; ++c) {
        sql += c == 0 ? "$" : ", $";
        sql += std::to_string(++n);
      }
      sql += ")";
    }
    sql += pending_.kind->conflict;
    // Full statements (the common shape under load) are prepared once per kind and connection.
    Status st = pending_.rows == kRowsPerInsert
                    ? conn_.exec_prepared(pending_.kind->name, sql, pending_.params)
                    : conn_.exec(sql, pending_.params);
    pending_.rows = 0;
    pending_.params.clear();
    return st;
  }

  // Starts (or continues) the multi-row INSERT of `kind`, flushing a different or full one.
  Status row(const RowKind& kind) {
    if (pending_.rows > 0 && (pending_.kind != &kind || pending_.rows >= kRowsPerInsert)) {
      if (Status st = flush_rows(); !st.ok()) return st;
    }
    pending_.kind = &kind;
    pending_.rows++;
    return Status();
  }

  Status write(const Entry& e) {
    const std::string& node = options_.state.node;
    PgParams& p = pending_.params;
    return std::visit(
        Overloaded{
            [&](const OutcomeEvent& o) {
              if (Status st = row(kOutcomeRows); !st.ok()) return st;
              p.add(node);
              p.add(int64_t(e.seq));
              p.add(to_ms(o.time));
              p.add(o.request_id);
              p.add(o.route);
              p.add(o.model);
              p.add(o.provider);
              p.add(o.key_id);
              p.add(o.status_class);
              p.add(o.category);
              p.add(o.latency_us);
              p.add(o.tokens_in);
              p.add(o.tokens_out);
              p.add(o.cost_usd);
              p.add(o.attempts);
              p.add(o.layer);
              p.add(o.gateway_key);
              return Status();
            },
            [&](const UsageEvent& u) {
              if (Status st = row(kUsageRows); !st.ok()) return st;
              p.add(node);
              p.add(int64_t(e.seq));
              p.add(to_ms(u.time));
              p.add(u.request_id);
              p.add(u.provider);
              p.add(u.key_id);
              p.add(u.model);
              p.add(u.tokens_in);
              p.add(u.tokens_out);
              p.add(u.cost_usd);
              p.add(u.gateway_key);
              return Status();
            },
            [&](const LearnEvent& l) {
              if (Status st = row(kLearnRows); !st.ok()) return st;
              p.add(node);
              p.add(int64_t(e.seq));
              p.add(to_ms(l.time));
              p.add(int64_t(l.kind));
              p.add(l.category);
              p.add(l.model);
              p.add(l.reward);
              p.add(l.transport_reward);
              p.add(l.counts_for_learning ? 1 : 0);
              p.add(l.success ? 1 : 0);
              p.add(l.latency_us);
              p.add(l.tokens_in);
              p.add(l.tokens_out);
              p.add(l.cost_usd);
              p.add(l.route);
              p.add(json::hex_encode(l.features));
              return Status();
            },
            [&](const KeyStateEvent& k) {
              PgParams q;
              q.add(k.key_id);
              q.add(k.model);
              q.add(k.state);
              q.add(to_ms(k.cooldown_until));
              q.add(k.reason);
              q.add(to_ms(k.updated));
              return single(
                  "INSERT INTO key_state (key_id, model, state, cooldown_until_ms, reason, "
                  "updated_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_id, model) DO "
                  "UPDATE SET state = excluded.state, cooldown_until_ms = "
                  "excluded.cooldown_until_ms, reason = excluded.reason, updated_ms = "
                  "excluded.updated_ms WHERE key_state.updated_ms <= excluded.updated_ms",
                  q);
            },
            [&](const BreakerTransitionEvent& b) {
              PgParams q;
              q.add(node);
              q.add(to_ms(b.time));
              q.add(b.breaker);
              q.add(b.from_state);
              q.add(b.to_state);
              q.add(b.reason);
              return single(
                  "INSERT INTO breaker_transitions (node, ts_ms, breaker, from_state, to_state, "
                  "reason) VALUES ($1, $2, $3, $4, $5, $6)",
                  q);
            },
            [&](const BanditPosteriorEvent& b) {
              PgParams q;
              q.add(node);
              q.add(b.category);
              q.add(b.model);
              q.add(b.alpha);
              q.add(b.beta);
              q.add(int64_t(b.last_outcome_id));
              q.add(to_ms(b.updated));
              q.add(int64_t(b.outcomes));
              q.add(int64_t(b.feedback));
              q.add(b.feedback_reward_sum);
              return single(
                  "INSERT INTO bandit_posteriors (node, category, model, alpha, beta, "
                  "last_outcome_id, updated_ms, outcomes, feedback, feedback_reward_sum) VALUES "
                  "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (node, category, model) "
                  "DO UPDATE SET alpha = excluded.alpha, beta = excluded.beta, last_outcome_id = "
                  "excluded.last_outcome_id, updated_ms = excluded.updated_ms, outcomes = "
                  "excluded.outcomes, feedback = excluded.feedback, feedback_reward_sum = "
                  "excluded.feedback_reward_sum",
                  q);
            },
            [&](const ModelStatsEvent& m) {
              PgParams q;
              q.add(node);
              q.add(m.model);
              q.add(int64_t(m.requests));
              q.add(int64_t(m.successes));
              q.add(m.latency_ewma_us);
              q.add(m.latency_p95_us);
              q.add(m.tokens_in);
              q.add(m.tokens_out);
              q.add(m.spend_usd);
              q.add(int64_t(m.last_outcome_id));
              q.add(to_ms(m.updated));
              return single(
                  "INSERT INTO model_stats (node, model, requests, successes, latency_ewma_us, "
                  "latency_p95_us, tokens_in, tokens_out, spend_usd, last_outcome_id, updated_ms) "
                  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (node, "
                  "model) DO UPDATE SET requests = excluded.requests, successes = "
                  "excluded.successes, latency_ewma_us = excluded.latency_ewma_us, latency_p95_us "
                  "= excluded.latency_p95_us, tokens_in = excluded.tokens_in, tokens_out = "
                  "excluded.tokens_out, spend_usd = excluded.spend_usd, last_outcome_id = "
                  "excluded.last_outcome_id, updated_ms = excluded.updated_ms",
                  q);
            },
            [&](const FeedbackEvent& f) {
              PgParams q;
              q.add(node);
              q.add(int64_t(e.seq));
              q.add(to_ms(f.time));
              q.add(f.request_id);
              q.add(f.success ? 1 : 0);
              q.add(f.score);
              return single(
                  "INSERT INTO feedback (node, seq, ts_ms, request_id, success, score) VALUES "
                  "($1, $2, $3, $4, $5, $6) ON CONFLICT (node, seq) DO NOTHING",
                  q);
            },
            [&](const LearnCompactEvent& c) {
              PgParams q;
              q.add(node);
              q.add(int64_t(c.up_to));
              return single("DELETE FROM learning_log WHERE node = $1 AND id <= $2", q);
            },
            [&](const ContextualModelEvent& c) {
              PgParams q;
              q.add(node);
              q.add(c.route);
              q.add(c.model);
              q.add(detail::floats_hex(c.means));
              q.add(detail::floats_hex(c.variances));
              q.add(int64_t(c.updates));
              q.add(int64_t(c.last_outcome_id));
              q.add(to_ms(c.updated));
              return single(
                  "INSERT INTO contextual_models (node, route, model, means, variances, updates, "
                  "last_outcome_id, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                  "ON CONFLICT (node, route, model) DO UPDATE SET means = excluded.means, "
                  "variances = excluded.variances, updates = excluded.updates, "
                  "last_outcome_id = excluded.last_outcome_id, updated_ms = excluded.updated_ms",
                  q);
            },
            [&](const StoredResponseEvent& r) {
              // Text that is not UTF-8 would fail the batch every time it is retried (the id
              // was checked by enqueue).
              PgParams q;
              q.add(r.id);
              auto owner = detail::utf8_repaired(r.owner);
              q.add(owner ? std::string_view(*owner) : std::string_view(r.owner));
              q.add(to_ms(r.created));
              q.add(to_ms(r.expires));
              auto items = detail::utf8_repaired(r.items);
              q.add(items ? std::string_view(*items) : std::string_view(r.items));
              return single(
                  "INSERT INTO responses (id, owner, created_ms, expires_ms, items) VALUES ($1, "
                  "$2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, "
                  "created_ms = excluded.created_ms, expires_ms = excluded.expires_ms, items = "
                  "excluded.items",
                  q);
            },
        },
        e.event);
  }

  // A statement of its own, after the rows gathered before it.
  Status single(const char* sql, const PgParams& params) {
    if (Status st = flush_rows(); !st.ok()) return st;
    return conn_.exec(sql, params);
  }

  // One transaction for the whole batch, in the batch's order.
  Status write_batch(const std::vector<Entry>& retry, const Ring& ess, const Ring& norm) override {
    pending_.rows = 0;
    pending_.params.clear();
    if (!conn_.ensure()) return Status::io_error("postgres: connection lost, reconnecting");
    if (conn_.resets() != locked_resets_) {
      if (Status st = lock_node(); !st.ok()) return st;
    }
    Status st = conn_.exec("BEGIN");
    for (size_t i = 0; st.ok() && i < retry.size(); ++i) st = write(retry[i]);
    for (size_t i = 0; st.ok() && i < ess.size(); ++i) st = write(ess.at(i));
    for (size_t i = 0; st.ok() && i < norm.size(); ++i) st = write(norm.at(i));
    if (st.ok()) st = flush_rows();
    if (st.ok()) st = conn_.exec("COMMIT");
    if (st.ok()) return st;
    pending_.rows = 0;
    pending_.params.clear();
    if (conn_.in_transaction()) (void)conn_.exec("ROLLBACK");
    return st;
  }

  int64_t prune_batch(Status* error) override {
    if (!conn_.ensure()) {
      *error = Status::io_error("postgres: connection lost, reconnecting");
      return -1;
    }
    // Expired responses (any gateway's: the table is common; rows another gateway is pruning
    // right now are skipped, not waited for), their expiry their own.
    PgParams rp;
    rp.add(to_ms(clock_->wall_now()));
    rp.add(int64_t(std::clamp(options_.prune_batch_rows, 1, kResponsePruneRows)));
    auto gone = conn_.query(
        "WITH gone AS (DELETE FROM responses WHERE id IN (SELECT id FROM responses WHERE "
        "expires_ms <= $1 ORDER BY expires_ms LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING 1) "
        "SELECT count(*) FROM gone",
        rp);
    if (!gone.ok()) {
      *error = gone.status();
      return -1;
    }
    const int64_t responses = gone->integer(0, 0);
    if (options_.state.retention_days <= 0) return responses;
    const auto cutoff = clock_->wall_now() - std::chrono::hours(24) * options_.state.retention_days;
    PgParams p;
    p.add(to_ms(cutoff));
    p.add(int64_t(std::max(options_.prune_batch_rows, 1)));
    auto r = conn_.query(
        "WITH gone AS (DELETE FROM outcomes WHERE id IN (SELECT id FROM outcomes WHERE ts_ms < "
        "$1 ORDER BY id LIMIT $2) RETURNING 1) SELECT count(*) FROM gone",
        p);
    if (!r.ok()) {
      *error = r.status();
      return -1;
    }
    return responses + r->integer(0, 0);
  }

  void finish() override {}

  const PostgresStoreOptions options_;
  const Clock* clock_;
  PgConn conn_;                 // the write connection: the writer thread's once it runs
  uint64_t locked_resets_ = 0;  // conn_.resets() when the node lock was taken
  Pending pending_;
  detail::ReaderPool<PgConn> readers_{kResponseReaders};  // find_response's connections
};

Result<LoadedState> PostgresStore::load() {
  auto conn = PgConn::connect(options_.state.url, int(options_.connect_timeout_s));
  if (!conn.ok()) return conn.status();
  // One snapshot of the whole state while the writers keep committing.
  if (Status st = conn->exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !st.ok())
    return st;
  LoadedState out;
  const int64_t now_ms = to_ms(clock_->wall_now());
  PgParams node;
  node.add(options_.state.node);
  auto keys = conn->query(
      "SELECT key_id, model, state, cooldown_until_ms, reason, updated_ms FROM key_state ORDER "
      "BY key_id, model");
  if (!keys.ok()) return keys.status();
  for (int i = 0; i < keys->rows(); ++i) {
    KeyStateEvent k;
    k.key_id = keys->text(i, 0);
    k.model = keys->text(i, 1);
    k.state = keys->text(i, 2);
    const int64_t until = keys->integer(i, 3);
    k.cooldown_until = until > now_ms ? from_ms(until) : WallTime{};
    k.reason = keys->text(i, 4);
    k.updated = from_ms(keys->integer(i, 5));
    out.keys.push_back(std::move(k));
  }
  auto posts = conn->query(
      "SELECT category, model, alpha, beta, last_outcome_id, updated_ms, outcomes, feedback, "
      "feedback_reward_sum FROM bandit_posteriors WHERE node = $1 ORDER BY category, model",
      node);
  if (!posts.ok()) return posts.status();
  for (int i = 0; i < posts->rows(); ++i) {
    BanditPosteriorEvent p;
    p.category = posts->text(i, 0);
    p.model = posts->text(i, 1);
    p.alpha = posts->number(i, 2);
    p.beta = posts->number(i, 3);
    p.last_outcome_id = uint64_t(posts->integer(i, 4));
    p.updated = from_ms(posts->integer(i, 5));
    p.outcomes = uint64_t(posts->integer(i, 6));
    p.feedback = uint64_t(posts->integer(i, 7));
    p.feedback_reward_sum = posts->number(i, 8);
    out.posteriors.push_back(std::move(p));
  }
  auto stats = conn->query(
      "SELECT model, requests, successes, latency_ewma_us, latency_p95_us, tokens_in, "
      "tokens_out, spend_usd, last_outcome_id, updated_ms FROM model_stats WHERE node = $1 "
      "ORDER BY model",
      node);
  if (!stats.ok()) return stats.status();
  for (int i = 0; i < stats->rows(); ++i) {
    ModelStatsEvent m;
    m.model = stats->text(i, 0);
    m.requests = uint64_t(stats->integer(i, 1));
    m.successes = uint64_t(stats->integer(i, 2));
    m.latency_ewma_us = stats->number(i, 3);
    m.latency_p95_us = stats->number(i, 4);
    m.tokens_in = stats->integer(i, 5);
    m.tokens_out = stats->integer(i, 6);
    m.spend_usd = stats->number(i, 7);
    m.last_outcome_id = uint64_t(stats->integer(i, 8));
    m.updated = from_ms(stats->integer(i, 9));
    out.model_stats.push_back(std::move(m));
  }
  auto journal = conn->query(
      "SELECT id, kind, category, model, reward, transport_reward, counts, success, latency_us, "
      "tokens_in, tokens_out, cost_usd, route, features FROM learning_log WHERE node = $1 "
      "ORDER BY id",
      node);
  if (!journal.ok()) return journal.status();
  for (int i = 0; i < journal->rows(); ++i) {
    LearnRecord r;
    const int64_t kind = journal->integer(i, 1);
    r.kind =
        kind >= 0 && kind <= 3 ? static_cast<LearnRecord::Kind>(kind) : LearnRecord::Kind::kOutcome;
    r.category = journal->text(i, 2);
    r.model = journal->text(i, 3);
    r.reward = journal->number(i, 4);
    r.transport_reward = journal->number(i, 5);
    r.counts_for_learning = journal->integer(i, 6) != 0;
    r.success = journal->integer(i, 7) != 0;
    r.latency_us = journal->integer(i, 8);
    r.tokens_in = journal->integer(i, 9);
    r.tokens_out = journal->integer(i, 10);
    r.cost_usd = journal->number(i, 11);
    r.route = journal->text(i, 12);
    r.features = json::hex_decode(journal->text(i, 13)).value_or("");
    out.learning.emplace_back(uint64_t(journal->integer(i, 0)), std::move(r));
  }
  auto contextual = conn->query(
      "SELECT route, model, means, variances, updates, last_outcome_id, updated_ms "
      "FROM contextual_models WHERE node = $1 ORDER BY route, model",
      node);
  if (!contextual.ok()) return contextual.status();
  for (int i = 0; i < contextual->rows(); ++i) {
    ContextualModelEvent c;
    c.route = contextual->text(i, 0);
    c.model = contextual->text(i, 1);
    // A row that does not read back whole is skipped: its model starts over.
    if (!detail::floats_from_hex(contextual->text(i, 2), kContextualDim, c.means) ||
        !detail::floats_from_hex(contextual->text(i, 3), kContextualDim, c.variances))
      continue;
    c.updates = uint64_t(contextual->integer(i, 4));
    c.last_outcome_id = uint64_t(contextual->integer(i, 5));
    c.updated = from_ms(contextual->integer(i, 6));
    out.contextual.push_back(std::move(c));
  }
  auto last = conn->query("SELECT COALESCE(MAX(seq), 0) FROM outcomes WHERE node = $1", node);
  if (!last.ok()) return last.status();
  out.last_outcome_id = last->integer(0, 0);
  (void)conn->exec("COMMIT");
  return out;
}

// The reads below cover every gateway's rows: the record is common (a verdict may come to any
// gateway for a request another served; budgets and key windows count all of them).
Result<std::vector<ServedRequest>> PostgresStore::recent_served(WallTime since, size_t limit) {
  auto conn = PgConn::connect(options_.state.url, int(options_.connect_timeout_s));
  if (!conn.ok()) return conn.status();
  PgParams p;
  p.add(to_ms(since));
  p.add(int64_t(limit));
  auto r = conn->query(
      "SELECT o.request_id, o.model, o.category, o.layer, o.gateway_key, o.ts_ms, EXISTS (SELECT "
      "1 FROM feedback f WHERE f.request_id = o.request_id) FROM outcomes o WHERE o.ts_ms >= $1 "
      "AND o.status_class = 'ok' ORDER BY o.ts_ms DESC, o.id DESC LIMIT $2",
      p);
  if (!r.ok()) return r.status();
  std::vector<ServedRequest> out;
  for (int i = 0; i < r->rows(); ++i) {
    ServedRequest s;
    s.request_id = r->text(i, 0);
    s.model = r->text(i, 1);
    s.category = r->text(i, 2);
    s.layer = int(r->integer(i, 3));
    s.gateway_key = r->text(i, 4);
    s.time = from_ms(r->integer(i, 5));
    s.judged = r->text(i, 6) == "t";
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::optional<StoredResponse>> PostgresStore::find_response(std::string_view id,
                                                                   WallTime now) {
  using Found = std::optional<StoredResponse>;
  // Such an id is never stored (the writer refuses it; a NUL would end the text parameter).
  if (id.empty() || id.size() > kMaxResponseIdBytes || detail::utf8_repaired(id)) return Found();
  auto open = [&]() -> Result<std::unique_ptr<PgConn>> {
    auto conn = PgConn::connect(options_.state.url, int(options_.connect_timeout_s));
    if (!conn.ok()) return conn.status();
    if (Status st = conn->exec("SET default_transaction_read_only = on"); !st.ok()) return st;
    return std::make_unique<PgConn>(std::move(*conn));
  };
  auto find = [&](PgConn& conn) -> Result<Found> {
    PgParams p;
    p.add(id);
    p.add(to_ms(now));
    auto r = conn.query_prepared("find_response",
                                 "SELECT owner, created_ms, expires_ms, items FROM responses "
                                 "WHERE id = $1 AND expires_ms > $2",
                                 p);
    if (!r.ok()) return r.status();
    Found out;
    if (r->rows() == 0) return out;
    out.emplace();
    out->id = std::string(id);
    out->owner = r->text(0, 0);
    out->created = from_ms(r->integer(0, 1));
    out->expires = from_ms(r->integer(0, 2));
    out->items = r->text(0, 3);
    return out;
  };
  return readers_.with(open, find);
}

Result<std::map<std::string, double>> PostgresStore::gateway_spend(WallTime since) {
  auto conn = PgConn::connect(options_.state.url, int(options_.connect_timeout_s));
  if (!conn.ok()) return conn.status();
  PgParams p;
  p.add(to_ms(since));
  auto r = conn->query(
      "SELECT gateway_key, SUM(cost_usd) FROM usage WHERE ts_ms >= $1 AND gateway_key <> '' "
      "GROUP BY gateway_key",
      p);
  if (!r.ok()) return r.status();
  std::map<std::string, double> out;
  for (int i = 0; i < r->rows(); ++i) out[r->text(i, 0)] = r->number(i, 1);
  return out;
}

Result<std::map<std::string, ProviderUsage>> PostgresStore::provider_usage(WallTime since) {
  auto conn = PgConn::connect(options_.state.url, int(options_.connect_timeout_s));
  if (!conn.ok()) return conn.status();
  PgParams p;
  p.add(to_ms(since));
  // Every gateway's rows: the store is the cluster's common record.
  auto r = conn->query(
      "SELECT provider, COUNT(*), SUM(tokens_in + tokens_out), SUM(cost_usd) FROM usage "
      "WHERE ts_ms >= $1 GROUP BY provider",
      p);
  if (!r.ok()) return r.status();
  std::map<std::string, ProviderUsage> out;
  for (int i = 0; i < r->rows(); ++i) {
    ProviderUsage& u = out[r->text(i, 0)];
    u.requests = r->integer(i, 1);
    u.tokens = r->integer(i, 2);
    u.cost_usd = r->number(i, 3);
  }
  return out;
}

Result<std::vector<KeyMinuteUsage>> PostgresStore::key_day_usage(WallTime since) {
  auto conn = PgConn::connect(options_.state.url, int(options_.connect_timeout_s));
  if (!conn.ok()) return conn.status();
  PgParams p;
  p.add(to_ms(since));
  auto r = conn->query(
      "SELECT key_id, (ts_ms / 60000) * 60000 AS minute, COUNT(*), SUM(tokens_in + tokens_out) "
      "FROM usage WHERE ts_ms >= $1 GROUP BY key_id, minute ORDER BY key_id, minute",
      p);
  if (!r.ok()) return r.status();
  std::vector<KeyMinuteUsage> out;
  for (int i = 0; i < r->rows(); ++i) {
    KeyMinuteUsage u;
    u.key_id = r->text(i, 0);
    u.minute = from_ms(r->integer(i, 1));
    u.requests = r->integer(i, 2);
    u.tokens = r->integer(i, 3);
    out.push_back(std::move(u));
  }
  return out;
}

}  // namespace

Result<std::vector<ModelStatsRow>> query_postgres_model_stats(const std::string& url) {
  auto conn = detail::PgConn::connect(url, 5);
  if (!conn.ok()) return conn.status();
  // p95 by nearest rank, as for SQLite: percentile_disc picks the ceil(0.95 n)-th smallest.
  auto r = conn->query(
      "SELECT model, COUNT(*), SUM(CASE WHEN status_class = 'ok' THEN 1 ELSE 0 END), "
      "AVG(latency_us), SUM(tokens_in), SUM(tokens_out), SUM(cost_usd), "
      "PERCENTILE_DISC(0.95) WITHIN GROUP (ORDER BY latency_us) FROM outcomes GROUP BY model "
      "ORDER BY model");
  if (!r.ok()) {
    if (r.status().message().find("does not exist") != std::string::npos)
      return Status::failed_precondition("that database holds no switchboard store");
    return r.status();
  }
  std::vector<ModelStatsRow> rows;
  for (int i = 0; i < r->rows(); ++i) {
    ModelStatsRow m;
    m.model = r->text(i, 0);
    m.requests = r->integer(i, 1);
    m.successes = r->integer(i, 2);
    m.success_rate = m.requests ? double(m.successes) / double(m.requests) : 0;
    m.avg_latency_ms = r->number(i, 3) / 1000.0;
    m.tokens_in = r->integer(i, 4);
    m.tokens_out = r->integer(i, 5);
    m.spend_usd = r->number(i, 6);
    m.p95_latency_ms = r->number(i, 7) / 1000.0;
    rows.push_back(std::move(m));
  }
  return rows;
}

Result<std::unique_ptr<Store>> open_postgres_store(const PostgresStoreOptions& options) {
  if (options.state.node.empty())
    return Status::invalid_argument("state.node must name this gateway for a postgres store");
  auto conn = detail::PgConn::connect(options.state.url, int(options.connect_timeout_s));
  if (!conn.ok()) return conn.status();
  if (Status st = detail::pg_migrate(*conn); !st.ok()) return st;
  auto store = std::make_unique<PostgresStore>(options, std::move(*conn));
  if (Status st = store->init(); !st.ok()) return st;
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace switchboard::store
