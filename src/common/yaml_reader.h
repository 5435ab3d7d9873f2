// Internal to src/common: the base of the configuration readers. It reads typed values from a YAML
// tree (integers, numbers, booleans, strings, enums, each with its range check), resolves
// `env:NAME` secrets, applies the SWITCHBOARD__* environment overrides to the tree, and collects
// every error with its line and column (or the override variable that set the value) instead of
// stopping at the first. config_reader.h builds the section readers on it.
//
// Thread-safety: none; an instance reads one document on one thread. The Environment it is given
// must outlive it.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/config.h"

namespace switchboard::config_detail {

// Walks the YAML tree with a path, collecting every error instead of stopping at the first.
class YamlReader {
 public:
  YamlReader(std::string source, const Environment& env) : source_(std::move(source)), env_(env) {}

 protected:
  // ---- errors (yaml_reader.cpp) -----------------------------------------------------------------
  void error(const YAML::Node& n, const std::string& path, std::string message);
  // The override variable that set `path` or one of its parents.
  std::string find_override(const std::string& path) const;
  static std::string join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  // ---- environment overrides (env_overrides.cpp) ------------------------------------------------
  void apply_overrides(YAML::Node& root);
  // Environment names are upper case; match an existing key of the map case-insensitively.
  static std::string existing_key(const YAML::Node& map, const std::string& lowered);

  // ---- typed readers (yaml_reader.cpp) ----------------------------------------------------------
  // Reports every key of `n` not in `known`. Returns false when n is present but not a map.
  bool check_map(const YAML::Node& n, const std::string& path,
                 std::initializer_list<const char*> known);
  static bool present(const YAML::Node& parent, const char* key) {
    return parent.IsDefined() && parent.IsMap() && parent[key].IsDefined() && !parent[key].IsNull();
  }
  void read_int(const YAML::Node& parent, const char* key, const std::string& path, int64_t& out,
                int64_t min, int64_t max = std::numeric_limits<int64_t>::max());
  void read_int(const YAML::Node& parent, const char* key, const std::string& path, int& out,
                int64_t min, int64_t max = std::numeric_limits<int>::max());
  void read_double(const YAML::Node& parent, const char* key, const std::string& path, double& out,
                   double min, double max = std::numeric_limits<double>::infinity(),
                   bool min_exclusive = false);
  void read_bool(const YAML::Node& parent, const char* key, const std::string& path, bool& out);
  bool read_string(const YAML::Node& parent, const char* key, const std::string& path,
                   std::string& out);

  template <typename E>
  void read_enum(const YAML::Node& parent, const char* key, const std::string& path, E& out,
                 std::initializer_list<std::pair<const char*, E>> values) {
    std::string s;
    if (!read_string(parent, key, path, s)) return;
    for (const auto& [name, v] : values) {
      if (s == name) {
        out = v;
        return;
      }
    }
    std::string list;
    for (const auto& [name, v] : values) list += list.empty() ? name : std::string(" | ") + name;
    error(parent[key], join(path, key), "unknown value '" + s + "' (expected " + list + ")");
  }

  static std::string describe(const YAML::Node& n);
  static std::string range_message(double min, double max, bool integer);

  // A secret value: a literal, or `env:NAME`. Missing variables give nullopt (callers decide).
  std::optional<std::string> resolve(const std::string& value, std::string* var = nullptr);

  std::string source_;
  const Environment& env_;
  std::vector<ConfigError> errors_;
  std::vector<std::pair<std::string, std::string>> overrides_;  // path → variable
};

}  // namespace switchboard::config_detail
