// Environment overrides: SWITCHBOARD__SECTION__KEY=value sets section.key in the YAML tree before
// it is read, so that every value of the file can be overridden without editing it.
#include <algorithm>
#include <cctype>
#include <string_view>

#include "common/yaml_reader.h"

namespace switchboard::config_detail {
namespace {

constexpr std::string_view kOverridePrefix = "SWITCHBOARD__";

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

void YamlReader::apply_overrides(YAML::Node& root) {
  for (const auto& [name, value] : env_.vars()) {
    if (name.size() <= kOverridePrefix.size() ||
        name.compare(0, kOverridePrefix.size(), kOverridePrefix) != 0)
      continue;
    std::vector<std::string> parts;
    std::string rest = name.substr(kOverridePrefix.size());
    size_t pos = 0;
    while (true) {
      size_t next = rest.find("__", pos);
      parts.push_back(
          lower(rest.substr(pos, next == std::string::npos ? std::string::npos : next - pos)));
      if (next == std::string::npos) break;
      pos = next + 2;
    }
    if (std::any_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); })) {
      ConfigError e;
      e.source = "env " + name;
      e.message = "malformed override name (empty path segment)";
      errors_.push_back(e);
      continue;
    }
    YAML::Node parsed;
    try {
      parsed = YAML::Load(value);
    } catch (const YAML::Exception&) {
      parsed = YAML::Node(value);
    }
    if (!parsed.IsDefined() || parsed.IsNull()) parsed = YAML::Node(value);
    std::string path;
    YAML::Node cur = root;
    bool ok = true;
    for (size_t i = 0; i < parts.size(); ++i) {
      std::string key = existing_key(cur, parts[i]);
      path = join(path, key);
      if (i + 1 == parts.size()) {
        cur[key] = parsed;
      } else {
        YAML::Node child = cur[key];
        if (!child.IsDefined() || child.IsNull()) {
          cur[key] = YAML::Node(YAML::NodeType::Map);
          child = cur[key];
        } else if (!child.IsMap()) {
          ConfigError e;
          e.source = "env " + name;
          e.path = path;
          e.message = "cannot override inside a value that is not a mapping";
          errors_.push_back(e);
          ok = false;
          break;
        }
        cur.reset(child);
      }
    }
    if (ok) overrides_.emplace_back(path, name);
  }
}

std::string YamlReader::existing_key(const YAML::Node& map, const std::string& lowered) {
  if (map.IsMap()) {
    for (auto it = map.begin(); it != map.end(); ++it) {
      auto k = it->first.as<std::string>("");
      if (lower(k) == lowered) return k;
    }
  }
  return lowered;
}

}  // namespace switchboard::config_detail
