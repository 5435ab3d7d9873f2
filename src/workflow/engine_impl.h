// Internal to the workflow module: Engine::Impl, the state one Engine shares with the runs it
// executes (options, clock, sleeper, the run store, the runs `shutdown()` must interrupt). The
// engine is in parts:
//   engine.cpp         owner ids, the Engine API: open, create, claim (waiting for another
//                      owner's lease), the heartbeat that renews the lease, shutdown, cancel;
//   run_execution.cpp  RunExecution: the step loop of one claimed run (replay, retries, goto,
//                      parallel children, feedback);
//   run_store_*.cpp    every SQL statement, SQLite and PostgreSQL (run_store.h);
//   run_format.cpp     status names, transition lines, `workflow list` / `show` output.
//
// Thread-safety: an Impl is shared by every thread of its Engine; each member says what guards
// it, the store and the options are safe to use from any thread.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "store/sqlite_util.h"
#include "workflow/run_store.h"
#include "workflow/workflow.h"

namespace switchboard::workflow {

struct Engine::Impl {
  EngineOptions opt;
  const Clock* clock = nullptr;
  std::shared_ptr<Sleeper> sleeper;
  std::string owner;
  std::unique_ptr<detail::RunStore> store;

  std::mutex rng_mu;
  std::mt19937_64 rng;
  std::mutex transition_mu;

  // Runs executing in `run()`, so that `shutdown()` can interrupt them.
  std::mutex active_mu;
  bool shutting_down = false;   // guarded by active_mu
  std::set<Interrupt*> active;  // guarded by active_mu

  int64_t now_ms() const { return store::detail::to_ms(clock->wall_now()); }

  // Whether another executor's owner id may still be alive (EngineOptions::owner_alive).
  bool owner_alive(const std::string& other) const {
    return opt.owner_alive ? opt.owner_alive(other) : local_owner_alive(other);
  }

  void emit(const Transition& t) {
    if (!opt.on_transition) return;
    std::lock_guard lock(transition_mu);
    opt.on_transition(t);
  }

  double uniform() {
    std::lock_guard lock(rng_mu);
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  }

  // Every thread the engine starts goes through here (EngineOptions::start_thread); it throws
  // std::system_error when the process has no thread to give.
  std::thread start_thread(std::function<void()> fn) {
    if (opt.start_thread) return opt.start_thread(std::move(fn));
    return std::thread(std::move(fn));
  }

  StepExecutor* executor_for(StepKind k) {
    switch (k) {
      case StepKind::kExec:
        return opt.executors.exec.get();
      case StepKind::kHttp:
        return opt.executors.http.get();
      case StepKind::kLlm:
        return opt.executors.llm.get();
      default:
        return nullptr;
    }
  }
};

}  // namespace switchboard::workflow
