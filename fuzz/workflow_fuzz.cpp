// Workflow definitions (workflow/workflow.h): they arrive over HTTP (POST /v1/workflows/runs)
// as well as from files, so parse_definition and the templates it accepts see untrusted text.
//
// The harness parses the input and checks that
//   - the result is either a definition or errors, each with a message and a 0 or 1-based
//     position;
//   - an accepted definition keeps its source and its hash ("sha256:" and 64 hex digits), has
//     steps, and every top-level step id is unique and found by find_step;
//   - every template it accepted renders, and every `when` evaluates, against a fixed scope
//     without crashing (errors are fine: references may name nothing).
#include <boost/json/parse.hpp>
#include <set>
#include <string>

#include "fuzz_util.h"
#include "workflow/workflow.h"

namespace {

namespace wf = switchboard::workflow;
namespace json = boost::json;

void exercise_step(const wf::StepDef& step, const wf::TemplateScope& scope, int depth) {
  FUZZ_CHECK(depth < 64);
  (void)wf::render(step.input, scope);
  if (!step.when.empty()) (void)wf::evaluate_condition(step.when, scope);
  if (step.feedback) {
    (void)wf::render(step.feedback->score, scope);
    if (step.feedback->success.is_string())
      (void)wf::evaluate_condition(std::string(step.feedback->success.get_string()), scope);
  }
  if (step.child) exercise_step(*step.child, scope, depth + 1);
  for (const wf::StepDef& b : step.branches) exercise_step(b, scope, depth + 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const wf::DefinitionLoad load = wf::parse_definition(text, "fuzz.yaml");
  FUZZ_CHECK(load.ok() == load.errors.empty());
  for (const switchboard::ConfigError& e : load.errors) {
    FUZZ_CHECK(!e.message.empty());
    FUZZ_CHECK(e.line >= 0 && e.column >= 0);
  }
  if (!load.ok()) return 0;

  const wf::Definition& def = *load.definition;
  FUZZ_CHECK(def.body == text);
  FUZZ_CHECK(def.hash.size() == 7 + 64 && def.hash.starts_with("sha256:"));
  FUZZ_CHECK(def.hash.find_first_not_of("0123456789abcdef", 7) == std::string::npos);
  FUZZ_CHECK(!def.steps.empty());
  std::set<std::string> ids;
  for (const wf::StepDef& s : def.steps) {
    FUZZ_CHECK(ids.insert(s.id).second);
    FUZZ_CHECK(def.find_step(s.id) == &s);
  }

  // A scope where every step finished with the same small output.
  const json::value input = json::parse(R"({"who":"world","n":3,"list":[1,"two",{"x":null}]})");
  const json::value item = json::parse(R"({"file":"a.txt"})");
  wf::TemplateScope scope;
  scope.input = &input;
  scope.item = &item;
  scope.attempt = 1;
  scope.run_id = "run-fuzz";
  scope.step = [](const std::string& id) -> std::optional<wf::StepView> {
    if (id.empty() || id.size() > 64) return std::nullopt;
    return wf::StepView{"completed", json::parse(R"({"stdout":"ok","exit_code":0,"a":[1,2]})"), "",
                        1};
  };
  (void)wf::validate_input(def, input);
  for (const wf::StepDef& s : def.steps) exercise_step(s, scope, 0);
  return 0;
}
