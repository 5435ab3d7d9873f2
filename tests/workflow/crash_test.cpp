// Crash test (issue 9): a child process runs a 10-step workflow whose exec steps append a line
// to a file; it is killed with SIGKILL at random points and resumed. In the end every step's line
// appears exactly once, except steps found running at a kill, which may appear once more per
// such kill; and the run is completed.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "test_util.h"

namespace switchboard::workflow {
namespace {

using wftest::query_text;
using wftest::TempDir;
using wftest::wait_child;

pid_t spawn_child(const std::string& db, const std::string& run_id) {
  pid_t pid = fork();
  if (pid == 0) {
    execl(WORKFLOW_CRASH_CHILD, WORKFLOW_CRASH_CHILD, db.c_str(), run_id.c_str(), nullptr);
    _exit(127);
  }
  return pid;
}

TEST(CrashTest, KilledAtRandomPointsAndResumedRunsEachStepOnce) {
  TempDir dir;
  std::string db = dir.file("wf.db");
  std::string out = dir.file("lines.txt");
  std::string yaml = "name: crash\nsteps:\n";
  for (int i = 0; i < 10; ++i) {
    // The line is written first, then the step lingers: a kill in that window leaves the step
    // running with its effect done (the at-least-once case).
    yaml += "  - id: s" + std::to_string(i) +
            "\n    kind: exec\n    input: { argv: [sh, -c, \"echo s" + std::to_string(i) + " >> " +
            out + "; sleep 0.02\"] }\n";
  }
  std::string run_id;
  {
    auto load = parse_definition(yaml, "crash.yaml");
    ASSERT_TRUE(load.ok());
    EngineOptions o;
    o.db_path = db;
    auto engine = Engine::open(o);
    ASSERT_TRUE(engine.ok());
    auto id = (*engine)->create_run(*load.definition, nullptr);
    ASSERT_TRUE(id.ok());
    run_id = *id;
  }

  std::mt19937 rng(std::random_device{}());
  std::map<std::string, int> found_running;
  int kills = 0;
  bool finished_alone = false;
  while (kills < 30) {
    pid_t pid = spawn_child(db, run_id);
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(Millis(std::uniform_int_distribution<int>(2, 40)(rng)));
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
      finished_alone = true;
      break;
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    if (WIFEXITED(status)) {  // it completed just before the signal
      ASSERT_EQ(WEXITSTATUS(status), 0);
      finished_alone = true;
      break;
    }
    ++kills;
    std::string running =
        query_text(db, "SELECT group_concat(step_id) FROM workflow_steps WHERE status = 'running'");
    if (!running.empty()) ++found_running[running];
  }
  if (!finished_alone) {
    pid_t pid = spawn_child(db, run_id);
    auto status = wait_child(pid, Millis(60000));
    ASSERT_TRUE(status.has_value()) << "the last resume did not finish within a minute";
    ASSERT_TRUE(WIFEXITED(*status)) << *status;
    ASSERT_EQ(WEXITSTATUS(*status), 0);
  }
  EXPECT_GE(kills, 5) << "the workflow finished too fast to be killed";
  EXPECT_EQ(query_text(db, "SELECT status FROM workflow_runs WHERE id = '" + run_id + "'"),
            "completed");

  std::map<std::string, int> counts;
  std::ifstream f(out);
  std::string line;
  while (std::getline(f, line)) ++counts[line];
  for (int i = 0; i < 10; ++i) {
    std::string id = "s" + std::to_string(i);
    int allowed = 1 + found_running[id];
    EXPECT_GE(counts[id], 1) << id;
    EXPECT_LE(counts[id], allowed) << id << " found running at " << found_running[id] << " kills";
    // Every attempt past the first was a resume of that step: attempt - 1 <= kills in it.
    int attempt = std::atoi(
        query_text(db, "SELECT attempt FROM workflow_steps WHERE step_id = '" + id + "'").c_str());
    EXPECT_LE(attempt, allowed) << id;
  }
  EXPECT_EQ(counts.size(), 10u);
}

}  // namespace
}  // namespace switchboard::workflow
