// Runs belong to a client (issue 17, DESIGN.md invariant 11): the client is stored with the run,
// filters `list_runs`, appears in the JSON output, survives the schema migration, and reaches
// every step (parallel children included), the http and llm callers and feedback verdicts.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <boost/json.hpp>

#include "store/store.h"
#include "test_util.h"

namespace switchboard::workflow {
namespace {

using namespace wftest;

std::unique_ptr<Engine> open_engine(EngineOptions o) {
  auto e = Engine::open(std::move(o));
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(*e) : nullptr;
}

const char* kOneStep = "name: one\nsteps:\n  - { id: a, kind: sleep, input: { duration_ms: 0 } }\n";

TEST(WorkflowClients, RunsRecordTheirClientAndListFiltersByIt) {
  TempDir dir;
  EngineOptions o;
  o.db_path = dir.file("wf.db");
  auto engine = open_engine(o);
  ASSERT_TRUE(engine);
  Definition def = must_parse(kOneStep);
  std::map<std::string, std::string> owner_of;  // run id -> client
  for (const std::string client : {"", "key:alice", "key:bob", "key:alice", "anonymous"}) {
    auto id = engine->create_run(def, json::object(), client);
    ASSERT_TRUE(id.ok()) << id.status().to_string();
    owner_of[*id] = client;
  }
  auto local = engine->create_run(def, json::object());  // the default: the local user
  ASSERT_TRUE(local.ok());
  owner_of[*local] = "";

  auto all = engine->list_runs();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 6u);
  for (const auto& r : *all) EXPECT_EQ(r.client, owner_of.at(r.id)) << r.id;

  for (const std::string client : {"key:alice", "key:bob", "anonymous", "", "key:carol"}) {
    auto mine = engine->list_runs(100, &client);
    ASSERT_TRUE(mine.ok());
    size_t expected = 0;
    for (const auto& [id, c] : owner_of) expected += c == client;
    EXPECT_EQ(mine->size(), expected) << client;
    for (const auto& r : *mine) EXPECT_EQ(r.client, client);
  }
  const std::string alice = "key:alice";
  auto limited = engine->list_runs(1, &alice);
  ASSERT_TRUE(limited.ok());
  EXPECT_EQ(limited->size(), 1u);

  // get_run and the JSON outputs name the client; the text output need not.
  std::string bob_id;
  for (const auto& [id, c] : owner_of)
    if (c == "key:bob") bob_id = id;
  auto detail = engine->get_run(bob_id);
  ASSERT_TRUE(detail.ok());
  EXPECT_EQ(detail->run.client, "key:bob");
  EXPECT_EQ(detail->run.name, "one");
  EXPECT_EQ(json::parse(format_run(*detail, true)).as_object().at("client"), "key:bob");
  auto listed = json::parse(format_runs(*all, true));
  for (const auto& r : listed.as_array())
    EXPECT_EQ(r.as_object().at("client"),
              json::value(owner_of.at(std::string(r.as_object().at("id").as_string()))));
  EXPECT_EQ(query_text(o.db_path, "SELECT client FROM workflow_runs WHERE id = '" + bob_id + "'"),
            "key:bob");
}

TEST(WorkflowClients, RunsFromBeforeTheMigrationBelongToTheLocalUser) {
  TempDir dir;
  const std::string path = dir.file("old.db");
  {
    // A database as the previous schema version left it, with one run.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    for (const auto& m : store::schema_migrations()) {
      if (m.version > 5) break;
      ASSERT_EQ(sqlite3_exec(db, m.sql, nullptr, nullptr, nullptr), SQLITE_OK) << m.version;
    }
    ASSERT_EQ(sqlite3_exec(db,
                           "PRAGMA user_version = 5; INSERT INTO workflow_runs (id, name, "
                           "definition_hash, definition, status, created_ms, updated_ms) VALUES "
                           "('wf_old', 'old', 'sha256:x', 'name: old', 'completed', 1, 1);",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  EngineOptions o;
  o.db_path = path;
  auto engine = open_engine(o);
  ASSERT_TRUE(engine);
  EXPECT_EQ(query_int(path, "PRAGMA user_version"), store::schema_version());
  const std::string local;
  auto runs = engine->list_runs(100, &local);
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].id, "wf_old");
  EXPECT_EQ((*runs)[0].client, "");
  const std::string key = "key:alice";
  EXPECT_TRUE(engine->list_runs(100, &key)->empty());
}

// Records the client of every call it gets.
class Recorder {
 public:
  void saw(const std::string& what, const std::string& client) {
    std::lock_guard lock(mu_);
    seen_.emplace_back(what, client);
  }
  std::vector<std::pair<std::string, std::string>> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> seen_;
};

class FakeHttp final : public HttpCaller {
 public:
  explicit FakeHttp(Recorder& rec) : rec_(rec) {}
  Result<HttpReply> call(const HttpCall& call, const Interrupt&) override {
    rec_.saw("http " + call.url, call.client);
    HttpReply r;
    r.status = 200;
    r.body = "{}";
    return r;
  }

 private:
  Recorder& rec_;
};

class FakeLlm final : public LlmCaller {
 public:
  explicit FakeLlm(Recorder& rec) : rec_(rec) {}
  Result<HttpReply> complete(const std::string& client, const std::string& body,
                             const std::vector<std::pair<std::string, std::string>>& headers,
                             int64_t, const Interrupt&) override {
    std::string step;
    for (const auto& [k, v] : headers)
      if (k == "x-switchboard-workflow-step") step = v.substr(v.find('/') + 1);
    step = step.substr(0, step.find('#'));
    rec_.saw("llm " + step, client);
    (void)body;
    HttpReply r;
    r.status = 200;
    r.body = R"({"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}]})";
    r.headers.emplace_back("x-switchboard-request-id", "sb-" + step);
    return r;
  }

 private:
  Recorder& rec_;
};

class FakeVerdicts final : public FeedbackSender {
 public:
  explicit FakeVerdicts(Recorder& rec) : rec_(rec) {}
  Status send(const FeedbackCall& call, const Interrupt&) override {
    rec_.saw("feedback " + call.request_id, call.client);
    return Status();
  }

 private:
  Recorder& rec_;
};

TEST(WorkflowClients, EveryStepAndCallerGetsTheRunsClient) {
  TempDir dir;
  Recorder rec;
  EngineOptions o;
  o.db_path = dir.file("wf.db");
  o.executors.exec = std::make_shared<FakeExecutor>([&](const StepRequest& r, const Interrupt&) {
    rec.saw("exec " + r.step_id, r.client);
    return Result<json::value>(json::object());
  });
  o.executors.http = make_http_executor(std::make_shared<FakeHttp>(rec));
  o.executors.llm = make_llm_executor(std::make_shared<FakeLlm>(rec));
  o.executors.feedback = std::make_shared<FakeVerdicts>(rec);
  auto engine = open_engine(o);
  ASSERT_TRUE(engine);
  Definition def = must_parse(R"(name: everywhere
steps:
  - id: ask
    kind: llm
    input: { route: auto, messages: [{ role: user, content: hi }] }
  - id: build
    kind: exec
    input: { argv: [make] }
    feedback: { step: ask, score: 0.5 }
  - id: fetch
    kind: http
    input: { url: "https://example.com/x" }
  - id: each
    kind: parallel
    for_each: ${input.items}
    step: { kind: exec, input: { argv: ["${item}"] } }
  - id: both
    kind: parallel
    branches:
      - { id: l, kind: llm, input: { route: auto, messages: [{ role: user, content: hi }] } }
      - { id: h, kind: http, input: { url: "https://example.com/y" } }
)");
  const std::vector<std::string> expected = {"llm ask",
                                             "exec build",
                                             "feedback sb-ask",
                                             "http https://example.com/x",
                                             "exec each[0]",
                                             "exec each[1]",
                                             "exec each[2]",
                                             "llm both.l",
                                             "http https://example.com/y"};
  for (const std::string client : {"key:alice", ""}) {
    auto id = engine->create_run(def, json::parse(R"({"items": [1, 2, 3]})"), client);
    ASSERT_TRUE(id.ok());
    auto before = rec.seen().size();
    auto res = engine->run(*id);
    ASSERT_TRUE(res.ok()) << res.status().to_string();
    EXPECT_EQ(res->status, RunStatus::kCompleted) << res->error;
    auto seen = rec.seen();
    std::set<std::string> what;
    for (size_t i = before; i < seen.size(); ++i) {
      EXPECT_EQ(seen[i].second, client) << seen[i].first;
      what.insert(seen[i].first);
    }
    EXPECT_EQ(what, std::set<std::string>(expected.begin(), expected.end()));
  }
}

}  // namespace
}  // namespace switchboard::workflow
