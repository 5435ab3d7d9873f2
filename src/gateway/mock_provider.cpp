#include "gateway/mock_provider.h"

#include <openssl/evp.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <deque>
#include <mutex>
#include <random>
#include <unordered_map>

#include "common/json.h"
#include "common/log.h"
#include "gateway/http.h"

namespace switchboard::gateway {

namespace {

constexpr auto kNothrow = asio::as_tuple(asio::use_awaitable);

enum class Action { kAnswer, kError, kHang, kDrop };

struct Decision {
  Action action = Action::kAnswer;
  int status = 200;
  int64_t retry_after_ms = 0;
  std::string message;
  std::string code;
  int64_t remaining = -1;  // x-ratelimit-remaining-requests when rpm is set
  int64_t limit = 0;
  int64_t reset_ms = 0;
};

std::string bearer(const Request& req) {
  auto auth = req[http::field::authorization];
  if (auth.size() > 7 && (auth.substr(0, 7) == "Bearer " || auth.substr(0, 7) == "bearer "))
    return std::string(auth.substr(7));
  return std::string(req["x-api-key"]);
}

std::string duration_text(int64_t ms) {
  if (ms < 1000) return std::to_string(ms) + "ms";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3gs", double(ms) / 1000.0);
  return buf;
}

}  // namespace

struct MockProvider::Impl {
  mutable std::mutex mu;
  MockScenario scenario;
  std::mt19937_64 rng;
  size_t script_pos = 0;
  int script_used = 0;
  std::unordered_map<std::string, std::deque<MonoTime>> windows;
  std::unordered_map<std::string, int64_t> in_flight;
  MockStats stats;
  std::unique_ptr<HttpServer> server;

  explicit Impl(MockScenario s) : scenario(std::move(s)), rng(scenario.seed) {}

  Decision decide(const std::string& key) {
    std::lock_guard lock(mu);
    Decision d;
    stats.requests++;
    auto now = MonoClock::now();
    const auto& s = scenario;
    if (std::find(s.invalid_keys.begin(), s.invalid_keys.end(), key) != s.invalid_keys.end()) {
      d.action = Action::kError;
      d.status = 401;
      d.message = "Incorrect API key provided";
      d.code = "invalid_api_key";
      return d;
    }
    if (s.rpm > 0) {
      auto& w = windows[key];
      while (!w.empty() && now - w.front() >= std::chrono::seconds(60)) w.pop_front();
      d.limit = s.rpm;
      if (int64_t(w.size()) >= s.rpm) {
        d.action = Action::kError;
        d.status = 429;
        d.retry_after_ms =
            std::chrono::duration_cast<Millis>(w.front() + std::chrono::seconds(60) - now).count() +
            1;
        d.remaining = 0;
        d.reset_ms = d.retry_after_ms;
        d.message = "Rate limit reached for requests";
        d.code = "rate_limit_exceeded";
        return d;
      }
      w.push_back(now);
      d.remaining = s.rpm - int64_t(w.size());
      d.reset_ms =
          std::chrono::duration_cast<Millis>(w.front() + std::chrono::seconds(60) - now).count();
    }
    if (s.max_concurrent > 0 && in_flight[key] >= s.max_concurrent) {
      d.action = Action::kError;
      d.status = 429;
      d.retry_after_ms = 50;
      d.message = "Too many concurrent requests for this key";
      d.code = "rate_limit_exceeded";
      return d;
    }
    if (script_pos < s.script.size()) {
      const auto& step = s.script[script_pos];
      if (++script_used >= step.times) {
        script_pos++;
        script_used = 0;
      }
      d.retry_after_ms = step.retry_after_ms;
      if (step.hang)
        d.action = Action::kHang;
      else if (step.drop_mid_stream)
        d.action = Action::kDrop;
      else if (step.status != 200) {
        d.action = Action::kError;
        d.status = step.status;
        d.message = "scripted failure";
        d.code = "scripted";
      }
    } else {
      std::uniform_real_distribution<double> u(0, 1);
      if (u(rng) < s.error_rate) {
        d.action = Action::kError;
        d.status = s.error_status;
        d.message = "simulated upstream failure";
        d.code = "simulated";
      } else if (u(rng) < s.timeout_rate) {
        d.action = Action::kHang;
      } else if (u(rng) < s.drop_mid_stream_rate) {
        d.action = Action::kDrop;
      }
    }
    if (d.action == Action::kAnswer || d.action == Action::kDrop) {
      int64_t n = ++in_flight[key];
      stats.max_in_flight_per_key = std::max(stats.max_in_flight_per_key, n);
    }
    return d;
  }

  void done(const std::string& key, int status, bool counted) {
    std::lock_guard lock(mu);
    stats.by_status[status]++;
    if (counted) in_flight[key]--;
  }

  bool correct(const std::string& model, const std::string& category) {
    std::lock_guard lock(mu);
    double p = 1.0;
    if (auto it = scenario.quality.find(model); it != scenario.quality.end()) {
      if (auto c = it->second.find(category); c != it->second.end())
        p = c->second;
      else if (auto d = it->second.find("default"); d != it->second.end())
        p = d->second;
    }
    return std::uniform_real_distribution<double>(0, 1)(rng) < p;
  }

  asio::awaitable<void> handle(Exchange& ex);
  asio::awaitable<void> chat(Exchange& ex);
  void embeddings(Exchange& ex);
};

asio::awaitable<void> MockProvider::Impl::handle(Exchange& ex) {
  std::string_view target = ex.request.target();
  target = target.substr(0, target.find('?'));
  if (ex.request.method() == http::verb::post &&
      (target == "/v1/chat/completions" || target == "/chat/completions")) {
    co_await chat(ex);
    co_return;
  }
  if (ex.request.method() == http::verb::post &&
      (target == "/v1/embeddings" || target == "/embeddings")) {
    embeddings(ex);
    co_return;
  }
  if (ex.request.method() == http::verb::post && target == "/mock/scenario") {
    auto load = load_mock_scenario_string(ex.request.body(), "scenario");
    if (!load.ok()) {
      ex.response = error_response(http::status::bad_request, load.errors.front().to_string(),
                                   "invalid_request_error", "bad_scenario");
      co_return;
    }
    std::lock_guard lock(mu);
    scenario = *load.scenario;
    script_pos = 0;
    script_used = 0;
    rng.seed(scenario.seed);
    ex.response = json_response(http::status::ok, "{\"ok\":true}");
    co_return;
  }
  if (ex.request.method() == http::verb::get && target == "/mock/stats") {
    MockStats st;
    {
      std::lock_guard lock(mu);
      st = stats;
    }
    std::string body = "{\"requests\":" + std::to_string(st.requests) +
                       ",\"streams_dropped\":" + std::to_string(st.streams_dropped) +
                       ",\"max_in_flight_per_key\":" + std::to_string(st.max_in_flight_per_key) +
                       ",\"by_status\":{";
    bool first = true;
    for (auto [code, n] : st.by_status) {
      body += (first ? "\"" : ",\"") + std::to_string(code) + "\":" + std::to_string(n);
      first = false;
    }
    body += "}}";
    ex.response = json_response(http::status::ok, body);
    co_return;
  }
  if (ex.request.method() == http::verb::get && (target == "/v1/models" || target == "/models")) {
    ex.response = json_response(http::status::ok, "{\"object\":\"list\",\"data\":[]}");
    co_return;
  }
  ex.response = error_response(http::status::not_found, "no such endpoint on the mock provider",
                               "invalid_request_error", "not_found");
}

// The request's body as a JSON object, or a 400 answered.
bool parse_body(Exchange& ex, boost::json::value& out) {
  boost::system::error_code ec;
  out = boost::json::parse(ex.request.body(), ec);
  if (!ec && out.is_object()) return true;
  ex.response = error_response(http::status::bad_request, "body is not a JSON object",
                               "invalid_request_error", "invalid_json");
  return false;
}

// One 8-dimensional vector per input, derived from its text (the same text, the same vector), with
// the scenario's keys, rate limits and scripted failures as for chat.
void MockProvider::Impl::embeddings(Exchange& ex) {
  const std::string key = bearer(ex.request);
  boost::json::value body;
  if (!parse_body(ex, body)) return;
  const auto& obj = body.as_object();
  std::vector<std::string> inputs;
  if (auto* in = obj.if_contains("input"); in && in->is_string()) {
    inputs.emplace_back(in->as_string());
  } else if (in && in->is_array()) {
    for (const auto& v : in->as_array())
      inputs.push_back(v.is_string() ? std::string(v.as_string()) : boost::json::serialize(v));
  }
  if (inputs.empty()) {
    ex.response = error_response(http::status::bad_request, "input is required",
                                 "invalid_request_error", "invalid_input");
    return;
  }
  Decision d = decide(key);
  if (d.action == Action::kError || d.action == Action::kHang) {  // no hanging here: a 500
    const int status = d.action == Action::kError ? d.status : 500;
    ex.response = error_response(static_cast<http::status>(status),
                                 d.message.empty() ? "simulated upstream failure" : d.message,
                                 status == 429 ? "requests" : "server_error", d.code);
    done(key, status, false);
    return;
  }
  std::string model = "mock";
  if (auto* m = obj.if_contains("model"); m && m->is_string()) model = std::string(m->as_string());
  // OpenAI's SDKs ask for base64 (little-endian float32s) unless told otherwise.
  bool base64 = false;
  if (auto* f = obj.if_contains("encoding_format"); f && f->is_string())
    base64 = f->as_string() == "base64";
  std::string out = "{\"object\":\"list\",\"data\":[";
  int64_t tokens = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    tokens += std::max<int64_t>(1, int64_t(inputs[i].size() / 4));
    uint64_t h = std::hash<std::string>{}(inputs[i]);
    float vec[8];
    for (float& x : vec) {
      h = h * 6364136223846793005ULL + 1442695040888963407ULL;
      x = float(double(h >> 11) / double(1ULL << 53) - 0.5);
    }
    out += (i ? "," : "") + std::string("{\"object\":\"embedding\",\"index\":") +
           std::to_string(i) + ",\"embedding\":";
    if (base64) {
      unsigned char b64[4 * ((sizeof vec + 2) / 3) + 1];
      const int n = EVP_EncodeBlock(b64, reinterpret_cast<const unsigned char*>(vec), sizeof vec);
      out += "\"" + std::string(reinterpret_cast<const char*>(b64), size_t(n)) + "\"";
    } else {
      out += "[";
      for (int k = 0; k < 8; ++k) out += (k ? "," : "") + std::to_string(vec[k]);
      out += "]";
    }
    out += "}";
  }
  out += "],\"model\":" + json::quote(model) +
         ",\"usage\":{\"prompt_tokens\":" + std::to_string(tokens) +
         ",\"total_tokens\":" + std::to_string(tokens) + "}}";
  ex.response = json_response(http::status::ok, std::move(out));
  done(key, 200, true);
}

asio::awaitable<void> MockProvider::Impl::chat(Exchange& ex) {
  const std::string key = bearer(ex.request);
  boost::json::value body;
  if (!parse_body(ex, body)) co_return;
  const auto& obj = body.as_object();
  std::string model = "mock";
  if (auto* m = obj.if_contains("model"); m && m->is_string()) model = std::string(m->as_string());
  bool stream = false;
  if (auto* s = obj.if_contains("stream"); s && s->is_bool()) stream = s->as_bool();
  bool include_usage = false;
  if (auto* so = obj.if_contains("stream_options"); so && so->is_object()) {
    if (auto* iu = so->as_object().if_contains("include_usage"); iu && iu->is_bool())
      include_usage = iu->as_bool();
  }
  std::string text;
  if (auto* msgs = obj.if_contains("messages"); msgs && msgs->is_array()) {
    for (const auto& m : msgs->as_array()) {
      if (!m.is_object()) continue;
      if (auto* c = m.as_object().if_contains("content"); c && c->is_string())
        text += c->as_string();
    }
  }
  std::string category = "default";
  if (auto pos = text.find("category="); pos != std::string::npos) {
    size_t end = text.find_first_of(" \n\t,.;", pos + 9);
    category = text.substr(pos + 9, end == std::string::npos ? std::string::npos : end - pos - 9);
  }

  Decision d = decide(key);
  std::vector<std::pair<std::string, std::string>> rl_headers;
  if (d.remaining >= 0) {
    rl_headers.emplace_back("x-ratelimit-limit-requests", std::to_string(d.limit));
    rl_headers.emplace_back("x-ratelimit-remaining-requests", std::to_string(d.remaining));
    rl_headers.emplace_back("x-ratelimit-reset-requests", duration_text(d.reset_ms));
  }
  if (d.action == Action::kError) {
    ex.response = error_response(
        static_cast<http::status>(d.status), d.message,
        d.status == 429 ? "requests" : (d.status == 401 ? "invalid_request_error" : "server_error"),
        d.code);
    if (d.retry_after_ms > 0) {
      ex.response.set("retry-after-ms", std::to_string(d.retry_after_ms));
      ex.response.set(http::field::retry_after, std::to_string((d.retry_after_ms + 999) / 1000));
    }
    for (const auto& [k, v] : rl_headers) ex.response.set(k, v);
    done(key, d.status, false);
    co_return;
  }
  struct InFlight {
    Impl* self;
    std::string key;
    int status = 200;
    ~InFlight() { self->done(key, status, true); }
  };
  InFlight guard{this, key};
  auto exec = co_await asio::this_coro::executor;
  asio::steady_timer timer(exec);
  int64_t latency;
  int chunks;
  int64_t chunk_delay, completion_tokens;
  {
    std::lock_guard lock(mu);
    latency = scenario.latency_ms;
    if (auto it = scenario.model_latency_ms.find(model); it != scenario.model_latency_ms.end())
      latency = it->second;
    chunks = scenario.chunks;
    chunk_delay = scenario.chunk_delay_ms;
    completion_tokens = scenario.completion_tokens;
  }
  if (d.action == Action::kHang) {
    guard.status = 0;
    timer.expires_after(std::chrono::minutes(10));
    co_await timer.async_wait(kNothrow);
    ex.close = true;
    ex.written = true;
    co_return;
  }
  if (latency > 0) {
    timer.expires_after(Millis(latency));
    co_await timer.async_wait(kNothrow);
  }
  bool ok = correct(model, category);
  std::string content = std::string(ok ? "correct" : "incorrect") + " answer from " + model;
  const int64_t prompt_tokens = std::max<int64_t>(1, int64_t(text.size() / 4));
  const std::string id =
      "chatcmpl-mock" + std::to_string(reinterpret_cast<uintptr_t>(&ex) % 1000000);
  const std::string usage =
      "{\"prompt_tokens\":" + std::to_string(prompt_tokens) +
      ",\"completion_tokens\":" + std::to_string(completion_tokens) +
      ",\"total_tokens\":" + std::to_string(prompt_tokens + completion_tokens) + "}";
  rl_headers.emplace_back("x-mock-correct", ok ? "true" : "false");

  if (!stream) {
    std::string out =
        "{\"id\":\"" + id +
        "\",\"object\":\"chat.completion\",\"created\":" + std::to_string(std::time(nullptr)) +
        ",\"model\":" + json::quote(model) +
        ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":" +
        json::quote(content) + "},\"finish_reason\":\"stop\"}],\"usage\":" + usage + "}";
    ex.response = json_response(http::status::ok, std::move(out));
    for (const auto& [k, v] : rl_headers) ex.response.set(k, v);
    co_return;
  }

  std::string rl_lines;
  for (const auto& [k, v] : rl_headers) append_header(rl_lines, k, v);
  if (!co_await write_stream_head(ex, http::status::ok, rl_lines)) co_return;
  auto chunk_json = [&](std::string_view delta, std::string_view finish) {
    std::string c = "data: {\"id\":\"" + id +
                    "\",\"object\":\"chat.completion.chunk\",\"model\":" + json::quote(model) +
                    ",\"choices\":[{\"index\":0,\"delta\":{" + std::string(delta) +
                    "},\"finish_reason\":" + std::string(finish) + "}]}\n\n";
    return c;
  };
  if (!co_await write_chunk(ex, chunk_json("\"role\":\"assistant\",\"content\":\"\"", "null")))
    co_return;
  for (int i = 0; i < chunks; ++i) {
    if (chunk_delay > 0) {
      timer.expires_after(Millis(chunk_delay));
      co_await timer.async_wait(kNothrow);
    }
    if (d.action == Action::kDrop && i == chunks / 2) {
      {
        std::lock_guard lock(mu);
        stats.streams_dropped++;
      }
      boost::system::error_code ec;
      ex.stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
      ex.stream.socket().close(ec);
      ex.close = true;
      co_return;
    }
    std::string piece = i == 0 ? content : " more";
    if (!co_await write_chunk(ex, chunk_json("\"content\":" + json::quote(piece), "null")))
      co_return;
  }
  if (!co_await write_chunk(ex, chunk_json("", "\"stop\""))) co_return;
  if (include_usage) {
    std::string u = "data: {\"id\":\"" + id +
                    "\",\"object\":\"chat.completion.chunk\",\"model\":" + json::quote(model) +
                    ",\"choices\":[],\"usage\":" + usage + "}\n\n";
    if (!co_await write_chunk(ex, u)) co_return;
  }
  if (!co_await write_chunk(ex, "data: [DONE]\n\n")) co_return;
  co_await finish_chunks(ex);
}

MockProvider::MockProvider(MockScenario scenario)
    : impl_(std::make_unique<Impl>(std::move(scenario))) {}

MockProvider::~MockProvider() {
  stop();
}

Status MockProvider::start(const std::string& listen, int threads) {
  ServerConfig limits;
  limits.idle_timeout_ms = 600000;
  impl_->server = std::make_unique<HttpServer>(
      limits, [impl = impl_.get()](Exchange& ex) { return impl->handle(ex); });
  return impl_->server->start(listen, threads);
}

void MockProvider::stop() {
  if (impl_->server) {
    impl_->server->stop(Millis(0));
    impl_->server.reset();
  }
}

uint16_t MockProvider::port() const {
  return impl_->server ? impl_->server->port() : 0;
}

void MockProvider::set_scenario(MockScenario scenario) {
  std::lock_guard lock(impl_->mu);
  impl_->scenario = std::move(scenario);
  impl_->script_pos = 0;
  impl_->script_used = 0;
  impl_->rng.seed(impl_->scenario.seed);
}

void MockProvider::reset_stats() {
  std::lock_guard lock(impl_->mu);
  impl_->stats = MockStats{};
}

MockStats MockProvider::stats() const {
  std::lock_guard lock(impl_->mu);
  return impl_->stats;
}

int run_mock_provider(const std::string& listen, const std::string& scenario_file) {
  MockScenario scenario;
  if (!scenario_file.empty()) {
    auto load = load_mock_scenario_file(scenario_file);
    if (!load.ok()) {
      for (const auto& e : load.errors) std::fprintf(stderr, "%s\n", e.to_string().c_str());
      return 2;
    }
    scenario = *load.scenario;
  }
  MockProvider mock(scenario);
  auto st = mock.start(listen, 1);
  if (!st.ok()) {
    std::fprintf(stderr, "switchboard mock-provider: %s\n", st.message().c_str());
    return 1;
  }
  log::info("mock provider listening on port {}", mock.port());
  asio::io_context signals_ctx;
  asio::signal_set signals(signals_ctx, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code&, int) { signals_ctx.stop(); });
  signals_ctx.run();
  mock.stop();
  return 0;
}

}  // namespace switchboard::gateway
