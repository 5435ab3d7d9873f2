// The libpq layer of pg_util.h.
#include "store/pg_util.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>

namespace switchboard::store::detail {

namespace {
std::string redact_url(std::string msg, const std::string& url);
std::string pg_error(const PGconn* c, std::string_view what) {
  std::string msg(PQerrorMessage(c));
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return std::string(what) + ": " + msg;
}
}  // namespace

void PgParams::add(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  values_.emplace_back(buf);
}

std::vector<const char*> PgParams::pointers() const {
  std::vector<const char*> out;
  out.reserve(values_.size());
  for (const auto& v : values_) out.push_back(v.c_str());
  return out;
}

std::string PgResult::text(int row, int col) const {
  if (!r_ || PQgetisnull(r_.get(), row, col)) return {};
  return std::string(PQgetvalue(r_.get(), row, col), size_t(PQgetlength(r_.get(), row, col)));
}

int64_t PgResult::integer(int row, int col) const {
  const std::string t = text(row, col);
  int64_t v = 0;
  std::from_chars(t.data(), t.data() + t.size(), v);
  return v;
}

double PgResult::number(int row, int col) const {
  const std::string t = text(row, col);
  return t.empty() ? 0.0 : std::strtod(t.c_str(), nullptr);
}

namespace {
std::string redact_url(std::string msg, const std::string& url) {
  // libpq quotes the URI in some of its parse errors; the password may also stand alone.
  for (size_t at; !url.empty() && (at = msg.find(url)) != std::string::npos;)
    msg.replace(at, url.size(), "(the configured URL)");
  if (PQconninfoOption* opts = PQconninfoParse(url.c_str(), nullptr)) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
      if (std::string_view(o->keyword) != "password" || o->val == nullptr || !*o->val) continue;
      const std::string pw = o->val;
      for (size_t at; (at = msg.find(pw)) != std::string::npos;) msg.replace(at, pw.size(), "***");
    }
    PQconninfoFree(opts);
  }
  return msg;
}
}  // namespace

Result<PgConn> PgConn::connect(const std::string& url, int connect_timeout_s) {
  const std::string timeout = std::to_string(std::max(1, connect_timeout_s));
  // A database host that vanishes without a reset must not hold the writer in a statement for
  // hours: keepalives and a TCP user timeout end such a connection within about 30 s, and no
  // statement runs longer than a minute.
  const char* keys[] = {"dbname",           "connect_timeout",
                        "application_name", "keepalives",
                        "keepalives_idle",  "keepalives_interval",
                        "keepalives_count", "tcp_user_timeout",
                        "options",          nullptr};
  const char* values[] = {url.c_str(),
                          timeout.c_str(),
                          "switchboard",
                          "1",
                          "10",
                          "5",
                          "3",
                          "30000",
                          "-c statement_timeout=60000",
                          nullptr};
  PgConn out;
  // expand_dbname: the URI's parameters, then ours.
  out.c_.reset(PQconnectdbParams(keys, values, 1));
  if (!out.c_) return Status::io_error("postgres: out of memory");
  if (PQstatus(out.c_.get()) != CONNECTION_OK)
    return Status::io_error(redact_url(pg_error(out.c_.get(), "cannot connect to postgres"), url));
  // Notices (e.g. "relation already exists, skipping") are not ours to print.
  PQsetNoticeProcessor(
      out.c_.get(), [](void*, const char*) {}, nullptr);
  return out;
}

Status PgConn::exec(const std::string& sql, const PgParams& params) {
  auto r = query(sql, params);
  return r.ok() ? Status() : r.status();
}

Result<PgResult> PgConn::result(PGresult* raw) const {
  const ExecStatusType st = raw ? PQresultStatus(raw) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return PgResult(raw);
  std::string msg = raw ? PQresultErrorMessage(raw) : PQerrorMessage(c_.get());
  if (raw) PQclear(raw);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return Status::io_error("postgres: " + msg);
}

Result<PgResult> PgConn::query(const std::string& sql, const PgParams& params) {
  if (!c_) return Status::io_error("postgres: not connected");
  const auto ptrs = params.pointers();
  return result(PQexecParams(c_.get(), sql.c_str(), int(ptrs.size()), nullptr,
                             ptrs.empty() ? nullptr : ptrs.data(), nullptr, nullptr, 0));
}

Status PgConn::exec_prepared(const std::string& name, const std::string& sql,
                             const PgParams& params) {
  auto r = query_prepared(name, sql, params);
  return r.ok() ? Status() : r.status();
}

Result<PgResult> PgConn::query_prepared(const std::string& name, const std::string& sql,
                                        const PgParams& params) {
  if (!c_) return Status::io_error("postgres: not connected");
  if (prepared_resets_ != resets_) {
    prepared_.clear();
    prepared_resets_ = resets_;
  }
  if (std::find(prepared_.begin(), prepared_.end(), name) == prepared_.end()) {
    auto prepared = result(PQprepare(c_.get(), name.c_str(), sql.c_str(), 0, nullptr));
    if (!prepared.ok()) return prepared.status();
    prepared_.push_back(name);
  }
  const auto ptrs = params.pointers();
  return result(PQexecPrepared(c_.get(), name.c_str(), int(ptrs.size()),
                               ptrs.empty() ? nullptr : ptrs.data(), nullptr, nullptr, 0));
}

Status PgConn::exec_script(const std::string& sql) {
  if (!c_) return Status::io_error("postgres: not connected");
  auto r = result(PQexec(c_.get(), sql.c_str()));
  return r.ok() ? Status() : r.status();
}

bool PgConn::ensure() {
  if (!c_) return false;
  if (PQstatus(c_.get()) == CONNECTION_OK) return true;
  PQreset(c_.get());
  ++resets_;
  return PQstatus(c_.get()) == CONNECTION_OK;
}

bool PgConn::in_transaction() const {
  return c_ && PQtransactionStatus(c_.get()) != PQTRANS_IDLE;
}

}  // namespace switchboard::store::detail
