// Logging: spdlog behind a small facade, with secret redaction at the sink.
//
// Every configured secret (provider API keys, gateway keys, the admin key) is registered with
// `add_secret(secret, id)`; any log line that would contain it has it replaced by its id
// (e.g. `openai#2`) before the line reaches any sink, whatever the caller formatted. Output is
// plain text or JSON lines (`{"ts":"2026-12-06T01:02:03.123456Z","level":…,"logger":…,"msg":…}`,
// an access record's fields beside them), to stderr by default.
//
// Thread-safety: all functions may be called from any thread; `init` and `set_sink` replace the
// sink atomically with respect to logging calls.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

namespace switchboard::log {

enum class Format { kText, kJson };

// Configures the process logger: level name (trace|debug|info|warn|error|off) and format.
void init(std::string_view level, Format format);
// init, with stderr written in batches every `interval` by one thread (common/batched_sink.h): no
// write per line on the calling thread; warn and above are written at once. For `serve`, whose
// access log has a line per request.
void init_batched(std::string_view level, Format format, std::chrono::milliseconds interval);
// Writes whatever is batched and goes back to plain stderr (at the end of `serve`).
void shutdown();
// Replaces the destination (tests capture output with an ostream sink). Redaction still applies.
void set_sink(std::shared_ptr<spdlog::sinks::sink> sink, Format format);

void add_secret(std::string secret, std::string id);
void clear_secrets();
// The text with every registered secret replaced by its id.
std::string redact(std::string_view text);
// For text from outside that is relayed to a client (an upstream's error body): besides whole
// secrets, the forms a provider echoes a key in ("sk-abc1****wxyz", "...wxyz") are redacted: any
// word of key characters that starts with a secret's first 8 characters or ends with its last 4
// becomes "[redacted]". Slower than `redact`; for error paths.
std::string redact_relayed(std::string_view text);

spdlog::logger& logger();

// One request's record in the access log (`log.access_log`): written at info level as one line
// without fmt (it is on every request's path). In text, `access {"request_id":…,…}`; in JSON,
// every field at the top level of the line's object, beside ts, level, logger ("access") and
// msg ("access"). String fields are redacted like any line. Views are read before access returns.
struct AccessRecord {
  std::string_view request_id, route, model, provider, key, client, status;
  int attempts = 0;
  int layer = 0;
  int64_t latency_us = 0;
  int64_t tokens_in = 0;
  int64_t tokens_out = 0;
  double cost_usd = 0;
};
void access(const AccessRecord& record);

// `tp` as RFC 3339 in UTC with microseconds: 2026-12-06T01:02:03.123456Z.
void append_rfc3339(std::string& out, std::chrono::system_clock::time_point tp);

template <typename... Args>
void debug(spdlog::format_string_t<Args...> f, Args&&... args) {
  logger().debug(f, std::forward<Args>(args)...);
}
template <typename... Args>
void info(spdlog::format_string_t<Args...> f, Args&&... args) {
  logger().info(f, std::forward<Args>(args)...);
}
template <typename... Args>
void warn(spdlog::format_string_t<Args...> f, Args&&... args) {
  logger().warn(f, std::forward<Args>(args)...);
}
template <typename... Args>
void error(spdlog::format_string_t<Args...> f, Args&&... args) {
  logger().error(f, std::forward<Args>(args)...);
}

}  // namespace switchboard::log
