// Internal to the workflow module: RunExecution, the state of one run being executed by this
// process once `Engine::run()` has claimed it: it replays the recorded steps, executes the rest
// (retries, goto, parallel children, feedback) and commits every transition through the run
// store, fenced by the owner check.
//
// Thread-safety: `execute()` runs on the thread that called `Engine::run()`; parallel children
// run on threads of their own and share the records under `mu_`. `run_interrupt()` may be
// cancelled from any thread (the heartbeat, `shutdown()`).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "workflow/engine_impl.h"
#include "workflow/workflow.h"

namespace switchboard::workflow::detail {

// How one step ended, for the caller's control flow.
// kBudget: the run's budget is exhausted (the run fails, whatever the step's on_failure says).
enum class Ending { kCompleted, kFailed, kSkipped, kCancelled, kAborted, kBudget };

struct Outcome {
  Ending ending = Ending::kCompleted;
  std::string error;
  json::value output;
};

class RunExecution {
 public:
  RunExecution(Engine::Impl& impl, std::string run_id, std::string client, Definition def,
               json::value input)
      : impl_(impl),
        run_id_(std::move(run_id)),
        client_(std::move(client)),
        def_(std::move(def)),
        input_(std::move(input)),
        run_interrupt_(*impl.clock) {}

  void load_records(std::vector<StepRecord> recs) {
    for (auto& r : recs) {
      next_seq_ = std::max(next_seq_, r.seq + 1);
      steps_started_ += r.attempt;
      count_usage(r);
      records_[r.step_id] = std::move(r);
    }
  }
  // The run's budget (after load_records: what the records used counts); its time limit runs
  // from `created_ms` (wall time) and interrupts the step that is running when it passes.
  void start_budget(const RunBudget& budget, int64_t created_ms);
  size_t recorded() const { return records_.size(); }
  Interrupt& run_interrupt() { return run_interrupt_; }

  // Executes the top-level steps; returns the final status, or a non-ok Status when this
  // executor lost the run (then nothing more was written).
  Result<RunResult> execute();

 private:
  std::optional<StepRecord> lookup(const std::string& id);
  TemplateScope scope(const json::value* item, int attempt);
  // Commits the record with its audit event, then publishes it.
  Status record(StepRecord r, const std::string& event, const std::string& detail,
                int64_t duration_ms = 0);
  // The step's `feedback` verdict on an earlier llm step (workflow.h FeedbackDef): advisory,
  // at most once, after the step's final state is committed. The outcome of the delivery is an
  // audit event (and a transition), never a change of the step's own result.
  void send_feedback(const StepDef& def, const StepRecord& r);
  Outcome interrupted(const Status& why, StepRecord r);
  // The interrupt every top-level step runs under: the budget's (time limit) or the run's.
  const Interrupt& top() const { return budget_interrupt_ ? *budget_interrupt_ : run_interrupt_; }
  // Before an attempt starts: counts it, or says which limit is exhausted (ResourceExhausted).
  Status begin_attempt();
  // Tokens and spend of a completed llm step's output (mu_ held, or before any thread starts).
  void count_usage(const StepRecord& r);
  // The budget stopped the run: notes why once (audit event and transition), records the step
  // that was running (if any) as failed, and ends it with kBudget.
  Outcome over_budget(const Status& why, const std::optional<StepRecord>& r);
  static bool is_budget_stop(const Status& st) {
    return st.code() == StatusCode::kResourceExhausted ||
           st.code() == StatusCode::kDeadlineExceeded;
  }
  Outcome fail_now(StepRecord r, const std::string& error);
  Outcome run_step(const StepDef& def, const std::string& id, const json::value* item,
                   const Interrupt& parent);
  Outcome run_parallel(const StepDef& def, const std::string& id, std::optional<StepRecord> rec,
                       const Interrupt& parent);
  Result<RunResult> finish(RunStatus status, const std::string& error);

  Engine::Impl& impl_;
  std::string run_id_;
  std::string client_;  // whose run this is: every step and verdict carries it
  Definition def_;
  json::value input_;
  Interrupt run_interrupt_;
  std::mutex mu_;
  std::map<std::string, StepRecord> records_;
  int64_t next_seq_ = 1;

  RunBudget budget_;
  int64_t steps_started_ = 0;                  // attempts, every step and child; guarded by mu_
  int64_t tokens_used_ = 0;                    // guarded by mu_
  double cost_used_ = 0;                       // guarded by mu_
  bool budget_noted_ = false;                  // guarded by mu_
  std::optional<Interrupt> budget_interrupt_;  // child of run_interrupt_, with the time limit
};

}  // namespace switchboard::workflow::detail
