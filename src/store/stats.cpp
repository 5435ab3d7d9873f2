// Per-model statistics straight from the outcomes table (`switchboard stats --db PATH`).
#include <fmt/format.h>

#include <cmath>
#include <filesystem>

#include "store/sqlite_util.h"
#include "store/store.h"

namespace switchboard::store {
namespace {

// Model names are configuration text; escape them so any name yields valid JSON.
void append_json_string_body(std::string& out, std::string_view s) {
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
}

}  // namespace

Result<std::vector<ModelStatsRow>> query_model_stats(const std::string& db_path) {
  using detail::Db;
  using detail::Stmt;
  if (db_path.rfind("postgresql://", 0) == 0 || db_path.rfind("postgres://", 0) == 0)
    return query_postgres_model_stats(db_path);
  std::error_code ec;
  if (!std::filesystem::exists(db_path, ec)) {
    return Status::not_found("no database at " + db_path);
  }
  // Read-only: a stats query must never create or modify anything. If the WAL index cannot be
  // created read-only (no gateway has the file open), fall back to a read-write open that only
  // reads.
  auto db = Db::open(db_path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX);
  Result<int64_t> version =
      db.ok() ? db->query_int("PRAGMA user_version") : Result<int64_t>(db.status());
  if (!version.ok()) {
    db = Db::open(db_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
    if (!db.ok()) return db.status();
    version = db->query_int("PRAGMA user_version");
    if (!version.ok()) return version.status();
  }
  if (*version < 1) {
    return Status::failed_precondition(db_path + " is not a switchboard store");
  }
  sqlite3_busy_timeout(db->get(), 5000);
  if (Status st = db->exec("BEGIN"); !st.ok()) return st;

  std::vector<ModelStatsRow> rows;
  Stmt agg;
  if (Status st = agg.prepare(db->get(),
                              "SELECT model, count(*), sum(status_class = 'ok'), avg(latency_us), "
                              "sum(tokens_in), sum(tokens_out), sum(cost_usd) "
                              "FROM outcomes GROUP BY model ORDER BY model");
      !st.ok()) {
    return st;
  }
  int rc;
  while ((rc = agg.step()) == SQLITE_ROW) {
    ModelStatsRow r;
    r.model = agg.col_text(0);
    r.requests = agg.col_int(1);
    r.successes = agg.col_int(2);
    r.success_rate = r.requests ? static_cast<double>(r.successes) / r.requests : 0;
    r.avg_latency_ms = agg.col_double(3) / 1000.0;
    r.tokens_in = agg.col_int(4);
    r.tokens_out = agg.col_int(5);
    r.spend_usd = agg.col_double(6);
    rows.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return detail::sqlite_error(db->get(), rc, "aggregate outcomes");

  // p95 by nearest rank: the ceil(0.95 n)-th smallest latency.
  Stmt p95;
  if (Status st = p95.prepare(db->get(),
                              "SELECT latency_us FROM outcomes WHERE model = ?1 "
                              "ORDER BY latency_us LIMIT 1 OFFSET ?2");
      !st.ok()) {
    return st;
  }
  for (ModelStatsRow& r : rows) {
    const int64_t rank = static_cast<int64_t>(std::ceil(0.95 * static_cast<double>(r.requests)));
    p95.bind(1, std::string_view(r.model));
    p95.bind(2, std::max<int64_t>(rank - 1, 0));
    if (p95.step() == SQLITE_ROW) r.p95_latency_ms = p95.col_double(0) / 1000.0;
    p95.reset();
  }
  (void)db->exec("COMMIT");
  return rows;
}

Result<std::string> format_model_stats(const std::string& db_path, bool json) {
  auto rows = query_model_stats(db_path);
  if (!rows.ok()) return rows.status();
  std::string out;
  if (json) {
    out += "[";
    bool first = true;
    for (const ModelStatsRow& r : *rows) {
      out += first ? "\n  {\"model\":\"" : ",\n  {\"model\":\"";
      first = false;
      append_json_string_body(out, r.model);
      out += fmt::format(
          "\",\"requests\":{},\"successes\":{},\"success_rate\":{:.4f},\"avg_latency_ms\":{:.3f},"
          "\"p95_latency_ms\":{:.3f},\"tokens_in\":{},\"tokens_out\":{},\"spend_usd\":{:.6f}}}",
          r.requests, r.successes, r.success_rate, r.avg_latency_ms, r.p95_latency_ms, r.tokens_in,
          r.tokens_out, r.spend_usd);
    }
    out += rows->empty() ? "]\n" : "\n]\n";
    return out;
  }
  size_t width = 5;  // "model"
  for (const ModelStatsRow& r : *rows) width = std::max(width, r.model.size());
  out += fmt::format("{:<{}}  {:>9}  {:>8}  {:>10}  {:>10}  {:>12}  {:>12}  {:>11}\n", "model",
                     width, "requests", "success", "avg_ms", "p95_ms", "tokens_in", "tokens_out",
                     "spend_usd");
  for (const ModelStatsRow& r : *rows) {
    out +=
        fmt::format("{:<{}}  {:>9}  {:>7.1f}%  {:>10.1f}  {:>10.1f}  {:>12}  {:>12}  {:>11.4f}\n",
                    r.model, width, r.requests, r.success_rate * 100, r.avg_latency_ms,
                    r.p95_latency_ms, r.tokens_in, r.tokens_out, r.spend_usd);
  }
  if (rows->empty()) out += "(no outcomes recorded)\n";
  return out;
}

namespace {
// Opens the state file for one query and reads its schema version. NotFound without a file.
Result<detail::Db> open_for_query(const std::string& db_path, int flags, int64_t& version) {
  std::error_code ec;
  if (!std::filesystem::exists(db_path, ec)) return Status::not_found("no database at " + db_path);
  auto db = detail::Db::open(db_path, flags | SQLITE_OPEN_NOMUTEX);
  if (!db.ok()) return db.status();
  sqlite3_busy_timeout(db->get(), 5000);
  auto v = db->query_int("PRAGMA user_version");
  if (!v.ok()) return v.status();
  version = *v;
  return db;
}
}  // namespace

Result<std::vector<ServedRequest>> query_recent_served(const std::string& db_path, WallTime since,
                                                       size_t limit) {
  using detail::Stmt;
  int64_t version = 0;
  auto db = open_for_query(db_path, SQLITE_OPEN_READONLY, version);
  if (!db.ok()) return db.status();
  std::vector<ServedRequest> out;
  if (version < 7) return out;  // no request owners recorded before migration 7
  // Newest first by rowid (ids grow with time), stopping at the first row older than `since`:
  // a walk over the window only, however many rows retention keeps.
  Stmt q;
  if (Status st = q.prepare(db->get(),
                            "SELECT o.request_id, o.model, o.category, o.layer, o.gateway_key, "
                            "o.ts_ms, o.status_class = 'ok', EXISTS (SELECT 1 FROM feedback f "
                            "WHERE f.request_id = o.request_id) FROM outcomes o ORDER BY o.id "
                            "DESC");
      !st.ok()) {
    return st;
  }
  const int64_t since_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(since.time_since_epoch()).count();
  auto text = [&q](int col) {
    const unsigned char* t = sqlite3_column_text(q.get(), col);
    return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
  };
  while (out.size() < limit) {
    int rc = sqlite3_step(q.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW)
      return Status::io_error(std::string("reading served requests: ") + sqlite3_errmsg(db->get()));
    const int64_t ts = sqlite3_column_int64(q.get(), 5);
    if (ts < since_ms) break;
    if (sqlite3_column_int(q.get(), 6) == 0) continue;  // failed: no verdict is taken
    ServedRequest r;
    r.request_id = text(0);
    r.model = text(1);
    r.category = text(2);
    r.layer = sqlite3_column_int(q.get(), 3);
    r.gateway_key = text(4);
    r.time = WallTime(std::chrono::milliseconds(ts));
    r.judged = sqlite3_column_int(q.get(), 7) != 0;
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::map<std::string, double>> query_gateway_spend(const std::string& db_path,
                                                          WallTime since) {
  using detail::Stmt;
  int64_t version = 0;
  auto db = open_for_query(db_path, SQLITE_OPEN_READWRITE, version);
  if (!db.ok()) return db.status();
  std::map<std::string, double> out;
  if (version < 4) return out;  // no per-key spend recorded before migration 4
  Stmt q;
  if (Status st = q.prepare(
          db->get(),
          "SELECT gateway_key, sum(cost_usd) FROM usage WHERE ts_ms >= ?1 AND gateway_key != '' "
          "GROUP BY gateway_key");
      !st.ok()) {
    return st;
  }
  q.bind(1,
         std::chrono::duration_cast<std::chrono::milliseconds>(since.time_since_epoch()).count());
  while (true) {
    int rc = sqlite3_step(q.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW)
      return Status::io_error(std::string("reading spend: ") + sqlite3_errmsg(db->get()));
    const unsigned char* name = sqlite3_column_text(q.get(), 0);
    out[name ? reinterpret_cast<const char*>(name) : ""] = sqlite3_column_double(q.get(), 1);
  }
  return out;
}

namespace {
// The id of the first usage row at or after `since_ms` less a margin. Rows are appended in commit
// order, their times nearly in order (wall-clock steps aside): found by binary search over ids;
// the margin, and the exact time filter of the callers' queries, take care of rows slightly out
// of order. So a query reads only the rows of its period, however long the journal.
Result<int64_t> first_usage_id(detail::Db& db, int64_t since_ms) {
  using detail::Stmt;
  constexpr int64_t kMarginMs = 10 * 60 * 1000;
  Stmt probe;
  if (Status st =
          probe.prepare(db.get(), "SELECT ts_ms FROM usage WHERE id >= ?1 ORDER BY id LIMIT 1");
      !st.ok()) {
    return st;
  }
  auto bounds = db.query_int("SELECT coalesce(max(id), 0) FROM usage");
  if (!bounds.ok()) return bounds.status();
  int64_t lo = 0, hi = *bounds + 1;  // the first id whose time is >= since - margin is in (lo, hi]
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    probe.bind(1, mid);
    const int rc = sqlite3_step(probe.get());
    const bool before =
        rc == SQLITE_ROW && sqlite3_column_int64(probe.get(), 0) < since_ms - kMarginMs;
    sqlite3_reset(probe.get());
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      return Status::io_error(std::string("reading usage: ") + sqlite3_errmsg(db.get()));
    if (before) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return hi;
}
}  // namespace

Result<std::vector<KeyMinuteUsage>> query_key_day_usage(const std::string& db_path,
                                                        WallTime since) {
  using detail::Stmt;
  int64_t version = 0;
  auto db = open_for_query(db_path, SQLITE_OPEN_READWRITE, version);
  if (!db.ok()) return db.status();
  std::vector<KeyMinuteUsage> out;
  const int64_t since_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(since.time_since_epoch()).count();
  auto first = first_usage_id(*db, since_ms);
  if (!first.ok()) return first.status();
  Stmt q;
  if (Status st = q.prepare(db->get(),
                            "SELECT key_id, (ts_ms / 60000) * 60000 AS minute, count(*), "
                            "sum(tokens_in + tokens_out) FROM usage WHERE id >= ?1 AND ts_ms >= ?2 "
                            "GROUP BY key_id, minute ORDER BY key_id, minute");
      !st.ok()) {
    return st;
  }
  q.bind(1, *first);
  q.bind(2, since_ms);
  while (true) {
    const int rc = sqlite3_step(q.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW)
      return Status::io_error(std::string("reading usage: ") + sqlite3_errmsg(db->get()));
    KeyMinuteUsage u;
    const unsigned char* key = sqlite3_column_text(q.get(), 0);
    u.key_id = key ? reinterpret_cast<const char*>(key) : "";
    u.minute = detail::from_ms(sqlite3_column_int64(q.get(), 1));
    u.requests = sqlite3_column_int64(q.get(), 2);
    u.tokens = sqlite3_column_int64(q.get(), 3);
    out.push_back(std::move(u));
  }
  return out;
}

Result<std::map<std::string, ProviderUsage>> query_provider_usage(const std::string& db_path,
                                                                  WallTime since) {
  using detail::Stmt;
  int64_t version = 0;
  auto db = open_for_query(db_path, SQLITE_OPEN_READWRITE, version);
  if (!db.ok()) return db.status();
  std::map<std::string, ProviderUsage> out;
  const int64_t since_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(since.time_since_epoch()).count();
  auto first = first_usage_id(*db, since_ms);
  if (!first.ok()) return first.status();
  Stmt q;
  if (Status st = q.prepare(db->get(),
                            "SELECT provider, count(*), sum(tokens_in + tokens_out), sum(cost_usd) "
                            "FROM usage WHERE id >= ?1 AND ts_ms >= ?2 GROUP BY provider");
      !st.ok()) {
    return st;
  }
  q.bind(1, *first);
  q.bind(2, since_ms);
  while (true) {
    const int rc = sqlite3_step(q.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW)
      return Status::io_error(std::string("reading usage: ") + sqlite3_errmsg(db->get()));
    const unsigned char* name = sqlite3_column_text(q.get(), 0);
    ProviderUsage& u = out[name ? reinterpret_cast<const char*>(name) : ""];
    u.requests = sqlite3_column_int64(q.get(), 1);
    u.tokens = sqlite3_column_int64(q.get(), 2);
    u.cost_usd = sqlite3_column_double(q.get(), 3);
  }
  return out;
}

}  // namespace switchboard::store
