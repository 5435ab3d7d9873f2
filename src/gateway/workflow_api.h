// The gateway's workflow service: durable workflow runs inside `switchboard serve` (issue 9),
// internal to the gateway module.
//
// HTTP API (under /v1, so the gateway-key check applies; JSON in and out):
//   POST /v1/workflows/runs            {"definition": <object> | "<YAML or JSON text>",
//                                       "input": {...}}            (input optional, default {})
//       201 {"id", "status": "pending", "url"} and a Location header, at once: the run executes
//       in the background. 400 for a malformed body, an invalid definition (every error with
//       its line and column: `error.errors[]` = {line, column, path, message}; for an object
//       definition they refer to its compact JSON text, so send text for useful lines) or an
//       input that does not match the definition's schema. Definitions are never read from a
//       server-side path: a gateway key must not be a way to read the server's files.
//   GET  /v1/workflows/runs            {"object": "list", "data": [run summaries, newest first]}
//   GET  /v1/workflows/runs/{id}       the run with its steps (as `workflow show --json`); 404
//   POST /v1/workflows/runs/{id}/cancel  202 {"id", "cancel_requested": true}; 404 unknown run;
//       409 a run that already finished.
// 503 when the service is stopping or unavailable.
//
// Execution: each run executes on its own thread (runs are long and mostly wait on I/O), at most
// `workflows.max_concurrent_runs` at once; more wait in a queue. A thread that cannot be created
// leaves the run pending for the next recovery scan, never a crash. The database calls of the
// API run on a one-thread pool and are awaited, so an io_context thread never waits for SQLite or
// a run. `llm` steps post to this gateway's own port (see `GatewayStepClient`), which gives them
// the same routing, key rotation and failover as any client, and `feedback:` verdicts go to
// POST /v1/feedback the same way, both with the key that created the run.
//
// Security (DESIGN.md invariant 11): runs submitted over HTTP belong to their creator; their
// exec steps are refused (403 at submission, a failed step if one is found at execution) unless
// `workflows.allow_exec`; their http steps reach public addresses only, besides URL prefixes in
// `workflows.http_allow`. Runs of the local CLI user ("" client) are not restricted.
//
// Recovery: `start()` claims and resumes every interrupted run (Engine::interrupted_runs), and a
// supervisor repeats the scan every lease period, so runs whose lease was still live at start
// (a crash less than a lease ago, or another gateway that died) are taken over once it lapses.
// The engine's claim makes sure only one executor runs a workflow; within this process a run id
// is never launched twice.
//
// Shared state (state.backend: postgres): every gateway on the database executes runs from one
// queue, the runs table. A run submitted here is born claimed by this gateway when it has a
// place (it starts at once), else it is left unowned; every kSharedPollPeriod each gateway
// claims (SKIP LOCKED) as many unowned or lease-lapsed runs as it has free places, so a queued
// run starts wherever a place frees up first, and a dead gateway's runs are finished by the
// others within its lease plus a poll period. (The recovery scan, which would list the whole
// queue, is the SQLite mode's.)
//
// Shutdown: `stop()` does not cancel runs (a cancellation is the user's decision and final).
// It calls Engine::shutdown, which interrupts every executing run like a crash would but then
// releases its claim (owner cleared, lease expired), so the next start resumes it at once and
// retries the step that was interrupted; then it joins every run thread. Waiting for the lease
// to lapse instead would delay recovery by a lease period for no benefit.
//
// Thread-safety: `handle` runs on io_context threads concurrently; start/stop from the
// controlling thread. `stop()` must come before the HTTP server stops (running llm steps post to
// it) and the destructor after it (handlers may still be awaiting the API pool).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "common/config.h"
#include "common/status.h"
#include "gateway/http.h"
#include "gateway/workflow_callers.h"
#include "workflow/workflow.h"

namespace switchboard::gateway {

// Who calls the workflow API: the owner recorded on the runs it creates (auth.h's
// workflow_client), and whether it presented the admin key (sees and cancels every run).
struct WorkflowCaller {
  std::string client;
  bool admin = false;
};

// How often a gateway on a shared database looks for runs to take.
inline constexpr Millis kSharedPollPeriod{500};

class WorkflowService {
 public:
  // Opens the workflow engine on the configuration's SQLite state file. `self` tells llm steps
  // where this gateway answers and with which key (resolved at each call, after the server has
  // started); `current` gives the running configuration (its workflows block, after reloads).
  static Result<std::unique_ptr<WorkflowService>> open(
      const Config& config, TargetResolver self,
      std::function<std::shared_ptr<const Config>()> current);
  ~WorkflowService();
  WorkflowService(const WorkflowService&) = delete;
  WorkflowService& operator=(const WorkflowService&) = delete;

  // Resumes interrupted runs now and starts the recovery supervisor.
  void start();
  // Interrupts and releases running workflows and joins their threads and the supervisor.
  void stop();

  // Handles /v1/workflows/... (the caller checked the path prefix and the credentials). A run is
  // visible to, and cancellable by, its creator and the admin only: others get 404 as for a run
  // that does not exist.
  asio::awaitable<void> handle(Exchange& ex, std::string_view target, const WorkflowCaller& caller);

  // For tests and the recovery scan: claims and runs `run_id` on a new thread unless this
  // process already executes or queues it. At most `max_concurrent_runs` execute at once; more
  // wait in a queue, in submission order. False when stopping or already here.
  bool launch(const std::string& run_id);
  // Runs executing in this process now, and runs waiting for a place.
  size_t executing() const;
  size_t queued() const;

 private:
  WorkflowService(std::unique_ptr<workflow::Engine> engine, Millis scan_period,
                  size_t max_concurrent_runs, Millis poll_period);
  void recover();
  // Shared database: claims runnable runs (Engine::claim_next) for the free places.
  void take_runnable();
  void reap_finished();        // mu_ held
  void start_queued_locked();  // mu_ held: starts queued runs while places are free
  template <typename F>
  asio::awaitable<void> on_pool(F&& fn);

  std::unique_ptr<workflow::Engine> engine_;
  Millis scan_period_;
  Millis poll_period_;  // 0: no shared queue to poll (SQLite)
  const size_t max_concurrent_runs_;
  std::function<std::shared_ptr<const Config>()> current_config_;
  asio::thread_pool api_pool_{1};

  struct Worker {
    std::string run_id;
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;            // guarded by mu_
  std::list<Worker> workers_;        // guarded by mu_
  std::set<std::string> executing_;  // run ids with a live worker, guarded by mu_
  std::deque<std::string> queue_;    // run ids waiting for a place, guarded by mu_
  std::set<std::string> queued_;     // the same, for lookups, guarded by mu_
  std::thread supervisor_;
};

}  // namespace switchboard::gateway
