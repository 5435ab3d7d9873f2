// Helpers shared by the workflow tests: temporary directories, fake executors, direct SQLite reads.
#pragma once

#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "workflow/workflow.h"

namespace switchboard::workflow::wftest {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/switchboard-workflow-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A StepExecutor whose behaviour is a function; records every request it gets.
class FakeExecutor final : public StepExecutor {
 public:
  using Fn = std::function<Result<json::value>(const StepRequest&, const Interrupt&)>;
  explicit FakeExecutor(Fn fn) : fn_(std::move(fn)) {}
  Result<json::value> execute(const StepRequest& r, const Interrupt& i) override {
    {
      std::lock_guard lock(mu_);
      calls_.push_back(r);
    }
    return fn_(r, i);
  }
  std::vector<StepRequest> calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }
  int count(const std::string& step_id) const {
    std::lock_guard lock(mu_);
    int n = 0;
    for (const auto& c : calls_) n += c.step_id == step_id;
    return n;
  }

 private:
  Fn fn_;
  mutable std::mutex mu_;
  std::vector<StepRequest> calls_;
};

// The longest a test waits for another thread or process before it fails with a message (rather
// than hanging until the CTest timeout). Generous: sanitizer builds are slow.
inline constexpr Millis kWaitLimit{10000};

// A one-shot signal between threads: `set()` from any thread; `wait()` is true once it is set,
// false when `limit` passes first.
class Signal {
 public:
  void set() {
    {
      std::lock_guard lock(mu_);
      set_ = true;
    }
    cv_.notify_all();
  }
  bool wait(Millis limit = kWaitLimit) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [this] { return set_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
};

// Where a fake step waits until the test lets it go on: the step calls `pass()`, which signals its
// arrival (`arrived()`) and returns true once the test calls `open()`, false when kWaitLimit
// passes first (the step then fails instead of the test hanging in a future's destructor).
class Gate {
 public:
  bool pass() {
    arrived_.set();
    return open_.wait();
  }
  bool arrived(Millis limit = kWaitLimit) { return arrived_.wait(limit); }
  void open() { open_.set(); }

 private:
  Signal arrived_;
  Signal open_;
};

// Polls `done` until it holds (true) or `limit` passes (false). Only for states that nothing can
// signal (an Interrupt, a database row, another process); threads a test controls use a Signal.
inline bool eventually(const std::function<bool()>& done, Millis limit = kWaitLimit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(Millis(1));
  }
  return true;
}

// Waits for child `pid` to end, at most `limit`: its wait status, or nullopt when it did not end
// in time (then it is killed and reaped) or cannot be waited for.
inline std::optional<int> wait_child(pid_t pid, Millis limit = kWaitLimit) {
  int status = 0;
  pid_t got = 0;
  if (!eventually([&] { return (got = waitpid(pid, &status, WNOHANG)) != 0; }, limit)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return std::nullopt;
  }
  if (got != pid) return std::nullopt;
  return status;
}

inline Definition must_parse(const std::string& yaml) {
  auto load = parse_definition(yaml, "test.yaml");
  if (!load.ok()) {
    std::string all;
    for (const auto& e : load.errors) all += e.to_string() + "\n";
    throw std::runtime_error("definition errors:\n" + all);
  }
  return *load.definition;
}

// First column of the first row as text ("" when no row).
inline std::string query_text(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return "ERROR: open";
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
  return std::atoll(query_text(path, sql).c_str());
}

}  // namespace switchboard::workflow::wftest
