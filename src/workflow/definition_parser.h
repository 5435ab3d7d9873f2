// Internal to the workflow module: DefinitionParser reads one definition's YAML (or JSON) into a
// Definition and reports every error it finds, each with line, column and field path. Defined
// in two files: definition_parser.cpp (the text, the root, steps and their fields: retry,
// on_failure, feedback, parallel children, the input schema) and definition_checks.cpp (each
// kind's `input` fields and the `${...}` references in templates and conditions). The YAML
// screen and YAML → JSON are in definition_yaml.h.
//
// Thread-safety: a parser is used once, by one thread.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "common/config.h"
#include "workflow/workflow.h"

namespace switchboard::workflow::detail {

class DefinitionParser {
 public:
  explicit DefinitionParser(std::string source) : source_(std::move(source)) {}

  DefinitionLoad parse(const std::string& text);

 private:
  // Errors, and the result (definition_parser.cpp).
  void add(int line, int col, const std::string& path, std::string msg);
  void error(const YAML::Node& n, const std::string& path, std::string msg);
  DefinitionLoad finish();

  // Typed field readers (definition_parser.cpp).
  void check_keys(const YAML::Node& n, const std::string& path,
                  const std::set<std::string>& allowed);
  static std::string join(const std::string& path, const std::string& k) {
    return path.empty() ? k : path + "." + k;
  }
  bool get_string(const YAML::Node& n, const std::string& path, std::string& out);
  bool get_int(const YAML::Node& n, const std::string& path, int64_t& out, int64_t min);
  bool get_double(const YAML::Node& n, const std::string& path, double& out, double min);

  // The structure (definition_parser.cpp).
  void read_root(const YAML::Node& root);
  void read_input_schema(const YAML::Node& n);
  void read_step(const YAML::Node& n, const std::string& path, StepDef& s, bool top,
                 bool in_for_each);
  void read_on_failure(const YAML::Node& f, const std::string& path, StepDef& s, bool top);
  void read_feedback(const YAML::Node& f, const std::string& path, StepDef& s);
  void read_retry(const YAML::Node& r, const std::string& path, StepDef& s);
  void read_budget(const YAML::Node& b);

  // Step inputs and template references (definition_checks.cpp).
  void read_input(const YAML::Node& in, const std::string& path, StepDef& s, bool in_for_each);
  void walk_templates(const YAML::Node& n, const std::string& path, bool in_for_each);
  void check_templates(const YAML::Node& n, const std::string& path, const std::string& text,
                       bool in_for_each, bool allow_self = false);
  static bool is_template(const std::string& s) { return s.find("${") != std::string::npos; }

  std::string source_;
  Definition def_;
  std::vector<ConfigError> errors_;
  std::vector<std::string> top_ids_;
  std::vector<std::string> top_kinds_;
  int current_index_ = 0;
};

}  // namespace switchboard::workflow::detail
