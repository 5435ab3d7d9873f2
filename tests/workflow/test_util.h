// Helpers shared by the workflow tests: temporary directories, fake executors, direct SQLite reads.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
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

// Two executors on one database race for one run: exactly one executes its step (held at a gate
// until the other was refused, FailedPrecondition "is owned by"), and the run completes once.
// `open(executor, owner)` opens an executor on the shared database.
inline void expect_one_of_two_executors_runs_it(
    const std::function<std::unique_ptr<Engine>(std::shared_ptr<StepExecutor>, const std::string&)>&
        open) {
  Gate gate;
  std::atomic<int> started{0};
  auto blocking = [&](const StepRequest&, const Interrupt&) {
    ++started;
    if (!gate.pass()) return Result<json::value>(Status::deadline_exceeded("gate never opened"));
    return Result<json::value>(json::value(1));
  };
  auto ex1 = std::make_shared<FakeExecutor>(blocking);
  auto ex2 = std::make_shared<FakeExecutor>(blocking);
  auto e1 = open(ex1, "owner-1");
  auto e2 = open(ex2, "owner-2");
  ASSERT_TRUE(e1 && e2);
  Definition def = must_parse("name: c\nsteps:\n  - { id: a, kind: exec, input: { argv: [x] } }\n");
  auto id = e1->create_run(def, nullptr);
  ASSERT_TRUE(id.ok());
  std::promise<void> go;
  std::shared_future<void> go_f = go.get_future().share();
  auto t1 = std::async(std::launch::async, [&] {
    go_f.wait();
    return e1->run(*id);
  });
  auto t2 = std::async(std::launch::async, [&] {
    go_f.wait();
    return e2->run(*id);
  });
  go.set_value();
  // The loser returns at once; the winner blocks in its step.
  if (!gate.arrived()) {
    gate.open();
    FAIL() << "neither executor started the step";
  }
  std::future<Result<RunResult>>* loser = nullptr;
  auto returned = [&](std::future<Result<RunResult>>& t) {
    if (t.wait_for(Millis(0)) == std::future_status::ready) loser = &t;
    return loser != nullptr;
  };
  const bool one_returned = eventually([&] { return returned(t1) || returned(t2); });
  if (!one_returned) gate.open();
  ASSERT_TRUE(one_returned) << "neither run() returned while the other held the run";
  auto lost = loser->get();
  EXPECT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(lost.status().message().find("is owned by"), std::string::npos);
  gate.open();
  auto won = (loser == &t1 ? t2 : t1).get();
  ASSERT_TRUE(won.ok()) << won.status().to_string();
  EXPECT_EQ(won->status, RunStatus::kCompleted);
  EXPECT_EQ(ex1->calls().size() + ex2->calls().size(), 1u);
  EXPECT_EQ(started.load(), 1);
}

}  // namespace switchboard::workflow::wftest
