// Taking a run over from a dead owner (issue 18): after a `kill -9` of the executor, a resume on
// the same host must not wait out the lease; a live owner keeps the run (with a refusal that says
// how long), and `run(..., wait)` waits for it.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "test_util.h"

namespace switchboard::workflow {
namespace {

using wftest::FakeExecutor;
using wftest::Gate;
using wftest::must_parse;
using wftest::query_int;
using wftest::query_text;
using wftest::TempDir;

// A PID that certainly names no process: a child that exited and was reaped. (The kernel hands
// PIDs out in increasing order and wraps only after pid_max, so it is not reused within a test.)
pid_t dead_pid() {
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  int status = 0;
  waitpid(pid, &status, 0);
  return pid;
}

// This process's start time, as owner ids carry it.
std::string own_start() {
  std::ifstream f("/proc/self/stat");
  std::string line;
  std::getline(f, line);
  std::istringstream in(line.substr(line.rfind(')') + 2));
  std::string field;
  for (int i = 3; i <= 22; ++i) in >> field;
  return field;
}

std::string owner_id(pid_t pid, const std::string& start, const std::string& random = "feed") {
  return local_owner_host() + ":" + std::to_string(pid) + ":" + start + ":" + random;
}

struct Harness {
  TempDir dir;
  ManualClock clock;
  std::shared_ptr<FakeSleeper> sleeper = std::make_shared<FakeSleeper>(clock);
  std::vector<std::string> lines;
  std::mutex lines_mu;
  std::function<bool(const std::string&)> owner_alive;  // empty = the real check

  std::unique_ptr<Engine> open(std::shared_ptr<StepExecutor> exec, std::string owner = "") {
    EngineOptions o;
    o.db_path = dir.file("wf.db");
    o.clock = &clock;
    o.sleeper = sleeper;
    o.executors.exec = std::move(exec);
    o.owner = std::move(owner);  // "" = local_owner_id(), as in production
    o.seed = 42;
    o.poll = Millis(5);
    o.owner_alive = owner_alive;
    o.on_transition = [this](const Transition& t) {
      std::lock_guard lock(lines_mu);
      lines.push_back(t.to_line());
    };
    auto e = Engine::open(std::move(o));
    EXPECT_TRUE(e.ok()) << e.status().to_string();
    return std::move(*e);
  }
  std::string db() const { return dir.file("wf.db"); }
  int64_t now_ms() const {
    return std::chrono::duration_cast<Millis>(clock.wall_now().time_since_epoch()).count();
  }
  // What a kill -9 in the middle of the run leaves: running, owned, its lease far from over.
  void claimed_by(const std::string& id, const std::string& owner, int64_t lease_left_ms) {
    query_text(db(), "UPDATE workflow_runs SET status = 'running', owner = '" + owner +
                         "', lease_expires_ms = " + std::to_string(now_ms() + lease_left_ms) +
                         " WHERE id = '" + id + "'");
  }
  bool printed(const std::string& text) {
    std::lock_guard lock(lines_mu);
    for (const auto& l : lines)
      if (l.find(text) != std::string::npos) return true;
    return false;
  }
};

std::shared_ptr<FakeExecutor> echo_executor() {
  return std::make_shared<FakeExecutor>([](const StepRequest& r, const Interrupt&) {
    return Result<json::value>(json::value(r.step_id));
  });
}

const char* kTwoSteps = R"(name: two
steps:
  - { id: a, kind: exec, input: { argv: [a] } }
  - { id: b, kind: exec, input: { argv: [b] } }
)";

TEST(OwnerTest, OwnerIdsNameThisProcess) {
  const std::string id = local_owner_id();
  EXPECT_EQ(
      id.rfind(local_owner_host() + ":" + std::to_string(getpid()) + ":" + own_start() + ":", 0),
      0u)
      << id;
  EXPECT_NE(local_owner_id(), id);  // the random part tells two engines of one process apart
  EXPECT_TRUE(local_owner_alive(id));
  EXPECT_TRUE(local_owner_alive(owner_id(getpid(), own_start(), "other")));
  // Gone: no such process, or the PID now belongs to a process started at another time.
  EXPECT_FALSE(local_owner_alive(owner_id(dead_pid(), own_start())));
  EXPECT_FALSE(local_owner_alive(owner_id(getpid(), own_start() + "7")));
  // Older ids without a start time go by the PID alone.
  const std::string host = local_owner_host().substr(0, local_owner_host().find('/'));
  EXPECT_TRUE(local_owner_alive(host + ":" + std::to_string(getpid()) + ":abcd"));
  EXPECT_FALSE(local_owner_alive(host + ":" + std::to_string(dead_pid()) + ":abcd"));
  // Nothing here can tell about another host, or an id of another form.
  EXPECT_TRUE(local_owner_alive("elsewhere/1:" + std::to_string(dead_pid()) + ":1:abcd"));
  EXPECT_TRUE(local_owner_alive("crash-child"));
  EXPECT_TRUE(local_owner_alive(""));
  EXPECT_TRUE(local_owner_alive(local_owner_host() + ":x:1:abcd"));
  // Killed but not yet reaped is gone too.
  pid_t zombie = fork();
  if (zombie == 0) _exit(0);
  // Until it has exited, left unreaped (WNOWAIT): a zombie. It exits at once, so this returns.
  siginfo_t info{};
  ASSERT_EQ(waitid(P_PID, static_cast<id_t>(zombie), &info, WEXITED | WNOWAIT), 0);
  EXPECT_FALSE(local_owner_alive(owner_id(zombie, "0")));
  int status = 0;
  waitpid(zombie, &status, 0);
}

TEST(OwnerTest, RunOfADeadLocalOwnerIsTakenOverAtOnce) {
  Harness h;
  auto ex = echo_executor();
  auto engine = h.open(ex);
  auto id = engine->create_run(must_parse(kTwoSteps), nullptr);
  ASSERT_TRUE(id.ok());
  // The killed executor had completed `a`: it is not executed again (invariant 8).
  query_text(h.db(),
             "INSERT INTO workflow_steps (run_id, step_id, seq, attempt, failures, status, output, "
             "error, started_ms, finished_ms, wake_ms) VALUES ('" +
                 *id + "', 'a', 1, 1, 0, 'completed', '\"a\"', '', 1, 2, 0)");
  const std::string dead = owner_id(dead_pid(), own_start());
  h.claimed_by(*id, dead, 3600 * 1000);

  auto r = engine->run(*id);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, RunStatus::kCompleted);
  EXPECT_EQ(ex->count("a"), 0);
  EXPECT_EQ(ex->count("b"), 1);
  EXPECT_TRUE(h.sleeper->waits().empty());  // no lease waited out
  const std::string why = "owner " + dead + " is no longer running on this host";
  EXPECT_EQ(query_text(h.db(), "SELECT detail FROM workflow_events WHERE type = 'run_taken_over'"),
            why);
  EXPECT_TRUE(h.printed("run " + *id + " taken over: " + why));
}

TEST(OwnerTest, RunOfALiveOwnerIsRefusedWithTheTimeLeft) {
  Harness h;
  auto ex = echo_executor();
  auto engine = h.open(ex);
  auto id = engine->create_run(must_parse(kTwoSteps), nullptr);
  ASSERT_TRUE(id.ok());
  // Another engine of this very process: the PID and start time are alive.
  const std::string live = owner_id(getpid(), own_start(), "other");
  h.claimed_by(*id, live, 90 * 1000);

  auto r = engine->run(*id);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(),
            "run " + *id + " is owned by " + live + " (process " + std::to_string(getpid()) +
                ", still running on this host); its lease ends in 90 s (resume with --wait to "
                "wait for it)");
  EXPECT_EQ(ex->calls().size(), 0u);
  EXPECT_EQ(query_text(h.db(), "SELECT owner FROM workflow_runs"), live);
  EXPECT_EQ(query_int(h.db(),
                      "SELECT count(*) FROM workflow_events WHERE type = "
                      "'run_taken_over'"),
            0);
  auto ids = engine->interrupted_runs();
  ASSERT_TRUE(ids.ok());
  EXPECT_TRUE(ids->empty());

  // An owner on another host is never judged by its PID: only its lease.
  const std::string remote = "elsewhere/7:" + std::to_string(dead_pid()) + ":1:abcd";
  h.claimed_by(*id, remote, 1500);
  r = engine->run(*id);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("(an executor on host elsewhere); its lease ends in 2 s"),
            std::string::npos)
      << r.status().message();
}

TEST(OwnerTest, ReusedPidIsTakenOver) {
  Harness h;
  auto ex = echo_executor();
  auto engine = h.open(ex);
  Definition def = must_parse(kTwoSteps);
  // Our own PID, but started at another time: the owner died and its PID went to us.
  auto id = engine->create_run(def, nullptr);
  const std::string reused = owner_id(getpid(), own_start() + "3");
  h.claimed_by(*id, reused, 3600 * 1000);
  auto r = engine->run(*id);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, RunStatus::kCompleted);
  EXPECT_EQ(query_text(h.db(), "SELECT detail FROM workflow_events WHERE type = 'run_taken_over'"),
            "owner " + reused + " is no longer running on this host");

  // The judgement is the EngineOptions hook's.
  std::vector<std::string> asked;
  Harness h2;
  h2.owner_alive = [&asked](const std::string& owner) {
    asked.push_back(owner);
    return owner != "recycled";
  };
  auto e2 = h2.open(echo_executor());
  auto id2 = e2->create_run(def, nullptr);
  h2.claimed_by(*id2, "recycled", 3600 * 1000);
  auto r2 = e2->run(*id2);
  ASSERT_TRUE(r2.ok()) << r2.status().to_string();
  EXPECT_EQ(r2->status, RunStatus::kCompleted);
  EXPECT_EQ(asked, std::vector<std::string>{"recycled"});
  auto id3 = e2->create_run(def, nullptr);
  h2.claimed_by(*id3, "alive", 3600 * 1000);
  EXPECT_FALSE(e2->run(*id3).ok());
}

TEST(OwnerTest, InterruptedRunsListRunsOfDeadLocalOwners) {
  Harness h;
  auto engine = h.open(echo_executor());
  Definition def = must_parse(kTwoSteps);
  auto dead_run = engine->create_run(def, nullptr);
  auto live_run = engine->create_run(def, nullptr);
  auto remote_run = engine->create_run(def, nullptr);
  h.claimed_by(*dead_run, owner_id(dead_pid(), own_start()), 3600 * 1000);
  h.claimed_by(*live_run, owner_id(getpid(), own_start(), "other"), 3600 * 1000);
  h.claimed_by(*remote_run, "elsewhere/7:" + std::to_string(dead_pid()) + ":1:abcd", 3600 * 1000);
  auto ids = engine->interrupted_runs();
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, std::vector<std::string>{*dead_run});
}

TEST(OwnerTest, WaitTakesTheRunWhenTheLeaseLapses) {
  Harness h;
  auto ex = echo_executor();
  auto engine = h.open(ex);
  auto id = engine->create_run(must_parse(kTwoSteps), nullptr);
  const std::string live = owner_id(getpid(), own_start(), "other");
  h.claimed_by(*id, live, 4500);
  const int64_t lease_end = h.now_ms() + 4500;

  Interrupt never(h.clock);
  auto r = engine->run(*id, nullptr, false, &never);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, RunStatus::kCompleted);
  EXPECT_GT(h.now_ms(), lease_end);  // not a moment before the lease lapsed
  EXPECT_LE(h.now_ms(), lease_end + 1000);
  for (Millis w : h.sleeper->waits()) EXPECT_LE(w, Millis(1000));  // it kept looking
  EXPECT_TRUE(h.printed("run " + *id + " waiting: owned by " + live));
  EXPECT_EQ(query_int(h.db(),
                      "SELECT count(*) FROM workflow_events WHERE type = "
                      "'run_taken_over'"),
            0);  // a lapsed lease is an ordinary claim

  // A wait given up claims nothing.
  auto id2 = engine->create_run(must_parse(kTwoSteps), nullptr);
  h.claimed_by(*id2, live, 60 * 1000);
  Interrupt stop(h.clock);
  stop.cancel(Status::cancelled("interrupted"));
  auto r2 = engine->run(*id2, nullptr, false, &stop);
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.status().code(), StatusCode::kCancelled);
  EXPECT_EQ(query_text(h.db(), "SELECT owner FROM workflow_runs WHERE id = '" + *id2 + "'"), live);
}

TEST(OwnerTest, WaitTakesTheRunOverWhenTheOwnerDies) {
  Harness h;
  std::atomic<bool> owner_dead{false};
  h.owner_alive = [&owner_dead](const std::string& owner) {
    return owner != "mortal" || !owner_dead.load();
  };
  // The owner dies during the third look; its lease had an hour to go.
  struct DyingSleeper : Sleeper {
    Harness* h;
    std::atomic<bool>* dead;
    int looks = 0;
    Status sleep_until(WallTime t, const Interrupt& i) override {
      if (++looks == 3) dead->store(true);
      return h->sleeper->sleep_until(t, i);
    }
  };
  auto dying = std::make_shared<DyingSleeper>();
  dying->h = &h;
  dying->dead = &owner_dead;
  EngineOptions o;
  o.db_path = h.db();
  o.clock = &h.clock;
  o.sleeper = dying;
  o.executors.exec = echo_executor();
  o.owner_alive = h.owner_alive;
  auto engine = Engine::open(o);
  ASSERT_TRUE(engine.ok());
  auto id = (*engine)->create_run(must_parse(kTwoSteps), nullptr);
  h.claimed_by(*id, "mortal", 3600 * 1000);
  Interrupt never(h.clock);
  auto r = (*engine)->run(*id, nullptr, false, &never);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, RunStatus::kCompleted);
  EXPECT_EQ(dying->looks, 3);
  EXPECT_EQ(query_int(h.db(),
                      "SELECT count(*) FROM workflow_events WHERE type = "
                      "'run_taken_over'"),
            1);
}

// The fencing holds when the judgement is wrong: an owner taken over while in fact alive can
// never write again, and its step's result is not the one recorded.
TEST(OwnerTest, AnOwnerWronglyJudgedGoneCannotWriteAgain) {
  Harness h;
  Gate gate;
  auto slow = std::make_shared<FakeExecutor>([&](const StepRequest&, const Interrupt&) {
    // Deaf to its interrupt, like a step that cannot be stopped.
    if (!gate.pass()) return Result<json::value>(Status::deadline_exceeded("gate never opened"));
    return Result<json::value>(json::value("from the first owner"));
  });
  auto first = h.open(slow, "first");
  h.owner_alive = [](const std::string&) { return false; };  // wrong on purpose
  auto fast = std::make_shared<FakeExecutor>([](const StepRequest&, const Interrupt&) {
    return Result<json::value>(json::value("from the second owner"));
  });
  auto second = h.open(fast, "second");
  auto id = first->create_run(must_parse(kTwoSteps), nullptr);
  auto running = std::async(std::launch::async, [&] { return first->run(*id); });
  ASSERT_TRUE(gate.arrived()) << "the first owner never started step a";

  auto r2 = second->run(*id);
  ASSERT_TRUE(r2.ok()) << r2.status().to_string();
  EXPECT_EQ(r2->status, RunStatus::kCompleted);
  gate.open();
  auto r1 = running.get();
  ASSERT_FALSE(r1.ok());
  EXPECT_EQ(r1.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(slow->count("b"), 0);
  EXPECT_EQ(query_text(h.db(), "SELECT output FROM workflow_steps WHERE step_id = 'a'"),
            "\"from the second owner\"");
  EXPECT_EQ(query_text(h.db(), "SELECT status FROM workflow_runs"), "completed");
  EXPECT_EQ(query_text(h.db(), "SELECT detail FROM workflow_events WHERE type = 'run_taken_over'"),
            "owner first is no longer running on this host");
}

}  // namespace
}  // namespace switchboard::workflow
