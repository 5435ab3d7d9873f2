#include "store/sqlite_util.h"

#include <string>

#include "store/store.h"

namespace switchboard::store::detail {

Status sqlite_error(sqlite3* db, int rc, std::string_view what) {
  std::string msg(what);
  msg += ": ";
  msg += db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  msg += " (";
  msg += std::to_string(rc);
  msg += ")";
  return Status::io_error(std::move(msg));
}

Result<Db> Db::open(const std::string& path, int flags) {
  // SQLite's memory statistics take a process-wide mutex on every allocation of every
  // statement step; nothing here reads them. Must precede the library's initialization, so it is
  // set once before the first open (a no-op if something else initialized SQLite already).
  static const bool configured = [] {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK;
  }();
  (void)configured;
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  Db db(raw);  // sqlite3_open_v2 may return a handle even on failure; it must be closed.
  if (rc != SQLITE_OK) return sqlite_error(raw, rc, "open " + path);
  sqlite3_extended_result_codes(raw, 1);
  return db;
}

void Db::reset() {
  if (db_) {
    sqlite3_close_v2(db_);
    db_ = nullptr;
  }
}

Status Db::exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return Status::io_error(std::string(sql).substr(0, 60) + ": " + msg);
  }
  return Status();
}

Result<int64_t> Db::query_int(const char* sql) {
  Stmt s;
  if (Status st = s.prepare(db_, sql); !st.ok()) return st;
  int rc = s.step();
  if (rc == SQLITE_ROW) return s.col_int(0);
  if (rc == SQLITE_DONE) return int64_t{0};
  return sqlite_error(db_, rc, sql);
}

Status Stmt::prepare(sqlite3* db, const char* sql) {
  finalize();
  int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr);
  if (rc != SQLITE_OK) return sqlite_error(db, rc, std::string("prepare ") + sql);
  return Status();
}

void Stmt::finalize() {
  if (s_) {
    sqlite3_finalize(s_);
    s_ = nullptr;
  }
}

int Stmt::run() {
  int rc;
  do {
    rc = sqlite3_step(s_);
  } while (rc == SQLITE_ROW);
  reset();
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

Status migrate(Db& db, int target) {
  auto version = db.query_int("PRAGMA user_version");
  if (!version.ok()) return version.status();
  if (*version > target) {
    return Status::failed_precondition("database schema version " + std::to_string(*version) +
                                       " is newer than this binary's " + std::to_string(target));
  }
  for (const Migration& m : schema_migrations()) {
    if (m.version <= *version || m.version > target) continue;
    // IMMEDIATE: take the write lock first, then re-check the version, so two processes opening
    // the same file at once never apply a migration twice.
    if (Status st = db.exec("BEGIN IMMEDIATE"); !st.ok()) return st;
    auto now = db.query_int("PRAGMA user_version");
    Status st = now.status();
    if (st.ok() && *now >= m.version) {
      if (st = db.exec("COMMIT"); !st.ok()) return st;
      continue;
    }
    if (st.ok()) st = db.exec(m.sql);
    if (st.ok()) {
      std::string bump = "PRAGMA user_version = " + std::to_string(m.version);
      st = db.exec(bump.c_str());
    }
    if (st.ok()) st = db.exec("COMMIT");
    if (!st.ok()) {
      (void)db.exec("ROLLBACK");
      return Status(st.code(), std::string("migration ") + m.name + ": " + st.message());
    }
  }
  return Status();
}

int64_t to_ms(WallTime t) {
  return std::chrono::duration_cast<Millis>(t.time_since_epoch()).count();
}

WallTime from_ms(int64_t ms) {
  return WallTime(std::chrono::duration_cast<WallTime::duration>(Millis(ms)));
}

}  // namespace switchboard::store::detail
