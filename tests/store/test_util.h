// Helpers shared by the store tests: temporary directories and direct SQLite reads.
#pragma once

#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

#include "store/store.h"

namespace switchboard::store::storetest {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/switchboard-store-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Runs `sql` on a fresh connection and returns the first column of the first row as text
// ("" when no row); "ERROR: ..." when the statement fails.
inline std::string query_text(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    out = std::string("ERROR: open: ") + (db ? sqlite3_errmsg(db) : "?");
    sqlite3_close(db);
    return out;
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    out = std::string("ERROR: ") + sqlite3_errmsg(db);
  } else {
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      const unsigned char* t = sqlite3_column_text(st, 0);
      out = t ? reinterpret_cast<const char*>(t) : "";
    } else if (rc != SQLITE_DONE) {
      out = std::string("ERROR: ") + sqlite3_errmsg(db);
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

inline int64_t query_int(const std::string& path, const std::string& sql) {
  std::string t = query_text(path, sql);
  return t.empty() || t.rfind("ERROR", 0) == 0 ? -1 : std::stoll(t);
}

inline OutcomeEvent make_outcome(const std::string& model, WallTime t, int64_t latency_us = 1000,
                                 const char* status = kStatusOk) {
  OutcomeEvent o;
  o.time = t;
  o.request_id = "req-1";
  o.route = "auto";
  o.model = model;
  o.provider = "openai";
  o.key_id = "openai#1";
  o.status_class = status;
  o.latency_us = latency_us;
  o.tokens_in = 100;
  o.tokens_out = 20;
  o.cost_usd = 0.001;
  return o;
}

}  // namespace switchboard::store::storetest
