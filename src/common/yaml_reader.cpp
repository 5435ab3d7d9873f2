// The typed readers and error reporting of YamlReader (yaml_reader.h).
#include "common/yaml_reader.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace switchboard::config_detail {

void YamlReader::error(const YAML::Node& n, const std::string& path, std::string message) {
  ConfigError e;
  e.path = path;
  e.message = std::move(message);
  if (auto it = find_override(path); !it.empty()) {
    e.source = "env " + it;
  } else {
    e.source = source_;
    if (n.IsDefined()) {
      auto m = n.Mark();
      if (m.line >= 0) {
        e.line = m.line + 1;
        e.column = m.column + 1;
      }
    }
  }
  errors_.push_back(std::move(e));
}

std::string YamlReader::find_override(const std::string& path) const {
  for (const auto& [p, var] : overrides_) {
    if (path == p || (path.size() > p.size() && path.compare(0, p.size(), p) == 0 &&
                      (path[p.size()] == '.' || path[p.size()] == '['))) {
      return var;
    }
  }
  return "";
}

bool YamlReader::check_map(const YAML::Node& n, const std::string& path,
                           std::initializer_list<const char*> known) {
  if (!n.IsDefined() || n.IsNull()) return true;
  if (!n.IsMap()) {
    error(n, path, "expected a mapping");
    return false;
  }
  for (auto it = n.begin(); it != n.end(); ++it) {
    std::string k = it->first.as<std::string>("");
    bool found = std::any_of(known.begin(), known.end(), [&](const char* x) { return k == x; });
    if (!found) {
      std::string list;
      for (const char* x : known) list += list.empty() ? x : std::string(", ") + x;
      error(it->first, join(path, k), "unknown key '" + k + "' (expected one of: " + list + ")");
    }
  }
  return true;
}

void YamlReader::read_int(const YAML::Node& parent, const char* key, const std::string& path,
                          int64_t& out, int64_t min, int64_t max) {
  if (!present(parent, key)) return;
  YAML::Node n = parent[key];
  std::string p = join(path, key);
  int64_t v = 0;
  if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v)) {
    error(n, p, "expected an integer, got " + describe(n));
    return;
  }
  if (v < min || v > max) {
    error(n, p,
          range_message(static_cast<double>(min), static_cast<double>(max), true) + ", got " +
              std::to_string(v));
    return;
  }
  out = v;
}

void YamlReader::read_int(const YAML::Node& parent, const char* key, const std::string& path,
                          int& out, int64_t min, int64_t max) {
  int64_t v = out;
  read_int(parent, key, path, v, min, max);
  out = static_cast<int>(v);
}

void YamlReader::read_double(const YAML::Node& parent, const char* key, const std::string& path,
                             double& out, double min, double max, bool min_exclusive) {
  if (!present(parent, key)) return;
  YAML::Node n = parent[key];
  std::string p = join(path, key);
  double v = 0;
  if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v)) {
    error(n, p, "expected a number, got " + describe(n));
    return;
  }
  if (v < min || v > max || (min_exclusive && v == min)) {
    std::ostringstream m;
    m << (min_exclusive ? "must be > " : "must be >= ") << min;
    if (std::isfinite(max)) m << " and <= " << max;
    m << ", got " << v;
    error(n, p, m.str());
    return;
  }
  out = v;
}

void YamlReader::read_bool(const YAML::Node& parent, const char* key, const std::string& path,
                           bool& out) {
  if (!present(parent, key)) return;
  YAML::Node n = parent[key];
  bool v = false;
  if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) {
    error(n, join(path, key), "expected true or false, got " + describe(n));
    return;
  }
  out = v;
}

bool YamlReader::read_string(const YAML::Node& parent, const char* key, const std::string& path,
                             std::string& out) {
  if (!present(parent, key)) return false;
  YAML::Node n = parent[key];
  if (!n.IsScalar()) {
    error(n, join(path, key), "expected a string, got " + describe(n));
    return false;
  }
  out = n.Scalar();
  return true;
}

std::string YamlReader::describe(const YAML::Node& n) {
  if (!n.IsDefined()) return "nothing";
  if (n.IsMap()) return "a mapping";
  if (n.IsSequence()) return "a list";
  if (n.IsNull()) return "nothing";
  return "'" + n.Scalar() + "'";
}

std::string YamlReader::range_message(double min, double max, bool integer) {
  std::ostringstream m;
  m << "must be >= " << static_cast<int64_t>(min);
  if (max < static_cast<double>(std::numeric_limits<int>::max()) || !integer) {
    if (max < 9e18) m << " and <= " << static_cast<int64_t>(max);
  }
  return m.str();
}

std::optional<std::string> YamlReader::resolve(const std::string& value, std::string* var) {
  if (value.rfind("env:", 0) == 0) {
    std::string name = value.substr(4);
    if (var) *var = name;
    return env_.get(name);
  }
  return value;
}

}  // namespace switchboard::config_detail
