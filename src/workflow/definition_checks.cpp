// Checks of a definition's step inputs (definition_parser.h): each kind's `input` fields, and the
// `${...}` references of templates and conditions (syntax, and steps that exist and run earlier).
#include <boost/json.hpp>

#include "workflow/definition_parser.h"
#include "workflow/definition_yaml.h"
#include "workflow/template_util.h"

namespace switchboard::workflow::detail {

// Per-kind input fields; values may be templates.
void DefinitionParser::read_input(const YAML::Node& in, const std::string& path, StepDef& s,
                                  bool in_for_each) {
  walk_templates(in, path, in_for_each);
  s.input = yaml_to_json(in);
  if (in.IsScalar()) {
    // A whole-input template (`input: ${input.request}`) is checked at run time.
    if (!is_template(in.Scalar())) error(in, path, "must be a mapping");
    return;
  }
  if (!in.IsMap()) {
    error(in, path, "must be a mapping");
    return;
  }
  auto require = [&](const char* k) {
    if (!in[k]) error(in, join(path, k), "is required");
  };
  auto expect_type = [&](const char* k, bool (YAML::Node::*pred)() const, const char* what) {
    auto n = in[k];
    if (n && !(n.*pred)() && !(n.IsScalar() && is_template(n.Scalar())))
      error(n, join(path, k), std::string("must be ") + what);
  };
  switch (s.kind) {
    case StepKind::kExec:
      check_keys(in, path, {"argv", "env", "cwd", "max_output_bytes"});
      require("argv");
      expect_type("argv", &YAML::Node::IsSequence, "a list of strings");
      if (auto a = in["argv"]; a && a.IsSequence() && a.size() == 0)
        error(a, path + ".argv", "must not be empty");
      expect_type("env", &YAML::Node::IsMap, "a mapping of strings");
      expect_type("cwd", &YAML::Node::IsScalar, "a string");
      break;
    case StepKind::kHttp:
      check_keys(in, path, {"method", "url", "headers", "body", "ok_status"});
      require("url");
      expect_type("url", &YAML::Node::IsScalar, "a string");
      expect_type("method", &YAML::Node::IsScalar, "a string");
      expect_type("headers", &YAML::Node::IsMap, "a mapping of strings");
      break;
    case StepKind::kLlm:
      check_keys(in, path,
                 {"route", "model", "messages", "complexity", "category", "max_tokens",
                  "temperature", "session"});
      require("messages");
      expect_type("messages", &YAML::Node::IsSequence, "a list of {role, content}");
      if (!in["route"] && !in["model"]) error(in, path + ".route", "route or model is required");
      if (auto c = in["complexity"];
          c && c.IsScalar() && !is_template(c.Scalar()) && !parse_complexity(c.Scalar()))
        error(c, path + ".complexity", "must be simple | moderate | high | critical");
      break;
    case StepKind::kSleep: {
      check_keys(in, path, {"duration_ms"});
      require("duration_ms");
      if (auto d = in["duration_ms"]; d && !(d.IsScalar() && is_template(d.Scalar()))) {
        int64_t v = 0;
        get_int(d, path + ".duration_ms", v, 0);
      }
      break;
    }
    case StepKind::kParallel:
      break;
  }
}

void DefinitionParser::walk_templates(const YAML::Node& n, const std::string& path,
                                      bool in_for_each) {
  if (n.IsScalar()) {
    check_templates(n, path, n.Scalar(), in_for_each);
  } else if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i)
      walk_templates(n[i], path + "[" + std::to_string(i) + "]", in_for_each);
  } else if (n.IsMap()) {
    for (const auto& kv : n) walk_templates(kv.second, join(path, kv.first.Scalar()), in_for_each);
  }
}

// Syntax of every `${...}`, and references to steps that exist and come earlier.
void DefinitionParser::check_templates(const YAML::Node& n, const std::string& path,
                                       const std::string& text, bool in_for_each, bool allow_self) {
  std::vector<std::string> exprs;
  std::string err;
  if (!detail::scan_templates(text, exprs, err)) {
    error(n, path, err);
    return;
  }
  for (const auto& e : exprs) {
    auto parts = detail::split_path(e);
    if (!parts.ok()) {
      error(n, path, parts.status().message());
      continue;
    }
    const auto& p = *parts;
    const std::string& root = p[0];
    if (root == "item") {
      if (!in_for_each) error(n, path, "${item} is only defined inside a for_each step");
    } else if (root == "steps") {
      if (p.size() < 3) {
        error(n, path, "'${" + e + "}': expected steps.ID.output|status|error|attempt");
        continue;
      }
      int idx = -1;
      for (size_t i = 0; i < top_ids_.size() && idx < 0; ++i)
        if (top_ids_[i] == p[1]) idx = static_cast<int>(i);
      if (idx < 0) {
        error(n, path, "'${" + e + "}': no step '" + p[1] + "'");
      } else if (idx > current_index_ || (idx == current_index_ && !allow_self)) {
        error(n, path, "'${" + e + "}': step '" + p[1] + "' does not run before this one");
      }
      static const std::set<std::string> kFields = {"output", "status", "error", "attempt"};
      if (!kFields.count(p[2]))
        error(n, path,
              "'${" + e + "}': expected output, status, error or attempt after the step id");
    } else if (root != "input" && root != "attempt" && root != "run") {
      error(n, path,
            "'${" + e + "}': unknown reference (expected input, steps, item, attempt or run)");
    }
  }
}

}  // namespace switchboard::workflow::detail
