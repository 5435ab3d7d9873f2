// Snapshots: what a configuration determines (pools, breakers, router), built at start and by
// every reload, taking over what can be kept from the previous one.
#include "common/log.h"
#include "gateway/runtime.h"

namespace switchboard::gateway {

namespace {

// This gateway's share of each key's limits: 1/expected_gateways of each (at least 1), when a
// cluster shares them; the limits themselves otherwise.
ProviderConfig local_share(const ProviderConfig& pc, const ClusterConfig& cluster) {
  ProviderConfig out = pc;
  if (!cluster.enabled() || cluster.expected_gateways <= 1) return out;
  auto share = [n = cluster.expected_gateways](int64_t& limit) {
    if (limit > 0) limit = std::max<int64_t>(1, limit / n);
  };
  share(out.limits.rpm);
  share(out.limits.tpm);
  share(out.limits.rpd);
  share(out.limits.tpd);
  share(out.limits.max_concurrent);
  return out;
}

// A pool can be kept as it is across a reload only when nothing it was built from changed.
bool same_pool(const ProviderConfig& a, const ProviderConfig& b) {
  if (a.kind != b.kind || a.base_url != b.base_url || a.keys.size() != b.keys.size() ||
      a.selection != b.selection || a.timeout_ms != b.timeout_ms ||
      a.api_version != b.api_version || a.keyless != b.keyless || a.headers != b.headers ||
      a.proxy != b.proxy || a.tls != b.tls || a.responses != b.responses ||
      a.refuse_json_schema != b.refuse_json_schema)
    return false;
  for (size_t i = 0; i < a.keys.size(); ++i) {
    if (a.keys[i].id != b.keys[i].id || a.keys[i].secret != b.keys[i].secret ||
        a.keys[i].weight != b.keys[i].weight)
      return false;
  }
  const auto& la = a.limits;
  const auto& lb = b.limits;
  const auto& ca = a.cooldown;
  const auto& cb = b.cooldown;
  return la.rpm == lb.rpm && la.tpm == lb.tpm && la.rpd == lb.rpd && la.tpd == lb.tpd &&
         la.max_concurrent == lb.max_concurrent &&
         la.daily_reset_hour_utc == lb.daily_reset_hour_utc && ca.initial_ms == cb.initial_ms &&
         ca.multiplier == cb.multiplier && ca.max_ms == cb.max_ms && ca.jitter == cb.jitter;
}

bool same_breaker(const BreakerConfig& a, const BreakerConfig& b) {
  return a.window == b.window && a.min_calls == b.min_calls && a.failure_rate == b.failure_rate &&
         a.slow_call_ms == b.slow_call_ms && a.slow_call_rate == b.slow_call_rate &&
         a.open_ms == b.open_ms && a.open_multiplier == b.open_multiplier &&
         a.max_open_ms == b.max_open_ms && a.half_open_probes == b.half_open_probes &&
         a.half_open_timeout_ms == b.half_open_timeout_ms &&
         a.count_rate_limits == b.count_rate_limits;
}

// Why a breaker moved, for the breaker_transitions audit table.
const char* transition_reason(breaker::BreakerState from, breaker::BreakerState to) {
  using breaker::BreakerState;
  if (to == BreakerState::kOpen)
    return from == BreakerState::kClosed ? "failure or slow-call rate reached over the window"
                                         : "a probe failed, was slow or timed out";
  if (to == BreakerState::kHalfOpen) return "open time elapsed";
  return from == BreakerState::kHalfOpen ? "every probe succeeded" : "reset";
}

// Records every transition of the registry's breakers in the store (an audit trail the breaker
// log lines leave to whoever keeps the logs).
// Set while a breaker opens because another gateway's did: that opening is not announced again.
thread_local bool tls_peer_opening = false;

std::shared_ptr<const breaker::TransitionObserver> store_transitions(Runtime& rt) {
  // rt.store is set after the first snapshot is built, before anything is served.
  return std::make_shared<const breaker::TransitionObserver>(
      [&rt](std::string_view target, breaker::BreakerState from, breaker::BreakerState to) {
        // Every gateway of a cluster opens it too (they share the provider and its failures).
        if (to == breaker::BreakerState::kOpen && rt.cluster && !tls_peer_opening)
          rt.cluster->publish_breaker_open(target);
        rt.breaker_history.add(rt.clock.wall_now(), target, from, to);
        if (!rt.store) return;
        store::BreakerTransitionEvent e;
        e.time = rt.clock.wall_now();
        e.breaker = std::string(target);
        e.from_state = std::string(breaker::to_string(from));
        e.to_state = std::string(breaker::to_string(to));
        e.reason = transition_reason(from, to);
        rt.store->enqueue(std::move(e));
      });
}

bool same_breakers(const Config& a, const Config& b) {
  if (!same_breaker(a.breaker, b.breaker)) return false;
  for (const auto& p : b.providers) {
    const ProviderConfig* old = a.find_provider(p.name);
    if (old && !same_breaker(old->breaker, p.breaker)) return false;
  }
  return true;
}

// http(s)://host[:port]/...: whether host is this machine (a local model server).
bool loopback_url(std::string_view url) {
  if (auto scheme = url.find("://"); scheme != std::string_view::npos)
    url.remove_prefix(scheme + 3);
  url = url.substr(0, url.find_first_of("/?#"));
  if (auto at = url.rfind('@'); at != std::string_view::npos) url.remove_prefix(at + 1);
  std::string host;
  if (url.starts_with('[')) {
    host = url.substr(1, url.find(']') - 1);
  } else {
    host = url.substr(0, url.find(':'));
  }
  for (auto& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return host == "localhost" || host.ends_with(".localhost") || host.starts_with("127.") ||
         host == "::1";
}

// A provider's forward proxy: its own (`proxy:`), none (`proxy: none`), or the environment's
// for its URL (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) — except for a server on this machine, which
// no environment proxy is meant for (Go's rule too). A proxy the client cannot use is an error
// here, at startup or reload, not a failed call later.
Result<std::string> provider_proxy(const ProviderConfig& pc, const net::ProxyEnv& env) {
  if (pc.kind == ProviderKind::kMock || pc.proxy == "none") return std::string();
  std::string proxy = pc.proxy;
  if (proxy.empty() && !loopback_url(pc.base_url)) proxy = net::proxy_for(pc.base_url, env);
  if (proxy.empty()) return proxy;
  auto parsed = net::parse_proxy_url(proxy);
  if (!parsed.ok())
    return Status::invalid_argument("provider " + pc.name + ": " +
                                    (pc.proxy.empty() ? "the environment's proxy: " : "proxy: ") +
                                    parsed.status().message());
  if (!parsed.value().password.empty()) log::add_secret(parsed.value().password, "proxy-password");
  return proxy;
}

}  // namespace

Result<std::shared_ptr<const Snapshot>> build_snapshot(Runtime& rt,
                                                       std::shared_ptr<const Config> config,
                                                       const Snapshot* previous) {
  auto snap = std::make_shared<Snapshot>();
  snap->config = config;
  for (const auto& [secret, id] : config->secrets()) log::add_secret(secret, id);
  const net::ProxyEnv proxy_env = net::ProxyEnv::from_environment();
  for (const auto& pc : config->providers) {
    ProviderRuntime* old = previous ? previous->provider(pc.name) : nullptr;
    const bool mock_same = old && old->mock && pc.kind == ProviderKind::kMock &&
                           old->config->kind == ProviderKind::kMock;
    if (old && same_pool(*old->config, pc) && (pc.kind != ProviderKind::kMock || mock_same)) {
      snap->providers.emplace(pc.name, previous->providers.find(pc.name)->second);  // kept whole
      continue;
    }
    auto pr = std::make_shared<ProviderRuntime>();
    pr->owner = config;
    pr->config = &pc;
    pr->anthropic = pc.kind == ProviderKind::kAnthropic;
    pr->base_url = pc.base_url;
    if (pc.kind == ProviderKind::kMock) {
      pr->mock = std::make_shared<MockProvider>(pc.mock);
      if (auto st = pr->mock->start("127.0.0.1:0", 1); !st.ok()) return st;
      pr->base_url = "http://127.0.0.1:" + std::to_string(pr->mock->port()) + "/v1";
      log::info("provider {}: in-process mock{} at {}", pc.name,
                pc.mock_substitute ? " (no API keys set)" : "", pr->base_url);
    } else {
      log::info("provider {}: {} at {} with {} key(s)", pc.name, to_string(pc.kind), pc.base_url,
                pc.keys.size());
    }
    pr->call_url = pr->base_url + (pr->anthropic ? "/messages" : "/chat/completions");
    auto proxy = provider_proxy(pc, proxy_env);
    if (!proxy.ok()) return proxy.status();
    pr->proxy = std::move(proxy.value());
    if (!pc.tls.empty()) {
      auto tls = std::make_shared<net::TlsOptions>();
      tls->ca_file = pc.tls.ca_file;
      tls->client_cert = pc.tls.client_cert;
      tls->client_key = pc.tls.client_key;
      // Read as the client will read them: a bad PEM or a key that does not match is refused
      // now, with its path, not at the first call.
      if (auto st = net::check_tls_options(*tls); !st.ok())
        return Status::invalid_argument("provider " + pc.name + ": " + st.message());
      pr->tls = std::move(tls);
    }
    snap->providers.emplace(pc.name, std::move(pr));
  }
  // Pools last, once nothing can fail any more (above, a mock may not start): a pool handed over
  // belongs to a snapshot that will be published.
  for (const auto& pc : config->providers) {
    ProviderRuntime& pr = *snap->providers.find(pc.name)->second;
    if (pr.pool) continue;  // kept whole from the previous snapshot
    ProviderRuntime* old = previous ? previous->provider(pc.name) : nullptr;
    keys::KeyPoolOptions ko;
    ko.scheduler = &rt.scheduler;
    // With a cluster, the pool's own limits are what this gateway may use alone while Redis is
    // unreachable: its share of each key's (the shared limits are checked in Redis).
    const ProviderConfig local = local_share(pc, config->cluster);
    // Keys that stay keep their state and in-flight leases (the old pool hands them over).
    pr.pool = old ? old->pool->reconfigured(local, rt.clock, ko)
                  : std::make_unique<keys::KeyPool>(local, rt.clock, ko);
  }
  for (size_t i = 0; i < config->auth.gateway_keys.size(); ++i) {
    // A gateway key that stays (same secret) keeps its rpm window and spend.
    std::shared_ptr<GatewayKeyState> state;
    if (previous) {
      const auto& old_keys = previous->config->auth.gateway_keys;
      for (size_t j = 0; j < old_keys.size(); ++j)
        if (old_keys[j] == config->auth.gateway_keys[i]) state = previous->gateway_keys[j];
    }
    snap->gateway_keys.push_back(state ? state : std::make_shared<GatewayKeyState>());
  }
  snap->breakers =
      previous && same_breakers(*previous->config, *config)
          ? previous->breakers
          : std::make_shared<breaker::BreakerRegistry>(rt.clock, *config, store_transitions(rt));
  snap->breaker_table = std::make_shared<const BreakerTable>(snap->breakers, *config);
  rt.quotas.configure(config->providers, rt.clock.wall_now());
  routing::QuotaProbe quota_probe;
  if (rt.quotas.any())
    quota_probe = [&rt](std::string_view provider) {
      return rt.quotas.level(provider, rt.clock.wall_now());
    };
  snap->router = std::make_shared<routing::Router>(
      config,
      [table = snap->breaker_table](std::string_view provider, std::string_view model) {
        return table->open(provider, model);
      },
      std::move(quota_probe));
  if (previous)
    snap->router->import_state(previous->router->export_state());  // what was learned stays
  if (rt.learning) rt.learning->attach(*snap->router);
  return std::shared_ptr<const Snapshot>(std::move(snap));
}

ReloadResult reload_runtime(Runtime& rt, const std::shared_ptr<const Config>& config) {
  std::lock_guard lock(rt.reload_mu);
  auto previous = rt.snapshot();
  auto next = build_snapshot(rt, config, previous.get());
  if (!next.ok()) return ReloadResult{false, {next.status().message()}};
  std::vector<std::string> notes;
  const Config& old = *previous->config;
  if (old.listen != config->listen) notes.push_back("listen changes take effect on restart");
  if (old.state.path != config->state.path || old.state.backend != config->state.backend)
    notes.push_back("state changes take effect on restart");
  rt.publish(next.value());
  log::info("configuration reloaded ({} providers, {} models, {} routes)", config->providers.size(),
            config->models.size(), config->routes.size());
  for (const auto& n : notes) log::warn("reload: {}", n);
  return ReloadResult{true, notes};
}

ReloadResult reload_from_file(Runtime& rt) {
  if (rt.config_path.empty()) {
    return ReloadResult{
        false, {"the gateway was started without a configuration file; nothing to reload"}};
  }
  auto load = load_config_file(rt.config_path, Environment::from_process());
  if (!load.ok()) {
    ReloadResult r{false, {}};
    for (const auto& e : load.errors) r.messages.push_back(e.to_string());
    log::error("reload rejected, the running configuration stays: {}", r.messages.front());
    return r;
  }
  return reload_runtime(rt, std::make_shared<const Config>(std::move(*load.config)));
}

void open_breaker_from_peer(Runtime& rt, const std::string& target) {
  auto snap = rt.snapshot();
  if (!snap || !snap->breakers) return;
  auto b = snap->breakers->find(target);
  if (!b) return;  // a breaker this gateway never needed (a direct provider/model spelling)
  tls_peer_opening = true;
  if (b->open_from_peer())
    log::warn("breaker {}: opened by another gateway of the cluster", target);
  tls_peer_opening = false;
}

}  // namespace switchboard::gateway
