// The exec executor: real processes, their output, and killing the whole process group.
#include <gtest/gtest.h>
#include <signal.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "test_util.h"

namespace switchboard::workflow {
namespace {

using wftest::TempDir;

StepRequest request(const std::string& json_input, int attempt = 1) {
  StepRequest r;
  r.run_id = "wf_test";
  r.step_id = "s";
  r.attempt = attempt;
  r.input = json::parse(json_input);
  return r;
}

// Gone, or a zombie waiting for its (re)parent to reap it: either way not running.
bool process_gone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

TEST(ExecTest, CapturesOutputExitCodeEnvAndCwd) {
  TempDir dir;
  auto ex = make_exec_executor();
  Interrupt intr(SystemClock::instance());
  auto r = ex->execute(
      request(R"({"argv": ["sh", "-c", "echo out-$SWITCHBOARD_ATTEMPT-$FOO; pwd; echo err >&2"],
      "env": {"FOO": "bar"}, "cwd": ")" +
                  dir.path() + R"("})",
              3),
      intr);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const auto& o = r->as_object();
  EXPECT_EQ(o.at("exit_code"), json::value(0));
  EXPECT_EQ(o.at("stdout"), json::value("out-3-bar\n" + dir.path() + "\n"));
  EXPECT_EQ(o.at("stderr"), json::value("err\n"));

  auto bad = ex->execute(request(R"({"argv": ["sh", "-c", "echo nope >&2; exit 7"]})"), intr);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "exit code 7: nope");
  auto missing = ex->execute(request(R"({"argv": ["/nonexistent/program"]})"), intr);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("No such file"), std::string::npos);
}

// Invariant 11: the gateway's environment (provider keys, admin key) never reaches a command.
TEST(ExecTest, ChildEnvironmentIsOnlyPathHomeLangThenTheStepsOwn) {
  // Saved and restored: later tests (and their children) see this process's real environment.
  auto saved = [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
  const auto path = saved("PATH"), home = saved("HOME"), lang = saved("LANG");
  auto restore = [](const char* name, const std::optional<std::string>& v) {
    if (v)
      setenv(name, v->c_str(), 1);
    else
      unsetenv(name);
  };
  setenv("SWITCHBOARD_TEST_SECRET", "sk-live-do-not-leak", 1);
  setenv("PATH", "/usr/local/bin:/usr/bin:/bin", 1);
  setenv("HOME", "/home/someone", 1);
  setenv("LANG", "C.UTF-8", 1);
  // Every variable the child sees, one per line (`env` prints them; sorted for comparison).
  auto child_env = [](const std::string& step_env) {
    auto ex = make_exec_executor();
    Interrupt intr(SystemClock::instance());
    auto r = ex->execute(request(R"({"argv": ["env"], "env": )" + step_env + "}", 2), intr);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    std::set<std::string> vars;
    if (!r.ok()) return vars;
    std::istringstream out(std::string(r->as_object().at("stdout").as_string()));
    for (std::string line; std::getline(out, line);) vars.insert(line);
    return vars;
  };
  auto vars = child_env(R"({"FOO": "bar", "HOME": "/tmp"})");
  EXPECT_EQ(vars, (std::set<std::string>{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp",
                                         "LANG=C.UTF-8", "FOO=bar", "SWITCHBOARD_RUN_ID=wf_test",
                                         "SWITCHBOARD_STEP_ID=s", "SWITCHBOARD_ATTEMPT=2"}));
  for (const auto& v : vars) EXPECT_EQ(v.find("sk-"), std::string::npos) << v;

  // Unset in this process: PATH gets its default, HOME and LANG are absent.
  unsetenv("PATH");
  unsetenv("HOME");
  unsetenv("LANG");
  auto bare = child_env("{}");
  restore("PATH", path);
  restore("HOME", home);
  restore("LANG", lang);
  unsetenv("SWITCHBOARD_TEST_SECRET");
  EXPECT_EQ(bare, (std::set<std::string>{"PATH=/usr/bin:/bin", "SWITCHBOARD_RUN_ID=wf_test",
                                         "SWITCHBOARD_STEP_ID=s", "SWITCHBOARD_ATTEMPT=2"}));
}

TEST(ExecTest, OutputIsBounded) {
  auto ex = make_exec_executor();
  Interrupt intr(SystemClock::instance());
  auto r = ex->execute(
      request(
          R"({"argv": ["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x"], "max_output_bytes": 1000})"),
      intr);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->as_object().at("stdout").as_string().size(), 1000u);
  EXPECT_EQ(r->as_object().at("truncated"), json::value(true));
}

TEST(ExecTest, TimeoutKillsTheWholeProcessGroup) {
  TempDir dir;
  std::string pidfile = dir.file("grandchild.pid");
  auto ex = make_exec_executor();
  const Clock& clock = SystemClock::instance();
  Interrupt run(clock);
  Interrupt step(clock, &run, clock.now() + Millis(300), 300);
  auto start = std::chrono::steady_clock::now();
  auto r = ex->execute(
      request(R"({"argv": ["sh", "-c", "sleep 60 & echo $! > )" + pidfile + R"(; wait"]})"), step);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_LT(took, std::chrono::seconds(5));
  std::ifstream f(pidfile);
  pid_t grandchild = 0;
  f >> grandchild;
  ASSERT_GT(grandchild, 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!process_gone(grandchild) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(Millis(10));
  EXPECT_TRUE(process_gone(grandchild)) << "orphan " << grandchild;
}

TEST(ExecTest, CancellationUsesTheSameMechanism) {
  auto ex = make_exec_executor();
  Interrupt run(SystemClock::instance());
  std::thread canceller([&] {
    std::this_thread::sleep_for(Millis(100));
    run.cancel(Status::cancelled("run cancelled"));
  });
  Interrupt step(SystemClock::instance(), &run);
  auto r = ex->execute(request(R"({"argv": ["sleep", "60"]})"), step);
  canceller.join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled);
}

}  // namespace
}  // namespace switchboard::workflow
