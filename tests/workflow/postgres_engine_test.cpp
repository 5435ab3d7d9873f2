// The durable executor on PostgreSQL (issue 22): the guarantees of the SQLite engine across
// executors that share one database, against a private server (fresh database per test).
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <future>
#include <set>
#include <thread>

#include "test_util.h"

namespace switchboard::workflow {
namespace {

using wftest::eventually;
using wftest::FakeExecutor;
using wftest::Gate;
using wftest::must_parse;

class PostgresEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new testsupport::PostgresServer(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    db_ = "wf_" + std::to_string(next_db_++);
    const std::string created = server_->psql("CREATE DATABASE " + db_);
    ASSERT_EQ(created.find("ERROR"), std::string::npos) << created;
    url_ = server_->url();
    url_.replace(url_.rfind('/') + 1, std::string::npos, db_);
  }
  std::string sql(const std::string& q) const { return server_->psql("\\c " + db_ + "\n" + q); }

  std::unique_ptr<Engine> open(std::shared_ptr<StepExecutor> exec, const std::string& owner,
                               const std::function<void(EngineOptions&)>& tweak = {}) {
    EngineOptions o;
    o.db_path = url_;
    o.clock = &clock_;
    o.sleeper = sleeper_;
    o.executors.exec = std::move(exec);
    o.owner = owner;
    o.seed = 7;
    o.poll = Millis(10);
    if (tweak) tweak(o);
    auto e = Engine::open(std::move(o));
    EXPECT_TRUE(e.ok()) << e.status().to_string();
    return e.ok() ? std::move(*e) : nullptr;
  }

  static testsupport::PostgresServer* server_;
  static int next_db_;
  std::string db_;
  std::string url_;
  ManualClock clock_;
  std::shared_ptr<FakeSleeper> sleeper_ = std::make_shared<FakeSleeper>(clock_);
};

testsupport::PostgresServer* PostgresEngineTest::server_ = nullptr;
int PostgresEngineTest::next_db_ = 0;

std::shared_ptr<FakeExecutor> echo_executor() {
  return std::make_shared<FakeExecutor>([](const StepRequest& r, const Interrupt&) {
    json::object o;
    o["echo"] = r.input;
    return Result<json::value>(json::value(std::move(o)));
  });
}

const char* kThreeSteps =
    "name: three\nsteps:\n"
    "  - { id: a, kind: exec, input: { argv: [a] } }\n"
    "  - { id: b, kind: exec, input: { argv: [b, '${steps.a.status}'] } }\n"
    "  - { id: c, kind: exec, input: { argv: [c] } }\n";

TEST_F(PostgresEngineTest, RunsEveryStepOnceAndReadsTheRunBack) {
  auto ex = echo_executor();
  auto e = open(ex, "owner-1");
  ASSERT_TRUE(e);
  Definition def = must_parse(kThreeSteps);
  auto id = e->create_run(def, json::object{{"n", 1}}, "key:team");
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  auto r = e->run(*id);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, RunStatus::kCompleted) << r->error;
  EXPECT_EQ(ex->count("a") + ex->count("b") + ex->count("c"), 3);

  auto detail = e->get_run(*id);
  ASSERT_TRUE(detail.ok()) << detail.status().to_string();
  EXPECT_EQ(detail->run.status, RunStatus::kCompleted);
  EXPECT_EQ(detail->run.client, "key:team");
  EXPECT_EQ(detail->run.owner, "");
  ASSERT_EQ(detail->steps.size(), 3u);
  EXPECT_EQ(detail->steps[1].step_id, "b");
  EXPECT_EQ(json::serialize(detail->steps[1].output), R"({"echo":{"argv":["b","completed"]}})");
  EXPECT_EQ(json::serialize(detail->input), R"({"n":1})");
  const std::string team = "key:team";
  const std::string other = "key:other";
  EXPECT_EQ(e->list_runs(10, &team)->size(), 1u);
  EXPECT_EQ(e->list_runs(10, &other)->size(), 0u);
  EXPECT_EQ(e->list_runs(10)->size(), 1u);
  // A finished run is never executed again.
  auto again = e->run(*id);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->status, RunStatus::kCompleted);
  EXPECT_EQ(ex->calls().size(), 3u);
  EXPECT_EQ(sql("SELECT count(*) FROM workflow_events WHERE run_id = '" + *id +
                "' AND type = 'step_completed'"),
            "3");
  EXPECT_EQ(e->get_run("wf_nope").status().code(), StatusCode::kNotFound);
}

TEST_F(PostgresEngineTest, OnlyOneOfTwoExecutorsRunsARun) {
  wftest::expect_one_of_two_executors_runs_it(
      [&](std::shared_ptr<StepExecutor> ex, const std::string& owner) {
        return open(std::move(ex), owner);
      });
}

// Gateways polling at once split the queue: every runnable run goes to exactly one of them; runs
// born claimed, or held under a live lease, are left alone until that lease lapses.
TEST_F(PostgresEngineTest, ClaimNextSplitsTheQueueAndSkipsLiveLeases) {
  auto e1 = open(echo_executor(), "owner-1");
  auto e2 = open(echo_executor(), "owner-2");
  ASSERT_TRUE(e1 && e2);
  Definition def = must_parse("name: q\nsteps:\n  - { id: a, kind: exec, input: { argv: [x] } }\n");
  std::set<std::string> queued;
  for (int i = 0; i < 40; ++i) {
    auto id = e1->create_run(def, nullptr);
    ASSERT_TRUE(id.ok());
    queued.insert(*id);
  }
  auto born_claimed = e2->create_run(def, nullptr, "", /*claim=*/true);
  ASSERT_TRUE(born_claimed.ok());

  std::promise<void> go;
  std::shared_future<void> go_f = go.get_future().share();
  auto take = [&](Engine& e) {
    go_f.wait();
    std::vector<std::string> all;
    for (int round = 0; round < 10; ++round) {
      auto ids = e.claim_next(3);
      if (!ids.ok()) ADD_FAILURE() << ids.status().to_string();
      if (ids.ok()) all.insert(all.end(), ids->begin(), ids->end());
    }
    return all;
  };
  auto f1 = std::async(std::launch::async, take, std::ref(*e1));
  auto f2 = std::async(std::launch::async, take, std::ref(*e2));
  go.set_value();
  auto got1 = f1.get();
  auto got2 = f2.get();
  std::set<std::string> all(got1.begin(), got1.end());
  for (const auto& id : got2) {
    EXPECT_EQ(all.count(id), 0u) << id << " was claimed by both executors";
    all.insert(id);
  }
  EXPECT_EQ(got1.size() + got2.size(), all.size());
  EXPECT_EQ(all, queued) << "every unowned run is claimed once, the born-claimed one never";
  EXPECT_EQ(e1->claim_next(100)->size(), 0u) << "every run is under a live lease";
  EXPECT_EQ(sql("SELECT count(*) FROM workflow_runs WHERE owner = 'owner-1'"),
            std::to_string(got1.size()));

  // Once the leases lapse (nobody renewed them), everything is runnable again, oldest first.
  clock_.advance(std::chrono::minutes(1));
  auto lapsed = e2->claim_next(100);
  ASSERT_TRUE(lapsed.ok());
  EXPECT_EQ(lapsed->size(), queued.size() + 1);
  // A claimed run is executed by its claimer without waiting for anything.
  auto r = e2->run(lapsed->front());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, RunStatus::kCompleted);
  // A run handed back is runnable at once.
  e2->release(lapsed->back(), "not run here");
  auto back = e1->claim_next(100);
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->size(), 1u);
  EXPECT_EQ(back->front(), lapsed->back());
}

// Invariant 8 across executors: an executor whose lease lapsed loses the run to another, which
// replays the completed steps from the database and never executes them again; the first one can
// write nothing more (fenced), even when its step finishes later.
TEST_F(PostgresEngineTest, ATakeoverAfterALapsedLeaseNeverRunsACompletedStepAgain) {
  Gate gate;
  auto ex1 = std::make_shared<FakeExecutor>([&](const StepRequest& r, const Interrupt&) {
    if (r.step_id == "b" && !gate.pass())
      return Result<json::value>(Status::deadline_exceeded("gate never opened"));
    return Result<json::value>(json::value(r.step_id));
  });
  auto ex2 = echo_executor();
  auto slow_renewals = [](EngineOptions& o) {
    o.lease = std::chrono::minutes(1);
    o.heartbeat = std::chrono::hours(1);  // the first executor never renews in this test
  };
  auto e1 = open(ex1, "owner-1", slow_renewals);
  auto e2 = open(ex2, "owner-2", slow_renewals);
  ASSERT_TRUE(e1 && e2);
  auto id = e1->create_run(must_parse(kThreeSteps), nullptr, "", /*claim=*/true);
  ASSERT_TRUE(id.ok());
  auto first = std::async(std::launch::async, [&] { return e1->run(*id); });
  ASSERT_TRUE(gate.arrived()) << "step b never started";

  auto held = e2->run(*id);
  ASSERT_FALSE(held.ok()) << "taken while the lease was live";
  EXPECT_NE(held.status().message().find("owned by owner-1"), std::string::npos)
      << held.status().message();
  clock_.advance(std::chrono::minutes(2));
  auto second = e2->run(*id);
  ASSERT_TRUE(second.ok()) << second.status().to_string();
  EXPECT_EQ(second->status, RunStatus::kCompleted) << second->error;
  EXPECT_EQ(ex2->count("a"), 0) << "a completed step ran again";
  EXPECT_EQ(ex2->count("b"), 1);
  EXPECT_EQ(ex2->count("c"), 1);

  gate.open();
  auto lost = first.get();
  ASSERT_FALSE(lost.ok()) << "the executor that lost its lease finished the run";
  EXPECT_NE(lost.status().message().find("lost"), std::string::npos) << lost.status().message();
  EXPECT_EQ(ex1->count("c"), 0);
  EXPECT_EQ(sql("SELECT string_agg(step_id || '=' || status, ',' ORDER BY seq) FROM "
                "workflow_steps WHERE run_id = '" +
                *id + "'"),
            "a=completed,b=completed,c=completed");
  EXPECT_EQ(sql("SELECT status || ' ' || coalesce(owner, '-') FROM workflow_runs"), "completed -");
}

TEST_F(PostgresEngineTest, CancelEndsAnUnownedRunAtOnceAndAnOwnedOneAtItsNextLook) {
  wftest::Signal arrived;
  auto ex = std::make_shared<FakeExecutor>([&](const StepRequest&, const Interrupt& i) {
    arrived.set();
    // Until the heartbeat sees the cancel request.
    eventually([&] { return !i.check().ok(); });
    return Result<json::value>(i.check().ok() ? Status::deadline_exceeded("never cancelled")
                                              : i.check());
  });
  auto e = open(ex, "owner-1");
  ASSERT_TRUE(e);
  Definition def = must_parse("name: k\nsteps:\n  - { id: a, kind: exec, input: { argv: [x] } }\n");
  auto idle = e->create_run(def, nullptr);
  ASSERT_TRUE(idle.ok());
  ASSERT_TRUE(e->request_cancel(*idle).ok());
  EXPECT_EQ(e->get_run(*idle)->run.status, RunStatus::kCancelled);
  EXPECT_EQ(e->request_cancel(*idle).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(e->request_cancel("wf_nope").code(), StatusCode::kNotFound);

  auto busy = e->create_run(def, nullptr);
  ASSERT_TRUE(busy.ok());
  auto running = std::async(std::launch::async, [&] { return e->run(*busy); });
  ASSERT_TRUE(arrived.wait());
  ASSERT_TRUE(e->request_cancel(*busy).ok());
  auto r = running.get();
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, RunStatus::kCancelled);
}

// A database that stops answering must not leave a run executing past its lease, when another
// gateway may already have taken it: once half the lease passed without a renewal the executor
// stops the run; after the database is back the run resumes where it was.
TEST_F(PostgresEngineTest, ARunStopsWhenItsLeaseCannotBeRenewed) {
  Gate gate;
  std::atomic<bool> stuck{true};
  auto ex = std::make_shared<FakeExecutor>([&](const StepRequest& r, const Interrupt& i) {
    if (r.step_id == "b" && stuck) {
      gate.pass();
      eventually([&] { return !i.check().ok(); }, Millis(60000));
      return Result<json::value>(i.check().ok() ? Status::deadline_exceeded("never interrupted")
                                                : i.check());
    }
    return Result<json::value>(json::value(r.step_id));
  });
  auto e = open(ex, "owner-1", [](EngineOptions& o) {
    o.lease = std::chrono::minutes(1);
    o.heartbeat = std::chrono::seconds(5);
  });
  ASSERT_TRUE(e);
  auto id = e->create_run(must_parse(kThreeSteps), nullptr, "", /*claim=*/true);
  ASSERT_TRUE(id.ok());
  auto running = std::async(std::launch::async, [&] { return e->run(*id); });
  ASSERT_TRUE(gate.arrived());
  server_->kill();
  // A failed renewal or two are tolerated...
  clock_.advance(std::chrono::seconds(20));
  std::this_thread::sleep_for(Millis(200));
  EXPECT_EQ(running.wait_for(Millis(0)), std::future_status::timeout)
      << "the run stopped before half its lease passed";
  // ...half a lease without one is not.
  clock_.advance(std::chrono::seconds(15));
  ASSERT_EQ(running.wait_for(std::chrono::seconds(20)), std::future_status::ready)
      << "the run went on without a lease";
  auto r = running.get();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("could not be renewed"), std::string::npos)
      << r.status().message();

  server_->start();
  stuck = false;
  auto resumed = e->run(*id);
  ASSERT_TRUE(resumed.ok()) << resumed.status().to_string();
  EXPECT_EQ(resumed->status, RunStatus::kCompleted) << resumed->error;
  EXPECT_EQ(ex->count("a"), 1) << "a completed step ran again";
  EXPECT_EQ(ex->count("b"), 2);
}

}  // namespace
}  // namespace switchboard::workflow
