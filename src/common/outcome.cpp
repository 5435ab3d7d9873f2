#include "common/outcome.h"

namespace switchboard {

std::string_view to_string(OutcomeClass c) {
  switch (c) {
    case OutcomeClass::kSuccess:
      return "success";
    case OutcomeClass::kRateLimited:
      return "rate_limited";
    case OutcomeClass::kAuthFailed:
      return "auth_failed";
    case OutcomeClass::kServerError:
      return "server_error";
    case OutcomeClass::kTimeout:
      return "timeout";
    case OutcomeClass::kConnectionError:
      return "connection_error";
    case OutcomeClass::kClientError:
      return "client_error";
    case OutcomeClass::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

std::string_view to_string(TransportError e) {
  switch (e) {
    case TransportError::kConnectFailed:
      return "connect_failed";
    case TransportError::kConnectTimeout:
      return "connect_timeout";
    case TransportError::kReadTimeout:
      return "read_timeout";
    case TransportError::kReset:
      return "reset";
    case TransportError::kTlsFailed:
      return "tls_failed";
    case TransportError::kDnsFailed:
      return "dns_failed";
    case TransportError::kProtocolError:
      return "protocol_error";
    case TransportError::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

}  // namespace switchboard
