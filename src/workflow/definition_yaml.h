// Internal to the workflow module: the YAML side of reading a definition. `screen_definition`
// looks at the parser's events before any node is built, for what a definition sent by a client
// must not do to this process (aliases, anchors, deep nesting); `yaml_to_json` gives a node's
// value with its natural JSON types.
//
// Thread-safety: plain functions on their arguments; any thread.
#pragma once

#include <yaml-cpp/yaml.h>

#include <optional>
#include <string>
#include <vector>

#include "workflow/workflow.h"

namespace switchboard::workflow::detail {

struct ScreenFinding {
  YAML::Mark mark;
  std::string message;
};

// The aliases, anchors and too-deep nesting in the first document of `text` (at most about
// twenty findings, and none after the first too-deep node); `syntax` gets the parser's error
// when the text is not YAML. Linear in the text.
std::vector<ScreenFinding> screen_definition(const std::string& text,
                                             std::optional<YAML::ParserException>& syntax);

// A YAML scalar with its natural JSON type; quoted scalars stay strings.
json::value scalar_to_json(const YAML::Node& n);
json::value yaml_to_json(const YAML::Node& n);

}  // namespace switchboard::workflow::detail
