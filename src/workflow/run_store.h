// Internal to the workflow module: the engine's durable state behind the few operations the
// engine needs, in a SQLite file (one host) or a PostgreSQL database (runs shared by every
// gateway on it): the same methods with the same guarantees.
//
// Contract: each method is one transaction. Every write for an executing run (`record_step`,
// `record_event`, `finish_run`, the heartbeat's renewal) is fenced: it commits only while this
// store's `owner` still owns the run, otherwise it writes nothing and fails (FailedPrecondition,
// "lease of run <id> lost"). A claim reads the run and takes it in ONE transaction, so two
// executors never both take it. A step row and its audit event commit together. Timestamps
// come from the clock given at open.
//
// Thread-safety: every method may be called from any thread (run threads, parallel children,
// heartbeats, the Engine API); each backend's one connection behind one mutex serializes them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/status.h"
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
  int64_t created_ms = 0;  // the run's time budget counts from here
  bool cancel_requested = false;
  std::vector<StepRecord> steps;  // in commit order
  std::string taken_over;         // why the previous owner's lease was not honoured, "" if it was
};

class RunStore {
 public:
  virtual ~RunStore() = default;

  // Opens (creating and migrating when needed) the database: a SQLite file, or a PostgreSQL
  // database when `path` is a postgresql:// (or postgres://) URL. `owner` is the executor it
  // writes as.
  static Result<std::unique_ptr<RunStore>> open(const std::string& path, SyncMode synchronous,
                                                int64_t busy_timeout_ms, const Clock& clock,
                                                std::string owner);

  // Records a new pending run with its `run_created` event. With `claim_lease` > 0 the run is
  // born claimed by this store's owner (lease running), so that no other executor sharing the
  // database takes it before its creator runs it.
  virtual Status create_run(const std::string& id, const Definition& def, const json::value& input,
                            const std::string& client, Millis claim_lease) = 0;
  // Takes the run when nobody live owns it: unowned, ours, lease lapsed, or its owner gone
  // (`owner_alive`, judged inside the transaction). `given` must have the stored definition's
  // hash unless `force` (then it replaces it).
  virtual Result<Claim> claim(const std::string& run_id, const Definition* given, bool force,
                              Millis lease, const OwnerAlive& owner_alive) = 0;
  // Takes, oldest first, up to `limit` pending or running runs that nobody owns or whose lease
  // lapsed, in one transaction (rows another executor is taking at the same moment are skipped,
  // never waited for); returns their ids, now owned by this store's owner for `lease`. The
  // caller runs them (claim() then finds them ours) or hands them back (release_claim).
  virtual Result<std::vector<std::string>> claim_next(int limit, Millis lease) = 0;
  // A run found unusable after its claim: failed, unowned.
  virtual Status fail_claimed(const std::string& run_id, const std::string& why) = 0;
  // Hands a claimed run back (owner cleared, lease expired, status left as it was) so that the
  // next executor claims it at once; unfinished steps are retried there, as after a crash.
  virtual void release_claim(const std::string& run_id, const std::string& why) = 0;
  // One heartbeat: sees whether the run is still ours and whether a cancel was requested, and
  // when `renew` extends the lease. Ok; FailedPrecondition (lease lost) or Cancelled, the reasons
  // to stop; or Unavailable when the database could not be asked (the caller decides how long
  // it may go on without a renewal).
  virtual Status heartbeat(const std::string& run_id, bool renew, Millis lease) = 0;

  // Fenced writes for an executing run.
  virtual Status record_step(const std::string& run_id, const StepRecord& r,
                             const std::string& event, const std::string& detail) = 0;
  virtual Status record_event(const std::string& run_id, const std::string& step_id, int attempt,
                              const std::string& event, const std::string& detail) = 0;
  virtual Status finish_run(const std::string& run_id, RunStatus status,
                            const std::string& error) = 0;

  // The Engine API's reads and the cancel request (workflow.h).
  virtual Status request_cancel(const std::string& run_id) = 0;
  virtual Result<std::vector<std::string>> interrupted_runs(const OwnerAlive& owner_alive) = 0;
  virtual Result<std::vector<RunSummary>> list_runs(int limit, const std::string* client) = 0;
  virtual Result<RunDetail> get_run(const std::string& run_id) = 0;
};

// The two backends (run_store_sqlite.cpp, run_store_postgres.cpp).
Result<std::unique_ptr<RunStore>> open_sqlite_run_store(const std::string& path,
                                                        SyncMode synchronous,
                                                        int64_t busy_timeout_ms, const Clock& clock,
                                                        std::string owner);
Result<std::unique_ptr<RunStore>> open_postgres_run_store(const std::string& url,
                                                          const Clock& clock, std::string owner);
bool is_postgres_url(const std::string& path);

}  // namespace switchboard::workflow::detail
