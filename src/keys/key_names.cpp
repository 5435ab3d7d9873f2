// Names of the key pool's enums, as they appear in logs, metrics labels and the admin API.
#include "keys/keys.h"

namespace switchboard::keys {

std::string_view to_string(KeyState s) {
  switch (s) {
    case KeyState::kHealthy:
      return "healthy";
    case KeyState::kCooling:
      return "cooling";
    case KeyState::kDisabled:
      return "disabled";
    case KeyState::kDead:
      return "dead";
  }
  return "unknown";
}

std::string_view to_string(CooldownReason r) {
  switch (r) {
    case CooldownReason::kNone:
      return "";
    case CooldownReason::kRetryAfter:
      return "retry_after";
    case CooldownReason::kBackoff:
      return "backoff";
    case CooldownReason::kQuotaExhausted:
      return "quota_exhausted";
  }
  return "unknown";
}

CooldownReason cooldown_reason_from(std::string_view name) {
  for (auto r :
       {CooldownReason::kRetryAfter, CooldownReason::kBackoff, CooldownReason::kQuotaExhausted}) {
    if (to_string(r) == name) return r;
  }
  return CooldownReason::kNone;
}

std::string_view to_string(NoKeyReason r) {
  switch (r) {
    case NoKeyReason::kNoUsableKey:
      return "no_usable_key";
    case NoKeyReason::kConcurrency:
      return "concurrency";
    case NoKeyReason::kCooling:
      return "cooling";
    case NoKeyReason::kMinuteWindow:
      return "minute_window";
    case NoKeyReason::kDailyWindow:
      return "daily_window";
    case NoKeyReason::kTooLarge:
      return "too_large";
    case NoKeyReason::kTimeout:
      return "timeout";
    case NoKeyReason::kCancelled:
      return "cancelled";
    case NoKeyReason::kShutdown:
      return "shutdown";
    case NoKeyReason::kNoScheduler:
      return "no_scheduler";
  }
  return "unknown";
}

}  // namespace switchboard::keys
