// Run and transition text: status names, progress lines, and the `workflow list` / `workflow show`
// output (aligned text or JSON).
#include <boost/json.hpp>

#include "workflow/workflow.h"

namespace switchboard::workflow {

std::string_view to_string(RunStatus s) {
  switch (s) {
    case RunStatus::kPending:
      return "pending";
    case RunStatus::kRunning:
      return "running";
    case RunStatus::kCompleted:
      return "completed";
    case RunStatus::kFailed:
      return "failed";
    case RunStatus::kCancelled:
      return "cancelled";
  }
  return "?";
}

std::optional<RunStatus> parse_run_status(std::string_view s) {
  for (auto st : {RunStatus::kPending, RunStatus::kRunning, RunStatus::kCompleted,
                  RunStatus::kFailed, RunStatus::kCancelled})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

std::string Transition::to_line() const {
  std::string s =
      step_id.empty() ? "run " + run_id + " " + status : "step " + step_id + " " + status;
  if (!step_id.empty() && attempt > 0) {
    s += " (attempt " + std::to_string(attempt);
    if (status != "started") s += ", " + std::to_string(duration_ms) + " ms";
    s += ")";
  }
  if (!detail.empty()) s += ": " + detail;
  return s;
}

namespace {
json::object summary_json(const RunSummary& r) {
  json::object o;
  o["id"] = r.id;
  o["client"] = r.client;  // "" = the local user (workflow.h "Clients")
  o["name"] = r.name;
  o["version"] = r.version;
  o["status"] = std::string(to_string(r.status));
  if (!r.owner.empty()) o["owner"] = r.owner;
  if (r.cancel_requested) o["cancel_requested"] = true;
  o["created_ms"] = r.created_ms;
  o["updated_ms"] = r.updated_ms;
  if (r.finished_ms) o["finished_ms"] = r.finished_ms;
  if (!r.error.empty()) o["error"] = r.error;
  return o;
}

std::string pad(std::string s, size_t w) {
  if (s.size() < w) s.append(w - s.size(), ' ');
  return s;
}
}  // namespace

std::string format_runs(const std::vector<RunSummary>& runs, bool as_json) {
  if (as_json) {
    json::array a;
    for (const auto& r : runs) a.push_back(summary_json(r));
    return json::serialize(a) + "\n";
  }
  std::string out = pad("ID", 22) + pad("NAME", 24) + pad("STATUS", 11) + "ERROR\n";
  for (const auto& r : runs)
    out += pad(r.id, 22) + pad(r.name, 24) + pad(std::string(to_string(r.status)), 11) +
           r.error.substr(0, 80) + "\n";
  return out;
}

std::string format_run(const RunDetail& d, bool as_json) {
  if (as_json) {
    json::object o = summary_json(d.run);
    o["definition_hash"] = d.definition_hash;
    o["input"] = d.input;
    json::array steps;
    for (const auto& s : d.steps) {
      json::object so;
      so["id"] = s.step_id;
      so["status"] = s.status;
      so["attempt"] = s.attempt;
      so["failures"] = s.failures;
      so["started_ms"] = s.started_ms;
      if (s.finished_ms) {
        so["finished_ms"] = s.finished_ms;
        so["duration_ms"] = s.finished_ms - s.started_ms;
      }
      if (s.wake_ms) so["wake_ms"] = s.wake_ms;
      so["output"] = s.output;
      if (!s.error.empty()) so["error"] = s.error;
      steps.push_back(std::move(so));
    }
    o["steps"] = std::move(steps);
    return json::serialize(o) + "\n";
  }
  std::string out = "run " + d.run.id + " (" + d.run.name + " v" + std::to_string(d.run.version) +
                    "): " + std::string(to_string(d.run.status));
  if (!d.run.error.empty()) out += ": " + d.run.error;
  out += "\n" + pad("STEP", 24) + pad("STATUS", 12) + pad("ATTEMPT", 9) + pad("MS", 9) + "ERROR\n";
  for (const auto& s : d.steps) {
    std::string ms = s.finished_ms ? std::to_string(s.finished_ms - s.started_ms) : "-";
    out += pad(s.step_id, 24) + pad(s.status, 12) + pad(std::to_string(s.attempt), 9) + pad(ms, 9) +
           s.error.substr(0, 120) + "\n";
  }
  return out;
}

}  // namespace switchboard::workflow
