// The step loop of one claimed run (run_execution.h): replay of the recorded steps, attempts and
// retries, `when`, goto, parallel children, feedback verdicts; every transition committed through
// the run store before it is published.
#include "workflow/run_execution.h"

#include <atomic>
#include <boost/json.hpp>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "store/sqlite_util.h"

namespace switchboard::workflow::detail {

using store::detail::from_ms;

namespace {

bool is_final_step(const std::string& s) {
  return s == "completed" || s == "failed" || s == "skipped" || s == "cancelled";
}

Ending ending_of(const std::string& status) {
  if (status == "completed") return Ending::kCompleted;
  if (status == "skipped") return Ending::kSkipped;
  if (status == "cancelled") return Ending::kCancelled;
  return Ending::kFailed;
}

std::string format_score(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

// A recording failure means the run is no longer ours (or the disk failed): stop here.
Outcome aborted(const Status& st) {
  return Outcome{Ending::kAborted, st.message(), {}};
}

}  // namespace

void RunExecution::start_budget(const RunBudget& budget, int64_t created_ms) {
  budget_ = budget;
  if (budget_.max_time_ms <= 0) return;
  const int64_t left = created_ms + budget_.max_time_ms - impl_.now_ms();
  budget_interrupt_.emplace(*impl_.clock, &run_interrupt_, impl_.clock->now() + Millis(left),
                            budget_.max_time_ms);
}

Status RunExecution::begin_attempt() {
  std::lock_guard lock(mu_);
  std::string why;
  char spent[64];
  if (budget_.max_steps > 0 && steps_started_ >= budget_.max_steps) {
    why = "max_steps " + std::to_string(budget_.max_steps) + " reached";
  } else if (budget_.max_tokens > 0 && tokens_used_ >= budget_.max_tokens) {
    why = "max_tokens " + std::to_string(budget_.max_tokens) + " reached (" +
          std::to_string(tokens_used_) + " used)";
  } else if (budget_.max_cost_usd > 0 && cost_used_ >= budget_.max_cost_usd) {
    std::snprintf(spent, sizeof spent, "max_cost_usd %g reached ($%.6f spent)",
                  budget_.max_cost_usd, cost_used_);
    why = spent;
  }
  if (!why.empty()) return Status::resource_exhausted("budget exhausted: " + why);
  ++steps_started_;
  return Status();
}

void RunExecution::count_usage(const StepRecord& r) {
  // The llm executor's output: {content, model, finish_reason, usage, cost_usd, request_id}.
  if (r.status != "completed" || !r.output.is_object()) return;
  const auto& o = r.output.as_object();
  const auto* usage = o.if_contains("usage");
  if (!o.if_contains("content") || !usage || !usage->is_object()) return;
  const auto& u = usage->as_object();
  auto number = [&u](const char* key) -> int64_t {
    const auto* v = u.if_contains(key);
    return v && v->is_number() ? static_cast<int64_t>(v->to_number<double>()) : 0;
  };
  const int64_t total = number("total_tokens");
  tokens_used_ += total > 0 ? total : number("prompt_tokens") + number("completion_tokens");
  if (const auto* c = o.if_contains("cost_usd"); c && c->is_number())
    cost_used_ += c->to_number<double>();
}

Outcome RunExecution::over_budget(const Status& why, const std::optional<StepRecord>& r) {
  const std::string msg =
      why.code() == StatusCode::kDeadlineExceeded
          ? "budget exhausted: max_time_ms " + std::to_string(budget_.max_time_ms) + " reached"
          : why.message();
  bool first = false;
  {
    std::lock_guard lock(mu_);
    first = !budget_noted_;
    budget_noted_ = true;
  }
  const std::string step_id = r ? r->step_id : "";
  const int attempt = r ? r->attempt : 0;
  if (first) {
    // Steps running beside this one (parallel children) stop too: nothing more starts.
    if (budget_interrupt_)
      budget_interrupt_->cancel(Status::resource_exhausted(msg));
    else
      run_interrupt_.cancel(Status::resource_exhausted(msg));
    (void)impl_.store->record_event(run_id_, step_id, attempt, "budget_exhausted", msg);
    impl_.emit(Transition{run_id_, step_id, "budget exhausted", attempt, 0, msg});
  }
  if (r && !is_final_step(r->status)) {
    StepRecord failed = *r;
    failed.status = "failed";
    failed.error = msg;
    failed.finished_ms = impl_.now_ms();
    if (Status st = record(failed, "step_failed", msg, failed.finished_ms - failed.started_ms);
        !st.ok())
      return aborted(st);
  }
  return Outcome{Ending::kBudget, msg, {}};
}

Result<RunResult> RunExecution::execute() {
  const auto& steps = def_.steps;
  size_t i = 0;
  while (i < steps.size()) {
    const StepDef& s = steps[i];
    Outcome o = run_step(s, s.id, nullptr, top());
    switch (o.ending) {
      case Ending::kAborted:
        return Status::failed_precondition(o.error.empty() ? "lease lost" : o.error);
      case Ending::kBudget:
        return finish(RunStatus::kFailed, o.error);
      case Ending::kCancelled:
        return finish(RunStatus::kCancelled, "cancelled");
      case Ending::kCompleted:
      case Ending::kSkipped:
        ++i;
        continue;
      case Ending::kFailed:
        break;
    }
    if (s.on_failure == FailureAction::kContinue) {
      ++i;
      continue;
    }
    if (s.on_failure == FailureAction::kGoto) {
      size_t target = i + 1;
      while (target < steps.size() && steps[target].id != s.goto_step) ++target;
      for (size_t j = i + 1; j < target; ++j) {
        if (lookup(steps[j].id)) continue;
        StepRecord r;
        r.step_id = steps[j].id;
        r.status = "skipped";
        r.error = "skipped by goto from " + s.id;
        if (Status st = record(r, "step_skipped", r.error); !st.ok())
          return Status(st.code(), st.message());
      }
      i = target;
      continue;
    }
    return finish(RunStatus::kFailed, "step " + s.id + " failed: " + o.error);
  }
  return finish(RunStatus::kCompleted, "");
}

std::optional<StepRecord> RunExecution::lookup(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = records_.find(id);
  if (it == records_.end()) return std::nullopt;
  return it->second;
}

TemplateScope RunExecution::scope(const json::value* item, int attempt) {
  TemplateScope sc;
  sc.input = &input_;
  sc.item = item;
  sc.attempt = attempt;
  sc.run_id = run_id_;
  sc.step = [this](const std::string& id) -> std::optional<StepView> {
    std::lock_guard lock(mu_);
    auto it = records_.find(id);
    if (it == records_.end()) return std::nullopt;
    return StepView{it->second.status, it->second.output, it->second.error, it->second.attempt};
  };
  return sc;
}

Status RunExecution::record(StepRecord r, const std::string& event, const std::string& detail,
                            int64_t duration_ms) {
  {
    std::lock_guard lock(mu_);
    auto it = records_.find(r.step_id);
    r.seq = it != records_.end() ? it->second.seq : next_seq_++;
  }
  Status st = impl_.store->record_step(run_id_, r, event, detail);
  if (!st.ok()) return st;
  Transition t{run_id_, r.step_id, event.substr(5), r.attempt, duration_ms, detail};
  {
    std::lock_guard lock(mu_);
    count_usage(r);
    records_[r.step_id] = std::move(r);
  }
  impl_.emit(t);
  return Status();
}

void RunExecution::send_feedback(const StepDef& def, const StepRecord& r) {
  if (!def.feedback) return;
  const FeedbackDef& fb = *def.feedback;
  auto note = [&](const std::string& event, const std::string& detail) {
    (void)impl_.store->record_event(run_id_, r.step_id, r.attempt, event, detail);
    impl_.emit(Transition{run_id_, r.step_id, event, r.attempt, 0, detail});
  };
  FeedbackCall call;
  call.client = client_;
  auto target = lookup(fb.step);
  const json::value* rid = nullptr;
  if (target && target->output.is_object())
    rid = target->output.as_object().if_contains("request_id");
  if (!rid || !rid->is_string() || rid->as_string().empty())
    return note("feedback_failed", "step " + fb.step + " has no request id (status " +
                                       (target ? target->status : "not run") + ")");
  call.request_id = std::string(rid->as_string());
  TemplateScope sc = scope(nullptr, r.attempt);
  if (fb.success.is_bool()) {
    call.success = fb.success.as_bool();
  } else if (fb.success.is_string()) {
    auto ok = evaluate_condition(std::string(fb.success.as_string()), sc);
    if (!ok.ok()) return note("feedback_failed", "success: " + ok.status().message());
    call.success = *ok;
  } else {
    call.success = r.status == "completed";
  }
  if (fb.score.is_number()) {
    call.score = fb.score.to_number<double>();
  } else if (fb.score.is_string()) {
    auto v = render(fb.score, sc);
    if (!v.ok()) return note("feedback_failed", "score: " + v.status().message());
    double d = -1;
    if (v->is_number()) {
      d = v->to_number<double>();
    } else if (v->is_string()) {
      const std::string text(v->as_string());
      char* end = nullptr;
      d = std::strtod(text.c_str(), &end);
      // Text such as an exec step's stdout ("0.8\n"): trailing whitespace is allowed.
      while (end && *end != '\0' && std::isspace(static_cast<unsigned char>(*end))) ++end;
      if (end == text.c_str() || *end != '\0') d = -1;
    }
    if (!(d >= 0 && d <= 1))
      return note("feedback_failed", "score: " + json::serialize(*v) + " is not in [0, 1]");
    call.score = d;
  }
  FeedbackSender* sender = impl_.opt.executors.feedback.get();
  if (!sender) return note("feedback_failed", "no gateway to send feedback to in this process");
  Status st = sender->send(call, run_interrupt_);
  std::string detail = "step " + fb.step + " (" + call.request_id + ") " +
                       (call.success ? "success" : "failure") +
                       (call.score ? " score " + format_score(*call.score) : "");
  if (!st.ok()) return note("feedback_failed", detail + ": " + st.message());
  note("feedback_sent", detail);
}

Outcome RunExecution::interrupted(const Status& why, StepRecord r) {
  if (is_budget_stop(why)) return over_budget(why, r);
  if (why.code() != StatusCode::kCancelled) return aborted(why);
  r.status = "cancelled";
  r.error = why.message();
  r.finished_ms = impl_.now_ms();
  if (Status st = record(r, "step_cancelled", r.error, r.finished_ms - r.started_ms); !st.ok())
    return aborted(st);
  return Outcome{Ending::kCancelled, why.message(), {}};
}

Outcome RunExecution::fail_now(StepRecord r, const std::string& error) {
  r.status = "failed";
  r.error = error;
  r.finished_ms = impl_.now_ms();
  if (Status st = record(r, "step_failed", error, r.finished_ms - r.started_ms); !st.ok())
    return aborted(st);
  return Outcome{Ending::kFailed, error, {}};
}

Outcome RunExecution::run_step(const StepDef& def, const std::string& id, const json::value* item,
                               const Interrupt& parent) {
  std::optional<StepRecord> rec = lookup(id);
  if (rec && is_final_step(rec->status))
    return Outcome{ending_of(rec->status), rec->error, rec->output};
  if (Status st = parent.check(); !st.ok()) {
    if (is_budget_stop(st)) return over_budget(st, rec);
    if (st.code() != StatusCode::kCancelled || !rec) {
      return st.code() == StatusCode::kCancelled ? Outcome{Ending::kCancelled, st.message(), {}}
                                                 : aborted(st);
    }
    return interrupted(st, *rec);
  }
  if (!rec && !def.when.empty()) {
    // Decided once: after it is recorded (skipped or started) a replay never re-evaluates it.
    auto ok = evaluate_condition(def.when, scope(item, 0));
    StepRecord r;
    r.step_id = id;
    r.started_ms = impl_.now_ms();
    if (!ok.ok()) return fail_now(r, "when: " + ok.status().message());
    if (!*ok) {
      r.status = "skipped";
      r.error = "condition false: " + def.when;
      if (Status st = record(r, "step_skipped", r.error); !st.ok()) return aborted(st);
      return Outcome{Ending::kSkipped, r.error, {}};
    }
  }
  if (def.kind == StepKind::kParallel) return run_parallel(def, id, rec, parent);

  StepRecord r;
  if (rec) r = *rec;
  r.step_id = id;
  for (;;) {
    if (r.status == "retry_wait" && r.wake_ms > 0) {
      if (Status st = impl_.sleeper->sleep_until(from_ms(r.wake_ms), parent); !st.ok())
        return interrupted(st, r);
    }
    if (Status st = begin_attempt(); !st.ok())
      return over_budget(st, r.attempt > 0 ? std::optional<StepRecord>(r) : std::nullopt);
    r.attempt += 1;
    r.status = "running";
    r.started_ms = impl_.now_ms();
    r.finished_ms = 0;
    auto input = render(def.input, scope(item, r.attempt));
    if (!input.ok()) return fail_now(r, input.status().message());
    if (def.kind == StepKind::kSleep) {
      // The wake-up time is stored once: a restart waits only for the rest.
      if (r.wake_ms == 0) {
        const json::value* d =
            input->is_object() ? input->as_object().if_contains("duration_ms") : nullptr;
        if (!d || !d->is_number() || d->to_number<double>() < 0)
          return fail_now(r, "sleep: duration_ms must be a number >= 0");
        r.wake_ms = r.started_ms + static_cast<int64_t>(d->to_number<double>());
      }
    } else {
      r.wake_ms = 0;
    }
    if (Status st = record(r, "step_started", ""); !st.ok()) return aborted(st);

    MonoTime deadline =
        def.timeout_ms > 0 ? impl_.clock->now() + Millis(def.timeout_ms) : MonoTime::max();
    Interrupt step_interrupt(*impl_.clock, &parent, deadline, def.timeout_ms);
    Result<json::value> result = Status::internal("not run");
    if (def.kind == StepKind::kSleep) {
      Status st = impl_.sleeper->sleep_until(from_ms(r.wake_ms), step_interrupt);
      if (st.ok()) {
        json::object o;
        o["woke_ms"] = r.wake_ms;
        result = json::value(std::move(o));
      } else {
        result = st;
      }
    } else if (StepExecutor* ex = impl_.executor_for(def.kind)) {
      StepRequest req;
      req.run_id = run_id_;
      req.client = client_;
      req.step_id = id;
      req.kind = def.kind;
      req.attempt = r.attempt;
      req.input = std::move(*input);
      req.timeout_ms = def.timeout_ms;
      result = ex->execute(req, step_interrupt);
    } else {
      result = Status::unavailable(std::string("no executor for ") +
                                   std::string(to_string(def.kind)) + " steps in this process");
    }
    // The run's interrupt (cancel, lost lease) wins over the step's own result.
    if (Status st = parent.check(); !st.ok()) return interrupted(st, r);
    int64_t now = impl_.now_ms();
    if (result.ok()) {
      r.status = "completed";
      r.output = std::move(*result);
      r.error.clear();
      r.finished_ms = now;
      if (Status st = record(r, "step_completed", "", now - r.started_ms); !st.ok())
        return aborted(st);
      send_feedback(def, r);
      return Outcome{Ending::kCompleted, "", r.output};
    }
    r.failures += 1;
    r.error = result.status().message();
    r.finished_ms = now;
    if (r.failures >= def.retry.max_attempts) {
      r.status = "failed";
      if (Status st = record(r, "step_failed", r.error, now - r.started_ms); !st.ok())
        return aborted(st);
      send_feedback(def, r);
      return Outcome{Ending::kFailed, r.error, {}};
    }
    Millis wait = def.retry.backoff(r.failures, impl_.uniform());
    r.status = "retry_wait";
    r.wake_ms = now + wait.count();
    if (Status st = record(r, "step_retrying",
                           "in " + std::to_string(wait.count()) + " ms after: " + r.error,
                           now - r.started_ms);
        !st.ok())
      return aborted(st);
  }
}

Outcome RunExecution::run_parallel(const StepDef& def, const std::string& id,
                                   std::optional<StepRecord> rec, const Interrupt& parent) {
  if (Status st = begin_attempt(); !st.ok()) return over_budget(st, rec);
  StepRecord r;
  if (rec) r = *rec;
  r.step_id = id;
  r.attempt += 1;
  r.status = "running";
  r.started_ms = impl_.now_ms();
  // The children: for_each items (re-derived from recorded data, so a replay sees the same list)
  // or the fixed branches.
  struct Child {
    const StepDef* def;
    std::string id;
    std::string key;  // branch id
    const json::value* item = nullptr;
  };
  std::vector<Child> children;
  json::value items;
  if (!def.for_each.empty()) {
    auto list = render(json::value(def.for_each), scope(nullptr, r.attempt));
    if (!list.ok()) return fail_now(r, "for_each: " + list.status().message());
    if (!list->is_array())
      return fail_now(r, "for_each: must yield a list, got " + json::serialize(*list));
    items = std::move(*list);
    const auto& arr = items.as_array();
    for (size_t i = 0; i < arr.size(); ++i)
      children.push_back({def.child.get(), id + "[" + std::to_string(i) + "]", "", &arr[i]});
  } else {
    for (const auto& b : def.branches) children.push_back({&b, id + "." + b.id, b.id, nullptr});
  }
  if (Status st = record(r, "step_started", std::to_string(children.size()) + " branches");
      !st.ok())
    return aborted(st);

  std::vector<Outcome> results(children.size());
  std::vector<char> started(children.size(), 0);  // each element written by one worker
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  auto worker = [&] {
    while (!stop.load()) {
      size_t i = next.fetch_add(1);
      if (i >= children.size()) return;
      started[i] = 1;
      results[i] = run_step(*children[i].def, children[i].id, children[i].item, parent);
    }
  };
  // A client's definition may ask for any max_concurrency: this process's bound wins.
  const int limit = std::max(1, std::min(def.max_concurrency, impl_.opt.max_parallel));
  const size_t n = std::min(children.size(), static_cast<size_t>(limit));
  std::vector<std::thread> threads;
  // No thread to be had (EAGAIN: a process or memory limit) fails the step rather than the
  // process: no more children start, those running finish and are recorded, and the step is
  // recorded failed, so a resume sees a finished step instead of crashing at the same point.
  std::string no_thread;
  try {
    threads.reserve(n);
    for (size_t t = 1; t < n; ++t) threads.push_back(impl_.start_thread(worker));
  } catch (const std::exception& e) {
    stop.store(true);
    no_thread = "cannot start thread " + std::to_string(threads.size() + 1) + " of " +
                std::to_string(n - 1) + " for parallel step " + id + " (" + e.what() + ")";
  }
  if (no_thread.empty()) worker();
  // Fan-in: every branch has finished (and recorded) before the step itself is recorded.
  for (auto& t : threads) t.join();

  bool cancelled = false;
  std::string failures;
  int failed = 0;
  size_t not_started = 0;
  json::array out_list;
  json::object out_map;
  for (size_t i = 0; i < children.size(); ++i) {
    if (results[i].ending == Ending::kBudget)
      return over_budget(Status::resource_exhausted(results[i].error), r);
  }
  for (size_t i = 0; i < children.size(); ++i) {
    const Outcome& o = results[i];
    if (!started[i]) ++not_started;  // its output stays null, like a child that failed
    if (o.ending == Ending::kAborted) return o;
    if (o.ending == Ending::kCancelled) cancelled = true;
    bool tolerated = children[i].def->on_failure == FailureAction::kContinue;
    if (o.ending == Ending::kFailed && !tolerated) {
      ++failed;
      failures += (failures.empty() ? "" : "; ") + children[i].id + ": " + o.error;
    }
    if (children[i].key.empty())
      out_list.push_back(o.output);
    else
      out_map[children[i].key] = o.output;
  }
  if (cancelled) {
    if (Status st = parent.check(); !st.ok()) return interrupted(st, r);
  }
  r.output =
      def.for_each.empty() ? json::value(std::move(out_map)) : json::value(std::move(out_list));
  r.finished_ms = impl_.now_ms();
  int64_t took = r.finished_ms - r.started_ms;
  if (!no_thread.empty()) {
    r.status = "failed";
    r.failures += 1;
    r.error = Status::resource_exhausted(no_thread + "; " + std::to_string(not_started) + " of " +
                                         std::to_string(children.size()) + " branches not started")
                  .to_string();
    if (failed > 0) r.error += "; " + std::to_string(failed) + " branches failed: " + failures;
    if (Status st = record(r, "step_failed", r.error, took); !st.ok()) return aborted(st);
    return Outcome{Ending::kFailed, r.error, r.output};
  }
  if (failed == 0) {
    r.status = "completed";
    r.error.clear();
    if (Status st = record(r, "step_completed", "", took); !st.ok()) return aborted(st);
    return Outcome{Ending::kCompleted, "", r.output};
  }
  r.status = "failed";
  r.failures += 1;
  r.error = std::to_string(failed) + " of " + std::to_string(children.size()) +
            " branches failed: " + failures;
  if (Status st = record(r, "step_failed", r.error, took); !st.ok()) return aborted(st);
  return Outcome{Ending::kFailed, r.error, r.output};
}

Result<RunResult> RunExecution::finish(RunStatus status, const std::string& error) {
  std::string name(to_string(status));
  Status st = impl_.store->finish_run(run_id_, status, error);
  if (!st.ok()) return st;
  impl_.emit(Transition{run_id_, "", name, 0, 0, error});
  return RunResult{status, error};
}

}  // namespace switchboard::workflow::detail
