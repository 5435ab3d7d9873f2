// The routing hints of a request's headers (chat_call.h: read_routing_hints).
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "gateway/chat_call.h"

namespace switchboard::gateway {

namespace {
constexpr size_t kMaxCategoryBytes = routing::Router::kMaxCategoryBytes;
constexpr size_t kMaxSessionBytes = 128;

// A printable ASCII header of at most `max` bytes into `out`; false when it is not one.
bool printable_hint(const Request& request, std::string_view name, size_t max, std::string& out) {
  auto v = request[beast::string_view(name.data(), name.size())];
  if (v.size() > max || !std::all_of(v.begin(), v.end(), [](char c) {
        return static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f;
      }))
    return false;
  out.assign(v.data(), v.size());
  return true;
}
}  // namespace

std::optional<std::string> read_routing_hints(const Request& request, routing::RequestInfo& info,
                                              std::string& session) {
  if (auto c = request["x-switchboard-complexity"]; !c.empty()) {
    info.complexity = parse_complexity(std::string_view(c.data(), c.size()));
    if (!info.complexity)
      return "x-switchboard-complexity must be simple, moderate, high or critical";
  }
  for (auto [name, max, out] : {std::tuple<std::string_view, size_t, std::string*>{
                                    "x-switchboard-category", kMaxCategoryBytes, &info.category},
                                {"x-switchboard-session", kMaxSessionBytes, &session}}) {
    if (!printable_hint(request, name, max, *out))
      return std::string(name) + " must be at most " + std::to_string(max) +
             " printable ASCII characters";
  }
  if (auto c = request["x-switchboard-max-cost-usd"]; !c.empty()) {
    char* end = nullptr;
    const std::string v(c);
    const double d = std::strtod(v.c_str(), &end);
    if (end == v.c_str() || *end != '\0' || !(d >= 0) || !std::isfinite(d))
      return "x-switchboard-max-cost-usd must be a non-negative number";
    info.max_cost_usd = d;
  }
  return std::nullopt;
}

}  // namespace switchboard::gateway
