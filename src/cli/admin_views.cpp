#include "cli/admin_views.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <vector>

#include "net/http_client.h"

namespace switchboard::cli {

namespace {

namespace json = boost::json;

std::string text(const json::value& v) {
  if (v.is_string()) return v.as_string().empty() ? "-" : std::string(v.as_string());
  if (v.is_double()) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.4g", v.as_double());
    return buf;
  }
  if (v.is_null()) return "-";
  return json::serialize(v);
}

void print_table(const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < width.size(); ++i)
      width[i] = std::max(width[i], r[i].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < cells.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    std::cout << out << "\n";
  };
  line(header);
  for (const auto& r : rows) line(r);
}

std::vector<std::vector<std::string>> rows_of(const json::array& items,
                                              const std::vector<std::string>& fields) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& item : items) {
    if (!item.is_object()) continue;
    std::vector<std::string> row;
    for (const auto& f : fields) {
      // "minute.requests" descends into nested objects.
      const json::value* v = &item;
      size_t start = 0;
      while (v && start <= f.size()) {
        size_t dot = f.find('.', start);
        std::string part =
            f.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
        v = v->is_object() ? v->as_object().if_contains(part) : nullptr;
        if (dot == std::string::npos) break;
        start = dot + 1;
      }
      row.push_back(v ? text(*v) : "-");
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace

int run_admin_view(const std::string& what, const std::string& url, bool as_json) {
  boost::asio::io_context ctx;
  net::HttpClient client(ctx.get_executor());
  net::HttpRequest req;
  req.method = "GET";
  std::string base = url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  req.url = base + "/admin/" + what;
  req.deadline = MonoClock::now() + std::chrono::seconds(10);
  if (const char* key = std::getenv("SWITCHBOARD_ADMIN_KEY"); key && *key)
    req.headers.emplace_back("authorization", std::string("Bearer ") + key);
  net::HttpResponse res;
  net::TransportStatus st;
  boost::asio::co_spawn(
      ctx, [&]() -> boost::asio::awaitable<void> { st = co_await client.fetch(req, res); },
      boost::asio::detached);
  ctx.run();
  if (!st.ok()) {
    std::cerr << "switchboard " << what << ": cannot reach " << req.url << ": " << st.message
              << "\n";
    return 1;
  }
  if (res.head.status != 200) {
    std::cerr << "switchboard " << what << ": HTTP " << res.head.status << ": " << res.body << "\n";
    return 1;
  }
  if (as_json) {
    std::cout << res.body << "\n";
    return 0;
  }
  boost::system::error_code ec;
  json::value doc = json::parse(res.body, ec);
  if (ec || !doc.is_object()) {
    std::cerr << "switchboard " << what << ": the gateway sent invalid JSON\n";
    return 1;
  }
  const auto& o = doc.as_object();
  auto array = [&](const char* name) -> json::array {
    const json::value* v = o.if_contains(name);
    return v && v->is_array() ? v->as_array() : json::array();
  };
  if (what == "keys") {
    print_table({"KEY", "STATE", "COOLDOWN_MS", "REASON", "IN_FLIGHT", "RPM_USED", "TPM_USED",
                 "FAILURES", "FINGERPRINT"},
                rows_of(array("keys"), {"id", "state", "cooldown_remaining_ms", "cooldown_reason",
                                        "in_flight", "minute.requests", "minute.tokens",
                                        "consecutive_failures", "fingerprint"}));
  } else if (what == "breakers") {
    print_table(
        {"TARGET", "STATE", "CALLS", "FAILURE_RATE", "SLOW_RATE", "HALF_OPEN_IN_MS", "OPENINGS"},
        rows_of(array("breakers"),
                {"target", "state", "calls_in_window", "failure_rate", "slow_call_rate",
                 "until_half_open_ms", "consecutive_openings"}));
  } else if (what == "quotas") {
    print_table(
        {"PROVIDER", "PERIOD", "STATUS", "USED_RATIO", "MEASURE", "REQUESTS", "TOKENS", "USD",
         "RESETS_AT"},
        rows_of(array("quotas"), {"provider", "period_id", "status", "used_ratio", "measure",
                                  "used.requests", "used.tokens", "used.usd", "resets_at"}));
  } else {
    print_table(
        {"MODEL", "PROVIDER", "TIER", "REQUESTS", "SUCCESS", "P95_MS", "SPEND_USD", "USD/REQUEST",
         "QUOTA"},
        rows_of(array("models"), {"model", "provider", "tier", "requests", "success_rate",
                                  "latency_p95_ms", "spend_usd", "cost_per_request_usd", "quota"}));
    std::cout << "\n";
    print_table({"CATEGORY", "MODEL", "POSTERIOR_MEAN", "ALPHA", "BETA", "OUTCOMES", "FEEDBACK",
                 "FEEDBACK_SUCCESS"},
                rows_of(array("posteriors"), {"category", "model", "mean", "alpha", "beta",
                                              "outcomes", "feedback", "feedback_success"}));
  }
  return 0;
}

}  // namespace switchboard::cli
