// Workflow definitions (workflow.h): step kinds, retry backoff, the entry points that read a
// definition (the parser itself is in definition_parser.h), and run inputs against the schema.
#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <fstream>
#include <sstream>

#include "workflow/definition_parser.h"
#include "workflow/workflow.h"

namespace switchboard::workflow {

std::string_view to_string(StepKind k) {
  switch (k) {
    case StepKind::kExec:
      return "exec";
    case StepKind::kHttp:
      return "http";
    case StepKind::kLlm:
      return "llm";
    case StepKind::kParallel:
      return "parallel";
    case StepKind::kSleep:
      return "sleep";
  }
  return "?";
}

const StepDef* Definition::find_step(const std::string& id) const {
  for (const auto& s : steps)
    if (s.id == id) return &s;
  return nullptr;
}

Millis RetryPolicy::backoff(int failures, double u) const {
  double base = static_cast<double>(initial_ms) * std::pow(multiplier, std::max(0, failures - 1));
  base = std::min(base, static_cast<double>(max_ms));
  return Millis(static_cast<int64_t>(base * (1.0 + jitter * u)));
}

namespace {

bool type_matches(const std::string& type, const json::value& v) {
  if (type.empty()) return true;
  if (type == "string") return v.is_string();
  if (type == "number") return v.is_number();
  if (type == "integer") return v.is_int64() || v.is_uint64();
  if (type == "boolean") return v.is_bool();
  if (type == "array") return v.is_array();
  if (type == "object") return v.is_object();
  return false;
}

}  // namespace

DefinitionLoad parse_definition(const std::string& text, const std::string& source_name) {
  return detail::DefinitionParser(source_name).parse(text);
}

DefinitionLoad load_definition_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    DefinitionLoad out;
    ConfigError e;
    e.source = path;
    e.message = "cannot read the file";
    out.errors.push_back(e);
    return out;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_definition(ss.str(), path);
}

Status validate_input(const Definition& def, const json::value& input) {
  if (def.input_schema.empty()) return Status();
  if (!input.is_object()) return Status::invalid_argument("input: must be a JSON object");
  std::string errs;
  const auto& o = input.as_object();
  for (const auto& f : def.input_schema) {
    auto it = o.find(f.name);
    if (it == o.end()) {
      if (f.required) errs += (errs.empty() ? "" : "; ") + ("input." + f.name + ": is required");
      continue;
    }
    if (!type_matches(f.type, it->value()))
      errs += (errs.empty() ? "" : "; ") + ("input." + f.name + ": must be of type " + f.type);
  }
  if (!errs.empty()) return Status::invalid_argument(errs);
  return Status();
}

RunBudget RunBudget::tightest(const RunBudget& other) const {
  auto pick = [](auto a, auto b) { return a <= 0 ? b : b <= 0 ? a : std::min(a, b); };
  RunBudget out;
  out.max_steps = pick(max_steps, other.max_steps);
  out.max_tokens = pick(max_tokens, other.max_tokens);
  out.max_cost_usd = pick(max_cost_usd, other.max_cost_usd);
  out.max_time_ms = pick(max_time_ms, other.max_time_ms);
  return out;
}

}  // namespace switchboard::workflow
