// Classification of upstream failures into the key pool's outcome classes, and OpenAI-shaped
// error bodies. See translate.h.
#include "common/json.h"
#include "upstream/translate.h"

namespace switchboard::upstream {

OutcomeClass classify_http(int status, std::string_view body) {
  if (status >= 200 && status < 300) return OutcomeClass::kSuccess;
  switch (status) {
    case 429:
      // OpenAI answers an exhausted billing quota with 429 too, but waiting never fixes it:
      // treating it as a rate limit would retry a dead key forever.
      return body.find("insufficient_quota") != std::string_view::npos ? OutcomeClass::kAuthFailed
                                                                       : OutcomeClass::kRateLimited;
    case 401:
    case 403:
      return OutcomeClass::kAuthFailed;
    case 408:
      return OutcomeClass::kTimeout;
    case 529:  // Anthropic: overloaded
      return OutcomeClass::kServerError;
    default:
      break;
  }
  if (status >= 400 && status < 500) {
    // Anthropic reports an empty prepaid balance as a 400; it is the key's fault, not the
    // request's, and another key or provider can serve the same request.
    if (status == 400 && body.find("credit balance is too low") != std::string_view::npos) {
      return OutcomeClass::kAuthFailed;
    }
    return OutcomeClass::kClientError;
  }
  return OutcomeClass::kServerError;  // 5xx, and statuses an API never sends to a good request
}

OutcomeClass classify_transport(TransportError e) {
  switch (e) {
    case TransportError::kConnectFailed:
    case TransportError::kConnectTimeout:
    case TransportError::kReset:
    case TransportError::kTlsFailed:
    case TransportError::kDnsFailed:
      return OutcomeClass::kConnectionError;
    case TransportError::kReadTimeout:
      return OutcomeClass::kTimeout;
    case TransportError::kProtocolError:
      return OutcomeClass::kServerError;
    case TransportError::kCancelled:
      return OutcomeClass::kCancelled;
  }
  return OutcomeClass::kConnectionError;
}

OutcomeClass classify_anthropic_error_type(std::string_view type) {
  if (type == "rate_limit_error") return OutcomeClass::kRateLimited;
  if (type == "authentication_error" || type == "permission_error" || type == "billing_error") {
    return OutcomeClass::kAuthFailed;
  }
  if (type == "invalid_request_error" || type == "not_found_error" || type == "request_too_large") {
    return OutcomeClass::kClientError;
  }
  if (type == "timeout_error") return OutcomeClass::kTimeout;
  return OutcomeClass::kServerError;  // api_error, overloaded_error, unknown
}

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 when it is not one (overlongs, surrogates
// and code points above U+10FFFF are invalid).
size_t utf8_sequence(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  }
  return len;
}

void append_escaped_utf8(std::string& out, std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    while (i < s.size()) {
      size_t len = utf8_sequence(s, i);
      if (len == 0) break;
      i += len;
    }
    switchboard::json::append_escaped(out, s.substr(start, i - start));
    if (i < s.size()) {
      out += "\xEF\xBF\xBD";  // U+FFFD for one invalid byte
      ++i;
    }
  }
}

}  // namespace

std::string openai_error_json(std::string_view message, std::string_view type,
                              std::string_view code) {
  std::string out;
  out.reserve(message.size() + type.size() + code.size() + 48);
  out += "{\"error\":{\"message\":\"";
  append_escaped_utf8(out, message);
  out += "\",\"type\":\"";
  append_escaped_utf8(out, type);
  out += "\",\"code\":";
  if (code.empty()) {
    out += "null";
  } else {
    out += '"';
    append_escaped_utf8(out, code);
    out += '"';
  }
  out += "}}";
  return out;
}

}  // namespace switchboard::upstream
