#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <filesystem>
#include <map>

#include "gateway/gateway.h"
#include "gateway/mock_provider.h"
#include "net/http_client.h"
#include "routing/routing.h"

namespace switchboard {
namespace {

namespace asio = boost::asio;

// A blocking HTTP client for the test's side of the socket.
class Client {
 public:
  net::HttpResponse post(const std::string& url, const std::string& body,
                         net::HttpHeaders headers = {}) {
    net::HttpRequest req;
    req.url = url;
    req.body = body;
    req.headers = std::move(headers);
    req.headers.emplace_back("content-type", "application/json");
    req.deadline = MonoClock::now() + std::chrono::seconds(10);
    net::HttpResponse res;
    net::TransportStatus st;
    asio::co_spawn(
        ctx_, [&]() -> asio::awaitable<void> { st = co_await client_.fetch(req, res); },
        asio::detached);
    ctx_.restart();
    ctx_.run();
    EXPECT_TRUE(st.ok()) << st.message;
    return res;
  }

 private:
  asio::io_context ctx_;
  net::HttpClient client_{ctx_.get_executor()};
};

gateway::GatewayOptions listen_on_any_port() {
  gateway::GatewayOptions options;
  options.listen = "127.0.0.1:0";
  return options;
}

const std::map<std::string, double> kPrice = {{"cheap", 1}, {"mid", 10}, {"flagship", 50}};

MockScenario quality(double mid_medium) {
  MockScenario s;
  s.seed = 7;
  s.quality["cheap"] = {{"easy", 0.97}, {"medium", 0.55}, {"hard", 0.2}};
  s.quality["mid"] = {{"easy", 0.97}, {"medium", mid_medium}, {"hard", 0.45}};
  s.quality["flagship"] = {{"easy", 0.98}, {"medium", 0.97}, {"hard", 0.96}};
  return s;
}

// Three models priced 1 : 10 : 50 and three kinds of task: the cheap model is good enough for
// easy ones, the mid one for medium ones, and only the flagship for hard ones. With the caller's
// verdicts, the learned route must reach nearly the flagship's success at a fraction of its cost,
// then notice when the mid model degrades.
TEST(LearningEndToEnd, FeedbackFindsTheCheapestGoodEnoughModelAndNoticesDegradation) {
  auto dir = std::filesystem::temp_directory_path() / ("sb-learning-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  gateway::MockProvider mock(quality(0.96));
  ASSERT_TRUE(mock.start("127.0.0.1:0").ok());
  std::string yaml = "state: { path: " + (dir / "db").string() + " }\n" +
                     "log: { level: warn, access_log: false }\n"
                     "server: { threads: 1 }\n"
                     "providers:\n  up: { kind: openai, base_url: \"http://127.0.0.1:" +
                     std::to_string(mock.port()) + "/v1\", keys: [k1] }\n" +
                     "models:\n"
                     "  cheap: { provider: up, tier: speed, cost: { input_per_mtok: 1000, "
                     "output_per_mtok: 1000 } }\n"
                     "  mid: { provider: up, tier: balanced, cost: { input_per_mtok: 10000, "
                     "output_per_mtok: 10000 } }\n"
                     "  flagship: { provider: up, tier: flagship, cost: { input_per_mtok: 50000, "
                     "output_per_mtok: 50000 } }\n"
                     "routes:\n  auto: { strategy: learned, layers: [[cheap, mid, flagship]] }\n";
  auto load = load_config_string(yaml, "test.yaml", Environment::from_map({}));
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  routing::Rng::set_thread_seed(12345);  // the gateway's thread-local samplers derive from it
  auto gw = gateway::Gateway::create(std::make_shared<const Config>(std::move(*load.config)),
                                     listen_on_any_port());
  ASSERT_TRUE(gw.ok()) << gw.status().message();
  ASSERT_TRUE((*gw)->start().ok());
  const std::string base = (*gw)->base_url();

  Client client;
  routing::Rng draw(99);
  struct Served {
    std::string category, model;
    bool correct;
  };
  auto one = [&](const std::string& category) {
    auto res = client.post(
        base + "/v1/chat/completions",
        "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"category=" + category +
            " solve this\"}]}",
        {{"x-switchboard-category", category}});
    EXPECT_EQ(res.head.status, 200) << res.body;
    Served s{category, std::string(res.head.header("x-switchboard-model")),
             res.body.find("\"correct answer") != std::string::npos};
    auto fb = client.post(base + "/v1/feedback",
                          "{\"request_id\":\"" +
                              std::string(res.head.header("x-switchboard-request-id")) +
                              "\",\"success\":" + (s.correct ? "true" : "false") + "}");
    EXPECT_EQ(fb.head.status, 200) << fb.body;
    return s;
  };
  auto pick_category = [&] {
    double u = draw.uniform();
    return u < 0.4 ? std::string("easy") : u < 0.75 ? std::string("medium") : std::string("hard");
  };

  std::vector<Served> served;
  for (int i = 0; i < 1500; ++i) served.push_back(one(pick_category()));
  double success = 0, cost = 0, flagship_success = 0;
  std::map<std::string, std::map<std::string, int>> share;
  for (size_t i = served.size() - 500; i < served.size(); ++i) {
    success += served[i].correct;
    cost += kPrice.at(served[i].model);
    flagship_success += quality(0.96).quality["flagship"][served[i].category];
    share[served[i].category][served[i].model]++;
  }
  std::printf("last 500: success %.0f (always-flagship expects %.1f), cost %.0f of %.0f (%.1f%%)\n",
              success, flagship_success, cost, 500.0 * 50, 100 * cost / (500.0 * 50));
  for (auto& [cat, m] : share)
    std::printf("  %s: cheap %d, mid %d, flagship %d\n", cat.c_str(), m["cheap"], m["mid"],
                m["flagship"]);
  EXPECT_GE(success, 0.95 * flagship_success);
  EXPECT_LE(cost, 0.40 * 500 * 50);

  // The mid model degrades on medium tasks: its share of them must fall below 20% (over the last
  // 50 medium requests) within 200 medium requests.
  mock.set_scenario(quality(0.2));
  int medium_seen = 0, fell_below_at = -1;
  std::vector<int> recent_mid;
  while (medium_seen < 400 && fell_below_at < 0) {
    std::string cat = pick_category();
    Served s = one(cat);
    if (cat != "medium") continue;
    ++medium_seen;
    recent_mid.push_back(s.model == "mid");
    if (recent_mid.size() >= 50) {
      int mid = 0;
      for (size_t i = recent_mid.size() - 50; i < recent_mid.size(); ++i) mid += recent_mid[i];
      if (mid < 10) fell_below_at = medium_seen;
    }
  }
  std::printf("mid's share of medium tasks fell below 20%% after %d medium requests\n",
              fell_below_at);
  ASSERT_GT(fell_below_at, 0);
  EXPECT_LE(fell_below_at, 200);
  (*gw)->stop(Millis(1000));
  mock.stop();
  std::filesystem::remove_all(dir);
}

TEST(LearningEndToEnd, FeedbackEdgeCases) {
  auto dir = std::filesystem::temp_directory_path() / ("sb-feedback-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string yaml = "state: { path: " + (dir / "db").string() + " }\n" +
                     "log: { level: warn, access_log: false }\n"
                     "server: { threads: 1 }\n"
                     "learning: { feedback_max_requests: 16 }\n"
                     "providers:\n  up: { kind: mock }\n"
                     "models:\n  m: { provider: up }\n";
  auto load = load_config_string(yaml, "test.yaml", Environment::from_map({}));
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  auto gw = gateway::Gateway::create(std::make_shared<const Config>(std::move(*load.config)),
                                     listen_on_any_port());
  ASSERT_TRUE(gw.ok()) << gw.status().message();
  ASSERT_TRUE((*gw)->start().ok());
  const std::string base = (*gw)->base_url();
  Client client;
  auto chat = [&] {
    auto res = client.post(base + "/v1/chat/completions",
                           R"({"model":"m","messages":[{"role":"user","content":"hi"}]})");
    EXPECT_EQ(res.head.status, 200);
    return std::string(res.head.header("x-switchboard-request-id"));
  };
  auto feedback = [&](const std::string& body) {
    return client.post(base + "/v1/feedback", body).head.status;
  };

  std::string first = chat();
  std::string second = chat();
  EXPECT_EQ(feedback("{\"request_id\":\"" + second + "\",\"success\":true,\"score\":0.8}"), 200);
  EXPECT_EQ(feedback("{\"request_id\":\"" + second + "\",\"success\":false}"),
            409);  // second verdict
  EXPECT_EQ(feedback("{\"request_id\":\"sb-00000000-0000000001\",\"success\":true}"),
            404);  // not ours
  EXPECT_EQ(feedback("{\"request_id\":\"nonsense\",\"success\":true}"), 404);
  EXPECT_EQ(feedback("not json"), 400);
  EXPECT_EQ(feedback("{\"success\":true}"), 400);                  // no id
  EXPECT_EQ(feedback("{\"request_id\":\"" + first + "\"}"), 400);  // no verdict
  EXPECT_EQ(feedback("{\"request_id\":\"" + first + "\",\"success\":\"yes\"}"), 400);
  EXPECT_EQ(feedback("{\"request_id\":\"" + first + "\",\"success\":true,\"score\":1.5}"), 400);
  // The ledger remembers the last 16 requests: after 16 more, the first is expired.
  for (int i = 0; i < 16; ++i) chat();
  EXPECT_EQ(feedback("{\"request_id\":\"" + first + "\",\"success\":true}"), 404);
  (*gw)->stop(Millis(1000));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace switchboard
