#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <future>
#include <regex>
#include <sstream>
#include <thread>
#include <vector>

#include "common/log.h"
#include "gateway_fixture.h"
#include "test_support.h"

namespace switchboard::gwtest {
namespace {

const char* kGatewayKeys = R"(auth:
  gateway_keys:
    - { key: gw-team-a-secret-111, name: team-a }
    - { key: gw-limited-secret-222, name: limited, routes: [cheap], rpm: 2 }
    - { key: gw-budget-secret-333, name: frugal, monthly_budget_usd: 0.000001 }
)";

class OpsTest : public GatewayTest {};

std::string models_yaml() {
  return "models:\n  cheap: { provider: up, cost: { input_per_mtok: 1, output_per_mtok: 1 } }\n"
         "  dear: { provider: up, cost: { input_per_mtok: 100, output_per_mtok: 100 } }\n";
}

// A configuration file for the reload tests: one provider `up` on `mock` with `keys`.
void write_reload_config(const std::string& path, const std::filesystem::path& db,
                         const gateway::MockProvider& mock, const std::string& keys,
                         int max_concurrent) {
  std::ofstream f(path);
  f << "state: { path: " << db.string() << " }\nlog: { level: error, access_log: false }\n"
    << "providers:\n"
    << provider("up", mock, keys,
                "limits: { max_concurrent: " + std::to_string(max_concurrent) + " }")
    << models_yaml();
}

// A gateway started from the configuration file `path` (which reloads re-read), or null.
std::unique_ptr<gateway::Gateway> start_from_file(const std::string& path) {
  auto load = load_config_file(path, Environment::from_map({}));
  if (!load.ok()) return nullptr;
  auto gw = gateway::Gateway::create(std::make_shared<const Config>(std::move(*load.config)),
                                     gateway::GatewayOptions{"127.0.0.1:0", path});
  if (!gw.ok() || !(*gw)->start().ok()) return nullptr;
  return std::move(*gw);
}

Headers bearer(const std::string& key) {
  return {{"Authorization", "Bearer " + key}};
}

TEST_F(OpsTest, GatewayKeysAuthenticateAndEnforceTheirPolicies) {
  auto& mock = add_mock();
  start_gateway(std::string(kGatewayKeys) + "providers:\n" + provider("up", mock) + models_yaml());
  EXPECT_EQ(chat(chat_body("cheap")).status, 401);                                  // missing
  EXPECT_EQ(chat(chat_body("cheap"), bearer("gw-team-a-secret-11")).status, 401);   // wrong
  EXPECT_EQ(chat(chat_body("cheap"), bearer("gw-team-a-secret-111")).status, 200);  // right
  EXPECT_EQ(get(port_, "/v1/models").status, 401);  // every /v1 endpoint needs a key
  // Allowed routes.
  auto denied = chat(chat_body("dear"), bearer("gw-limited-secret-222"));
  EXPECT_EQ(denied.status, 403);
  EXPECT_NE(error_message(denied.body).find("limited"), std::string::npos);
  // Per-key rpm: 2 a minute, the third is refused with Retry-After.
  EXPECT_EQ(chat(chat_body("cheap"), bearer("gw-limited-secret-222")).status, 200);
  EXPECT_EQ(chat(chat_body("cheap"), bearer("gw-limited-secret-222")).status, 200);
  auto limited = chat(chat_body("cheap"), bearer("gw-limited-secret-222"));
  EXPECT_EQ(limited.status, 429);
  EXPECT_FALSE(limited.header("retry-after").empty());
  EXPECT_TRUE(is_openai_error(limited.body));
  // Monthly budget: a request whose estimated cost does not fit in what is left is refused
  // (the estimate is reserved at admission, issue 17).
  auto broke = chat(chat_body("dear"), bearer("gw-budget-secret-333"));
  EXPECT_EQ(broke.status, 429);
  EXPECT_NE(error_message(broke.body).find("budget"), std::string::npos);
  // Another key is unaffected.
  EXPECT_EQ(chat(chat_body("dear"), bearer("gw-team-a-secret-111")).status, 200);
}

// Spend is recorded per gateway key in the store, so a restart does not reset a monthly budget.
TEST_F(OpsTest, MonthlyBudgetSurvivesARestart) {
  MockScenario wordy;
  wordy.completion_tokens = 250;
  auto& mock = add_mock(wordy);
  // One request reserves up to ~$0.027 (prompt + max_tokens 260 at $100/Mtok) and spends ~$0.026:
  // a $0.04 budget admits one, and after it (restart or not) not another.
  const std::string yaml =
      "auth:\n  gateway_keys:\n    - { key: gw-team-a-secret-111, name: team-a }\n"
      "    - { key: gw-budget-secret-333, name: frugal, monthly_budget_usd: 0.04 }\n"
      "providers:\n" +
      provider("up", mock) + models_yaml();
  const std::string body = chat_body("dear", false, "\"max_tokens\":260");
  start_gateway(yaml);
  EXPECT_EQ(chat(body, bearer("gw-budget-secret-333")).status, 200);
  gw_->stop(Millis(1000));  // drains the store
  gw_.reset();
  start_gateway(yaml);  // same state path
  auto broke = chat(body, bearer("gw-budget-secret-333"));
  EXPECT_EQ(broke.status, 429) << broke.body;
  EXPECT_EQ(chat(chat_body("dear"), bearer("gw-team-a-secret-111")).status, 200);
}

TEST_F(OpsTest, AdminKeyProtectsTheAdminApi) {
  auto& mock = add_mock();
  start_gateway("auth: { admin_key: adm-secret-444 }\nproviders:\n" + provider("up", mock) +
                models_yaml());
  EXPECT_EQ(get(port_, "/admin/keys").status, 401);
  EXPECT_EQ(get(port_, "/admin/keys", bearer("adm-secret-44")).status, 401);
  auto ok = get(port_, "/admin/keys", bearer("adm-secret-444"));
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.body.find("sk-test-secret-1"), std::string::npos);  // never the provider secret
  EXPECT_NE(ok.body.find("up#1"), std::string::npos);
}

TEST_F(OpsTest, AdminApiShowsCooldownsBreakersAndModelsAfterFailures) {
  MockScenario s;
  s.script = {MockScriptStep{429, 1, false, false, 60000}, MockScriptStep{500, 6}};
  auto& mock = add_mock(s);
  start_gateway(
      "breaker: { window: 5, min_calls: 3, failure_rate: 0.5, open_ms: 60000, max_open_ms: 60000 "
      "}\n"
      "retry: { max_attempts: 1, wait_for_key_ms: 0 }\n"
      "providers:\n" +
      provider("up", mock, "[sk-one, sk-two]") + models_yaml());
  // The 429 cools the key that got it for a minute (per model), the next key serves 500s.
  chat(chat_body("cheap"));
  auto key = admin_key("up#1");
  ASSERT_TRUE(key.is_object());
  auto cooldowns = key.as_object().at("model_cooldowns").as_array();
  ASSERT_EQ(cooldowns.size(), 1u);
  EXPECT_GT(cooldowns[0].as_object().at("remaining_ms").to_number<int64_t>(), 50000);
  for (int i = 0; i < 4; ++i) chat(chat_body("cheap"));
  auto breakers = parse_json(get(port_, "/admin/breakers").body);
  bool open = false;
  for (const auto& b : breakers.as_object().at("breakers").as_array()) {
    if (b.as_object().at("target").as_string() == "model:up/cheap")
      open = b.as_object().at("state").as_string() == "open";
  }
  EXPECT_TRUE(open) << get(port_, "/admin/breakers").body;
  // The opening is in the store's audit trail, with why.
  const std::string db = (dir_ / "state.db").string();
  EXPECT_TRUE(testsupport::wait_until([&] {
    return testsupport::query_text(db,
                                   "SELECT from_state || '>' || to_state || ': ' || reason FROM "
                                   "breaker_transitions WHERE breaker = 'model:up/cheap'") ==
           "closed>open: failure or slow-call rate reached over the window";
  })) << testsupport::query_text(db, "SELECT count(*) FROM breaker_transitions");
  auto models = parse_json(get(port_, "/admin/models").body);
  bool saw = false;
  for (const auto& m : models.as_object().at("models").as_array()) {
    if (m.as_object().at("model").as_string() == "cheap") {
      saw = true;
      EXPECT_LT(m.as_object().at("success_rate").to_number<double>(), 0.5);
    }
  }
  EXPECT_TRUE(saw);
}

TEST_F(OpsTest, MetricsTextCarriesTheOperationalSeries) {
  auto& mock = add_mock();
  start_gateway("providers:\n" + provider("up", mock) + models_yaml() +
                "routes:\n  auto: { strategy: ordered, layers: [[cheap], [dear]] }\n");
  for (int i = 0; i < 3; ++i) ASSERT_EQ(chat(chat_body("auto")).status, 200);
  auto r = get(port_, "/metrics");
  ASSERT_EQ(r.status, 200);
  // Every sample line parses as `name{labels} value`.
  std::istringstream lines(r.body);
  std::string line;
  std::set<std::string> names;
  static const std::regex kSample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? [-+0-9.eEInfa]+$)");
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, kSample)) << line;
    names.insert(m[1]);
  }
  for (const char* want :
       {"switchboard_gateway_requests_total", "switchboard_gateway_request_duration_seconds_bucket",
        "switchboard_gateway_attempts_total", "switchboard_gateway_fallbacks_total",
        "switchboard_gateway_unhandled_errors_total", "switchboard_keys_leases_total",
        "switchboard_keys_state", "switchboard_keys_in_flight_requests",
        "switchboard_keys_cooldown_remaining_seconds", "switchboard_keys_lock_contended_total",
        "switchboard_breaker_state", "switchboard_store_queue_depth",
        "switchboard_store_dropped_total", "switchboard_store_write_errors_total",
        "switchboard_store_commit_seconds_bucket", "switchboard_routing_updates_total",
        "switchboard_process_resident_memory_bytes"}) {
    EXPECT_TRUE(names.count(want)) << "missing series " << want;
  }
  EXPECT_TRUE(std::regex_search(
      r.body,
      std::regex(
          R"(switchboard_gateway_requests_total\{[^}]*model="cheap"[^}]*status="ok"[^}]*\} 3)")))
      << r.body.substr(0, 3000);
}

// The value of the sample `name` whose labels include every `k="v"` of `labels`; NaN if none.
double sample(const std::string& text, const std::string& name,
              const std::vector<std::pair<std::string, std::string>>& labels = {}) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t end = line.find_first_of("{ ");
    if (end == std::string::npos || line.compare(0, end, name) != 0 || end != name.size()) continue;
    const size_t space = line.rfind(' ');
    const std::string label_text = line.substr(end, space - end);
    bool all = true;
    for (const auto& [k, v] : labels)
      all = all && label_text.find(k + "=\"" + v + "\"") != std::string::npos;
    if (all) return std::stod(line.substr(space + 1));
  }
  return std::nan("");
}

// Issue 29: tokens and cost by client key name, attempt latency, time to first token, the build
// and the standard process metrics; the breaker's state as a state set, like a key's.
TEST_F(OpsTest, MetricsCarryTokensCostFirstTokenTheBuildAndTheProcess) {
  auto& mock = add_mock();
  start_gateway(std::string(kGatewayKeys) + "providers:\n" + provider("up", mock) + models_yaml());
  // The registry is the process's: series other tests fed are counted from here.
  const std::string before = get(port_, "/metrics").body;
  auto count_before = [&](const std::string& name,
                          const std::vector<std::pair<std::string, std::string>>& labels) {
    const double v = sample(before, name, labels);
    return std::isnan(v) ? 0.0 : v;
  };
  const std::vector<std::pair<std::string, std::string>> attempt_labels = {
      {"model", "cheap"}, {"provider", "up"}, {"status", "success"}};
  const double attempts_before =
      count_before("switchboard_gateway_upstream_attempt_duration_seconds_count", attempt_labels);
  const double ttft_before =
      count_before("switchboard_gateway_time_to_first_token_seconds_count", {{"model", "cheap"}});
  int64_t tokens_in = 0, tokens_out = 0;
  for (int i = 0; i < 2; ++i) {
    auto r = chat(chat_body("cheap"), bearer("gw-team-a-secret-111"));
    ASSERT_EQ(r.status, 200) << r.body;
    const auto doc = parse_json(r.body);
    const auto& usage = doc.as_object().at("usage").as_object();
    tokens_in += usage.at("prompt_tokens").to_number<int64_t>();
    tokens_out += usage.at("completion_tokens").to_number<int64_t>();
  }
  ASSERT_GT(tokens_in, 0);
  auto streamed = chat(chat_body("cheap", true), bearer("gw-team-a-secret-111"));
  ASSERT_EQ(streamed.status, 200);
  auto r = get(port_, "/metrics");
  ASSERT_EQ(r.status, 200);
  const std::vector<std::pair<std::string, std::string>> who = {
      {"model", "cheap"}, {"provider", "up"}, {"client", "team-a"}};
  // The stream's usage counts too: at least what the two plain answers used.
  const double in = sample(r.body, "switchboard_gateway_input_tokens_total", who);
  const double out = sample(r.body, "switchboard_gateway_output_tokens_total", who);
  EXPECT_GT(in, double(tokens_in)) << r.body.substr(0, 4000);
  EXPECT_GT(out, double(tokens_out));
  // cheap costs 1 USD per million tokens either way.
  EXPECT_NEAR(sample(r.body, "switchboard_gateway_cost_usd_total", who), (in + out) / 1e6, 1e-9);
  EXPECT_EQ(sample(r.body, "switchboard_gateway_time_to_first_token_seconds_count",
                   {{"model", "cheap"}}) -
                ttft_before,
            1);  // the stream only
  EXPECT_EQ(sample(r.body, "switchboard_gateway_upstream_attempt_duration_seconds_count",
                   attempt_labels) -
                attempts_before,
            3);
  EXPECT_EQ(sample(r.body, "switchboard_build_info", {{"version", SWITCHBOARD_VERSION}}), 1);
  EXPECT_TRUE(
      std::regex_search(r.body, std::regex(R"(switchboard_build_info\{[^}]*commit="[^"]+")")));
  EXPECT_GT(sample(r.body, "process_cpu_seconds_total"), 0);
  EXPECT_GT(sample(r.body, "process_open_fds"), 3);
  EXPECT_GT(sample(r.body, "process_max_fds"), 0);
  const double start = sample(r.body, "process_start_time_seconds");
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LE(start, now + 1);
  EXPECT_GT(start, now - 24 * 3600);  // this test's process started today
  EXPECT_EQ(
      sample(r.body, "switchboard_breaker_state", {{"target", "provider:up"}, {"state", "closed"}}),
      1);
  EXPECT_EQ(
      sample(r.body, "switchboard_breaker_state", {{"target", "provider:up"}, {"state", "open"}}),
      0);
  // A secret never becomes a label value.
  EXPECT_EQ(r.body.find("gw-team-a-secret"), std::string::npos);
}

// Every log line of a gateway run, including failures that quote upstream errors, is scanned for
// the configured secrets.
TEST_F(OpsTest, NoConfiguredSecretReachesTheLogs) {
  auto out = std::make_shared<std::ostringstream>();
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(*out);
  log::set_sink(sink, log::Format::kJson);
  log::logger().set_level(spdlog::level::debug);
  MockScenario s;
  s.invalid_keys = {"sk-live-revoked-secret-0001"};
  s.script = {MockScriptStep{500, 2}};
  auto& mock = add_mock(s);
  access_log_ = true;
  start_gateway(
      "auth: { gateway_keys: [gw-log-secret-555], admin_key: adm-log-secret-666 }\n"
      "providers:\n" +
      provider("up", mock, "[sk-live-revoked-secret-0001, sk-live-good-secret-0002]") +
      models_yaml());
  chat(chat_body("cheap"), bearer("gw-log-secret-555"));
  chat(chat_body("cheap"), bearer("gw-log-secret-555"));
  chat(chat_body("cheap"), bearer("wrong-gw-log-secret-555"));
  get(port_, "/admin/keys", bearer("adm-log-secret-666"));
  log::info(
      "upstream replied: invalid key sk-live-revoked-secret-0001");  // as a careless line would
  gw_->stop(Millis(1000));
  gw_.reset();
  log::logger().flush();
  std::string text = out->str();
  log::init("error", log::Format::kText);
  EXPECT_FALSE(text.empty());
  for (const char* secret : {"sk-live-revoked-secret-0001", "sk-live-good-secret-0002",
                             "gw-log-secret-555", "adm-log-secret-666"}) {
    EXPECT_EQ(text.find(secret), std::string::npos) << secret << " leaked:\n" << text;
  }
  EXPECT_NE(text.find("[up#1]"), std::string::npos);  // the careless line was redacted, not dropped
  // Issue 29: every line is a JSON object; access records carry their fields at the top level.
  std::istringstream lines(text);
  std::string line;
  int access = 0;
  while (std::getline(lines, line)) {
    boost::system::error_code ec;
    auto v = boost::json::parse(line, ec);
    ASSERT_FALSE(ec) << line;
    ASSERT_TRUE(v.is_object()) << line;
    const auto& o = v.as_object();
    ASSERT_TRUE(o.contains("ts") && o.at("ts").is_string()) << line;
    EXPECT_EQ(o.at("ts").as_string().size(), 27u) << line;  // 2026-12-06T01:02:03.123456Z
    if (o.at("msg") == "access") {
      ++access;
      EXPECT_TRUE(o.contains("request_id") && o.contains("status") && o.contains("latency_us"))
          << line;
    }
  }
  EXPECT_EQ(access, 2) << text;  // the two chats the gateway key made; the 401 is not routed
}

// SIGTERM with requests in flight: every one completes, then the process exits 0.
TEST_F(OpsTest, SigtermDrainsInFlightRequestsAndExitsZero) {
  MockScenario s;
  s.latency_ms = 800;
  auto& mock = add_mock(s);
  const std::string cfg = (dir_ / "serve.yaml").string();
  {
    std::ofstream f(cfg);
    f << "listen: 127.0.0.1:0\nstate: { path: " << (dir_ / "serve.db").string()
      << " }\nserver: { shutdown_grace_ms: 10000 }\nproviders:\n"
      << provider("up", mock) << models_yaml();
  }
  // Port 0 would hide the port: pick a free one first.
  int probe = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(probe, reinterpret_cast<sockaddr*>(&addr), &len);
  uint16_t port = ntohs(addr.sin_port);
  ::close(probe);
  const std::string listen = "127.0.0.1:" + std::to_string(port);
  const std::string log_path = (dir_ / "serve.log").string();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl(SWITCHBOARD_BINARY, SWITCHBOARD_BINARY, "serve", "--config", cfg.c_str(), "--listen",
            listen.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ASSERT_TRUE(
      eventually([&] { return get(port, "/healthz").status == 200; }, std::chrono::seconds(10)));
  std::vector<std::future<HttpResult>> inflight;
  for (int i = 0; i < 4; ++i)
    inflight.push_back(std::async(std::launch::async, [&] {
      return post(port, "/v1/chat/completions", chat_body("cheap"));
    }));
  ASSERT_TRUE(eventually([&] { return mock.stats().requests >= 4; }, std::chrono::seconds(10)));
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  for (auto& f : inflight) EXPECT_EQ(f.get().status, 200);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  // New connections are refused after shutdown.
  EXPECT_FALSE(
      request(port, "GET", "/healthz", {}, {}, std::chrono::milliseconds(500)).transport_ok);
}

// Reloads with added, removed and changed keys while requests flow: none fails, a staying key
// keeps its state, an invalid file is rejected with its errors and the old configuration serves.
TEST_F(OpsTest, HotReloadUnderLoadLosesNoRequest) {
  MockScenario s;
  s.latency_ms = 5;
  auto& mock = add_mock(s);
  auto write = [&](const std::string& path, const std::string& keys, int max_concurrent) {
    write_reload_config(path, dir_ / "reload.db", mock, keys, max_concurrent);
  };
  const std::string path = (dir_ / "reload.yaml").string();
  write(path, "[sk-a, sk-b]", 8);
  auto gw = start_from_file(path);
  ASSERT_TRUE(gw);
  const uint16_t port = gw->port();
  ASSERT_EQ(post(port, "/admin/keys/up#2/disable", "").status, 200);

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&] {
      while (!stop) {
        auto r = post(port, "/v1/chat/completions", chat_body("cheap"));
        (r.status == 200 ? ok : failed)++;
      }
    });
  }
  auto reload_with = [&](const std::string& keys, int max_concurrent) {
    write(path, keys, max_concurrent);
    auto r = post(port, "/admin/reload", "");
    EXPECT_EQ(r.status, 200) << r.body;
    int before = ok.load();
    EXPECT_TRUE(eventually([&] { return ok.load() >= before + 20; }));
  };
  reload_with("[sk-a, sk-b, sk-c]", 8);  // a key added
  reload_with("[sk-b, sk-c]", 8);        // a key removed (its leases finish)
  reload_with("[sk-b, sk-c]", 2);        // limits changed
  // An invalid file: rejected with its error; the running configuration keeps serving.
  {
    std::ofstream f(path);
    f << "providers:\n  up: { kind: openai, keys: [x], limits: { rpm: -1 } }\n";
  }
  auto bad = post(port, "/admin/reload", "");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("providers.up.limits.rpm"), std::string::npos) << bad.body;
  int before = ok.load();
  EXPECT_TRUE(eventually([&] { return ok.load() >= before + 20; }));
  stop = true;
  for (auto& c : clients) c.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(ok.load(), 80);
  // sk-b (disabled before the reloads, now "up#1") kept its state through three reloads.
  auto keys = parse_json(get(port, "/admin/keys").body);
  std::map<std::string, std::string> state;
  for (const auto& k : keys.as_object().at("keys").as_array())
    state[std::string(k.as_object().at("id").as_string())] =
        std::string(k.as_object().at("state").as_string());
  EXPECT_EQ(state["up#1"], "disabled");
  EXPECT_EQ(state["up#2"], "healthy");
  EXPECT_EQ(state.size(), 2u);
  gw->stop(Millis(1000));
}

// Issue 18: requests WAITING for a key (max_concurrent reached) when a reload hands the pool's
// keys to a new pool are served by the new pool, not failed with 503: twenty reloads under a
// load that keeps requests queued lose nothing.
TEST_F(OpsTest, ReloadsWhileRequestsWaitForAKeyLoseNothing) {
  MockScenario s;
  s.latency_ms = 10;
  auto& mock = add_mock(s);
  auto write = [&](const std::string& path, int max_concurrent) {
    write_reload_config(path, dir_ / "reload2.db", mock, "[sk-a]", max_concurrent);
  };
  const std::string path = (dir_ / "reload2.yaml").string();
  write(path, 1);
  auto gw = start_from_file(path);
  ASSERT_TRUE(gw);
  const uint16_t port = gw->port();
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::mutex mu;
  std::vector<std::string> failures;
  std::vector<std::thread> clients;
  for (int t = 0; t < 6; ++t) {  // six clients on one key of max_concurrent 1-2: most wait
    clients.emplace_back([&] {
      while (!stop) {
        auto r = post(port, "/v1/chat/completions", chat_body("cheap"));
        if (r.status == 200) {
          ok++;
        } else {
          std::lock_guard lock(mu);
          failures.push_back(std::to_string(r.status) + " " + r.body);
        }
      }
    });
  }
  for (int i = 0; i < 20; ++i) {
    write(path, 1 + i % 2);  // a changed limit: a new pool takes the key over
    auto r = post(port, "/admin/reload", "");
    EXPECT_EQ(r.status, 200) << r.body;
    const int before = ok.load();
    EXPECT_TRUE(eventually([&] { return ok.load() >= before + 5; }));
  }
  stop = true;
  for (auto& c : clients) c.join();
  gw->stop(Millis(1000));
  EXPECT_TRUE(failures.empty()) << failures.size() << " failed, first: " << failures.front();
  EXPECT_GT(ok.load(), 100);
}

}  // namespace
}  // namespace switchboard::gwtest
