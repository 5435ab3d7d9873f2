// Internal: template scanning shared by definition validation and rendering.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace switchboard::workflow::detail {

// Collects the expressions of every `${...}` in `text` (`$${` is a literal). False with `err`
// on an unclosed or empty reference.
bool scan_templates(const std::string& text, std::vector<std::string>& exprs, std::string& err);

// "steps.a.output.files[2]" → {"steps", "a", "output", "files", "2"}.
Result<std::vector<std::string>> split_path(const std::string& expr);

}  // namespace switchboard::workflow::detail
