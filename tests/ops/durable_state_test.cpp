// Durable state across kill -9 (issue 25): the real `switchboard serve` binary is killed with
// SIGKILL and started again on the same state file. What it had acknowledged must come back:
// learned posteriors and the traffic share they give, a key's daily count, a retry-after cooldown
// of hours, and an operator's disabled mark.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <fstream>
#include <map>
#include <thread>

#include "gateway_fixture.h"
#include "serve_process.h"
#include "test_support.h"

namespace switchboard::gwtest {
namespace {

using testsupport::query_int;
using testsupport::wait_until;

struct Posterior {
  double alpha = 0, beta = 0;
  int64_t outcomes = 0, feedback = 0;
};

// /admin/models' posteriors by "category/model".
std::map<std::string, Posterior> posteriors(uint16_t port) {
  std::map<std::string, Posterior> out;
  auto v = parse_json(get(port, "/admin/models").body);
  if (!v.is_object()) return out;
  for (const auto& p : v.as_object().at("posteriors").as_array()) {
    const auto& o = p.as_object();
    Posterior q;
    q.alpha = o.at("alpha").to_number<double>();
    q.beta = o.at("beta").to_number<double>();
    q.outcomes = o.at("outcomes").to_number<int64_t>();
    q.feedback = o.at("feedback").to_number<int64_t>();
    out[std::string(o.at("category").as_string()) + "/" + std::string(o.at("model").as_string())] =
        q;
  }
  return out;
}

// One key's entry in /admin/keys (null when absent).
boost::json::value key_entry(uint16_t port, const std::string& id) {
  auto v = parse_json(get(port, "/admin/keys").body);
  if (!v.is_object()) return {};
  for (const auto& k : v.as_object().at("keys").as_array())
    if (k.as_object().at("id").as_string() == id) return k;
  return {};
}

// The longest cooldown a key shows, key-wide or for one model, in milliseconds.
int64_t longest_cooldown_ms(const boost::json::value& key) {
  if (!key.is_object()) return -1;
  const auto& o = key.as_object();
  int64_t ms = o.at("cooldown_remaining_ms").to_number<int64_t>();
  for (const auto& m : o.at("model_cooldowns").as_array())
    ms = std::max(ms, m.as_object().at("remaining_ms").to_number<int64_t>());
  return ms;
}

class DurableStateTest : public GatewayTest {
 protected:
  // Routes `auto` over [bad, good] learned with no exploration, so its split is the posteriors'.
  std::string write_config(const gateway::MockProvider& up, const gateway::MockProvider& cool) {
    const std::string cfg = (dir_ / "serve.yaml").string();
    std::ofstream f(cfg);
    f << "state: { path: " << db() << ", batch_ms: 5 }\n"
      << "log: { level: warn, access_log: false }\n"
      << "learning: { explore: 0 }\n"
      << "retry: { wait_for_key_ms: 200 }\n"
      << "providers:\n"
      << provider("up", up, "[sk-up-secret-1]")
      << provider("daily", up, "[sk-daily-secret-1]", "limits: { rpd: 3 }")
      << provider("cool", cool, "[sk-cool-secret-1]")
      << provider("spare", up, "[sk-spare-secret-1, sk-spare-secret-2]") << "models:\n"
      << "  bad: { provider: up }\n  good: { provider: up }\n"
      << "  daily-model: { provider: daily }\n  cool-model: { provider: cool }\n"
      << "  spare-model: { provider: spare }\n"
      << "routes:\n  auto: { strategy: learned, layers: [[bad, good]] }\n";
    return cfg;
  }
  std::string db() const { return (dir_ / "state.db").string(); }
  std::string log_path() const { return (dir_ / "serve.log").string(); }
  std::string log_text() const {
    std::ifstream f(log_path());
    return std::string(std::istreambuf_iterator<char>(f), {});
  }

  // Sends `n` requests to `auto`; returns how many `bad` answered.
  int bad_share(uint16_t port, int n) {
    int bad = 0;
    for (int i = 0; i < n; ++i) {
      auto r = post(port, "/v1/chat/completions", chat_body("auto"));
      EXPECT_EQ(r.status, 200) << r.body;
      bad += r.header("x-switchboard-model") == "bad";
    }
    return bad;
  }
};

TEST_F(DurableStateTest, KillNineKeepsLearningDayWindowsCooldownsAndDisabledKeys) {
  auto& up = add_mock();
  MockScenario six_hours;
  six_hours.script.push_back(MockScriptStep{429, 1, false, false, 6LL * 3600 * 1000});
  auto& cool = add_mock(six_hours);
  const std::string cfg = write_config(up, cool);

  auto first = std::make_unique<ServeProcess>(cfg, log_path());
  ASSERT_TRUE(first->ready()) << log_text();
  const uint16_t p1 = first->port();

  // A daily limit of 3 used up, a 6 h retry-after, an operator's disable.
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(post(p1, "/v1/chat/completions", chat_body("daily-model")).status, 200);
  EXPECT_EQ(post(p1, "/v1/chat/completions", chat_body("daily-model")).status, 429);
  EXPECT_EQ(post(p1, "/v1/chat/completions", chat_body("cool-model")).status, 429);
  ASSERT_GT(longest_cooldown_ms(key_entry(p1, "cool#1")), 5LL * 3600 * 1000);
  ASSERT_EQ(post(p1, "/admin/keys/spare%232/disable", "").status, 200);
  const uint64_t cool_sent = cool.stats().requests;

  // Teach `auto` that `bad` fails the task and `good` does it: every answer gets a verdict, the
  // last 40 also measure the split the teaching gives.
  int taught_bad = 0;
  for (int i = 0; i < 100; ++i) {
    auto r = post(p1, "/v1/chat/completions", chat_body("auto"));
    ASSERT_EQ(r.status, 200) << r.body;
    const bool good = r.header("x-switchboard-model") == "good";
    if (i >= 60) taught_bad += !good;
    const std::string rid = r.header("x-switchboard-request-id");
    auto fb =
        post(p1, "/v1/feedback",
             "{\"request_id\":\"" + rid + "\",\"success\":" + (good ? "true" : "false") + "}");
    ASSERT_EQ(fb.status, 200) << fb.body;
  }
  EXPECT_LE(taught_bad, 1) << "the teaching did not take: `bad` still got " << taught_bad << "/40";

  // Wait until the store acknowledged all of it: one FIFO, group-committed stream, and the last
  // verdict is the last event, so its row means every earlier event is on disk. Then take what
  // the live process holds as the reference.
  ASSERT_TRUE(wait_until([&] { return query_int(db(), "SELECT count(*) FROM feedback") == 100; }))
      << "the store never caught up";
  const auto before = posteriors(p1);
  ASSERT_FALSE(before.empty());

  first->kill9();
  first.reset();

  ServeProcess second(cfg, log_path());
  ASSERT_TRUE(second.ready()) << log_text();
  const uint16_t p2 = second.port();

  // Posteriors: the same rows, the same values and counts.
  const auto after = posteriors(p2);
  EXPECT_EQ(after.size(), before.size());
  for (const auto& [name, b] : before) {
    auto it = after.find(name);
    if (it == after.end()) {
      ADD_FAILURE() << name << " was not restored";
      continue;
    }
    EXPECT_NEAR(it->second.alpha, b.alpha, 1e-6 * (1 + b.alpha)) << name;
    EXPECT_NEAR(it->second.beta, b.beta, 1e-6 * (1 + b.beta)) << name;
    EXPECT_EQ(it->second.outcomes, b.outcomes) << name;
    EXPECT_EQ(it->second.feedback, b.feedback) << name;
  }
  // ... so the taught route keeps its split (untaught, `bad` would get about half).
  const int restored_bad = bad_share(p2, 40);
  EXPECT_LE(restored_bad, 1) << "`bad` got " << restored_bad << "/40 after the restart";

  // The day's count: the 4th request of the day is still refused, without reaching the provider.
  const uint64_t up_before = up.stats().requests;
  auto daily = post(p2, "/v1/chat/completions", chat_body("daily-model"));
  EXPECT_EQ(daily.status, 429) << daily.body;
  EXPECT_EQ(up.stats().requests, up_before);
  auto dk = key_entry(p2, "daily#1");
  ASSERT_TRUE(dk.is_object());
  EXPECT_EQ(dk.as_object().at("day").as_object().at("requests").to_number<int64_t>(), 3);

  // The retry-after cooldown still holds (hours, not the restart's zero) and nothing is sent.
  EXPECT_GT(longest_cooldown_ms(key_entry(p2, "cool#1")), 5LL * 3600 * 1000);
  auto cooled = post(p2, "/v1/chat/completions", chat_body("cool-model"));
  EXPECT_EQ(cooled.status, 429) << cooled.body;
  EXPECT_EQ(cool.stats().requests, cool_sent);

  // The operator's disable stays; the other key of the provider serves.
  auto spare = key_entry(p2, "spare#2");
  ASSERT_TRUE(spare.is_object());
  EXPECT_EQ(spare.as_object().at("state").as_string(), "disabled");
  for (int i = 0; i < 4; ++i) {
    auto r = post(p2, "/v1/chat/completions", chat_body("spare-model"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.header("x-switchboard-key"), "spare#1");
  }
}

// Runs the binary with `args` (a shell-quoted tail); its exit code, stdout into `out`.
int run_cli(const std::string& args, std::string& out) {
  FILE* p = ::popen((std::string(SWITCHBOARD_BINARY) + " " + args + " 2>/dev/null").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  out.clear();
  while ((n = ::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The model the plan printed by `switchboard route` tries first.
std::string first_attempt(const std::string& plan_json) {
  auto v = parse_json(plan_json);
  if (!v.is_object()) return {};
  const auto* attempts = v.as_object().if_contains("attempts");
  if (!attempts || !attempts->is_array() || attempts->as_array().empty()) return {};
  return std::string(attempts->as_array()[0].as_object().at("model").as_string());
}

// `switchboard route --db` plans with what the gateway learned (read-only, without the gateway);
// without --db it plans with the priors, so the taught-away model still comes first at times.
TEST_F(DurableStateTest, RouteDbPlansWithTheLearnedState) {
  auto& up = add_mock();
  auto& cool = add_mock();
  const std::string cfg = write_config(up, cool);
  {
    ServeProcess serve(cfg, log_path());
    ASSERT_TRUE(serve.ready()) << log_text();
    for (int i = 0; i < 40; ++i) {
      auto r = post(serve.port(), "/v1/chat/completions", chat_body("auto"));
      ASSERT_EQ(r.status, 200);
      const bool good = r.header("x-switchboard-model") == "good";
      ASSERT_EQ(post(serve.port(), "/v1/feedback",
                     "{\"request_id\":\"" + r.header("x-switchboard-request-id") +
                         "\",\"success\":" + (good ? "true" : "false") + "}")
                    .status,
                200);
    }
    ASSERT_TRUE(wait_until([&] { return query_int(db(), "SELECT count(*) FROM feedback") == 40; }));
  }  // kill -9: the journal, not a final snapshot, carries the learning
  int bad_first_learned = 0, bad_first_priors = 0;
  for (int seed = 1; seed <= 20; ++seed) {
    const std::string base =
        "route --config " + cfg + " --model auto --seed " + std::to_string(seed);
    std::string out;
    ASSERT_EQ(run_cli(base + " --db " + db(), out), 0) << out;
    bad_first_learned += first_attempt(out) == "bad";
    ASSERT_EQ(run_cli(base, out), 0) << out;
    bad_first_priors += first_attempt(out) == "bad";
  }
  EXPECT_EQ(bad_first_learned, 0);
  EXPECT_GE(bad_first_priors, 3) << "the priors alone should put `bad` first at times";

  // A missing state file is a usage error, and is not created.
  const std::string missing = (dir_ / "missing.db").string();
  std::string out;
  EXPECT_EQ(run_cli("route --config " + cfg + " --model auto --db " + missing, out), 2);
  EXPECT_FALSE(std::filesystem::exists(missing));
}

// Issue 30: requests without hints teach the route's contextual models; after kill -9 the restart
// has learned exactly as much (snapshot rows plus the journal's records with their features).
TEST_F(DurableStateTest, ContextualModelsSurviveKillNine) {
  auto& up = add_mock();
  auto& cool = add_mock();
  const std::string cfg = write_config(up, cool);
  auto updates = [](uint16_t port) {
    std::map<std::string, int64_t> out;
    auto r = get(port, "/admin/models");
    auto v = parse_json(r.body);
    if (!v.is_object()) return out;
    for (const auto& m : v.as_object().at("models").as_array())
      for (const auto& c : m.as_object().at("contextual").as_array())
        out[std::string(m.as_object().at("model").as_string())] =
            c.as_object().at("updates").to_number<int64_t>();
    return out;
  };
  std::map<std::string, int64_t> before;
  {
    ServeProcess serve(cfg, log_path());
    ASSERT_TRUE(serve.ready()) << log_text();
    for (int i = 0; i < 60; ++i) {
      // Two kinds of request, as users write them: no hint header.
      const std::string text =
          i % 2 ? "what is a mutex" : "```python\\nKeyError: 'id'\\n```\\nhow do I fix it?";
      auto r = post(
          serve.port(), "/v1/chat/completions",
          "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"" + text + "\"}]}");
      ASSERT_EQ(r.status, 200) << r.body;
      const bool good = r.header("x-switchboard-model") == "good";
      ASSERT_EQ(post(serve.port(), "/v1/feedback",
                     "{\"request_id\":\"" + r.header("x-switchboard-request-id") +
                         "\",\"success\":" + (good ? "true" : "false") + "}")
                    .status,
                200);
    }
    ASSERT_TRUE(wait_until([&] { return query_int(db(), "SELECT count(*) FROM feedback") == 60; }));
    before = updates(serve.port());
  }  // kill -9
  // Each request taught its model twice (the outcome, then the verdict).
  int64_t total = 0;
  for (const auto& [model, n] : before) total += n;
  EXPECT_EQ(total, 120) << "models: " << before.size();
  ServeProcess again(cfg, log_path());
  ASSERT_TRUE(again.ready()) << log_text();
  EXPECT_EQ(updates(again.port()), before);
  // `route --db --prompt` plans with the same contextual models and says which features counted.
  std::string out;
  ASSERT_EQ(run_cli("route --config " + cfg + " --model auto --seed 3 --db " + db() +
                        " --prompt 'what is a mutex'",
                    out),
            0)
      << out;
  EXPECT_NE(out.find("\"contextual\":true"), std::string::npos) << out;
  EXPECT_NE(out.find("\"features\":{"), std::string::npos) << out;
  EXPECT_NE(out.find("\"feature\":\"len:3\""), std::string::npos) << out;  // named
}

// kill -9 while four clients send requests and verdicts: the restart comes up, and its learning
// holds every verdict the store had committed (and none that was never sent).
TEST_F(DurableStateTest, KillNineUnderLoadRestoresEveryCommittedVerdict) {
  auto& up = add_mock();
  auto& cool = add_mock();
  const std::string cfg = write_config(up, cool);
  auto first = std::make_unique<ServeProcess>(cfg, log_path());
  ASSERT_TRUE(first->ready()) << log_text();
  const uint16_t p1 = first->port();

  std::atomic<bool> stop{false};
  std::atomic<int64_t> verdicts_sent{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&] {
      while (!stop.load()) {
        auto r = post(p1, "/v1/chat/completions", chat_body("auto"));
        if (r.status != 200) continue;  // the kill landed
        const bool good = r.header("x-switchboard-model") == "good";
        verdicts_sent.fetch_add(1);
        post(p1, "/v1/feedback",
             "{\"request_id\":\"" + r.header("x-switchboard-request-id") +
                 "\",\"success\":" + (good ? "true" : "false") + "}");
      }
    });
  }
  // Past the first snapshot (every 2 s) and 100 verdicts more, so that the restart restores from
  // a snapshot and the journal after it.
  ASSERT_TRUE(
      wait_until([&] { return query_int(db(), "SELECT count(*) FROM bandit_posteriors") > 0; },
                 std::chrono::seconds(30)));
  const int64_t at_snapshot = query_int(db(), "SELECT count(*) FROM feedback");
  ASSERT_TRUE(wait_until(
      [&] { return query_int(db(), "SELECT count(*) FROM feedback") >= at_snapshot + 100; },
      std::chrono::seconds(30)));
  first->kill9();
  stop = true;
  for (auto& c : clients) c.join();
  const int64_t committed = query_int(db(), "SELECT count(*) FROM feedback");
  ASSERT_GT(committed, 0);

  ServeProcess second(cfg, log_path());
  ASSERT_TRUE(second.ready()) << log_text();
  int64_t restored = 0;
  for (const auto& [name, p] : posteriors(second.port())) restored += p.feedback;
  EXPECT_GE(restored, committed) << "a committed verdict was lost";
  EXPECT_LE(restored, verdicts_sent.load()) << "a verdict was counted twice";
}

}  // namespace
}  // namespace switchboard::gwtest
