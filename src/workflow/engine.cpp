// The durable executor: claims a run, replays its recorded steps, executes the rest, and commits
// every transition (step row + audit event, fenced by the owner check) in one transaction.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "store/sqlite_util.h"
#include "store/store.h"
#include "workflow/workflow.h"

namespace switchboard::workflow {

using store::detail::Db;
using store::detail::from_ms;
using store::detail::sqlite_error;
using store::detail::Stmt;
using store::detail::to_ms;

std::string_view to_string(RunStatus s) {
  switch (s) {
    case RunStatus::kPending:
      return "pending";
    case RunStatus::kRunning:
      return "running";
    case RunStatus::kCompleted:
      return "completed";
    case RunStatus::kFailed:
      return "failed";
    case RunStatus::kCancelled:
      return "cancelled";
  }
  return "?";
}

std::optional<RunStatus> parse_run_status(std::string_view s) {
  for (auto st : {RunStatus::kPending, RunStatus::kRunning, RunStatus::kCompleted,
                  RunStatus::kFailed, RunStatus::kCancelled})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

std::string Transition::to_line() const {
  std::string s =
      step_id.empty() ? "run " + run_id + " " + status : "step " + step_id + " " + status;
  if (!step_id.empty() && attempt > 0) {
    s += " (attempt " + std::to_string(attempt);
    if (status != "started") s += ", " + std::to_string(duration_ms) + " ms";
    s += ")";
  }
  if (!detail.empty()) s += ": " + detail;
  return s;
}

namespace {

bool is_final_step(const std::string& s) {
  return s == "completed" || s == "failed" || s == "skipped" || s == "cancelled";
}

json::value parse_or_null(const std::string& s) {
  if (s.empty()) return nullptr;
  boost::system::error_code ec;
  json::value v = json::parse(s, ec);
  return ec ? json::value(nullptr) : v;
}

// Every step row of a run, in commit order (claim/replay and `show` read the same columns).
Status read_step_records(sqlite3* db, const std::string& run_id, std::vector<StepRecord>& out) {
  Stmt sq;
  if (Status st = sq.prepare(db,
                             "SELECT step_id, seq, attempt, failures, status, output, error, "
                             "started_ms, finished_ms, wake_ms FROM workflow_steps "
                             "WHERE run_id = ? ORDER BY seq");
      !st.ok())
    return st;
  sq.bind(1, run_id);
  int rc;
  while ((rc = sq.step()) == SQLITE_ROW) {
    StepRecord r;
    r.step_id = sq.col_text(0);
    r.seq = sq.col_int(1);
    r.attempt = static_cast<int>(sq.col_int(2));
    r.failures = static_cast<int>(sq.col_int(3));
    r.status = sq.col_text(4);
    r.output = parse_or_null(sq.col_text(5));
    r.error = sq.col_text(6);
    r.started_ms = sq.col_int(7);
    r.finished_ms = sq.col_int(8);
    r.wake_ms = sq.col_int(9);
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return sqlite_error(db, rc, "read steps");
  return Status();
}

// How one step ended, for the caller's control flow.
enum class Ending { kCompleted, kFailed, kSkipped, kCancelled, kAborted };

struct Outcome {
  Ending ending = Ending::kCompleted;
  std::string error;
  json::value output;
};

Ending ending_of(const std::string& status) {
  if (status == "completed") return Ending::kCompleted;
  if (status == "skipped") return Ending::kSkipped;
  if (status == "cancelled") return Ending::kCancelled;
  return Ending::kFailed;
}

std::string random_hex(int bytes) {
  static thread_local std::mt19937_64 rng(std::random_device{}() ^
                                          (static_cast<uint64_t>(getpid()) << 32));
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < bytes; ++i) {
    auto b = static_cast<unsigned>(rng() & 0xff);
    s += kHex[b >> 4];
    s += kHex[b & 15];
  }
  return s;
}

// ---- Owner ids (workflow.h local_owner_id) ---------------------------------------------------

struct ProcStat {
  char state = '?';
  uint64_t start = 0;  // field 22: clock ticks after boot
};

// /proc/<pid>/stat's state and start time; nullopt when unreadable (no /proc, hidepid, gone).
std::optional<ProcStat> read_proc_stat(const std::string& pid) {
  std::ifstream f("/proc/" + pid + "/stat");
  std::string line;
  if (!std::getline(f, line)) return std::nullopt;
  // Field 2 is the command name in parentheses, which may itself hold spaces and ')'.
  size_t rp = line.rfind(')');
  if (rp == std::string::npos) return std::nullopt;
  std::istringstream in(line.substr(rp + 1));
  ProcStat st;
  std::string skip;
  if (!(in >> st.state)) return std::nullopt;
  for (int field = 4; field < 22; ++field)
    if (!(in >> skip)) return std::nullopt;
  if (!(in >> st.start)) return std::nullopt;
  return st;
}

// Digits only, at most `max_len` of them (so that a PID always fits in stoll).
bool all_digits(std::string_view s, size_t max_len) {
  if (s.empty() || s.size() > max_len) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// The parts of an owner id this code makes; nullopt for any other string.
struct OwnerParts {
  std::string host;   // "<hostname>/<pid namespace>", or just the host name (older ids)
  std::string pid;    // digits
  std::string start;  // digits, "" in older ids, "0" when the owner did not know its own
};

std::optional<OwnerParts> parse_owner(const std::string& owner) {
  std::vector<std::string> parts;
  size_t from = 0;
  for (;;) {
    size_t colon = owner.find(':', from);
    parts.push_back(owner.substr(from, colon == std::string::npos ? colon : colon - from));
    if (colon == std::string::npos) break;
    from = colon + 1;
  }
  if (parts.size() != 3 && parts.size() != 4) return std::nullopt;
  OwnerParts p;
  p.host = parts[0];
  p.pid = parts[1];
  if (p.host.empty() || !all_digits(p.pid, 10) || std::stoll(p.pid) <= 0 ||
      std::stoll(p.pid) > 0x7fffffff)
    return std::nullopt;
  if (parts.size() == 4) {
    if (!all_digits(parts[2], 20)) return std::nullopt;
    p.start = parts[2];
  }
  return p;
}

std::string hostname_of(const std::string& host) {
  return host.substr(0, host.find('/'));
}

// Whether the owner id names this host (see local_owner_alive for why older ids compare the
// host name only).
bool owner_is_local(const OwnerParts& p) {
  if (p.start.empty()) return hostname_of(p.host) == hostname_of(local_owner_host());
  return p.host == local_owner_host();
}

}  // namespace

const std::string& local_owner_host() {
  static const std::string host = [] {
    char name[256] = {0};
    gethostname(name, sizeof name - 1);
    std::string h = name;
    // ':' separates the id's parts and '/' the namespace; neither is valid in a host name.
    for (char& c : h)
      if (c == ':' || c == '/') c = '_';
    if (h.empty()) h = "localhost";
    // A PID means something only within its PID namespace: containers sharing a host name and
    // the database file must not judge each other's PIDs.
    char link[128] = {0};
    ssize_t n = readlink("/proc/self/ns/pid", link, sizeof link - 1);
    std::string ns;
    for (ssize_t i = 0; i < n; ++i)
      if (link[i] >= '0' && link[i] <= '9') ns += link[i];
    return ns.empty() ? h : h + "/" + ns;
  }();
  return host;
}

std::string local_owner_id() {
  auto self = read_proc_stat("self");
  return local_owner_host() + ":" + std::to_string(getpid()) + ":" +
         std::to_string(self ? self->start : 0) + ":" + random_hex(4);
}

bool local_owner_alive(const std::string& owner) {
  auto p = parse_owner(owner);
  // Another host's PIDs, or an id of another form: nothing here can tell; the lease will.
  if (!p || !owner_is_local(*p)) return true;
  const pid_t pid = static_cast<pid_t>(std::stoll(p->pid));
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;  // EPERM: exists, someone else's
  auto st = read_proc_stat(p->pid);
  if (!st) return true;  // no /proc to look at: it exists, so it may be the owner
  if (st->state == 'Z' || st->state == 'X') return false;  // killed, not yet reaped
  // The PID now names a process started at another time: the owner is gone (PID reuse). Older
  // ids, and owners that could not read their own start time ("0"), go by the PID alone.
  if (!p->start.empty() && p->start != "0" && p->start != std::to_string(st->start)) return false;
  return true;
}

namespace {

// How a claim would judge the run's current owner, for messages.
std::string describe_owner(const std::string& owner) {
  auto p = parse_owner(owner);
  if (!p) return "another executor";
  if (owner_is_local(*p)) return "process " + p->pid + ", still running on this host";
  return "an executor on host " + hostname_of(p->host);
}

}  // namespace

struct Engine::Impl {
  EngineOptions opt;
  const Clock* clock = nullptr;
  std::shared_ptr<Sleeper> sleeper;
  std::string owner;

  std::mutex db_mu;  // one connection, used by the run threads and the heartbeats
  Db db;
  std::unordered_map<const char*, Stmt> stmts;

  std::mutex rng_mu;
  std::mt19937_64 rng;
  std::mutex transition_mu;

  // Runs executing in `run()`, so that `shutdown()` can interrupt them.
  std::mutex active_mu;
  bool shutting_down = false;   // guarded by active_mu
  std::set<Interrupt*> active;  // guarded by active_mu

  int64_t now_ms() const { return to_ms(clock->wall_now()); }

  // Whether another executor's owner id may still be alive (EngineOptions::owner_alive).
  bool owner_alive(const std::string& other) const {
    return opt.owner_alive ? opt.owner_alive(other) : local_owner_alive(other);
  }

  // A cached prepared statement (db_mu held).
  Result<Stmt*> stmt(const char* sql) {
    auto it = stmts.find(sql);
    if (it != stmts.end()) return &it->second;
    Stmt s;
    if (Status st = s.prepare(db.get(), sql); !st.ok()) return st;
    return &stmts.emplace(sql, std::move(s)).first->second;
  }

  Status add_event(const std::string& run_id, const std::string& step_id, int attempt,
                   const std::string& type, const std::string& detail) {
    auto s = stmt(
        "INSERT INTO workflow_events (run_id, ts_ms, step_id, attempt, type, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)");
    if (!s.ok()) return s.status();
    Stmt& q = **s;
    q.bind(1, run_id);
    q.bind(2, now_ms());
    q.bind(3, step_id);
    q.bind(4, attempt);
    q.bind(5, type);
    q.bind(6, detail);
    if (int rc = q.run(); rc != SQLITE_OK) return sqlite_error(db.get(), rc, "insert event");
    return Status();
  }

  // Runs `body` in one IMMEDIATE transaction after checking that we still own the run.
  template <typename F>
  Status owned_tx(const std::string& run_id, F&& body) {
    std::lock_guard lock(db_mu);
    if (Status st = db.exec("BEGIN IMMEDIATE"); !st.ok()) return st;
    auto fail = [&](Status st) {
      (void)db.exec("ROLLBACK");
      return st;
    };
    auto s = stmt("UPDATE workflow_runs SET updated_ms = ? WHERE id = ? AND owner = ?");
    if (!s.ok()) return fail(s.status());
    Stmt& q = **s;
    q.bind(1, now_ms());
    q.bind(2, run_id);
    q.bind(3, owner);
    if (int rc = q.run(); rc != SQLITE_OK) return fail(sqlite_error(db.get(), rc, "fence"));
    if (sqlite3_changes(db.get()) != 1)
      return fail(Status::failed_precondition("lease of run " + run_id + " lost"));
    if (Status st = body(); !st.ok()) return fail(st);
    if (Status st = db.exec("COMMIT"); !st.ok()) return fail(st);
    return Status();
  }

  Status write_step(const std::string& run_id, const StepRecord& r) {
    auto s = stmt(
        "INSERT OR REPLACE INTO workflow_steps (run_id, step_id, seq, attempt, failures, status, "
        "output, error, started_ms, finished_ms, wake_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
        "?)");
    if (!s.ok()) return s.status();
    Stmt& q = **s;
    std::string out = json::serialize(r.output);
    q.bind(1, run_id);
    q.bind(2, r.step_id);
    q.bind(3, r.seq);
    q.bind(4, r.attempt);
    q.bind(5, r.failures);
    q.bind(6, r.status);
    q.bind(7, out);
    q.bind(8, r.error);
    q.bind(9, r.started_ms);
    q.bind(10, r.finished_ms);
    q.bind(11, r.wake_ms);
    if (int rc = q.run(); rc != SQLITE_OK) return sqlite_error(db.get(), rc, "write step");
    return Status();
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

  // Hands a claimed run back (owner cleared, lease expired, status left `running`) so that the
  // next executor claims it at once; unfinished steps are retried there, as after a crash.
  void release_claim(const std::string& run_id, const std::string& why) {
    std::lock_guard lock(db_mu);
    Stmt u;
    if (u.prepare(db.get(),
                  "UPDATE workflow_runs SET owner = NULL, lease_expires_ms = 0, updated_ms = ? "
                  "WHERE id = ? AND owner = ? AND status = 'running'")
            .ok()) {
      u.bind(1, now_ms());
      u.bind(2, run_id);
      u.bind(3, owner);
      if (u.run() == SQLITE_OK && sqlite3_changes(db.get()) == 1)
        (void)add_event(run_id, "", 0, "run_released", owner + " " + why);
    }
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

namespace {

// The state of one run being executed by this process.
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
      records_[r.step_id] = std::move(r);
    }
  }
  size_t recorded() const { return records_.size(); }
  Interrupt& run_interrupt() { return run_interrupt_; }

  // Executes the top-level steps; returns the final status, or a non-ok Status when this
  // executor lost the run (then nothing more was written).
  Result<RunResult> execute() {
    const auto& steps = def_.steps;
    size_t i = 0;
    while (i < steps.size()) {
      const StepDef& s = steps[i];
      Outcome o = run_step(s, s.id, nullptr, run_interrupt_);
      switch (o.ending) {
        case Ending::kAborted:
          return Status::failed_precondition(o.error.empty() ? "lease lost" : o.error);
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

 private:
  std::optional<StepRecord> lookup(const std::string& id) {
    std::lock_guard lock(mu_);
    auto it = records_.find(id);
    if (it == records_.end()) return std::nullopt;
    return it->second;
  }

  TemplateScope scope(const json::value* item, int attempt) {
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

  // Commits the record with its audit event, then publishes it.
  Status record(StepRecord r, const std::string& event, const std::string& detail,
                int64_t duration_ms = 0) {
    {
      std::lock_guard lock(mu_);
      auto it = records_.find(r.step_id);
      r.seq = it != records_.end() ? it->second.seq : next_seq_++;
    }
    Status st = impl_.owned_tx(run_id_, [&] {
      if (Status s = impl_.write_step(run_id_, r); !s.ok()) return s;
      return impl_.add_event(run_id_, r.step_id, r.attempt, event, detail);
    });
    if (!st.ok()) return st;
    Transition t{run_id_, r.step_id, event.substr(5), r.attempt, duration_ms, detail};
    {
      std::lock_guard lock(mu_);
      records_[r.step_id] = std::move(r);
    }
    impl_.emit(t);
    return Status();
  }

  static std::string format_score(double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", v);
    return buf;
  }

  // The step's `feedback` verdict on an earlier llm step (workflow.h FeedbackDef): advisory,
  // at most once, after the step's final state is committed. The outcome of the delivery is an
  // audit event (and a transition), never a change of the step's own result.
  void send_feedback(const StepDef& def, const StepRecord& r) {
    if (!def.feedback) return;
    const FeedbackDef& fb = *def.feedback;
    auto note = [&](const std::string& event, const std::string& detail) {
      (void)impl_.owned_tx(
          run_id_, [&] { return impl_.add_event(run_id_, r.step_id, r.attempt, event, detail); });
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

  // A recording failure means the run is no longer ours (or the disk failed): stop here.
  static Outcome aborted(const Status& st) { return Outcome{Ending::kAborted, st.message(), {}}; }

  Outcome interrupted(const Status& why, StepRecord r) {
    if (why.code() != StatusCode::kCancelled) return aborted(why);
    r.status = "cancelled";
    r.error = why.message();
    r.finished_ms = impl_.now_ms();
    if (Status st = record(r, "step_cancelled", r.error, r.finished_ms - r.started_ms); !st.ok())
      return aborted(st);
    return Outcome{Ending::kCancelled, why.message(), {}};
  }

  Outcome fail_now(StepRecord r, const std::string& error) {
    r.status = "failed";
    r.error = error;
    r.finished_ms = impl_.now_ms();
    if (Status st = record(r, "step_failed", error, r.finished_ms - r.started_ms); !st.ok())
      return aborted(st);
    return Outcome{Ending::kFailed, error, {}};
  }

  Outcome run_step(const StepDef& def, const std::string& id, const json::value* item,
                   const Interrupt& parent) {
    std::optional<StepRecord> rec = lookup(id);
    if (rec && is_final_step(rec->status))
      return Outcome{ending_of(rec->status), rec->error, rec->output};
    if (Status st = parent.check(); !st.ok()) {
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

  Outcome run_parallel(const StepDef& def, const std::string& id, std::optional<StepRecord> rec,
                       const Interrupt& parent) {
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
      r.error =
          Status::resource_exhausted(no_thread + "; " + std::to_string(not_started) + " of " +
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

  Result<RunResult> finish(RunStatus status, const std::string& error) {
    std::string name(to_string(status));
    Status st = impl_.owned_tx(run_id_, [&]() -> Status {
      auto s = impl_.stmt(
          "UPDATE workflow_runs SET status = ?, error = ?, finished_ms = ?, owner = NULL, "
          "lease_expires_ms = 0 WHERE id = ?");
      if (!s.ok()) return s.status();
      Stmt& q = **s;
      q.bind(1, name);
      q.bind(2, error);
      q.bind(3, impl_.now_ms());
      q.bind(4, run_id_);
      if (int rc = q.run(); rc != SQLITE_OK) return sqlite_error(impl_.db.get(), rc, "finish run");
      return impl_.add_event(run_id_, "", 0, "run_" + name, error);
    });
    if (!st.ok()) return st;
    impl_.emit(Transition{run_id_, "", name, 0, 0, error});
    return RunResult{status, error};
  }

  Engine::Impl& impl_;
  std::string run_id_;
  std::string client_;  // whose run this is: every step and verdict carries it
  Definition def_;
  json::value input_;
  Interrupt run_interrupt_;
  std::mutex mu_;
  std::map<std::string, StepRecord> records_;
  int64_t next_seq_ = 1;
};

}  // namespace

// ---- Engine -------------------------------------------------------------------------------------

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;
const std::string& Engine::owner() const {
  return impl_->owner;
}

Result<std::unique_ptr<Engine>> Engine::open(EngineOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  impl->clock = impl->opt.clock ? impl->opt.clock : &SystemClock::instance();
  impl->sleeper =
      impl->opt.sleeper ? impl->opt.sleeper : std::make_shared<RealSleeper>(*impl->clock);
  if (!impl->opt.executors.exec) impl->opt.executors.exec = make_exec_executor();
  if (impl->opt.owner.empty()) impl->opt.owner = local_owner_id();
  impl->owner = impl->opt.owner;
  impl->rng.seed(impl->opt.seed ? impl->opt.seed : std::random_device{}());
  auto db =
      Db::open(impl->opt.db_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
  if (!db.ok()) return db.status();
  impl->db = std::move(*db);
  sqlite3_busy_timeout(impl->db.get(), static_cast<int>(impl->opt.busy_timeout_ms));
  if (Status st = impl->db.exec("PRAGMA journal_mode=WAL"); !st.ok()) return st;
  const char* sync = impl->opt.synchronous == SyncMode::kFull ? "PRAGMA synchronous=FULL"
                                                              : "PRAGMA synchronous=NORMAL";
  if (Status st = impl->db.exec(sync); !st.ok()) return st;
  if (Status st = store::detail::migrate(impl->db, store::schema_version()); !st.ok()) return st;
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Result<std::string> Engine::create_run(const Definition& def, const json::value& input,
                                       const std::string& client) {
  if (Status st = validate_input(def, input); !st.ok()) return st;
  std::string id = "wf_" + random_hex(8);
  std::lock_guard lock(impl_->db_mu);
  Db& db = impl_->db;
  if (Status st = db.exec("BEGIN IMMEDIATE"); !st.ok()) return st;
  auto s = impl_->stmt(
      "INSERT INTO workflow_runs (id, name, version, definition_hash, definition, input, status, "
      "created_ms, updated_ms, client) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)");
  Status st = s.status();
  if (st.ok()) {
    Stmt& q = **s;
    std::string in = json::serialize(input);
    int64_t now = impl_->now_ms();
    q.bind(1, id);
    q.bind(2, def.name);
    q.bind(3, def.version);
    q.bind(4, def.hash);
    q.bind(5, def.body);
    q.bind(6, in);
    q.bind(7, now);
    q.bind(8, now);
    q.bind(9, client);
    if (int rc = q.run(); rc != SQLITE_OK) st = sqlite_error(db.get(), rc, "insert run");
  }
  if (st.ok()) st = impl_->add_event(id, "", 0, "run_created", def.name + " " + def.hash);
  if (st.ok()) st = db.exec("COMMIT");
  if (!st.ok()) {
    (void)db.exec("ROLLBACK");
    return st;
  }
  return id;
}

Result<RunResult> Engine::run(const std::string& run_id, const Definition* given, bool force,
                              const Interrupt* wait) {
  Impl& im = *impl_;
  {
    std::lock_guard lock(im.active_mu);
    if (im.shutting_down) return Status::unavailable("workflow executor is shutting down");
  }
  std::string def_body, input_text, status_text, client;
  std::vector<StepRecord> recs;
  bool cancel_requested = false;
  std::string taken_over;  // why the previous owner's claim was ignored, "" if it was not

  // While waiting for another owner's lease, `shutdown()` must end the wait too: a child of
  // `wait` registered with the active runs.
  std::optional<Interrupt> waiter;
  struct Unregister {
    Impl& im;
    std::optional<Interrupt>& waiter;
    ~Unregister() {
      if (!waiter) return;
      std::lock_guard lock(im.active_mu);
      im.active.erase(&*waiter);
    }
  } unregister{im, waiter};
  std::string waited_for;  // the owner a "waiting" transition named last

  // Claim: one IMMEDIATE transaction reads the run and takes it only when nobody live owns it.
  for (;;) {
    std::string holder;
    int64_t lease_left_ms = 0;
    {
      std::lock_guard lock(im.db_mu);
      Db& db = im.db;
      if (Status st = db.exec("BEGIN IMMEDIATE"); !st.ok()) return st;
      auto fail = [&](Status st) {
        (void)db.exec("ROLLBACK");
        return st;
      };
      Stmt q;
      if (Status st = q.prepare(db.get(),
                                "SELECT status, owner, lease_expires_ms, cancel_requested, "
                                "definition_hash, definition, input, client FROM workflow_runs "
                                "WHERE id = ?");
          !st.ok())
        return fail(st);
      q.bind(1, run_id);
      int rc = q.step();
      if (rc != SQLITE_ROW) {
        return fail(rc == SQLITE_DONE ? Status::not_found("no workflow run " + run_id)
                                      : sqlite_error(db.get(), rc, "read run"));
      }
      status_text = q.col_text(0);
      std::string owner = q.col_text(1);
      int64_t lease = q.col_int(2);
      cancel_requested = q.col_int(3) != 0;
      std::string hash = q.col_text(4);
      def_body = q.col_text(5);
      input_text = q.col_text(6);
      client = q.col_text(7);
      q.finalize();
      auto status = parse_run_status(status_text);
      if (status && (*status == RunStatus::kCompleted || *status == RunStatus::kFailed ||
                     *status == RunStatus::kCancelled)) {
        (void)db.exec("ROLLBACK");
        Stmt e;
        std::string err;
        if (e.prepare(db.get(), "SELECT error FROM workflow_runs WHERE id = ?").ok()) {
          e.bind(1, run_id);
          if (e.step() == SQLITE_ROW) err = e.col_text(0);
        }
        return RunResult{*status, err};
      }
      int64_t now = im.now_ms();
      if (given && given->hash != hash) {
        if (!force)
          return fail(Status::failed_precondition(
              "run " + run_id + " was started with definition " + hash + ", not " + given->hash +
              " (the definition changed; resume with --force to use the new one)"));
        def_body = given->body;
      }
      // Free: nobody owns it, we do (a restart with the same owner id), or the lease lapsed.
      // Otherwise it is ours only if its owner is certainly gone (a kill -9 on this host): the
      // lease would make a resume wait for nothing. Judged inside this transaction, so nobody
      // can claim the run between the check and the update.
      const bool free = owner.empty() || owner == im.owner || lease < now;
      if (!free && !im.owner_alive(owner)) taken_over = owner;
      if (!free && taken_over.empty()) {
        (void)db.exec("ROLLBACK");
        holder = owner;
        lease_left_ms = lease - now;
      } else {
        Stmt u;
        if (Status st = u.prepare(db.get(),
                                  "UPDATE workflow_runs SET owner = ?, lease_expires_ms = ?, "
                                  "status = 'running', updated_ms = ?, definition = ?, "
                                  "definition_hash = ? WHERE id = ? AND status IN ('pending', "
                                  "'running') AND coalesce(owner, '') = ?");
            !st.ok())
          return fail(st);
        std::string new_hash = given && force ? given->hash : hash;
        u.bind(1, im.owner);
        u.bind(2, now + im.opt.lease.count());
        u.bind(3, now);
        u.bind(4, def_body);
        u.bind(5, new_hash);
        u.bind(6, run_id);
        u.bind(7, owner);
        if (int rc2 = u.run(); rc2 != SQLITE_OK) return fail(sqlite_error(db.get(), rc2, "claim"));
        if (sqlite3_changes(db.get()) != 1)  // cannot happen inside the transaction; be safe
          return fail(Status::failed_precondition("run " + run_id + " changed while claimed"));
        if (!taken_over.empty()) {
          // The audit trail says why the lease was not honoured.
          taken_over = "owner " + owner + " is no longer running on this host";
          if (Status st = im.add_event(run_id, "", 0, "run_taken_over", taken_over); !st.ok())
            return fail(st);
        }
        std::string detail = owner.empty() ? "" : "previous owner " + owner;
        if (given && force && given->hash != hash)
          detail += " definition replaced by " + given->hash;
        if (Status st = im.add_event(run_id, "", 0, "run_claimed", im.owner + " " + detail);
            !st.ok())
          return fail(st);
        if (Status st = read_step_records(db.get(), run_id, recs); !st.ok()) return fail(st);
        if (Status st = db.exec("COMMIT"); !st.ok()) return fail(st);
        break;
      }
    }

    // Held by an owner that may be alive: refuse, or wait for its lease to lapse.
    const int64_t secs = std::max<int64_t>(1, (lease_left_ms + 999) / 1000);
    const std::string held = "owned by " + holder + " (" + describe_owner(holder) +
                             "); its lease ends in " + std::to_string(secs) + " s";
    if (!wait)
      return Status::failed_precondition("run " + run_id + " is " + held +
                                         " (resume with --wait to wait for it)");
    if (!waiter) {
      waiter.emplace(*im.clock, wait);
      std::lock_guard lock(im.active_mu);
      im.active.insert(&*waiter);
      if (im.shutting_down) waiter->cancel(Status::unavailable("executor shutting down"));
    }
    if (holder != waited_for) {
      waited_for = holder;
      im.emit(Transition{run_id, "", "waiting", 0, 0, held});
    }
    // At most a second between looks: the owner may die, or hand the run back, long before its
    // lease ends (and a heartbeat may extend it).
    const Millis nap(std::clamp<int64_t>(lease_left_ms + 1, 1, 1000));
    if (Status st = im.sleeper->sleep_until(im.clock->wall_now() + nap, *waiter); !st.ok())
      return Status(st.code(), "run " + run_id + " not resumed: " + st.message() +
                                   " while waiting for " + holder);
  }
  if (!taken_over.empty()) im.emit(Transition{run_id, "", "taken over", 0, 0, taken_over});

  // From here on the run is ours: any failure to parse it marks it failed, never leaves it
  // running.
  auto release_failed = [&](const std::string& why) -> Result<RunResult> {
    std::lock_guard lock(im.db_mu);
    Stmt u;
    if (Status st = u.prepare(im.db.get(),
                              "UPDATE workflow_runs SET status = 'failed', error = ?, "
                              "finished_ms = ?, owner = NULL WHERE id = ? AND owner = ?");
        !st.ok())
      return st;
    u.bind(1, why);
    u.bind(2, im.now_ms());
    u.bind(3, run_id);
    u.bind(4, im.owner);
    if (int rc = u.run(); rc != SQLITE_OK) return sqlite_error(im.db.get(), rc, "fail run");
    (void)im.add_event(run_id, "", 0, "run_failed", why);
    return RunResult{RunStatus::kFailed, why};
  };
  DefinitionLoad load = parse_definition(def_body, "run " + run_id);
  if (!load.ok())
    return release_failed("stored definition is invalid: " + load.errors.front().to_string());
  boost::system::error_code ec;
  json::value input = json::parse(input_text, ec);
  if (ec) return release_failed("stored input is not JSON");

  RunExecution exec(im, run_id, client, std::move(*load.definition), std::move(input));
  exec.load_records(std::move(recs));
  if (cancel_requested) exec.run_interrupt().cancel(Status::cancelled("run cancelled"));
  // Registered before executing anything; a shutdown that came after the claim stops it here.
  {
    std::lock_guard lock(im.active_mu);
    im.active.insert(&exec.run_interrupt());
    if (im.shutting_down)
      exec.run_interrupt().cancel(Status::unavailable("executor shutting down"));
  }
  im.emit(Transition{run_id, "", status_text == "pending" ? "running" : "resumed", 0, 0,
                     exec.recorded() ? std::to_string(exec.recorded()) + " steps recorded" : ""});

  // Heartbeat: extends the lease and polls for a cancel request, until the run ends.
  std::mutex hb_mu;
  std::condition_variable hb_cv;
  bool hb_stop = false;
  auto beat = [&] {
    auto last_renew = std::chrono::steady_clock::now();
    std::unique_lock lk(hb_mu);
    while (!hb_cv.wait_for(lk, im.opt.poll, [&] { return hb_stop; })) {
      lk.unlock();
      bool renew = std::chrono::steady_clock::now() - last_renew >= im.opt.heartbeat;
      {
        std::lock_guard dl(im.db_mu);
        Stmt q;
        if (q.prepare(im.db.get(), "SELECT owner, cancel_requested FROM workflow_runs WHERE id = ?")
                .ok()) {
          q.bind(1, run_id);
          if (q.step() == SQLITE_ROW) {
            if (q.col_text(0) != im.owner)
              exec.run_interrupt().cancel(Status::failed_precondition("lease of run lost"));
            else if (q.col_int(1) != 0)
              exec.run_interrupt().cancel(Status::cancelled("run cancelled"));
          }
        }
        if (renew) {
          Stmt u;
          if (u.prepare(im.db.get(),
                        "UPDATE workflow_runs SET lease_expires_ms = ? WHERE id = ? AND owner = ?")
                  .ok()) {
            u.bind(1, im.now_ms() + im.opt.lease.count());
            u.bind(2, run_id);
            u.bind(3, im.owner);
            if (u.run() == SQLITE_OK && sqlite3_changes(im.db.get()) == 0)
              exec.run_interrupt().cancel(Status::failed_precondition("lease of run lost"));
          }
          last_renew = std::chrono::steady_clock::now();
        }
      }
      lk.lock();
    }
  };
  std::thread heartbeat;
  try {
    heartbeat = im.start_thread(beat);
  } catch (const std::exception& e) {
    // Without a heartbeat the lease would lapse under a live executor: do not execute. The run
    // goes back unowned, so this or another executor resumes it once threads are available.
    {
      std::lock_guard lock(im.active_mu);
      im.active.erase(&exec.run_interrupt());
    }
    const std::string why = std::string("cannot start the heartbeat thread (") + e.what() + ")";
    im.release_claim(run_id, why);
    im.emit(Transition{run_id, "", "released", 0, 0, why});
    return Status::resource_exhausted("run " + run_id + " not executed: " + why);
  }
  Result<RunResult> result = exec.execute();
  {
    std::lock_guard lk(hb_mu);
    hb_stop = true;
  }
  hb_cv.notify_all();
  heartbeat.join();
  bool stopped_by_shutdown = false;
  {
    std::lock_guard lock(im.active_mu);
    im.active.erase(&exec.run_interrupt());
    stopped_by_shutdown = im.shutting_down && !result.ok();
  }
  if (stopped_by_shutdown) {
    // Hand the run back: the next executor (this gateway after a restart, or another one)
    // claims it at once instead of waiting for the lease to lapse.
    im.release_claim(run_id, "shutting down");
    im.emit(Transition{run_id, "", "released", 0, 0, "executor shutting down"});
    return Status::unavailable("run " + run_id + " stopped: executor shutting down");
  }
  return result;
}

void Engine::shutdown() {
  std::lock_guard lock(impl_->active_mu);
  impl_->shutting_down = true;
  // Not a cancellation: the steps stop like at a crash (the run stays running, unfinished steps
  // are retried by the next executor), so the reason must not be kCancelled.
  for (Interrupt* i : impl_->active) i->cancel(Status::unavailable("executor shutting down"));
}

Status Engine::request_cancel(const std::string& run_id) {
  std::lock_guard lock(impl_->db_mu);
  Db& db = impl_->db;
  if (Status st = db.exec("BEGIN IMMEDIATE"); !st.ok()) return st;
  auto fail = [&](Status st) {
    (void)db.exec("ROLLBACK");
    return st;
  };
  Stmt q;
  if (Status st = q.prepare(
          db.get(), "SELECT status, owner, lease_expires_ms FROM workflow_runs WHERE id = ?");
      !st.ok())
    return fail(st);
  q.bind(1, run_id);
  if (q.step() != SQLITE_ROW) return fail(Status::not_found("no workflow run " + run_id));
  std::string status = q.col_text(0);
  bool owned = sqlite3_column_type(q.get(), 1) != SQLITE_NULL && q.col_int(2) >= impl_->now_ms();
  q.finalize();
  if (status != "pending" && status != "running")
    return fail(Status::failed_precondition("run " + run_id + " is already " + status));
  Stmt u;
  // Nobody executes it: cancel it now. Otherwise its executor sees the flag and stops.
  const char* sql =
      owned ? "UPDATE workflow_runs SET cancel_requested = 1, updated_ms = ? WHERE id = ?"
            : "UPDATE workflow_runs SET cancel_requested = 1, updated_ms = ?, "
              "status = 'cancelled', error = 'cancelled', finished_ms = updated_ms, "
              "owner = NULL WHERE id = ?";
  if (Status st = u.prepare(db.get(), sql); !st.ok()) return fail(st);
  u.bind(1, impl_->now_ms());
  u.bind(2, run_id);
  if (int rc = u.run(); rc != SQLITE_OK) return fail(sqlite_error(db.get(), rc, "cancel"));
  if (Status st = impl_->add_event(run_id, "", 0, owned ? "cancel_requested" : "run_cancelled", "");
      !st.ok())
    return fail(st);
  if (Status st = db.exec("COMMIT"); !st.ok()) return fail(st);
  return Status();
}

Result<std::vector<std::string>> Engine::interrupted_runs() {
  std::lock_guard lock(impl_->db_mu);
  Stmt q;
  if (Status st = q.prepare(impl_->db.get(),
                            "SELECT id, coalesce(owner, ''), lease_expires_ms FROM workflow_runs "
                            "WHERE status IN ('pending', 'running') ORDER BY created_ms");
      !st.ok())
    return st;
  const int64_t now = impl_->now_ms();
  std::vector<std::string> ids;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    // The same judgement as the claim in run(): what it would take, the recovery scan lists,
    // so a gateway resumes a run whose executor was killed on this host at its next scan.
    const std::string owner = q.col_text(1);
    if (owner.empty() || q.col_int(2) < now ||
        (owner != impl_->owner && !impl_->owner_alive(owner)))
      ids.push_back(q.col_text(0));
  }
  if (rc != SQLITE_DONE) return sqlite_error(impl_->db.get(), rc, "list interrupted runs");
  return ids;
}

namespace {
constexpr const char* kRunColumns =
    "id, name, version, status, owner, cancel_requested, created_ms, updated_ms, "
    "finished_ms, error, client";
constexpr int kRunColumnCount = 11;
RunSummary read_summary(const Stmt& q) {
  RunSummary s;
  s.id = q.col_text(0);
  s.name = q.col_text(1);
  s.version = q.col_int(2);
  s.status = parse_run_status(q.col_text(3)).value_or(RunStatus::kFailed);
  s.owner = q.col_text(4);
  s.cancel_requested = q.col_int(5) != 0;
  s.created_ms = q.col_int(6);
  s.updated_ms = q.col_int(7);
  s.finished_ms = q.col_int(8);
  s.error = q.col_text(9);
  s.client = q.col_text(10);
  return s;
}
}  // namespace

Result<std::vector<RunSummary>> Engine::list_runs(int limit, const std::string* client) {
  std::lock_guard lock(impl_->db_mu);
  Stmt q;
  std::string sql = std::string("SELECT ") + kRunColumns + " FROM workflow_runs" +
                    (client ? " WHERE client = ?" : "") + " ORDER BY created_ms DESC, id LIMIT ?";
  if (Status st = q.prepare(impl_->db.get(), sql.c_str()); !st.ok()) return st;
  int arg = 1;
  if (client) q.bind(arg++, *client);
  q.bind(arg, limit);
  std::vector<RunSummary> out;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) out.push_back(read_summary(q));
  if (rc != SQLITE_DONE) return sqlite_error(impl_->db.get(), rc, "list runs");
  return out;
}

Result<RunDetail> Engine::get_run(const std::string& run_id) {
  std::lock_guard lock(impl_->db_mu);
  RunDetail d;
  {
    Stmt q;
    std::string sql = std::string("SELECT ") + kRunColumns +
                      ", definition_hash, definition, input FROM workflow_runs WHERE id = ?";
    if (Status st = q.prepare(impl_->db.get(), sql.c_str()); !st.ok()) return st;
    q.bind(1, run_id);
    if (q.step() != SQLITE_ROW) return Status::not_found("no workflow run " + run_id);
    d.run = read_summary(q);
    d.definition_hash = q.col_text(kRunColumnCount);
    d.definition = q.col_text(kRunColumnCount + 1);
    d.input = parse_or_null(q.col_text(kRunColumnCount + 2));
  }
  if (Status st = read_step_records(impl_->db.get(), run_id, d.steps); !st.ok()) return st;
  return d;
}

// ---- Formatting ---------------------------------------------------------------------------------

namespace {
json::object summary_json(const RunSummary& r) {
  json::object o;
  o["id"] = r.id;
  o["client"] = r.client;  // "" = the local user (workflow.h "Clients")
  o["name"] = r.name;
  o["version"] = r.version;
  o["status"] = std::string(to_string(r.status));
  if (!r.owner.empty()) o["owner"] = r.owner;
  if (r.cancel_requested) o["cancel_requested"] = true;
  o["created_ms"] = r.created_ms;
  o["updated_ms"] = r.updated_ms;
  if (r.finished_ms) o["finished_ms"] = r.finished_ms;
  if (!r.error.empty()) o["error"] = r.error;
  return o;
}

std::string pad(std::string s, size_t w) {
  if (s.size() < w) s.append(w - s.size(), ' ');
  return s;
}
}  // namespace

std::string format_runs(const std::vector<RunSummary>& runs, bool as_json) {
  if (as_json) {
    json::array a;
    for (const auto& r : runs) a.push_back(summary_json(r));
    return json::serialize(a) + "\n";
  }
  std::string out = pad("ID", 22) + pad("NAME", 24) + pad("STATUS", 11) + "ERROR\n";
  for (const auto& r : runs)
    out += pad(r.id, 22) + pad(r.name, 24) + pad(std::string(to_string(r.status)), 11) +
           r.error.substr(0, 80) + "\n";
  return out;
}

std::string format_run(const RunDetail& d, bool as_json) {
  if (as_json) {
    json::object o = summary_json(d.run);
    o["definition_hash"] = d.definition_hash;
    o["input"] = d.input;
    json::array steps;
    for (const auto& s : d.steps) {
      json::object so;
      so["id"] = s.step_id;
      so["status"] = s.status;
      so["attempt"] = s.attempt;
      so["failures"] = s.failures;
      so["started_ms"] = s.started_ms;
      if (s.finished_ms) {
        so["finished_ms"] = s.finished_ms;
        so["duration_ms"] = s.finished_ms - s.started_ms;
      }
      if (s.wake_ms) so["wake_ms"] = s.wake_ms;
      so["output"] = s.output;
      if (!s.error.empty()) so["error"] = s.error;
      steps.push_back(std::move(so));
    }
    o["steps"] = std::move(steps);
    return json::serialize(o) + "\n";
  }
  std::string out = "run " + d.run.id + " (" + d.run.name + " v" + std::to_string(d.run.version) +
                    "): " + std::string(to_string(d.run.status));
  if (!d.run.error.empty()) out += ": " + d.run.error;
  out += "\n" + pad("STEP", 24) + pad("STATUS", 12) + pad("ATTEMPT", 9) + pad("MS", 9) + "ERROR\n";
  for (const auto& s : d.steps) {
    std::string ms = s.finished_ms ? std::to_string(s.finished_ms - s.started_ms) : "-";
    out += pad(s.step_id, 24) + pad(s.status, 12) + pad(std::to_string(s.attempt), 9) + pad(ms, 9) +
           s.error.substr(0, 120) + "\n";
  }
  return out;
}

}  // namespace switchboard::workflow
