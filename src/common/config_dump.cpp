// Config → normalised YAML, with every secret replaced by its id and fingerprint.
#include <yaml-cpp/yaml.h>

#include "common/config.h"

namespace switchboard {
namespace {

const char* sync_name(SyncMode m) {
  return m == SyncMode::kFull ? "full" : "normal";
}

void emit_cooldown(YAML::Emitter& out, const CooldownConfig& c) {
  out << YAML::Flow << YAML::BeginMap << YAML::Key << "initial_ms" << YAML::Value << c.initial_ms
      << YAML::Key << "multiplier" << YAML::Value << c.multiplier << YAML::Key << "max_ms"
      << YAML::Value << c.max_ms << YAML::Key << "jitter" << YAML::Value << c.jitter
      << YAML::EndMap;
}

void emit_breaker(YAML::Emitter& out, const BreakerConfig& b) {
  out << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "window" << YAML::Value << b.window;
  out << YAML::Key << "min_calls" << YAML::Value << b.min_calls;
  out << YAML::Key << "failure_rate" << YAML::Value << b.failure_rate;
  out << YAML::Key << "slow_call_ms" << YAML::Value << b.slow_call_ms;
  out << YAML::Key << "slow_call_rate" << YAML::Value << b.slow_call_rate;
  out << YAML::Key << "open_ms" << YAML::Value << b.open_ms;
  out << YAML::Key << "open_multiplier" << YAML::Value << b.open_multiplier;
  out << YAML::Key << "max_open_ms" << YAML::Value << b.max_open_ms;
  out << YAML::Key << "half_open_probes" << YAML::Value << b.half_open_probes;
  out << YAML::Key << "half_open_timeout_ms" << YAML::Value << b.half_open_timeout_ms;
  out << YAML::Key << "count_rate_limits" << YAML::Value << b.count_rate_limits;
  out << YAML::EndMap;
}

}  // namespace

std::string dump_config(const Config& c) {
  YAML::Emitter out;
  out.SetDoublePrecision(12);
  out << YAML::BeginMap;
  out << YAML::Key << "listen" << YAML::Value << c.listen;

  out << YAML::Key << "server" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "threads" << YAML::Value << c.server.threads;
  out << YAML::Key << "max_body_bytes" << YAML::Value << c.server.max_body_bytes;
  out << YAML::Key << "max_header_bytes" << YAML::Value << c.server.max_header_bytes;
  out << YAML::Key << "request_timeout_ms" << YAML::Value << c.server.request_timeout_ms;
  out << YAML::Key << "idle_timeout_ms" << YAML::Value << c.server.idle_timeout_ms;
  out << YAML::Key << "body_timeout_ms" << YAML::Value << c.server.body_timeout_ms;
  out << YAML::Key << "max_connections" << YAML::Value << c.server.max_connections;
  out << YAML::Key << "shutdown_grace_ms" << YAML::Value << c.server.shutdown_grace_ms;
  out << YAML::EndMap;

  out << YAML::Key << "state" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "backend" << YAML::Value << c.state.backend;
  out << YAML::Key << "path" << YAML::Value << c.state.path;
  if (c.state.backend == "postgres") {
    std::string url = c.state.url;
    if (const std::string& pw = c.state.url_password; !pw.empty())
      for (size_t at; (at = url.find(pw)) != std::string::npos;) url.replace(at, pw.size(), "***");
    out << YAML::Key << "url" << YAML::Value << url;
    out << YAML::Key << "node" << YAML::Value << c.state.node;
  }
  out << YAML::Key << "synchronous" << YAML::Value << sync_name(c.state.synchronous);
  out << YAML::Key << "busy_timeout_ms" << YAML::Value << c.state.busy_timeout_ms;
  out << YAML::Key << "batch_ms" << YAML::Value << c.state.batch_ms;
  out << YAML::Key << "batch_max" << YAML::Value << c.state.batch_max;
  out << YAML::Key << "queue_capacity" << YAML::Value << c.state.queue_capacity;
  out << YAML::Key << "retention_days" << YAML::Value << c.state.retention_days;
  out << YAML::Key << "responses_ttl_hours" << YAML::Value << c.state.responses_ttl_hours;
  out << YAML::EndMap;

  out << YAML::Key << "auth" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "gateway_keys" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (size_t i = 0; i < c.auth.gateway_keys.size(); ++i) out << c.auth.gateway_policies[i].name;
  out << YAML::EndSeq;
  out << YAML::Key << "admin_key" << YAML::Value << (c.auth.admin_key.empty() ? "" : "(set)");
  out << YAML::Key << "allow_open" << YAML::Value << c.auth.allow_open;
  out << YAML::EndMap;

  out << YAML::Key << "log" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "level" << YAML::Value << c.log.level;
  out << YAML::Key << "format" << YAML::Value << (c.log.json ? "json" : "text");
  out << YAML::Key << "access_log" << YAML::Value << c.log.access_log;
  out << YAML::EndMap;

  out << YAML::Key << "telemetry" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "otlp_endpoint" << YAML::Value << c.telemetry.otlp_endpoint;
  out << YAML::Key << "service_name" << YAML::Value << c.telemetry.service_name;
  out << YAML::Key << "sample_ratio" << YAML::Value << c.telemetry.sample_ratio;
  out << YAML::EndMap;

  out << YAML::Key << "providers" << YAML::Value << YAML::BeginMap;
  for (const auto& p : c.providers) {
    out << YAML::Key << p.name << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "kind" << YAML::Value << std::string(to_string(p.kind));
    if (p.mock_substitute) out << YAML::Key << "mock_substitute" << YAML::Value << true;
    if (!p.base_url.empty()) out << YAML::Key << "base_url" << YAML::Value << p.base_url;
    if (!p.api_version.empty()) out << YAML::Key << "api_version" << YAML::Value << p.api_version;
    if (p.keyless) {
      out << YAML::Key << "keys" << YAML::Value << "none";
    } else {
      out << YAML::Key << "keys" << YAML::Value << YAML::BeginSeq;
      for (const auto& k : p.keys) {
        out << YAML::Flow << YAML::BeginMap << YAML::Key << "id" << YAML::Value << k.id << YAML::Key
            << "fingerprint" << YAML::Value << k.fingerprint() << YAML::Key << "weight"
            << YAML::Value << k.weight << YAML::EndMap;
      }
      out << YAML::EndSeq;
    }
    if (!p.headers.empty()) {
      out << YAML::Key << "headers" << YAML::Value << YAML::BeginMap;
      for (const auto& h : p.headers)
        out << YAML::Key << h.name << YAML::Value << (h.secret ? "<secret>" : h.value);
      out << YAML::EndMap;
    }
    if (!p.proxy.empty()) {
      std::string shown = p.proxy;
      if (auto at = shown.rfind('@'); at != std::string::npos)
        shown = "http://<credentials>" + shown.substr(at);
      out << YAML::Key << "proxy" << YAML::Value << shown;
    }
    if (!p.tls.empty()) {
      out << YAML::Key << "tls" << YAML::Value << YAML::Flow << YAML::BeginMap;
      if (!p.tls.ca_file.empty()) out << YAML::Key << "ca_file" << YAML::Value << p.tls.ca_file;
      if (!p.tls.client_cert.empty())
        out << YAML::Key << "client_cert" << YAML::Value << p.tls.client_cert << YAML::Key
            << "client_key" << YAML::Value << p.tls.client_key;
      out << YAML::EndMap;
    }
    out << YAML::Key << "responses" << YAML::Value
        << (p.responses == ResponsesMode::kNative ? "native" : "chat");
    if (p.kind == ProviderKind::kAnthropic)
      out << YAML::Key << "json_schema" << YAML::Value
          << (p.refuse_json_schema ? "refuse" : "tool");
    out << YAML::Key << "limits" << YAML::Value << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "rpm" << YAML::Value << p.limits.rpm;
    out << YAML::Key << "tpm" << YAML::Value << p.limits.tpm;
    out << YAML::Key << "rpd" << YAML::Value << p.limits.rpd;
    out << YAML::Key << "tpd" << YAML::Value << p.limits.tpd;
    out << YAML::Key << "max_concurrent" << YAML::Value << p.limits.max_concurrent;
    out << YAML::Key << "daily_reset" << YAML::Value;
    if (p.limits.daily_rolling())
      out << "rolling";
    else
      out << p.limits.daily_reset_hour_utc;
    out << YAML::EndMap;
    out << YAML::Key << "timeout_ms" << YAML::Value << p.timeout_ms;
    out << YAML::Key << "selection" << YAML::Value
        << (p.selection == KeySelection::kLeastLoaded ? "least_loaded" : "round_robin");
    out << YAML::Key << "cooldown" << YAML::Value;
    emit_cooldown(out, p.cooldown);
    out << YAML::Key << "breaker" << YAML::Value;
    emit_breaker(out, p.breaker);
    out << YAML::Key << "quota" << YAML::Value << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "period" << YAML::Value
        << (p.quota.period == QuotaPeriod::kDay ? "day" : "month");
    out << YAML::Key << "tokens" << YAML::Value << p.quota.tokens;
    out << YAML::Key << "requests" << YAML::Value << p.quota.requests;
    out << YAML::Key << "usd" << YAML::Value << p.quota.usd;
    out << YAML::Key << "warning" << YAML::Value << p.quota.warning;
    out << YAML::Key << "critical" << YAML::Value << p.quota.critical;
    out << YAML::EndMap;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;

  out << YAML::Key << "models" << YAML::Value << YAML::BeginMap;
  for (const auto& m : c.models) {
    out << YAML::Key << m.name << YAML::Value << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "provider" << YAML::Value << m.provider;
    out << YAML::Key << "upstream" << YAML::Value << m.upstream;
    out << YAML::Key << "tier" << YAML::Value << std::string(to_string(m.tier));
    out << YAML::Key << "cost" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
        << "input_per_mtok" << YAML::Value << m.cost.input_per_mtok << YAML::Key
        << "output_per_mtok" << YAML::Value << m.cost.output_per_mtok << YAML::EndMap;
    out << YAML::Key << "context_window" << YAML::Value << m.context_window;
    out << YAML::Key << "strengths" << YAML::Value << YAML::Flow << m.strengths;
    out << YAML::Key << "weight" << YAML::Value << m.weight;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;

  out << YAML::Key << "routes" << YAML::Value << YAML::BeginMap;
  for (const auto& r : c.routes) {
    out << YAML::Key << r.name << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "strategy" << YAML::Value << std::string(to_string(r.strategy));
    out << YAML::Key << "layers" << YAML::Value << YAML::Flow << r.layers;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;

  out << YAML::Key << "cooldown" << YAML::Value;
  emit_cooldown(out, c.cooldown);
  out << YAML::Key << "breaker" << YAML::Value;
  emit_breaker(out, c.breaker);
  out << YAML::Key << "retry" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
      << "max_attempts" << YAML::Value << c.retry.max_attempts << YAML::Key << "budget_ms"
      << YAML::Value << c.retry.budget_ms << YAML::Key << "wait_for_key_ms" << YAML::Value
      << c.retry.wait_for_key_ms << YAML::EndMap;
  const auto& l = c.learning;
  out << YAML::Key << "learning" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "prior" << YAML::Value << YAML::Flow << YAML::BeginSeq << l.prior_alpha
      << l.prior_beta << YAML::EndSeq;
  out << YAML::Key << "half_life" << YAML::Value << l.half_life;
  out << YAML::Key << "explore" << YAML::Value << l.explore;
  out << YAML::Key << "quality_tolerance" << YAML::Value << l.quality_tolerance;
  out << YAML::Key << "feedback_ttl_ms" << YAML::Value << l.feedback_ttl_ms;
  out << YAML::Key << "feedback_max_requests" << YAML::Value << l.feedback_max_requests;
  out << YAML::Key << "weights" << YAML::Value << YAML::Flow << YAML::BeginMap << YAML::Key
      << "success" << YAML::Value << l.weight_success << YAML::Key << "tier" << YAML::Value
      << l.weight_tier << YAML::Key << "cost" << YAML::Value << l.weight_cost << YAML::Key
      << "latency" << YAML::Value << l.weight_latency << YAML::EndMap;
  out << YAML::EndMap;
  out << YAML::Key << "routing" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "default_complexity" << YAML::Value
      << std::string(to_string(c.routing.default_complexity));
  out << YAML::Key << "complexity_tiers" << YAML::Value << YAML::BeginMap;
  for (const auto& [cx, tiers] : c.routing.complexity_tiers) {
    out << YAML::Key << std::string(to_string(cx)) << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (auto t : tiers) out << std::string(to_string(t));
    out << YAML::EndSeq;
  }
  out << YAML::EndMap << YAML::EndMap;
  const auto& w = c.workflows;
  out << YAML::Key << "workflows" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "allow_exec" << YAML::Value << w.allow_exec;
  out << YAML::Key << "http_allow" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const auto& prefix : w.http_allow) out << prefix;
  out << YAML::EndSeq;
  out << YAML::Key << "lease_ms" << YAML::Value << w.lease_ms;
  out << YAML::Key << "max_concurrent_runs" << YAML::Value << w.max_concurrent_runs;
  out << YAML::Key << "max_parallel" << YAML::Value << w.max_parallel;
  out << YAML::Key << "budget" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "max_steps" << YAML::Value << w.budget.max_steps;
  out << YAML::Key << "max_tokens" << YAML::Value << w.budget.max_tokens;
  out << YAML::Key << "max_cost_usd" << YAML::Value << w.budget.max_cost_usd;
  out << YAML::Key << "max_time_ms" << YAML::Value << w.budget.max_time_ms;
  out << YAML::EndMap;
  out << YAML::EndMap;
  if (c.cluster.enabled()) {
    const auto& cl = c.cluster;
    out << YAML::Key << "cluster" << YAML::Value << YAML::BeginMap;
    // The URL rebuilt without its password (a secret).
    out << YAML::Key << "redis" << YAML::Value
        << "redis://" + cl.redis_host + ":" + std::to_string(cl.redis_port) + "/" +
               std::to_string(cl.redis_db);
    out << YAML::Key << "lease_ttl_ms" << YAML::Value << cl.lease_ttl_ms;
    out << YAML::Key << "expected_gateways" << YAML::Value << cl.expected_gateways;
    out << YAML::Key << "on_redis_down" << YAML::Value
        << (cl.on_redis_down == RedisDownPolicy::kRefuse ? "refuse" : "local");
    out << YAML::Key << "connect_timeout_ms" << YAML::Value << cl.connect_timeout_ms;
    out << YAML::Key << "command_timeout_ms" << YAML::Value << cl.command_timeout_ms;
    out << YAML::Key << "prefix" << YAML::Value << cl.prefix;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace switchboard
