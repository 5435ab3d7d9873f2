// OutcomeClass: how one upstream call ended, in the eight classes every module counts by.
//
// The upstream classifies a response or transport failure into one; the key pool cools keys
// down by it, the breakers count failures by it, and the store and metrics name it with
// to_string. One enum for all of them, so that a reorder or a new class cannot be miscounted
// by a conversion between look-alike enums. Plain values; thread-safe.
#pragma once

#include <cstdint>
#include <string_view>

namespace switchboard {

enum class OutcomeClass : uint8_t {
  kSuccess,
  kRateLimited,      // 429: cool the key down, try another key
  kAuthFailed,       // the key is unusable: 401/403, or billing exhausted
  kServerError,      // 5xx, Anthropic 529 overloaded: the provider's fault
  kTimeout,          // the request reached the provider and no answer came in time
  kConnectionError,  // the request probably never reached the provider
  kClientError,      // the request's fault, not the key's: do not retry elsewhere
  kCancelled,        // dropped by the caller (also what a Lease records when never completed)
};
inline constexpr int kOutcomeClassCount = 8;

// "success", "rate_limited", "auth_failed", "server_error", "timeout", "connection_error",
// "client_error", "cancelled": the names in logs, metric labels, stored rows and the admin API.
std::string_view to_string(OutcomeClass c);

// How a call failed below HTTP, as the HTTP client reports it; classify_transport (upstream)
// maps it to an OutcomeClass.
enum class TransportError : uint8_t {
  kConnectFailed,   // refused or unreachable
  kConnectTimeout,  // no connection within the connect timeout
  kReadTimeout,     // connected and sent, no (complete) answer in time
  kReset,           // the connection was closed or reset mid-exchange
  kTlsFailed,       // handshake or certificate verification failed
  kDnsFailed,
  kProtocolError,  // the upstream sent something that is not HTTP
  kCancelled,      // our side gave up (client disconnected, shutdown)
};
// "connect_failed", "connect_timeout", "read_timeout", "reset", "tls_failed", "dns_failed",
// "protocol_error", "cancelled".
std::string_view to_string(TransportError e);

}  // namespace switchboard
