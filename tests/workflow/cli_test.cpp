// `switchboard workflow run` killed with SIGKILL, then `switchboard workflow resume` (issue 18):
// the resume takes the run over at once instead of waiting out the dead process's lease, and a
// live owner is refused (exit 2, time left) unless --wait. Runs the real binary.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace switchboard::workflow {
namespace {

using wftest::query_int;
using wftest::query_text;
using wftest::TempDir;

// The binary as a child process, stdout and stderr on one pipe, in its own directory (so that no
// switchboard.yaml of the caller's is read).
class Cli {
 public:
  Cli(const std::string& cwd, std::vector<std::string> args) {
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 1);
      dup2(fds[1], 2);
      close(fds[0]);
      close(fds[1]);
      if (chdir(cwd.c_str()) != 0) _exit(126);
      std::vector<char*> argv{const_cast<char*>(SWITCHBOARD_BINARY)};
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(SWITCHBOARD_BINARY, argv.data());
      _exit(127);
    }
    close(fds[1]);
    out_ = fds[0];
  }
  ~Cli() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      wait();
    }
    if (out_ >= 0) close(out_);
  }

  // Reads output until it holds `text` (true) or the time is up or the output ends (false).
  bool read_until(const std::string& text, Millis timeout = Millis(15000)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (output_.find(text) == std::string::npos) {
      auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      ssize_t n = read(out_, buf, sizeof buf);
      if (n <= 0) return output_.find(text) != std::string::npos;
      output_.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  // The exit code once it ends (everything it printed is then in output()); -signal if killed.
  // A process that has not ended a minute on is killed, and the test fails.
  int wait() {
    read_until("\x01 never printed", Millis(60000));
    auto status = wftest::wait_child(pid_, Millis(5000));
    reaped_ = true;
    if (!status) {
      ADD_FAILURE() << "switchboard did not exit; killed. Its output:\n" << output_;
      return -SIGKILL;
    }
    return WIFEXITED(*status) ? WEXITSTATUS(*status) : -WTERMSIG(*status);
  }
  void kill9() {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
  }
  const std::string& output() const { return output_; }
  // "wf_..." from the first line, "run <id> started".
  std::string run_id() const {
    if (output_.rfind("run ", 0) != 0) return "";
    return output_.substr(4, output_.find(' ', 4) - 4);
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool reaped_ = false;
  std::string output_;
};

struct Workspace {
  TempDir dir;
  std::string db = dir.file("wf.db");
  std::string log = dir.file("effects.log");
  // `first` has an effect, then a durable sleep, then `last`.
  std::string definition(int64_t sleep_ms) {
    std::string path = dir.file("def.yaml");
    std::ofstream(path) << "name: crash-resume\nsteps:\n"
                        << "  - { id: first, kind: exec, input: { argv: [sh, -c, \"echo first >> "
                        << log << "\"] } }\n"
                        << "  - { id: nap, kind: sleep, input: { duration_ms: " << sleep_ms
                        << " } }\n"
                        << "  - { id: last, kind: exec, input: { argv: [sh, -c, \"echo last >> "
                        << log << "\"] } }\n";
    return path;
  }
  std::map<std::string, int> effects() const {
    std::map<std::string, int> n;
    std::ifstream f(log);
    std::string line;
    while (std::getline(f, line)) ++n[line];
    return n;
  }
};

TEST(WorkflowCliTest, ResumeRightAfterKill9TakesTheRunOverAtOnce) {
  Workspace w;
  const std::string def = w.definition(3000);
  Cli run(w.dir.path(), {"workflow", "run", def, "--db", w.db});
  ASSERT_TRUE(run.read_until("step nap started")) << run.output();
  const std::string id = run.run_id();
  ASSERT_FALSE(id.empty()) << run.output();
  std::this_thread::sleep_for(Millis(1500));  // half the sleep done
  run.kill9();
  // What the kill left: the run owned by a dead process with a lease of about 30 s to go.
  ASSERT_EQ(query_text(w.db, "SELECT status FROM workflow_runs"), "running");
  ASSERT_NE(query_text(w.db, "SELECT owner FROM workflow_runs"), "");

  const int64_t wake_ms =
      query_int(w.db, "SELECT wake_ms FROM workflow_steps WHERE step_id = 'nap'");
  ASSERT_GT(wake_ms, 0);

  const int64_t resumed_ms =
      std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  Cli resume(w.dir.path(), {"workflow", "resume", id, "--db", w.db});
  EXPECT_EQ(resume.wait(), 0) << resume.output();
  EXPECT_NE(resume.output().find("run " + id + " taken over: owner "), std::string::npos)
      << resume.output();
  EXPECT_NE(resume.output().find("is no longer running on this host"), std::string::npos);
  EXPECT_NE(resume.output().find("run " + id + " completed"), std::string::npos);
  // Completed steps are not run again, and the durable sleep waits only its remainder: it wakes
  // at the time the killed process recorded, not a whole sleep after the resume.
  EXPECT_EQ(resume.output().find("step first started"), std::string::npos) << resume.output();
  EXPECT_EQ(query_int(w.db, "SELECT attempt FROM workflow_steps WHERE step_id = 'nap'"), 2);
  EXPECT_EQ(query_int(w.db,
                      "SELECT json_extract(output, '$.woke_ms') FROM workflow_steps WHERE "
                      "step_id = 'nap'"),
            wake_ms);
  EXPECT_LT(query_int(w.db, "SELECT finished_ms FROM workflow_steps WHERE step_id = 'nap'"),
            resumed_ms + 3000);
  EXPECT_EQ(w.effects(), (std::map<std::string, int>{{"first", 1}, {"last", 1}}));
  EXPECT_EQ(query_text(w.db, "SELECT status FROM workflow_runs"), "completed");
  EXPECT_EQ(query_int(w.db, "SELECT count(*) FROM workflow_events WHERE type = 'run_taken_over'"),
            1);
}

TEST(WorkflowCliTest, ResumeRefusesALiveOwnerAndWaitsForItWithWait) {
  Workspace w;
  const std::string def = w.definition(60000);
  Cli run(w.dir.path(), {"workflow", "run", def, "--db", w.db});
  ASSERT_TRUE(run.read_until("step nap started")) << run.output();
  const std::string id = run.run_id();

  Cli refused(w.dir.path(), {"workflow", "resume", id, "--db", w.db});
  EXPECT_EQ(refused.wait(), 1) << refused.output();  // refused: not a usage error
  EXPECT_NE(refused.output().find("run " + id + " is owned by "), std::string::npos)
      << refused.output();
  EXPECT_NE(refused.output().find("still running on this host); its lease ends in "),
            std::string::npos)
      << refused.output();
  EXPECT_NE(refused.output().find(" s (resume with --wait to wait for it)"), std::string::npos)
      << refused.output();

  Cli waiting(w.dir.path(), {"workflow", "resume", id, "--db", w.db, "--wait"});
  ASSERT_TRUE(waiting.read_until("run " + id + " waiting: owned by ")) << waiting.output();
  std::this_thread::sleep_for(Millis(300));
  EXPECT_FALSE(waiting.read_until("taken over", Millis(10)));  // the owner is alive: it waits
  run.kill9();
  // Found dead at its next look (at most a second later), not when the lease ends.
  ASSERT_TRUE(waiting.read_until("run " + id + " taken over", Millis(5000))) << waiting.output();
  // The sleep goes on from where it was; cancel it so the test does not wait a minute.
  ASSERT_TRUE(waiting.read_until("step nap started (attempt 2)")) << waiting.output();
  Cli cancel(w.dir.path(), {"workflow", "cancel", id, "--db", w.db});
  EXPECT_EQ(cancel.wait(), 0) << cancel.output();
  EXPECT_EQ(waiting.wait(), 1) << waiting.output();
  EXPECT_NE(waiting.output().find("run " + id + " cancelled"), std::string::npos)
      << waiting.output();
  EXPECT_EQ(w.effects(), (std::map<std::string, int>{{"first", 1}}));
}

// Reading commands on a state file that is not there (a mistyped --db) leave nothing behind:
// `list` shows no runs, `show`/`cancel`/`resume` are usage errors.
TEST(WorkflowCliTest, ReadingCommandsDoNotCreateAMissingDatabase) {
  Workspace w;
  const std::string missing = w.dir.file("missing.db");
  Cli list(w.dir.path(), {"workflow", "list", "--db", missing, "--json"});
  EXPECT_EQ(list.wait(), 0) << list.output();
  EXPECT_EQ(list.output(), "[]\n");
  for (const char* cmd : {"show", "cancel", "resume"}) {
    Cli c(w.dir.path(), {"workflow", cmd, "wf_nope", "--db", missing});
    EXPECT_EQ(c.wait(), 2) << cmd << ": " << c.output();
    EXPECT_NE(c.output().find("no database at " + missing), std::string::npos) << c.output();
  }
  EXPECT_FALSE(std::filesystem::exists(missing));
}

}  // namespace
}  // namespace switchboard::workflow
