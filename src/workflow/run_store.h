// Internal to the workflow module: the engine's durable state, every SQL statement it runs, behind
// the few operations the engine needs. The seam a PostgreSQL store will implement: the same
// methods with the same guarantees.
//
// Contract: each method is one transaction. Every write for an executing run (`record_step`,
// `record_event`, `finish_run`, the heartbeat's renewal) is fenced: it commits only while this
// store's `owner` still owns the run, otherwise it writes nothing and fails (FailedPrecondition,
// "lease of run <id> lost"). A claim reads the run and takes it in ONE transaction, so two
// executors never both take it. A step row and its audit event commit together. Timestamps
// come from the clock given at open.
//
// Thread-safety: every method may be called from any thread (run threads, parallel children,
// heartbeats, the Engine API); one connection behind one mutex serializes them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/status.h"
#include "store/sqlite_util.h"
#include "workflow/workflow.h"

namespace switchboard::workflow::detail {

// Whether another executor's owner id may still be alive (EngineOptions::owner_alive).
using OwnerAlive = std::function<bool(const std::string& owner)>;

// What a claim found.
struct Claim {
  // The run had already ended: its final status (nothing claimed).
  std::optional<RunResult> finished;
  // Else, when not empty: an owner that may be alive holds the run (nothing claimed).
  std::string holder;
  int64_t lease_left_ms = 0;
  // Else the run is ours: what was stored (the definition is the given one when forced).
  std::string status;  // before the claim: pending | running
  std::string definition;
  std::string input;
  std::string client;
  bool cancel_requested = false;
  std::vector<StepRecord> steps;  // in commit order
  std::string taken_over;         // why the previous owner's lease was not honoured, "" if it was
};

class RunStore {
 public:
  // Opens (creating and migrating when needed) the database; `owner` is the executor it writes
  // as.
  static Result<std::unique_ptr<RunStore>> open(const std::string& path, SyncMode synchronous,
                                                int64_t busy_timeout_ms, const Clock& clock,
                                                std::string owner);

  // Records a new pending run with its `run_created` event.
  Status create_run(const std::string& id, const Definition& def, const json::value& input,
                    const std::string& client);
  // Takes the run when nobody live owns it: unowned, ours, lease lapsed, or its owner gone
  // (`owner_alive`, judged inside the transaction). `given` must have the stored definition's
  // hash unless `force` (then it replaces it).
  Result<Claim> claim(const std::string& run_id, const Definition* given, bool force, Millis lease,
                      const OwnerAlive& owner_alive);
  // A run found unusable after its claim: failed, unowned.
  Status fail_claimed(const std::string& run_id, const std::string& why);
  // Hands a claimed run back (owner cleared, lease expired, status left `running`) so that the
  // next executor claims it at once; unfinished steps are retried there, as after a crash.
  void release_claim(const std::string& run_id, const std::string& why);
  // One heartbeat: sees whether the run is still ours and whether a cancel was requested, and
  // when `renew` extends the lease. Ok, or the first reason to stop (lease lost, cancelled).
  Status heartbeat(const std::string& run_id, bool renew, Millis lease);

  // Fenced writes for an executing run.
  Status record_step(const std::string& run_id, const StepRecord& r, const std::string& event,
                     const std::string& detail);
  Status record_event(const std::string& run_id, const std::string& step_id, int attempt,
                      const std::string& event, const std::string& detail);
  Status finish_run(const std::string& run_id, RunStatus status, const std::string& error);

  // The Engine API's reads and the cancel request (workflow.h).
  Status request_cancel(const std::string& run_id);
  Result<std::vector<std::string>> interrupted_runs(const OwnerAlive& owner_alive);
  Result<std::vector<RunSummary>> list_runs(int limit, const std::string* client);
  Result<RunDetail> get_run(const std::string& run_id);

 private:
  RunStore(const Clock& clock, std::string owner) : clock_(clock), owner_(std::move(owner)) {}

  int64_t now_ms() const;
  // A cached prepared statement (mu_ held).
  Result<store::detail::Stmt*> stmt(const char* sql);
  // An audit event (mu_ held, inside a transaction).
  Status add_event(const std::string& run_id, const std::string& step_id, int attempt,
                   const std::string& type, const std::string& detail);
  // A step row (mu_ held, inside a transaction).
  Status write_step(const std::string& run_id, const StepRecord& r);
  // Runs `body` in one IMMEDIATE transaction after checking that we still own the run.
  template <typename F>
  Status owned_tx(const std::string& run_id, F&& body);

  const Clock& clock_;
  const std::string owner_;
  std::mutex mu_;  // one connection, used by the run threads and the heartbeats
  store::detail::Db db_;
  std::unordered_map<const char*, store::detail::Stmt> stmts_;
};

}  // namespace switchboard::workflow::detail
