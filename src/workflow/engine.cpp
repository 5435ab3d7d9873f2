// The Engine (workflow.h): owner ids, opening, creating runs, claiming a run (waiting for another
// owner's lease when asked) and the heartbeat that renews the claim's lease, shutdown and cancel.
// A claimed run is executed by RunExecution (run_execution.cpp); every SQL statement is in the
// run store (run_store_sqlite.cpp, run_store_postgres.cpp).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string_view>
#include <thread>
#include <vector>

#include "workflow/engine_impl.h"
#include "workflow/run_execution.h"
#include "workflow/run_store.h"
#include "workflow/workflow.h"

namespace switchboard::workflow {

using detail::RunExecution;
using detail::RunStore;

namespace {

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
  auto store = RunStore::open(impl->opt.db_path, impl->opt.synchronous, impl->opt.busy_timeout_ms,
                              *impl->clock, impl->owner);
  if (!store.ok()) return store.status();
  impl->store = std::move(*store);
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Result<std::string> Engine::create_run(const Definition& def, const json::value& input,
                                       const std::string& client, bool claim) {
  if (Status st = validate_input(def, input); !st.ok()) return st;
  std::string id = "wf_" + random_hex(8);
  if (Status st =
          impl_->store->create_run(id, def, input, client, claim ? impl_->opt.lease : Millis(0));
      !st.ok())
    return st;
  return id;
}

Result<std::vector<std::string>> Engine::claim_next(int limit) {
  {
    std::lock_guard lock(impl_->active_mu);
    if (impl_->shutting_down) return std::vector<std::string>{};
  }
  return impl_->store->claim_next(limit, impl_->opt.lease);
}

void Engine::release(const std::string& run_id, const std::string& why) {
  impl_->store->release_claim(run_id, why);
}

Result<RunResult> Engine::run(const std::string& run_id, const Definition* given, bool force,
                              const Interrupt* wait) {
  Impl& im = *impl_;
  {
    std::lock_guard lock(im.active_mu);
    if (im.shutting_down) return Status::unavailable("workflow executor is shutting down");
  }
  detail::Claim claimed;

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

  // Claim: one transaction reads the run and takes it only when nobody live owns it.
  const detail::OwnerAlive owner_alive = [&im](const std::string& o) { return im.owner_alive(o); };
  for (;;) {
    auto claim = im.store->claim(run_id, given, force, im.opt.lease, owner_alive);
    if (!claim.ok()) return claim.status();
    if (claim->finished) return *claim->finished;
    if (claim->holder.empty()) {
      claimed = std::move(*claim);
      break;
    }
    const std::string& holder = claim->holder;
    const int64_t lease_left_ms = claim->lease_left_ms;

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
  if (!claimed.taken_over.empty())
    im.emit(Transition{run_id, "", "taken over", 0, 0, claimed.taken_over});

  // From here on the run is ours: any failure to parse it marks it failed, never leaves it
  // running.
  auto release_failed = [&](const std::string& why) -> Result<RunResult> {
    if (Status st = im.store->fail_claimed(run_id, why); !st.ok()) return st;
    return RunResult{RunStatus::kFailed, why};
  };
  DefinitionLoad load = parse_definition(claimed.definition, "run " + run_id);
  if (!load.ok())
    return release_failed("stored definition is invalid: " + load.errors.front().to_string());
  boost::system::error_code ec;
  json::value input = json::parse(claimed.input, ec);
  if (ec) return release_failed("stored input is not JSON");

  const RunBudget budget = load.definition->budget.tightest(im.opt.budget);
  RunExecution exec(im, run_id, claimed.client, std::move(*load.definition), std::move(input));
  exec.load_records(std::move(claimed.steps));
  exec.start_budget(budget, claimed.created_ms);
  if (claimed.cancel_requested) exec.run_interrupt().cancel(Status::cancelled("run cancelled"));
  // Registered before executing anything; a shutdown that came after the claim stops it here.
  {
    std::lock_guard lock(im.active_mu);
    im.active.insert(&exec.run_interrupt());
    if (im.shutting_down)
      exec.run_interrupt().cancel(Status::unavailable("executor shutting down"));
  }
  im.emit(Transition{run_id, "", claimed.status == "pending" ? "running" : "resumed", 0, 0,
                     exec.recorded() ? std::to_string(exec.recorded()) + " steps recorded" : ""});

  // Heartbeat: extends the lease and polls for a cancel request, until the run ends. It looks
  // every `poll` of real time; the lease is renewed once `heartbeat` has passed on the engine's
  // clock, which also stamps the lease's expiry, so simulated time drives renewals too.
  std::mutex hb_mu;
  std::condition_variable hb_cv;
  bool hb_stop = false;
  // The lease was stamped at the claim: count from now, not from whenever the thread first runs
  // (a late start would push the first renewal back by that delay).
  MonoTime last_renew = im.clock->now();
  // The database may not answer for a while (a restart, a partition). The run goes on meanwhile,
  // but not past the lease: once half of it has passed without a renewal, another executor may
  // soon take the run, so this one stops (as at a shutdown: the step is retried by whoever
  // claims the run next) rather than risk a step running twice.
  MonoTime last_renewed = last_renew;
  auto beat = [&] {
    std::unique_lock lk(hb_mu);
    while (!hb_cv.wait_for(lk, im.opt.poll, [&] { return hb_stop; })) {
      lk.unlock();
      const MonoTime now = im.clock->now();
      const bool renew = now - last_renew >= im.opt.heartbeat;
      Status st = im.store->heartbeat(run_id, renew, im.opt.lease);
      if (st.code() == StatusCode::kUnavailable) {
        if (now - last_renewed >= im.opt.lease / 2)
          exec.run_interrupt().cancel(Status::unavailable(
              "lease of run " + run_id + " could not be renewed: " + st.message()));
      } else if (!st.ok()) {
        exec.run_interrupt().cancel(st);
      } else if (renew) {
        last_renewed = now;
      }
      if (renew) last_renew = now;
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
    im.store->release_claim(run_id, why);
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
    im.store->release_claim(run_id, "shutting down");
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
  return impl_->store->request_cancel(run_id);
}

Result<std::vector<std::string>> Engine::interrupted_runs() {
  return impl_->store->interrupted_runs(
      [this](const std::string& owner) { return impl_->owner_alive(owner); });
}

Result<std::vector<RunSummary>> Engine::list_runs(int limit, const std::string* client) {
  return impl_->store->list_runs(limit, client);
}

Result<RunDetail> Engine::get_run(const std::string& run_id) {
  return impl_->store->get_run(run_id);
}

}  // namespace switchboard::workflow
