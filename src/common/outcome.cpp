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

}  // namespace switchboard
