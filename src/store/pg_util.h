// Internal to the store module: a thin RAII layer over libpq for the PostgreSQL store. Every
// statement is parameterized (text parameters): nothing is spliced into SQL.
//
// Thread-safety: a PgConn is used by one thread at a time (the writer, one loader, or one
// find_response call).
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace switchboard::store::detail {

// Parameters of one statement, kept alive until it ran.
class PgParams {
 public:
  void add(std::string v) { values_.push_back(std::move(v)); }
  void add(std::string_view v) { values_.emplace_back(v); }
  void add(const char* v) { values_.emplace_back(v); }
  void add(int64_t v) { values_.push_back(std::to_string(v)); }
  void add(uint64_t v) { values_.push_back(std::to_string(v)); }
  void add(int v) { values_.push_back(std::to_string(v)); }
  void add(double v);
  void add(bool v) { values_.emplace_back(v ? "1" : "0"); }
  size_t size() const { return values_.size(); }
  void clear() { values_.clear(); }
  std::vector<const char*> pointers() const;

 private:
  std::vector<std::string> values_;
};

// A result; rows and columns as text (NULL reads as "").
class PgResult {
 public:
  explicit PgResult(PGresult* r = nullptr) : r_(r, &PQclear) {}
  int rows() const { return r_ ? PQntuples(r_.get()) : 0; }
  std::string text(int row, int col) const;
  int64_t integer(int row, int col) const;
  double number(int row, int col) const;

 private:
  std::unique_ptr<PGresult, decltype(&PQclear)> r_;
};

class PgConn {
 public:
  // `url`: a libpq connection URI (postgresql://user@host:port/db?...). The error says why it
  // failed without echoing the URI (it may hold a password).
  static Result<PgConn> connect(const std::string& url, int connect_timeout_s);
  PgConn() : c_(nullptr, &PQfinish) {}

  // A statement with no result rows wanted (DDL, BEGIN, COMMIT, writes).
  Status exec(const std::string& sql, const PgParams& params = PgParams());
  Result<PgResult> query(const std::string& sql, const PgParams& params = PgParams());
  // A statement prepared once per connection under `name` (prepared again after a reconnection),
  // then run with `params`: PostgreSQL parses and plans it once.
  Status exec_prepared(const std::string& name, const std::string& sql, const PgParams& params);
  // exec_prepared's statement, with its result.
  Result<PgResult> query_prepared(const std::string& name, const std::string& sql,
                                  const PgParams& params);
  // Several statements without parameters (migrations' DDL), in the simple query protocol.
  Status exec_script(const std::string& sql);
  // Reconnects when the connection broke (a restarted server); true when it is usable.
  bool ensure();
  bool in_transaction() const;
  // How many times ensure() reconnected: session state (advisory locks) is gone after each.
  uint64_t resets() const { return resets_; }

 private:
  // Takes `raw` (a statement's result): it, or the error it carries.
  Result<PgResult> result(PGresult* raw) const;

  std::unique_ptr<PGconn, decltype(&PQfinish)> c_;
  uint64_t resets_ = 0;
  uint64_t prepared_resets_ = 0;
  std::vector<std::string> prepared_;  // names prepared on this connection
};

// Brings the database's schema to this binary's (pg_schema.cpp): once, under an advisory lock;
// FailedPrecondition for a database newer than this binary.
Status pg_migrate(PgConn& conn);

}  // namespace switchboard::store::detail
