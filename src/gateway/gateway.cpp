// Gateway assembly: routing of HTTP paths to their handlers, and the lifecycle (create, start,
// stop, `serve`).
#include "gateway/gateway.h"

#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/json.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>

#include "common/json.h"
#include "common/log.h"
#include "common/metrics.h"
#include "gateway/auth.h"
#include "gateway/console.h"
#include "gateway/learning_journal.h"
#include "gateway/quotas.h"
#include "gateway/runtime.h"
#include "gateway/shared_learning.h"
#include "gateway/tracing.h"
#include "gateway/workflow_api.h"

namespace switchboard::gateway {

namespace {

// How often this gateway's learning goes to the cluster's other gateways (shared_learning.h).
constexpr Millis kSharedLearningInterval{500};
// How often the provider quotas' counts meet the other gateways' (quotas.h): a quota is shared
// within about this plus a Redis round trip.
constexpr Millis kSharedQuotaInterval{500};
// How often the learned rows that changed are written and the journal compacted: a restart
// replays at most this much of the journal.
constexpr Millis kLearningSnapshotInterval{2000};
// How long an access line may wait in its thread's buffer before the batch write
// (log::init_batched).
constexpr Millis kLogBatchInterval{50};

// The routes and models a client may request: a restricted key sees only its own.
std::string models_json(const Config& cfg, int gateway_key) {
  std::string out = "{\"object\":\"list\",\"data\":[";
  bool first = true;
  auto add = [&](const std::string& id, const std::string& owner) {
    if (!key_may_use(cfg, gateway_key, id)) return;
    out += first ? "" : ",";
    first = false;
    out += "{\"id\":" + json::quote(id) +
           ",\"object\":\"model\",\"created\":0,\"owned_by\":" + json::quote(owner) + "}";
  };
  for (const auto& r : cfg.routes) add(r.name, "switchboard");
  for (const auto& m : cfg.models) add(m.name, m.provider);
  out += "]}";
  return out;
}

// GET /v1/models/{id} (the SDKs' models.retrieve): a route, a model, or provider/upstream-name,
// if the client's key may use it. The id may come percent-encoded ("openai%2Fgpt-4o").
std::optional<std::string> model_json(const Config& cfg, int gateway_key, std::string_view raw) {
  std::string id;
  for (size_t i = 0; i < raw.size(); ++i) {
    auto hex = [](char c) {
      return c >= '0' && c <= '9'   ? c - '0'
             : c >= 'a' && c <= 'f' ? c - 'a' + 10
             : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                    : -1;
    };
    if (raw[i] == '%' && i + 2 < raw.size() && hex(raw[i + 1]) >= 0 && hex(raw[i + 2]) >= 0) {
      id += char(hex(raw[i + 1]) * 16 + hex(raw[i + 2]));
      i += 2;
    } else {
      id += raw[i];
    }
  }
  if (id.empty() || id.size() > 256 || !key_may_use(cfg, gateway_key, id)) return std::nullopt;
  std::string owner;
  if (cfg.find_route(id)) {
    owner = "switchboard";
  } else if (const ModelConfig* m = cfg.find_model(id)) {
    owner = m->provider;
  } else if (auto slash = id.find('/'); slash != std::string::npos && slash > 0 &&
                                        slash + 1 < id.size() &&
                                        cfg.find_provider(id.substr(0, slash))) {
    owner = id.substr(0, slash);
  } else {
    return std::nullopt;
  }
  return "{\"id\":" + json::quote(id) +
         ",\"object\":\"model\",\"created\":0,\"owned_by\":" + json::quote(owner) + "}";
}

asio::awaitable<void> handle(Runtime& rt, Exchange& ex) {
  const auto method = ex.request.method();
  std::string_view target = ex.request.target();
  target = target.substr(0, target.find('?'));
  const auto snap = rt.thread_snapshot();
  const Config& cfg = *snap->config;

  // One authorization step for every path (auth.h); the server ran the same check on the head.
  std::string_view path;
  const Area area = classify_path(target, path);
  Principal who;
  if (auto refusal = authorize(cfg, ex.request, area, ex.stream.socket(), who)) {
    ex.response = std::move(*refusal);
    co_return;
  }
  // The OpenAI-shaped POST endpoints (Anthropic's answer their own 405s).
  const bool chat = path == "/v1/chat/completions", embeddings = path == "/v1/embeddings";
  if ((chat || embeddings || path == "/v1/feedback" || path == "/v1/responses") &&
      method != http::verb::post) {
    ex.response = error_response(http::status::method_not_allowed, "use POST",
                                 "invalid_request_error", "method_not_allowed");
    co_return;
  }
  if (chat) {
    co_await handle_chat(rt, snap, ex, who.gateway_key);
    co_return;
  }
  if (embeddings) {
    co_await handle_embeddings(rt, snap, ex, who.gateway_key);
    co_return;
  }
  if (path == "/v1/responses") {
    co_await handle_responses(rt, snap, ex, who.gateway_key);
    co_return;
  }
  if (path == "/v1/messages") {
    co_await handle_messages(rt, snap, ex, who.gateway_key);
    co_return;
  }
  if (path == "/v1/messages/count_tokens") {
    handle_count_tokens(*snap, ex, who.gateway_key);
    co_return;
  }
  if (path == "/v1/feedback") {
    handle_feedback(rt, *snap, ex, who.gateway_key);
    co_return;
  }
  if (area == Area::kWorkflows) {
    if (!rt.workflows) {
      ex.response = error_response(http::status::service_unavailable,
                                   "workflows are not available on this gateway", "server_error",
                                   "workflows_unavailable");
      co_return;
    }
    WorkflowCaller caller{workflow_client(cfg, who), who.admin};
    co_await rt.workflows->handle(ex, path, caller);
    co_return;
  }
  if (method == http::verb::get && path == "/v1/models") {
    ex.response = json_response(http::status::ok, models_json(cfg, who.gateway_key));
    co_return;
  }
  if (method == http::verb::get && path.starts_with("/v1/models/")) {
    const std::string_view id = path.substr(11);
    if (auto body = model_json(cfg, who.gateway_key, id)) {
      ex.response = json_response(http::status::ok, std::move(*body));
    } else {
      // Unknown and not allowed look alike: a restricted key learns nothing of other models.
      ex.response = error_response(http::status::not_found,
                                   "The model '" + std::string(id.substr(0, 256)) +
                                       "' does not exist or you do not have access to it.",
                                   "invalid_request_error", "model_not_found");
    }
    co_return;
  }
  if (target == "/healthz") {
    ex.response = json_response(http::status::ok, "{\"status\":\"ok\"}");
    co_return;
  }
  if (target == "/readyz") {
    bool ready = !rt.store || rt.store_ok.load();
    std::string body = ready ? "{\"status\":\"ready\"" : "{\"status\":\"store unavailable\"";
    if (rt.cluster) {
      // Redis down: ready on the local share of the limits, unless configured to refuse.
      const bool redis_up = rt.cluster->all_up();
      if (!redis_up && rt.cluster->config().on_redis_down == RedisDownPolicy::kRefuse) {
        ready = false;
        body = "{\"status\":\"redis unavailable\"";
      }
      body += redis_up ? ",\"redis\":\"up\"" : ",\"redis\":\"down\"";
    }
    body += "}";
    ex.response = json_response(ready ? http::status::ok : http::status::service_unavailable, body);
    co_return;
  }
  if (target == "/metrics") {
    snap->breakers->snapshot();  // brings breaker state gauges up to date
    update_gauges(rt);
    ex.response = Response{http::status::ok, ex.request.version()};
    ex.response.set(http::field::content_type, "text/plain; version=0.0.4");
    ex.response.body() = metrics::serialize();
    co_return;
  }
  if (area == Area::kConsole) {
    serve_console(ex, target, !cfg.auth.admin_key.empty());
    co_return;
  }
  // The console's view of the workflow runs: every run, as the admin key sees them over
  // /v1/workflows (list, show, cancel).
  if (area == Area::kAdmin && (target == "/admin/runs" || target.starts_with("/admin/runs/"))) {
    if (!rt.workflows) {
      ex.response = error_response(http::status::service_unavailable,
                                   "workflows are not available on this gateway", "server_error",
                                   "workflows_unavailable");
      co_return;
    }
    const std::string runs_path = "/v1/workflows/runs" + std::string(target.substr(11));
    if (method == http::verb::post && !target.ends_with("/cancel")) {
      ex.response = error_response(http::status::method_not_allowed,
                                   "runs are submitted through POST /v1/workflows/runs",
                                   "invalid_request_error", "method_not_allowed");
      co_return;
    }
    // A named caller: GCC 12 mishandles a temporary bound to a coroutine's reference parameter
    // inside co_await (it was destroyed twice).
    const WorkflowCaller caller{"admin", true};
    co_await rt.workflows->handle(ex, runs_path, caller);
    co_return;
  }
  if (area == Area::kAdmin && handle_admin(rt, *snap, ex, target)) co_return;
  ex.response = error_response(
      http::status::not_found,
      "no such endpoint: " + std::string(target) +
          " (this gateway serves POST /v1/chat/completions, /v1/responses, /v1/embeddings, "
          "/v1/messages, /v1/messages/count_tokens, /v1/feedback, /v1/workflows/runs; GET "
          "/v1/models, /v1/models/{id}, "
          "/healthz, /readyz, /metrics, /ui and /admin/...)",
      "invalid_request_error", "not_found");
}

}  // namespace

// ---- lifecycle ---------------------------------------------------------------------------------

struct Gateway::Impl {
  GatewayOptions options;
  std::unique_ptr<Runtime> rt;
  std::unique_ptr<HttpServer> server;
  std::string listen;
};

Gateway::Gateway(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Gateway::~Gateway() {
  stop(Millis(0));
}

// A postgres store's node name when the configuration gives none: this host and the port the
// gateway listens on, which stay the same across its restarts (it then restores its own learned
// state). An ephemeral port (0) makes a name of its own for this run.
namespace {
std::string default_node(const std::string& listen) {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') std::strcpy(host, "gateway");
  std::string port = listen.substr(listen.rfind(':') + 1);
  if (port.empty() || port == "0" || listen.find(':') == std::string::npos) {
    log::warn(
        "store: state.node is not set and the listen port is ephemeral: this run's learned "
        "state will not be restored by the next one (set state.node)");
    port = "run-" + std::to_string(std::random_device{}());
  }
  return std::string(host) + ":" + port;
}
}  // namespace

Result<std::unique_ptr<Gateway>> Gateway::create(std::shared_ptr<const Config> config,
                                                 GatewayOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->listen = options.listen.empty() ? config->listen : options.listen;
  impl->rt = std::make_unique<Runtime>();
  Runtime& rt = *impl->rt;
  rt.instance_tag = std::random_device{}();
  rt.config_path = options.config_path;
  auto snap = build_snapshot(rt, config, nullptr);
  if (!snap.ok()) return snap.status();
  rt.publish(snap.value());
  rt.ledger =
      std::make_unique<routing::FeedbackLedger>(size_t(config->learning.feedback_max_requests),
                                                Millis(config->learning.feedback_ttl_ms), rt.clock);

  StateConfig state = config->state;
  if (state.backend == "postgres" && state.node.empty()) state.node = default_node(impl->listen);
  auto store = store::open_store(state, rt.clock);
  if (!store.ok())
    return Status::io_error(
        "cannot open the store at " +
        (state.backend == "postgres" ? "postgres (node " + state.node + ")" : config->state.path) +
        ": " + store.status().message());
  if (state.backend == "postgres")
    log::info("store: postgres, as node {} (outcomes, statistics and workflow runs shared)",
              state.node);
  rt.store = std::move(store.value());
  rt.learning = std::make_unique<LearningJournal>(rt, kLearningSnapshotInterval);
  if (auto loaded = rt.store->load(); loaded.ok()) {
    LearningJournal::restore(*snap.value()->router, *loaded);
    rt.learning->mark_written(*loaded);
    restore_key_state(rt, *snap.value(), *loaded);
    rt.store_ok = true;
  } else {
    log::warn("store state could not be loaded: {}", loaded.status().message());
  }
  rt.learning->attach(*snap.value()->router);
  // Verdicts may come for requests served before a restart, within the feedback window.
  {
    const WallTime now = rt.clock.wall_now();
    auto served = rt.store->recent_served(now - Millis(config->learning.feedback_ttl_ms),
                                          size_t(config->learning.feedback_max_requests));
    if (served.ok()) {
      for (auto& r : *served) {
        routing::FeedbackLedger::Served s;
        s.model = std::move(r.model);
        s.category = std::move(r.category);
        s.layer = r.layer;
        s.transport_reward = 1.0;  // only answered requests are remembered, as on the request path
        s.learned = true;
        rt.ledger->restore(std::move(r.request_id), s, owner_tag(r.gateway_key), r.time, r.judged);
      }
    } else if (served.status().code() != StatusCode::kNotFound) {
      log::warn("requests awaiting feedback could not be loaded: {}", served.status().message());
    }
  }
  // Provider quotas count this period's calls before a restart too.
  seed_quotas(rt);
  // Monthly budgets count what each gateway key spent this month before a restart too.
  if (!config->auth.gateway_keys.empty()) {
    const WallTime now = rt.clock.wall_now();
    auto spend = rt.store->gateway_spend(utc_month_start(now));
    if (spend.ok()) {
      for (size_t i = 0; i < config->auth.gateway_policies.size(); ++i) {
        auto it = spend->find(config->auth.gateway_policies[i].name);
        if (it == spend->end()) continue;
        auto& st = *snap.value()->gateway_keys[i];
        std::lock_guard lock(st.mu);
        st.month = utc_month(now);
        st.spend_usd = it->second;
      }
    } else if (spend.status().code() != StatusCode::kNotFound) {
      log::warn("gateway key spend could not be loaded: {}", spend.status().message());
    }
  }
  return std::unique_ptr<Gateway>(new Gateway(std::move(impl)));
}

Status Gateway::reload(std::shared_ptr<const Config> config) {
  auto r = reload_runtime(*impl_->rt, std::move(config));
  if (!r.ok)
    return Status::invalid_argument(r.messages.empty() ? "reload failed" : r.messages.front());
  return Status();
}

Status Gateway::reload_from_file() {
  auto r = gateway::reload_from_file(*impl_->rt);
  if (!r.ok)
    return Status::invalid_argument(r.messages.empty() ? "reload failed" : r.messages.front());
  return Status();
}

Status Gateway::start() {
  Runtime& rt = *impl_->rt;
  const Config& cfg = *rt.snapshot()->config;
  int threads = cfg.server.threads > 0 ? cfg.server.threads
                                       : std::max(1, int(std::thread::hardware_concurrency()));
  impl_->server =
      std::make_unique<HttpServer>(cfg.server, [&rt](Exchange& ex) { return handle(rt, ex); });
  // Answers the server gives before any handler (malformed HTTP, limits) carry the
  // x-switchboard-* headers too (DESIGN.md: every response), with no attempt made.
  // The same authorization as the handlers', on the head alone: a request without a valid key
  // is refused before its body is read (a keyless client cannot make the gateway buffer bodies).
  impl_->server->set_head_check(
      [&rt](const Request& req, const asio::ip::tcp::socket& peer) -> std::optional<Response> {
        std::string_view target = req.target();
        target = target.substr(0, target.find('?'));
        std::string_view path;
        const Area area = classify_path(target, path);
        if (area == Area::kOpen) return std::nullopt;
        Principal who;
        return authorize(*rt.thread_snapshot()->config, req, area, peer, who);
      });
  impl_->server->set_error_decorator([&rt](Response& res) {
    const std::string id = rt.request_id(rt.next_request_seq(), secure_random_u64());
    AnswerFacts none;
    none.request_id = id;
    for_each_switchboard_header(none, [&res](std::string_view n, std::string_view v) {
      res.set(beast::string_view(n.data(), n.size()), beast::string_view(v.data(), v.size()));
    });
  });
  // Before any request can read it.
  rt.tracer = make_trace_exporter(cfg.telemetry);
  // Each thread owns its upstream client (pools, DNS cache, TLS context) for its whole life.
  rt.clients.resize(size_t(threads));
  impl_->server->set_thread_hooks(
      [&rt](int i, asio::io_context& ctx) {
        rt.clients[size_t(i)] = std::make_unique<net::HttpClient>(ctx.get_executor());
      },
      [&rt](int i) { rt.clients[size_t(i)].reset(); });
  if (impl_->options.workflows) {
    // llm steps and verdicts go through this gateway's own port, on loopback when it listens
    // on every interface; the port is read at each call, so it is known by then.
    std::string host;
    uint16_t unused = 0;
    split_host_port(impl_->listen, host, unused);
    if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
    if (host == "::" || host == "[::]") host = "[::1]";
    Impl* impl = impl_.get();
    auto resolve = [impl, host](const std::string& client) -> Result<GatewayTarget> {
      if (!impl->server || impl->server->port() == 0)
        return Status::unavailable("the gateway is not serving");
      GatewayTarget t;
      t.base_url = "http://" + host + ":" + std::to_string(impl->server->port());
      const auto& auth = impl->rt->snapshot()->config->auth;
      if (auth.gateway_keys.empty() || client == "anonymous") return t;
      if (client.rfind("key:", 0) == 0) {
        // The run's own key: its routes, rpm and budget apply to its steps.
        const std::string name = client.substr(4);
        for (size_t i = 0; i < auth.gateway_policies.size(); ++i)
          if (auth.gateway_policies[i].name == name) {
            t.gateway_key = auth.gateway_keys[i];
            return t;
          }
        return Status::permission_denied("the gateway key '" + name +
                                         "' that submitted this run is no longer configured");
      }
      // The local user's runs ("", from the CLI) and the admin's go out under the first key.
      t.gateway_key = auth.gateway_keys.front();
      return t;
    };
    auto service = WorkflowService::open(cfg, std::move(resolve),
                                         [impl] { return impl->rt->snapshot()->config; });
    if (service.ok()) {
      rt.workflows = std::move(*service);
    } else if (service.status().code() == StatusCode::kFailedPrecondition) {
      log::info("workflows disabled: {}", service.status().message());
    } else {
      return service.status();
    }
  }
  if (cfg.cluster.enabled()) {
    rt.cluster = std::make_unique<cluster::Cluster>(cfg.cluster);
    rt.cluster->set_breaker_listener(
        [&rt](const std::string& target) { open_breaker_from_peer(rt, target); });
    rt.shared_learning = std::make_unique<SharedLearning>(rt, kSharedLearningInterval);
    rt.cluster->set_learning_listener(
        [&rt](std::string_view batch) { rt.shared_learning->receive(batch); });
    rt.shared_quotas = std::make_unique<SharedQuotas>(rt, kSharedQuotaInterval);
    // Every thread has its connection before it serves its first request; requests still in
    // flight settle their shared leases before the connections close.
    impl_->server->set_contexts_hook(
        [&rt](const std::vector<asio::io_context*>& contexts) { rt.cluster->start(contexts); });
    impl_->server->set_drained_hook([&rt] {
      rt.shared_learning->stop();  // its last batch, while the connections are up
      rt.shared_quotas->stop();
      rt.cluster->stop();
    });
  }
  auto st = impl_->server->start(impl_->listen, threads);
  if (!st.ok()) {
    rt.workflows.reset();
    rt.shared_learning.reset();
    rt.shared_quotas.reset();
    rt.cluster.reset();
    return st;
  }
  if (rt.cluster) {
    // start() returns once Redis answers, or after the connect timeout without it (then the
    // gateway serves on its local share and joins when Redis comes).
    const auto until = MonoClock::now() + Millis(cfg.cluster.connect_timeout_ms);
    while (!rt.cluster->all_up() && MonoClock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (rt.cluster->all_up())
      log::info("cluster: key limits shared through redis {}:{}", cfg.cluster.redis_host,
                cfg.cluster.redis_port);
  }
  if (rt.workflows) rt.workflows->start();
  if (rt.learning) rt.learning->start();
  if (rt.shared_learning) rt.shared_learning->start();
  if (rt.shared_quotas) rt.shared_quotas->start();
  return Status();
}

uint16_t Gateway::port() const {
  return impl_->server ? impl_->server->port() : 0;
}

std::string Gateway::base_url() const {
  return "http://127.0.0.1:" + std::to_string(port());
}

void Gateway::stop(Millis grace) {
  if (!impl_ || !impl_->rt) return;
  Runtime& rt = *impl_->rt;
  // Workflows first: their llm steps post to this server, so it must outlive them. Handlers
  // still awaiting the service's pool finish before the server's io_contexts are destroyed.
  if (rt.workflows) rt.workflows->stop();
  if (impl_->server) {
    impl_->server->stop(grace);
    rt.workflows.reset();
    impl_->server.reset();
  }
  rt.workflows.reset();
  rt.tracer.reset();  // the spans still queued go out
  auto snap = rt.snapshot();
  // What was learned since the last snapshot, then drain and close the store.
  if (rt.learning) rt.learning->stop();
  if (rt.store) {
    rt.store->close();
  }
  rt.clients.clear();
  for (auto& [name, pr] : snap->providers) {
    if (pr->mock) pr->mock->stop();
  }
  snap.reset();
  impl_->rt.reset();
}

int run_serve(const std::string& config_path, const std::string& listen_override) {
  auto env = Environment::from_process();
  ConfigLoad load;
  std::string source;
  std::string file;  // what SIGHUP and /admin/reload re-read
  if (!config_path.empty()) {
    load = load_config_file(config_path, env);
    source = file = config_path;
  } else if (std::filesystem::exists("switchboard.yaml")) {
    load = load_config_file("switchboard.yaml", env);
    source = "./switchboard.yaml";
    file = "switchboard.yaml";
  } else {
    load = default_config(env);
    source = "built-in defaults";
  }
  if (!load.ok()) {
    for (const auto& e : load.errors) std::fprintf(stderr, "%s\n", e.to_string().c_str());
    return 2;
  }
  auto config = std::make_shared<const Config>(std::move(*load.config));
  // Batched: the access log's line per request costs no write on the request thread.
  log::init_batched(config->log.level, config->log.json ? log::Format::kJson : log::Format::kText,
                    kLogBatchInterval);
  std::string listen = listen_override.empty() ? config->listen : listen_override;
  std::string host;
  uint16_t port = 0;
  if (!split_host_port(listen, host, port)) {
    std::fprintf(stderr, "switchboard serve: bad listen address '%s'\n", listen.c_str());
    return 2;
  }
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (config->auth.gateway_keys.empty() && !config->auth.allow_open &&
      (ec || !addr.is_loopback())) {
    std::fprintf(stderr,
                 "switchboard serve: refusing to listen on %s without gateway keys; set "
                 "auth.gateway_keys or "
                 "auth.allow_open: true\n",
                 listen.c_str());
    return 2;
  }
  log::info("switchboard {} starting with {} ({} providers, {} models, {} routes)",
            SWITCHBOARD_VERSION, source, config->providers.size(), config->models.size(),
            config->routes.size());
  auto gw = Gateway::create(config, GatewayOptions{listen, file});
  if (!gw.ok()) {
    log::error("{}", gw.status().message());
    return 1;
  }
  if (auto st = (*gw)->start(); !st.ok()) {
    log::error("{}", st.message());
    return 1;
  }
  log::info("listening on {} (port {})", listen, (*gw)->port());
  asio::io_context signals_ctx;
  asio::signal_set signals(signals_ctx, SIGINT, SIGTERM);
  asio::signal_set hangup(signals_ctx, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_hangup =
      [&](const boost::system::error_code& ec, int) {
        if (ec) return;
        if (auto st = (*gw)->reload_from_file(); !st.ok())
          log::error("SIGHUP reload: {}", st.message());
        hangup.async_wait(on_hangup);
      };
  hangup.async_wait(on_hangup);
  // The drain runs on its own thread so that a second signal is still heard (and exits at
  // once); it refers to this frame's locals, so it is joined before they go.
  std::thread drain;
  signals.async_wait([&](const boost::system::error_code&, int sig) {
    log::info("signal {}: draining (a second signal exits at once)", sig);
    hangup.cancel();
    signals.async_wait([](const boost::system::error_code&, int) { std::_Exit(1); });
    drain = std::thread([&] {
      (*gw)->stop(Millis(config->server.shutdown_grace_ms));
      signals_ctx.stop();
    });
  });
  signals_ctx.run();
  if (drain.joinable()) drain.join();
  log::info("stopped");
  log::shutdown();
  return 0;
}

}  // namespace switchboard::gateway
