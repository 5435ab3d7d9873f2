// The admin API (/admin/...): key, breaker and model state, key disable/enable, reload. The
// caller checked the admin credentials (auth.h).
#include <boost/json.hpp>
#include <chrono>

#include "common/json.h"
#include "common/log.h"
#include "common/version.h"
#include "gateway/quotas.h"
#include "gateway/runtime.h"

namespace switchboard::gateway {

namespace {

// %XX escapes decoded; a malformed escape is kept as it is.
std::string percent_decode(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The JSON array of every key's state, appended to `out`.
void append_keys(std::string& out, Runtime& rt) {
  out += "[";
  bool first = true;
  auto snap = rt.snapshot();
  for (auto& [name, pr] : snap->providers) {
    for (const auto& k : pr->pool->snapshot()) {
      out += first ? "" : ",";
      first = false;
      out += "{\"id\":" + json::quote(k.id) + ",\"provider\":" + json::quote(name) +
             ",\"fingerprint\":" + json::quote(k.fingerprint) +
             ",\"state\":" + json::quote(keys::to_string(k.state)) +
             ",\"cooldown_remaining_ms\":" + std::to_string(k.cooldown_remaining.count()) +
             ",\"cooldown_reason\":" + json::quote(keys::to_string(k.cooldown_reason)) +
             ",\"in_flight\":" + std::to_string(k.in_flight) +
             ",\"max_concurrent\":" + std::to_string(k.max_concurrent) +
             ",\"minute\":{\"requests\":" + std::to_string(k.minute.requests) +
             ",\"tokens\":" + std::to_string(k.minute.tokens) +
             "},\"day\":{\"requests\":" + std::to_string(k.day.requests) +
             ",\"tokens\":" + std::to_string(k.day.tokens) +
             "},\"consecutive_failures\":" + std::to_string(k.consecutive_failures) +
             ",\"leases_total\":" + std::to_string(k.leases_total) + ",\"model_cooldowns\":[";
      for (size_t i = 0; i < k.model_cooldowns.size(); ++i) {
        const auto& mc = k.model_cooldowns[i];
        out += (i ? "," : "") + std::string("{\"model\":") + json::quote(mc.model) +
               ",\"remaining_ms\":" + std::to_string(mc.remaining.count()) +
               ",\"reason\":" + json::quote(keys::to_string(mc.reason)) + "}";
      }
      out += "]}";
    }
  }
  out += "]";
}

std::string keys_json(Runtime& rt) {
  std::string out = "{\"keys\":";
  append_keys(out, rt);
  return out + "}";
}

void append_breakers(std::string& out, Runtime& rt) {
  out += "[";
  bool first = true;
  for (const auto& b : rt.snapshot()->breakers->snapshot()) {
    out += first ? "" : ",";
    first = false;
    out += "{\"target\":" + json::quote(b.target) +
           ",\"kind\":" + json::quote(breaker::to_string(b.kind)) +
           ",\"state\":" + json::quote(breaker::to_string(b.state)) +
           ",\"calls_in_window\":" + std::to_string(b.calls_in_window) +
           ",\"failure_rate\":" + json::number(b.failure_rate) +
           ",\"slow_call_rate\":" + json::number(b.slow_call_rate) +
           ",\"until_half_open_ms\":" + std::to_string(b.until_half_open.count()) +
           ",\"consecutive_openings\":" + std::to_string(b.consecutive_openings) + "}";
  }
  out += "]";
}

std::string breakers_json(Runtime& rt) {
  std::string out = "{\"breakers\":";
  append_breakers(out, rt);
  return out + "}";
}

// "models":[...],"posteriors":[...] (without the braces around them).
void append_models(std::string& out, Runtime& rt) {
  auto snap = rt.snapshot();
  auto state = snap->router->export_state();
  // Category hints are features too: named where they land.
  std::vector<std::string> category_names;
  for (const auto& p : state.posteriors)
    if (p.category != "default" && std::find(category_names.begin(), category_names.end(),
                                             "category:" + p.category) == category_names.end())
      category_names.push_back("category:" + p.category);
  out += "\"models\":[";
  bool first = true;
  for (const auto& m : snap->config->models) {
    auto s = snap->router->stats(m.name);
    out += first ? "" : ",";
    first = false;
    out += "{\"model\":" + json::quote(m.name) + ",\"provider\":" + json::quote(m.provider) +
           ",\"tier\":" + json::quote(to_string(m.tier)) +
           ",\"requests\":" + std::to_string(s ? s->requests : 0) +
           ",\"success_rate\":" + json::number(s ? s->success_rate() : 0) +
           ",\"latency_ewma_ms\":" + json::number(s ? s->latency_ewma_us / 1000 : 0) +
           ",\"latency_p50_ms\":" + json::number(s ? s->latency_p50_us / 1000 : 0) +
           ",\"latency_p95_ms\":" + json::number(s ? s->latency_p95_us / 1000 : 0) +
           ",\"spend_usd\":" + json::number(s ? s->spend_usd : 0) + ",\"cost_per_request_usd\":" +
           json::number(s && s->requests ? s->spend_usd / double(s->requests) : 0);
    // The standing of its provider's quota ("warning 83%"; "" without a quota).
    out += ",\"quota\":" + json::quote(quota_summary(rt, m.provider));
    // Its contextual model on each learned route (issue 30): how much it learned and the
    // features that weigh most (positive: more likely to succeed).
    out += ",\"contextual\":[";
    bool first_route = true;
    for (const auto& r : snap->config->routes) {
      if (r.strategy != RouteStrategy::kLearned) continue;
      const uint64_t updates =
          snap->router->contextual().updates(r.name, int(&m - &snap->config->models[0]));
      if (updates == 0) continue;
      out += first_route ? "" : ",";
      first_route = false;
      out += "{\"route\":" + json::quote(r.name) + ",\"updates\":" + std::to_string(updates) +
             ",\"strongest\":[";
      const auto strongest =
          snap->router->contextual().strongest(r.name, int(&m - &snap->config->models[0]), 8);
      for (size_t i = 0; i < strongest.size(); ++i)
        out += (i ? "," : "") + std::string("{\"feature\":") +
               json::quote(routing::describe_slot(strongest[i].first, category_names)) +
               ",\"weight\":" + json::number(strongest[i].second) + "}";
      out += "]}";
    }
    out += "]}";
  }
  out += "],\"posteriors\":[";
  first = true;
  for (const auto& p : state.posteriors) {
    out += first ? "" : ",";
    first = false;
    out += "{\"category\":" + json::quote(p.category) + ",\"model\":" + json::quote(p.model) +
           ",\"alpha\":" + json::number(p.alpha) + ",\"beta\":" + json::number(p.beta) +
           ",\"mean\":" + json::number(p.mean()) + ",\"outcomes\":" + std::to_string(p.outcomes) +
           ",\"feedback\":" + std::to_string(p.feedback) + ",\"feedback_success\":" +
           json::number(p.feedback ? p.feedback_reward_sum / double(p.feedback) : 0) + "}";
  }
  out += "]";
}

std::string admin_models_json(Runtime& rt) {
  std::string out = "{";
  append_models(out, rt);
  return out + "}";
}

int64_t epoch_ms(WallTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// Every client key's spend this month against its budget (by name: the secret never leaves).
void append_clients(std::string& out, Runtime& rt, const Snapshot& snap) {
  const auto& auth = snap.config->auth;
  const int month = utc_month(rt.clock.wall_now());
  out += "[";
  for (size_t i = 0; i < auth.gateway_keys.size(); ++i) {
    const GatewayKeyPolicy* policy =
        i < auth.gateway_policies.size() ? &auth.gateway_policies[i] : nullptr;
    double spend = 0, reserved = 0;
    int64_t last_minute = 0;
    if (i < snap.gateway_keys.size() && snap.gateway_keys[i]) {
      GatewayKeyState& st = *snap.gateway_keys[i];
      std::lock_guard lock(st.mu);
      if (st.month == month) {
        spend = st.spend_usd;
        // With a cluster, the month's spend of every gateway as Redis last told it.
        if (st.shared_seen_usd >= 0) spend = std::max(spend, st.shared_seen_usd);
        reserved = st.reserved_usd;
      }
      const MonoTime horizon = rt.clock.now() - std::chrono::minutes(1);
      for (MonoTime t : st.window) last_minute += t > horizon ? 1 : 0;
    }
    std::string name = policy && !policy->name.empty() ? policy->name : "key " + std::to_string(i);
    out += (i ? "," : "") + std::string("{\"name\":") + json::quote(name) +
           ",\"spend_usd\":" + json::number(spend) + ",\"reserved_usd\":" + json::number(reserved) +
           ",\"budget_usd\":" + json::number(policy ? policy->monthly_budget_usd : 0) +
           ",\"rpm\":" + std::to_string(policy ? policy->rpm : 0) +
           ",\"requests_last_minute\":" + std::to_string(last_minute) + ",\"routes\":[";
    if (policy)
      for (size_t r = 0; r < policy->routes.size(); ++r)
        out += (r ? "," : "") + json::quote(policy->routes[r]);
    out += "]}";
  }
  out += "]";
}

// Everything the console shows but the workflow runs, in one document.
std::string overview_json(Runtime& rt, const Snapshot& snap) {
  const Config& cfg = *snap.config;
  std::string out = "{\"now_ms\":" + std::to_string(epoch_ms(rt.clock.wall_now())) +
                    ",\"started_ms\":" + std::to_string(epoch_ms(rt.started_at)) +
                    ",\"version\":" + json::quote(kVersion) +
                    ",\"commit\":" + json::quote(build_commit()) +
                    ",\"workflows\":" + (rt.workflows ? "true" : "false") + ",\"redis\":";
  out += !rt.cluster ? "\"off\"" : rt.cluster->all_up() ? "\"up\"" : "\"down\"";
  out += ",\"providers\":[";
  for (size_t i = 0; i < cfg.providers.size(); ++i) {
    const auto& p = cfg.providers[i];
    out += (i ? "," : "") + std::string("{\"name\":") + json::quote(p.name) +
           ",\"kind\":" + json::quote(to_string(p.kind)) +
           ",\"quota\":" + json::quote(quota_summary(rt, p.name)) + "}";
  }
  out += "],\"routes\":[";
  for (size_t i = 0; i < cfg.routes.size(); ++i) {
    const auto& r = cfg.routes[i];
    out += (i ? "," : "") + std::string("{\"name\":") + json::quote(r.name) +
           ",\"strategy\":" + json::quote(to_string(r.strategy)) + ",\"layers\":[";
    for (size_t l = 0; l < r.layers.size(); ++l) {
      out += l ? ",[" : "[";
      for (size_t m = 0; m < r.layers[l].size(); ++m)
        out += (m ? "," : "") + json::quote(r.layers[l][m]);
      out += "]";
    }
    out += "]}";
  }
  out += "],\"keys\":";
  append_keys(out, rt);
  out += ",\"breakers\":";
  append_breakers(out, rt);
  out += ",\"breaker_history\":[";
  auto history = rt.breaker_history.list();
  for (size_t i = 0; i < history.size(); ++i) {
    const auto& h = history[i];
    out += (i ? "," : "") + std::string("{\"at_ms\":") + std::to_string(epoch_ms(h.at)) +
           ",\"target\":" + json::quote(h.target) +
           ",\"from\":" + json::quote(breaker::to_string(h.from)) +
           ",\"to\":" + json::quote(breaker::to_string(h.to)) + "}";
  }
  out += "],";
  append_models(out, rt);
  out += ",\"clients\":";
  append_clients(out, rt, snap);
  std::string quotas = quotas_json(rt);  // {"quotas":[...]}
  out += "," + quotas.substr(1, quotas.size() - 2);
  return out + "}";
}

}  // namespace

bool handle_admin(Runtime& rt, const Snapshot& snap, Exchange& ex, std::string_view target) {
  const auto method = ex.request.method();
  if (method == http::verb::get && target == "/admin/keys") {
    ex.response = json_response(http::status::ok, keys_json(rt));
    return true;
  }
  if (method == http::verb::get && target == "/admin/breakers") {
    ex.response = json_response(http::status::ok, breakers_json(rt));
    return true;
  }
  if (method == http::verb::get && target == "/admin/models") {
    ex.response = json_response(http::status::ok, admin_models_json(rt));
    return true;
  }
  if (method == http::verb::get && target == "/admin/overview") {
    ex.response = json_response(http::status::ok, overview_json(rt, snap));
    return true;
  }
  if (method == http::verb::get && target == "/admin/quotas") {
    ex.response = json_response(http::status::ok, quotas_json(rt));
    return true;
  }
  if (method == http::verb::post && target == "/admin/reload") {
    auto r = reload_from_file(rt);
    std::string body = "{\"reloaded\":" + std::string(r.ok ? "true" : "false") + ",\"messages\":[";
    for (size_t i = 0; i < r.messages.size(); ++i)
      body += (i ? "," : "") + json::quote(r.messages[i]);
    body += "]}";
    ex.response = json_response(r.ok ? http::status::ok : http::status::bad_request, body);
    return true;
  }
  // POST /admin/keys/{id}/disable|enable
  constexpr std::string_view kKeys = "/admin/keys/";
  if (method == http::verb::post && target.rfind(kKeys, 0) == 0) {
    std::string_view rest = target.substr(kKeys.size());
    auto slash = rest.rfind('/');
    if (slash != std::string_view::npos) {
      // Key ids contain '#', which a URL carries as %23 (a raw '#' starts the fragment).
      std::string id = percent_decode(rest.substr(0, slash));
      std::string_view action = rest.substr(slash + 1);
      std::string provider = id.substr(0, id.find('#'));
      ProviderRuntime* pr = snap.provider(provider);
      if (pr && (action == "disable" || action == "enable")) {
        Status st = action == "disable" ? pr->pool->disable(id) : pr->pool->enable(id);
        if (st.ok()) {
          log::info("admin: key {} {}d", id, action);
          persist_key_state(rt, *pr->pool, id);
          // Every gateway on the cluster's Redis stops (or resumes) using the key.
          if (rt.cluster) rt.cluster->set_disabled(provider, id, action == "disable");
          ex.response =
              json_response(http::status::ok, "{\"id\":" + json::quote(id) +
                                                  ",\"action\":" + json::quote(action) + "}");
        } else {
          ex.response = error_response(http::status::not_found, st.message(),
                                       "invalid_request_error", "unknown_key");
        }
        return true;
      }
    }
  }
  return false;
}

}  // namespace switchboard::gateway
