// Helpers shared by the workflow tests: temporary directories, fake executors, direct SQLite reads.
#pragma once

#include <signal.h>
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

#include "test_support.h"
#include "workflow/workflow.h"

namespace switchboard::workflow::wftest {

using testsupport::query_int;
using testsupport::query_text;

// A fresh directory for one test, removed with everything in it.
class TempDir : public testsupport::TempDir {
 public:
  TempDir() : testsupport::TempDir("workflow") {}
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
  return testsupport::wait_until(done, limit);
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

}  // namespace switchboard::workflow::wftest
