// Durable workflows (DESIGN.md "Workflows", invariant 8; issue 9).
//
// A workflow is a list of steps (exec | http | llm | parallel | sleep) read from YAML or JSON.
// `Engine` runs it on SQLite (the same file as the store, its own connection): every step
// transition commits the step's status, attempt and output together with an audit event in ONE
// transaction, so after a crash `resume` replays the recorded results and executes only what is
// not recorded as finished:
//   - a step recorded completed (or failed, or skipped) is never executed again;
//   - a step found `running` is executed again with the next attempt number (at-least-once); the
//     attempt is visible to the step as `${attempt}` and, for exec, as $SWITCHBOARD_ATTEMPT, so
//     the step can use it (with the run and step ids) as an idempotency key;
//   - a sleep or a retry backoff stores its wake-up wall time, so a restart waits the rest only.
// Control flow is a pure function of the recorded results: `goto` only jumps forward, so a
// replay always walks the same path and a step runs to completion at most once.
//
// Ownership: a run is claimed atomically (owner id plus a lease that a heartbeat extends); every
// transaction re-checks the owner, so an executor that lost its lease can never write again and
// two executors never run one workflow. An executor that restarts with the same owner id takes
// its runs back at once. Any other takes a run over before its lease ends only when the owner is
// certainly gone: the default owner id names a process ("<host>:<pid>:<start>:<random>", see
// `local_owner_alive`), so after a `kill -9` a resume on the same host does not wait out the
// lease (issue 18). An owner that may be alive (running, on another host, an id of unknown form)
// keeps the run until its lease lapses; `run()` can wait for that (`wait`).
//
// Cancellation and timeouts share one mechanism (`Interrupt`): a step's interrupt fires at its
// deadline or when the run is cancelled (`request_cancel`, polled from the database by the
// executing process); an exec step's whole process group is then killed.
//
// Step executors sit behind `StepExecutor` so that tests inject fakes and so that this library
// stays free of HTTP: `http` and `llm` steps go through `HttpCaller` / `LlmCaller`, implemented
// by the CLI and gateway. Time comes from an injected `Clock`, waits from a `Sleeper`
// (`FakeSleeper` advances a ManualClock instead of sleeping).
//
// Clients (DESIGN.md invariant 11): every run belongs to the client that created it, a string
// stored with the run and handed to every step (`StepRequest::client`, `HttpCall::client`, the
// `LlmCaller`, `FeedbackCall::client`) so that callers apply that client's limits:
//   ""            the local user (the `switchboard workflow` CLI): no limits but the bounds below;
//   "key:<name>"  a run submitted over HTTP with the gateway key named <name>;
//   "anonymous"   a run submitted over HTTP to a gateway that has no gateway keys.
// Any other value is opaque here, compared for equality only. The library stores, filters
// (`list_runs`) and forwards the client; the policy lives in the callers. Definitions come from
// clients too, so they are bounded: no YAML aliases or anchors (an alias expands exponentially:
// "billion laughs"), nesting at most kMaxDefinitionDepth, and a parallel step never runs more than
// `EngineOptions::max_parallel` children at once.
//
// Thread-safety: `Engine` methods may be called from any thread; one `Engine` may run several
// runs at once. Executors and callers must be thread-safe (parallel children call them from
// several threads). Definitions are immutable values.
#pragma once

#include <atomic>
#include <boost/json/value.hpp>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/status.h"

namespace switchboard::workflow {

namespace json = boost::json;

// ---- Definitions ------------------------------------------------------------------------------

enum class StepKind { kExec, kHttp, kLlm, kParallel, kSleep };
std::string_view to_string(StepKind k);

enum class FailureAction { kFail, kContinue, kGoto };

// `feedback:` on a top-level step: once that step has finished (completed, or failed after its
// last attempt), the caller's verdict on an EARLIER llm step's completion is sent to the gateway
// (POST /v1/feedback with that step's `output.request_id`), closing the learned router's loop.
//   feedback: { step: write_code, success: "${steps.tests.status} == completed", score: 0.8 }
// `success` is a bool or a condition (the syntax of `when`); absent, it is "this step
// completed". `score` is a number in [0, 1] or a template rendering to one; absent, none. The
// step's own record is visible to both (`${steps.<this step>.output...}`).
// Delivery is at most once and advisory: it happens after the step's final state is committed,
// so a crash in between loses the verdict (the gateway forgets request ids across restarts
// anyway), and a failed delivery (unknown id, 409 duplicate, gateway down) never changes the
// step's outcome; it is recorded as a `feedback_failed` audit event and transition instead.
struct FeedbackDef {
  std::string step;     // an earlier top-level llm step
  json::value success;  // null (this step completed) | bool | condition string
  json::value score;    // null | number | template string
};

struct RetryPolicy {
  int max_attempts = 1;  // 1 = no retry
  int64_t initial_ms = 1000;
  double multiplier = 2.0;
  int64_t max_ms = 60000;
  double jitter = 0.0;  // fraction of the backoff added on top, uniformly in [0, jitter]
  // The wait before attempt `failures + 1` after `failures` failed attempts, given a uniform
  // random number u in [0, 1): min(max_ms, initial_ms * multiplier^(failures-1)) * (1 + jitter*u).
  Millis backoff(int failures, double u) const;
};

struct StepDef {
  std::string id;
  StepKind kind = StepKind::kExec;
  json::value input;  // templates rendered at each attempt
  RetryPolicy retry;
  int64_t timeout_ms = 0;  // 0 = none
  std::string when;        // "" = always
  FailureAction on_failure = FailureAction::kFail;
  std::string goto_step;  // for kGoto
  // kParallel: exactly one of for_each (+ child) or branches.
  std::string for_each;
  std::shared_ptr<const StepDef> child;
  std::vector<StepDef> branches;
  int max_concurrency = 4;
  std::optional<FeedbackDef> feedback;  // top-level steps only
};

struct InputField {
  std::string name;
  std::string type;  // string | number | integer | boolean | array | object | "" (any)
  bool required = false;
};

// A run's budget (DESIGN.md `budget:`; 0 = no limit): step attempts started (each parallel
// child's too), tokens and spend of its llm steps (usage.total_tokens and the gateway's
// x-switchboard-cost-usd), and wall time since the run was created. Counted from the durable step
// records, so a resume continues the count. Crossing a limit fails the run ("budget exhausted:
// max_steps 2 reached", a `budget_exhausted` audit event) and no further step starts; the time
// limit is a deadline that interrupts the step that is running.
struct RunBudget {
  int64_t max_steps = 0;
  int64_t max_tokens = 0;
  double max_cost_usd = 0;
  int64_t max_time_ms = 0;
  // Each limit the tighter of the two (a 0 is no limit, so the other one applies).
  RunBudget tightest(const RunBudget& other) const;
};

struct Definition {
  std::string name;
  int64_t version = 1;
  RunBudget budget;
  std::vector<InputField> input_schema;
  std::vector<StepDef> steps;
  std::string body;  // the source text, stored with each run
  std::string hash;  // "sha256:<hex>" of body
  const StepDef* find_step(const std::string& id) const;
};

// Deepest nesting of mappings and lists a definition may have (a parse of deeper text is
// refused before any node is built; the recursive walks over the definition stay shallow).
inline constexpr int kMaxDefinitionDepth = 64;

struct DefinitionLoad {
  std::optional<Definition> definition;
  std::vector<ConfigError> errors;  // "file:line:col: steps[2].retry.max_ms: must be >= 0"
  bool ok() const { return errors.empty() && definition.has_value(); }
};

// Parses and validates a definition (YAML or JSON), reporting every error it finds. YAML
// aliases (*name) and anchors (&name) are refused with their line and column, as is nesting
// deeper than kMaxDefinitionDepth; both checks run on the parser's events, before any node is
// built, so a hostile text costs time linear in its size.
DefinitionLoad parse_definition(const std::string& text, const std::string& source_name);
DefinitionLoad load_definition_file(const std::string& path);

// Checks `input` against the definition's schema (required keys and types); every problem.
Status validate_input(const Definition& def, const json::value& input);

// ---- Templates ----------------------------------------------------------------------------------

// What `${...}` can refer to. `step` returns the recorded view of a finished step.
struct StepView {
  std::string status;  // completed | failed | skipped | cancelled | running | ...
  json::value output;
  std::string error;
  int attempt = 0;
};
struct TemplateScope {
  const json::value* input = nullptr;
  std::function<std::optional<StepView>(const std::string& id)> step;
  const json::value* item = nullptr;  // inside a for_each child
  int attempt = 0;
  std::string run_id;
};

// Renders every string in `v`: a string that is exactly one `${expr}` becomes the referenced
// value with its JSON type; other strings get each reference substituted as text (strings raw,
// other values as JSON). `$${` is a literal `${`. Unknown references are errors.
Result<json::value> render(const json::value& v, const TemplateScope& scope);
// `when`: `A == B`, `A != B` or `A` (truthiness: null, false, 0, "", [] and {} are false), where
// A and B are templates or literals ("str", 'str', numbers, true, false, null, bare words).
// Missing references are null here, not errors.
Result<bool> evaluate_condition(const std::string& cond, const TemplateScope& scope);

// ---- Interruption and time ----------------------------------------------------------------------

// A cancellation signal with an optional deadline, chained to a parent (a step's interrupt to its
// run's). `check()` is ok until the interrupt (or a parent) is cancelled or its deadline passes.
// Thread-safety: all methods from any thread; the parent must outlive the child.
class Interrupt {
 public:
  explicit Interrupt(const Clock& clock, const Interrupt* parent = nullptr,
                     MonoTime deadline = MonoTime::max(), int64_t timeout_ms = 0);
  // The first reason wins.
  void cancel(Status reason);
  Status check() const;
  bool interrupted() const { return !check().ok(); }
  const Clock& clock() const { return clock_; }

 private:
  const Clock& clock_;
  const Interrupt* parent_;
  MonoTime deadline_;
  int64_t timeout_ms_;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mu_;
  Status reason_;
};

// Waits until a wall time unless interrupted. Returns ok when the time came, else the
// interrupt's status. Thread-safety: from any thread.
class Sleeper {
 public:
  virtual ~Sleeper() = default;
  virtual Status sleep_until(WallTime t, const Interrupt& interrupt) = 0;
};

// Real waits in short slices (so an interrupt is seen within `slice`).
class RealSleeper final : public Sleeper {
 public:
  explicit RealSleeper(const Clock& clock, Millis slice = Millis(20))
      : clock_(clock), slice_(slice) {}
  Status sleep_until(WallTime t, const Interrupt& interrupt) override;

 private:
  const Clock& clock_;
  Millis slice_;
};

// For tests: records each requested wait and advances the ManualClock instead of sleeping.
class FakeSleeper final : public Sleeper {
 public:
  explicit FakeSleeper(ManualClock& clock) : clock_(clock) {}
  Status sleep_until(WallTime t, const Interrupt& interrupt) override;
  std::vector<Millis> waits() const;

 private:
  ManualClock& clock_;
  mutable std::mutex mu_;
  std::vector<Millis> waits_;
};

// ---- Step executors ----------------------------------------------------------------------------

struct StepRequest {
  std::string run_id;
  std::string client;   // the run's client (see "Clients" above), for every step and child
  std::string step_id;  // "reviews[3]" for a parallel child
  StepKind kind = StepKind::kExec;
  int attempt = 1;
  json::value input;  // rendered
  int64_t timeout_ms = 0;
};

// Runs one attempt of one step. The output is stored as the step's output; a non-ok Status
// fails the attempt (retried per the step's policy). Must return promptly once `interrupt`
// fires, with its status. Thread-safety: called concurrently from several threads.
class StepExecutor {
 public:
  virtual ~StepExecutor() = default;
  virtual Result<json::value> execute(const StepRequest& request, const Interrupt& interrupt) = 0;
};

// exec: input {argv: [...], env: {...}, cwd: "...", max_output_bytes: N}. Fork/exec in its own
// process group (killed with SIGKILL on timeout, cancellation, or when the main process exits,
// stragglers included); the child also dies if this process dies. Output {exit_code, stdout,
// stderr[, truncated]}; a non-zero exit fails the attempt.
// The child never inherits this process's environment, which holds the gateway's secrets
// (provider keys, admin key; invariants 9 and 11): its environment is exactly PATH, HOME and
// LANG copied from this process when set (PATH defaults to /usr/bin:/bin), then the step's
// `env`, then SWITCHBOARD_RUN_ID, SWITCHBOARD_STEP_ID and SWITCHBOARD_ATTEMPT. argv[0] without a
// slash is looked up in that final PATH.
std::shared_ptr<StepExecutor> make_exec_executor();

struct HttpCall {
  std::string client;  // the run's client (see "Clients" above): the caller's policy follows it
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  int64_t timeout_ms = 0;  // 0 = none
};
struct HttpReply {
  int status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // as received
  std::string_view header(std::string_view name) const;      // case-insensitive; "" if absent
};
// A blocking HTTP client (implemented outside this library).
class HttpCaller {
 public:
  virtual ~HttpCaller() = default;
  virtual Result<HttpReply> call(const HttpCall& call, const Interrupt& interrupt) = 0;
};

// http: input {method, url, headers: {...}, body (string or JSON), ok_status: [..]}. Output
// {status, body (parsed JSON when it parses, else text)}. Status >= 400 fails the attempt.
std::shared_ptr<StepExecutor> make_http_executor(std::shared_ptr<HttpCaller> caller);

// An OpenAI-style chat completion through the gateway: `client` the run's client (see "Clients"
// above: whose routes, limits and budget apply), `body` the request JSON, `headers` the routing
// hints (x-switchboard-complexity, x-switchboard-category).
class LlmCaller {
 public:
  virtual ~LlmCaller() = default;
  virtual Result<HttpReply> complete(
      const std::string& client, const std::string& body,
      const std::vector<std::pair<std::string, std::string>>& headers, int64_t timeout_ms,
      const Interrupt& interrupt) = 0;
};
// llm: input {route | model, messages, complexity, category, max_tokens, temperature}. Output
// {content, model, finish_reason, usage, cost_usd, request_id} (cost_usd: the gateway's
// x-switchboard-cost-usd, when it sent one; request_id: the gateway's
// x-switchboard-request-id, what a later step's `feedback` reports on; absent when the caller's
// answer had none).
std::shared_ptr<StepExecutor> make_llm_executor(std::shared_ptr<LlmCaller> caller);

// The caller's verdict on one gateway request (DESIGN.md `POST /v1/feedback`).
struct FeedbackCall {
  std::string client;  // the run's client (see "Clients" above), set by the engine
  std::string request_id;
  bool success = false;
  std::optional<double> score;  // in [0, 1]
};
// Delivers verdicts to the gateway that served the request. Thread-safety: from any thread.
class FeedbackSender {
 public:
  virtual ~FeedbackSender() = default;
  virtual Status send(const FeedbackCall& call, const Interrupt& interrupt) = 0;
};

struct Executors {
  std::shared_ptr<StepExecutor> exec;  // nullptr = make_exec_executor()
  std::shared_ptr<StepExecutor> http;  // nullptr = http steps fail ("no HTTP client")
  std::shared_ptr<StepExecutor> llm;   // nullptr = llm steps fail
  // nullptr = `feedback:` fields are recorded as undeliverable (feedback_failed events).
  std::shared_ptr<FeedbackSender> feedback;
};

// ---- Runs ---------------------------------------------------------------------------------------

enum class RunStatus { kPending, kRunning, kCompleted, kFailed, kCancelled };
std::string_view to_string(RunStatus s);
std::optional<RunStatus> parse_run_status(std::string_view s);

// One line of progress (the CLI prints these).
struct Transition {
  std::string run_id;
  std::string step_id;  // "" for run-level transitions
  std::string status;   // started | completed | failed | retrying | skipped | cancelled | ...
  int attempt = 0;
  int64_t duration_ms = 0;
  std::string detail;
  std::string to_line() const;  // "step build completed (attempt 1, 12 ms)"
};

struct StepRecord {
  std::string step_id;
  int64_t seq = 0;  // order of first start
  int attempt = 0;
  int failures = 0;
  std::string status;
  json::value output;
  std::string error;
  int64_t started_ms = 0;
  int64_t finished_ms = 0;
  int64_t wake_ms = 0;  // sleep / retry wake-up wall time, 0 = none
};

struct RunSummary {
  std::string id;
  std::string client;  // who created the run (see "Clients" above)
  std::string name;
  int64_t version = 0;
  RunStatus status = RunStatus::kPending;
  std::string owner;
  bool cancel_requested = false;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  int64_t finished_ms = 0;
  std::string error;
};

struct RunDetail {
  RunSummary run;
  std::string definition_hash;
  std::string definition;
  json::value input;
  std::vector<StepRecord> steps;  // in start order
};

struct RunResult {
  RunStatus status = RunStatus::kFailed;
  std::string error;
};

// Owner ids. The default one (`EngineOptions::owner` empty) is "<host>:<pid>:<start>:<random>":
// <host> is the host name followed by "/<inode of this process's PID namespace>" (two containers
// that share a host name and a database file do not see each other's PIDs), <start> this
// process's start time (field 22 of /proc/self/stat, clock ticks after boot; 0 if unknown), so
// that a PID reused by another process is not mistaken for the owner. Ids of the older form
// "<host>:<pid>:<random>" are understood too.
std::string local_owner_id();
// The "<host>" part of this process's owner ids.
const std::string& local_owner_host();
// The default `EngineOptions::owner_alive`: false only when `owner` is certainly gone, i.e. it is
// an owner id of the form above naming this host, and its PID has no process (kill(pid, 0) fails
// with ESRCH), or a zombie, or a process started at another time than the id says (PID reuse).
// True for everything else: an owner on another host, or an id of another form ("crash-child"),
// may be alive, and only its lease can tell.
bool local_owner_alive(const std::string& owner);

struct EngineOptions {
  // A SQLite file, or a postgresql:// URL: runs in a PostgreSQL database that several gateways
  // share (each claims runs with SKIP LOCKED and takes over those whose lease lapsed).
  std::string db_path;
  const Clock* clock = nullptr;      // nullptr = SystemClock
  std::shared_ptr<Sleeper> sleeper;  // nullptr = RealSleeper on clock
  Executors executors;
  std::string owner;  // "" = local_owner_id()
  // Whether another executor's owner id may still be alive (empty = local_owner_alive). A run
  // whose owner this says is gone is taken over at once, without waiting for its lease (a
  // `run_taken_over` audit event and a "taken over" transition record it); it is also listed by
  // `interrupted_runs()`. A wrong "gone" costs no double write: the taken-over executor fails
  // its next fenced transaction and its heartbeat stops it.
  std::function<bool(const std::string& owner)> owner_alive;
  Millis lease{30000};
  Millis heartbeat{5000};  // lease renewal period, on `clock` (looked at every `poll`)
  Millis poll{100};        // cancel-request polling period (real time)
  SyncMode synchronous = SyncMode::kNormal;
  int64_t busy_timeout_ms = 5000;
  uint64_t seed = 0;  // jitter randomness; 0 = random
  // Called for every transition, serialized (never two at once), from executing threads.
  std::function<void(const Transition&)> on_transition;
  // The most children of one parallel step that run at once, whatever its max_concurrency says
  // (DESIGN.md workflows.max_parallel): a definition sent by a client must not make this process
  // start 100000 threads. The effective concurrency is max(1, min(max_concurrency, max_parallel)).
  int max_parallel = 64;
  // Every run's ceiling (DESIGN.md workflows.budget): a definition's budget may be tighter, never
  // looser.
  RunBudget budget;
  // Starts the engine's threads (parallel workers, a run's heartbeat); empty = std::thread. A
  // seam for tests, which make it throw std::system_error as std::thread does when the process
  // is out of threads (EAGAIN). The engine turns that into a ResourceExhausted error (a failed
  // parallel step, or `run()` refused with the run handed back), never a crash.
  std::function<std::thread(std::function<void()>)> start_thread;
};

// Whether `db_path` names a shared (PostgreSQL) database rather than a SQLite file.
bool is_shared_database(const std::string& db_path);

class Engine {
 public:
  // Opens (creating and migrating when needed) the database.
  static Result<std::unique_ptr<Engine>> open(EngineOptions options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates the input and records a new pending run of `client` (see "Clients" above; "" =
  // the local user); returns its id. Executes nothing.
  // With `claim` the run is born claimed by this engine (its lease running): no other executor
  // sharing the database takes it before this one's `run()` does (it must follow at once, or
  // the run waits for its lease to lapse).
  Result<std::string> create_run(const Definition& def, const json::value& input,
                                 const std::string& client = "", bool claim = false);
  // Takes up to `limit` runs that nobody executes (pending and unowned, or lease lapsed), oldest
  // first, in one transaction that skips runs another executor is taking at that moment; they
  // are this engine's now, for a lease: run each with `run()` at once, or hand it back with
  // `release()`. How gateways sharing a PostgreSQL database spread runs among themselves.
  // Empty after `shutdown()`.
  Result<std::vector<std::string>> claim_next(int limit);
  // Hands back a run this engine claimed and will not run (owner cleared, lease expired).
  void release(const std::string& run_id, const std::string& why);
  // Claims the run and executes it to the end (completed, failed or cancelled). `def`, when
  // given, must have the stored definition's hash unless `force` (then it replaces it); when
  // null the stored definition is used. A run already finished is not executed (its final
  // status is returned). A run whose owner is gone (`EngineOptions::owner_alive`) is taken over
  // at once. A run that another owner may still hold (its lease running) is refused
  // (FailedPrecondition: "run <id> is owned by <owner> (<who>); its lease ends in <n> s (resume
  // with --wait to wait for it)") when `wait` is null; otherwise `run()` waits, re-checking at
  // least every second (through the Sleeper), until the owner is found gone, hands the run back or
  // lets its lease lapse (then it takes the run), or finishes it (then it returns that final
  // status); `wait` firing or `shutdown()` ends the wait with that status, nothing claimed. A
  // live owner renews its lease, so the wait lasts as long as that owner keeps running. A
  // "waiting" transition says for whom it waits.
  // After `shutdown()` it refuses (Unavailable) without claiming. When no thread can be started
  // for the run's heartbeat it hands the claim back (the run stays resumable) and returns
  // ResourceExhausted.
  Result<RunResult> run(const std::string& run_id, const Definition* def = nullptr,
                        bool force = false, const Interrupt* wait = nullptr);
  // Stops this executor for a process shutdown, NOT a cancellation: every run executing in
  // `run()` is interrupted (exec children killed, nothing more written for it), its `run()`
  // returns Unavailable, and its claim is released (owner cleared, lease expired, status left
  // `running`) so that the next executor resumes it at once; a step that was running is
  // retried there, exactly as after a crash. Later `run()` calls are refused. Returns at once;
  // the caller joins the threads that were inside `run()`.
  void shutdown();
  // Marks the run cancel-requested; an unowned (or lease-expired) run is cancelled at once.
  Status request_cancel(const std::string& run_id);
  // Ids of runs left pending or running that nobody executes: unowned, lease expired, or owner
  // gone (`EngineOptions::owner_alive`). The gateway runs them at start and at every scan.
  Result<std::vector<std::string>> interrupted_runs();

  // The newest `limit` runs; only those of `*client` when given (an empty string is the local
  // user's runs, not all runs).
  Result<std::vector<RunSummary>> list_runs(int limit = 100, const std::string* client = nullptr);
  Result<RunDetail> get_run(const std::string& run_id);
  const std::string& owner() const;

  struct Impl;  // opaque; public only so that the implementation's helpers can name it

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// `workflow list` / `workflow show` output: aligned text, or JSON when `as_json` (the JSON
// names each run's "client"; the text, for the local user, does not).
std::string format_runs(const std::vector<RunSummary>& runs, bool as_json);
std::string format_run(const RunDetail& run, bool as_json);

}  // namespace switchboard::workflow
