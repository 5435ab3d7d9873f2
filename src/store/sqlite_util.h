// Internal helpers around the SQLite C API (not part of the public store interface).
//
// Thread-safety: a Db or Stmt is used by one thread at a time.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/status.h"

namespace switchboard::store::detail {

// "what: message (code)" from the connection's last error.
Status sqlite_error(sqlite3* db, int rc, std::string_view what);

// An owned connection; closed (with every remaining statement finalized) on destruction.
class Db {
 public:
  Db() = default;
  explicit Db(sqlite3* db) : db_(db) {}
  Db(Db&& o) noexcept : db_(o.db_) { o.db_ = nullptr; }
  Db& operator=(Db&& o) noexcept {
    if (this != &o) {
      reset();
      db_ = o.db_;
      o.db_ = nullptr;
    }
    return *this;
  }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;
  ~Db() { reset(); }

  static Result<Db> open(const std::string& path, int flags);

  sqlite3* get() const { return db_; }
  void reset();
  // Runs statements that return no rows.
  Status exec(const char* sql);
  // The first column of the first row as an integer (0 when no row).
  Result<int64_t> query_int(const char* sql);

 private:
  sqlite3* db_ = nullptr;
};

// A prepared statement, reset and cleared for reuse after each `run()`.
class Stmt {
 public:
  Stmt() = default;
  Stmt(Stmt&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  Stmt& operator=(Stmt&& o) noexcept {
    if (this != &o) {
      finalize();
      s_ = o.s_;
      o.s_ = nullptr;
    }
    return *this;
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() { finalize(); }

  Status prepare(sqlite3* db, const char* sql);
  void finalize();
  sqlite3_stmt* get() const { return s_; }

  void bind(int i, int64_t v) { sqlite3_bind_int64(s_, i, v); }
  void bind(int i, int v) { sqlite3_bind_int64(s_, i, v); }
  void bind(int i, double v) { sqlite3_bind_double(s_, i, v); }
  void bind(int i, std::string_view v) {
    // SQLITE_STATIC: the caller's string outlives the step that follows.
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  }
  // For a value made for the call (a temporary): SQLite keeps its own copy.
  void bind_copy(int i, std::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  // Steps to completion (for statements without rows), then resets. Returns the sqlite code.
  int run();
  // Steps once: SQLITE_ROW, SQLITE_DONE or an error.
  int step() { return sqlite3_step(s_); }
  void reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  int64_t col_int(int i) const { return sqlite3_column_int64(s_, i); }
  double col_double(int i) const { return sqlite3_column_double(s_, i); }
  std::string col_text(int i) const {
    const unsigned char* p = sqlite3_column_text(s_, i);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(s_, i)))
             : std::string();
  }

 private:
  sqlite3_stmt* s_ = nullptr;
};

// Applies the pending migrations of `schema_migrations()` up to `target` (each in its own
// IMMEDIATE transaction that also bumps user_version). Fails when the file is newer than target.
Status migrate(Db& db, int target);

int64_t to_ms(WallTime t);
WallTime from_ms(int64_t ms);

}  // namespace switchboard::store::detail

namespace switchboard::store {
struct LoadedState;
}

namespace switchboard::store::detail {

// Reads key state, learned rows and the learning journal in one read transaction on `db`
// (schema at the current version); cooldowns that ended before `now` come back as epoch.
Result<LoadedState> read_state(Db& db, WallTime now);

}  // namespace switchboard::store::detail
