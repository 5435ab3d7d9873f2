// Reading a definition (definition_parser.h): the text, the root, the steps and their fields.
#include "workflow/definition_parser.h"

#include <openssl/evp.h>

#include <boost/json.hpp>
#include <map>
#include <optional>
#include <regex>

#include "workflow/definition_yaml.h"

namespace switchboard::workflow::detail {

namespace {

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

}  // namespace

DefinitionLoad DefinitionParser::parse(const std::string& text) {
  // First the events (only the first document, as YAML::Load reads), then the nodes.
  std::optional<YAML::ParserException> syntax;
  for (const auto& f : screen_definition(text, syntax))
    add(f.mark.line + 1, f.mark.column + 1, "", f.message);
  if (syntax)
    add(syntax->mark.line + 1, syntax->mark.column + 1, "", "YAML syntax error: " + syntax->msg);
  if (!errors_.empty()) return finish();
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    add(e.mark.line + 1, e.mark.column + 1, "", "YAML syntax error: " + e.msg);
    return finish();
  }
  try {
    if (!root.IsMap()) {
      error(root, "", "a workflow must be a mapping with name, version and steps");
      return finish();
    }
    read_root(root);
  } catch (const YAML::Exception& e) {
    add(e.mark.line + 1, e.mark.column + 1, "", "unexpected structure: " + e.msg);
  }
  def_.body = text;
  def_.hash = sha256_hex(text);
  return finish();
}

void DefinitionParser::add(int line, int col, const std::string& path, std::string msg) {
  ConfigError e;
  e.source = source_;
  e.line = line;
  e.column = col;
  e.path = path;
  e.message = std::move(msg);
  errors_.push_back(std::move(e));
}

void DefinitionParser::error(const YAML::Node& n, const std::string& path, std::string msg) {
  int line = 0, col = 0;
  if (n.IsDefined()) {
    auto m = n.Mark();
    if (m.line >= 0) {
      line = m.line + 1;
      col = m.column + 1;
    }
  }
  add(line, col, path, std::move(msg));
}

DefinitionLoad DefinitionParser::finish() {
  DefinitionLoad out;
  out.errors = std::move(errors_);
  if (out.errors.empty()) out.definition = std::move(def_);
  return out;
}

// Reports keys of `n` not in `allowed` (each at its own position).
void DefinitionParser::check_keys(const YAML::Node& n, const std::string& path,
                                  const std::set<std::string>& allowed) {
  for (const auto& kv : n) {
    const std::string& k = kv.first.Scalar();
    if (!allowed.count(k)) {
      std::string expected;
      for (const auto& a : allowed) expected += (expected.empty() ? "" : ", ") + a;
      error(kv.first, join(path, k), "unknown field (expected one of: " + expected + ")");
    }
  }
}

bool DefinitionParser::get_string(const YAML::Node& n, const std::string& path, std::string& out) {
  if (!n.IsScalar()) {
    error(n, path, "must be a string");
    return false;
  }
  out = n.Scalar();
  return true;
}

bool DefinitionParser::get_int(const YAML::Node& n, const std::string& path, int64_t& out,
                               int64_t min) {
  json::value v = n.IsScalar() ? scalar_to_json(n) : json::value();
  if (!v.is_int64()) {
    error(n, path, "must be an integer");
    return false;
  }
  if (v.as_int64() < min) {
    error(n, path, "must be >= " + std::to_string(min));
    return false;
  }
  out = v.as_int64();
  return true;
}

bool DefinitionParser::get_double(const YAML::Node& n, const std::string& path, double& out,
                                  double min) {
  json::value v = n.IsScalar() ? scalar_to_json(n) : json::value();
  if (!v.is_number()) {
    error(n, path, "must be a number");
    return false;
  }
  out = v.to_number<double>();
  if (out < min) {
    error(n, path, "must be >= " + json::serialize(json::value(min)));
    return false;
  }
  return true;
}

void DefinitionParser::read_root(const YAML::Node& root) {
  check_keys(root, "", {"name", "version", "description", "budget", "input", "steps"});
  if (auto n = root["name"]; !n) {
    error(root, "name", "is required");
  } else if (get_string(n, "name", def_.name) && def_.name.empty()) {
    error(n, "name", "must not be empty");
  }
  if (auto n = root["version"]) get_int(n, "version", def_.version, 0);
  if (auto n = root["description"]; n && !n.IsScalar()) error(n, "description", "must be a string");
  if (auto n = root["input"]) read_input_schema(n);
  if (auto n = root["budget"]) read_budget(n);
  auto steps = root["steps"];
  if (!steps) {
    error(root, "steps", "is required");
    return;
  }
  if (!steps.IsSequence() || steps.size() == 0) {
    error(steps, "steps", "must be a non-empty list of steps");
    return;
  }
  // First pass: ids, so that goto and template references can look ahead/behind.
  for (size_t i = 0; i < steps.size(); ++i) {
    auto id = steps[i].IsMap() ? steps[i]["id"] : YAML::Node();
    top_ids_.push_back(id && id.IsScalar() ? id.Scalar() : "");
    auto kind = steps[i].IsMap() ? steps[i]["kind"] : YAML::Node();
    top_kinds_.push_back(kind && kind.IsScalar() ? kind.Scalar() : "");
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < steps.size(); ++i) {
    std::string path = "steps[" + std::to_string(i) + "]";
    StepDef s;
    current_index_ = static_cast<int>(i);
    read_step(steps[i], path, s, /*top=*/true, /*in_for_each=*/false);
    if (!s.id.empty() && !seen.insert(s.id).second)
      error(steps[i]["id"], path + ".id", "duplicate step id '" + s.id + "'");
    def_.steps.push_back(std::move(s));
  }
}

void DefinitionParser::read_input_schema(const YAML::Node& n) {
  if (!n.IsMap()) {
    error(n, "input", "must be a mapping {required: [...], properties: {name: {type: T}}}");
    return;
  }
  check_keys(n, "input", {"required", "properties", "type"});
  std::map<std::string, InputField> fields;
  if (auto p = n["properties"]) {
    if (!p.IsMap()) {
      error(p, "input.properties", "must be a mapping of names to {type: T}");
    } else {
      for (const auto& kv : p) {
        std::string name = kv.first.Scalar();
        std::string path = "input.properties." + name;
        InputField f;
        f.name = name;
        if (kv.second.IsMap()) {
          check_keys(kv.second, path, {"type", "description", "items"});
          if (auto t = kv.second["type"]) get_string(t, path + ".type", f.type);
        } else if (kv.second.IsScalar()) {
          f.type = kv.second.Scalar();  // shorthand `name: type`
        } else {
          error(kv.second, path, "must be {type: T}");
        }
        static const std::set<std::string> kTypes = {"",        "string", "number", "integer",
                                                     "boolean", "array",  "object"};
        if (!kTypes.count(f.type))
          error(kv.second, path + ".type",
                "unknown type '" + f.type +
                    "' (expected string | number | integer | boolean | array | object)");
        fields[name] = f;
      }
    }
  }
  if (auto r = n["required"]) {
    if (!r.IsSequence()) {
      error(r, "input.required", "must be a list of names");
    } else {
      for (const auto& e : r) {
        if (!e.IsScalar()) {
          error(e, "input.required", "must be a list of names");
          continue;
        }
        auto& f = fields[e.Scalar()];
        f.name = e.Scalar();
        f.required = true;
      }
    }
  }
  if (auto t = n["type"]; t && !(t.IsScalar() && t.Scalar() == "object"))
    error(t, "input.type", "must be object");
  for (auto& [_, f] : fields) def_.input_schema.push_back(f);
}

void DefinitionParser::read_step(const YAML::Node& n, const std::string& path, StepDef& s, bool top,
                                 bool in_for_each) {
  if (!n.IsMap()) {
    error(n, path, "a step must be a mapping");
    return;
  }
  check_keys(n, path,
             {"id", "kind", "description", "input", "retry", "timeout_ms", "when", "on_failure",
              "for_each", "branches", "max_concurrency", "step", "feedback"});
  static const std::regex kId(R"([A-Za-z0-9_-]+)");
  if (auto id = n["id"]) {
    if (get_string(id, path + ".id", s.id) && !std::regex_match(s.id, kId))
      error(id, path + ".id", "must match [A-Za-z0-9_-]+");
  } else if (top) {
    error(n, path + ".id", "is required");
  }
  auto kind = n["kind"];
  if (!kind) {
    error(n, path + ".kind", "is required");
    return;
  }
  std::string k;
  if (!get_string(kind, path + ".kind", k)) return;
  static const std::map<std::string, StepKind> kKinds = {{"exec", StepKind::kExec},
                                                         {"http", StepKind::kHttp},
                                                         {"llm", StepKind::kLlm},
                                                         {"parallel", StepKind::kParallel},
                                                         {"sleep", StepKind::kSleep}};
  auto it = kKinds.find(k);
  if (it == kKinds.end()) {
    error(kind, path + ".kind",
          "unknown kind '" + k + "' (expected exec | http | llm | parallel | sleep)");
    return;
  }
  s.kind = it->second;
  if (auto t = n["timeout_ms"]) get_int(t, path + ".timeout_ms", s.timeout_ms, 0);
  if (auto w = n["when"]) {
    // A `when` that YAML read as a bool or number is still a condition.
    if (w.IsScalar()) {
      s.when = w.Scalar();
      check_templates(w, path + ".when", s.when, in_for_each);
    } else {
      error(w, path + ".when", "must be a condition string");
    }
  }
  if (auto f = n["on_failure"]) read_on_failure(f, path + ".on_failure", s, top);
  if (auto r = n["retry"]) read_retry(r, path + ".retry", s);
  if (auto f = n["feedback"]) {
    if (top)
      read_feedback(f, path + ".feedback", s);
    else
      error(f, path + ".feedback", "feedback is only allowed on top-level steps");
  }

  bool parallel = s.kind == StepKind::kParallel;
  for (const char* pk : {"for_each", "branches", "max_concurrency", "step"}) {
    if (!parallel && n[pk]) error(n[pk], join(path, pk), "only parallel steps take this field");
  }
  if (parallel) {
    if (!top) error(n, path, "parallel steps cannot be nested");
    if (n["input"]) error(n["input"], path + ".input", "parallel steps take no input");
    if (n["retry"]) error(n["retry"], path + ".retry", "retry the child step instead");
    if (auto m = n["max_concurrency"]) {
      int64_t v = 0;
      if (get_int(m, path + ".max_concurrency", v, 1)) s.max_concurrency = static_cast<int>(v);
    }
    auto fe = n["for_each"];
    auto br = n["branches"];
    auto child = n["step"];
    if (fe && br) error(br, path, "use either for_each (with step) or branches, not both");
    if (!fe && !br) error(n, path, "needs for_each (with step) or branches");
    if (fe) {
      if (get_string(fe, path + ".for_each", s.for_each))
        check_templates(fe, path + ".for_each", s.for_each, false);
      if (!child) {
        error(n, path + ".step", "is required with for_each");
      } else {
        auto c = std::make_shared<StepDef>();
        read_step(child, path + ".step", *c, false, true);
        if (c->id.empty()) c->id = s.id;
        s.child = std::move(c);
      }
    } else if (child) {
      error(child, path + ".step", "only with for_each");
    }
    if (br) {
      if (!br.IsSequence() || br.size() == 0) {
        error(br, path + ".branches", "must be a non-empty list of steps");
      } else {
        std::set<std::string> seen;
        for (size_t i = 0; i < br.size(); ++i) {
          std::string bp = path + ".branches[" + std::to_string(i) + "]";
          StepDef b;
          read_step(br[i], bp, b, false, false);
          if (b.id.empty()) {
            if (br[i].IsMap()) error(br[i], bp + ".id", "is required");
          } else if (!seen.insert(b.id).second) {
            error(br[i]["id"], bp + ".id", "duplicate branch id '" + b.id + "'");
          }
          s.branches.push_back(std::move(b));
        }
      }
    }
    return;
  }
  auto input = n["input"];
  if (!input) {
    error(n, path + ".input", "is required");
    return;
  }
  read_input(input, path + ".input", s, in_for_each);
}

void DefinitionParser::read_on_failure(const YAML::Node& f, const std::string& path, StepDef& s,
                                       bool top) {
  std::string v;
  if (!get_string(f, path, v)) return;
  if (v == "fail") {
    s.on_failure = FailureAction::kFail;
  } else if (v == "continue") {
    s.on_failure = FailureAction::kContinue;
  } else if (v.rfind("goto:", 0) == 0) {
    s.on_failure = FailureAction::kGoto;
    s.goto_step = v.substr(5);
    while (!s.goto_step.empty() && s.goto_step.front() == ' ') s.goto_step.erase(0, 1);
    if (!top) {
      error(f, path, "goto is only allowed on top-level steps");
      return;
    }
    int target = -1;
    for (size_t i = 0; i < top_ids_.size() && target < 0; ++i)
      if (top_ids_[i] == s.goto_step) target = static_cast<int>(i);
    if (target < 0) {
      error(f, path, "goto target '" + s.goto_step + "' is not a step id");
    } else if (target <= current_index_) {
      // Forward only: replay after a crash must walk the same path without re-running steps.
      error(f, path, "goto target '" + s.goto_step + "' must be a later step");
    }
  } else {
    error(f, path, "must be fail | continue | goto:<step id>");
  }
}

void DefinitionParser::read_feedback(const YAML::Node& f, const std::string& path, StepDef& s) {
  if (!f.IsMap()) {
    error(f, path, "must be a mapping {step, success, score}");
    return;
  }
  check_keys(f, path, {"step", "success", "score"});
  FeedbackDef fb;
  if (auto st = f["step"]; !st) {
    error(f, path + ".step", "is required");
  } else if (get_string(st, path + ".step", fb.step)) {
    int idx = -1;
    for (size_t i = 0; i < top_ids_.size() && idx < 0; ++i)
      if (top_ids_[i] == fb.step) idx = static_cast<int>(i);
    if (idx < 0) {
      error(st, path + ".step", "no step '" + fb.step + "'");
    } else if (idx >= current_index_) {
      error(st, path + ".step", "step '" + fb.step + "' does not run before this one");
    } else if (top_kinds_[size_t(idx)] != "llm") {
      error(st, path + ".step", "step '" + fb.step + "' is not an llm step");
    }
  }
  // Both may read this step's own record: it is committed before the verdict is sent.
  if (auto v = f["success"]) {
    if (!v.IsScalar()) {
      error(v, path + ".success", "must be true, false or a condition");
    } else {
      json::value j = scalar_to_json(v);
      if (j.is_bool()) {
        fb.success = j;
      } else {
        fb.success = json::string(v.Scalar());
        check_templates(v, path + ".success", v.Scalar(), false, /*allow_self=*/true);
      }
    }
  }
  if (auto v = f["score"]) {
    json::value j = v.IsScalar() ? scalar_to_json(v) : json::value();
    if (j.is_number()) {
      double d = j.to_number<double>();
      if (!(d >= 0 && d <= 1)) error(v, path + ".score", "must be between 0 and 1");
      fb.score = d;
    } else if (v.IsScalar() && is_template(v.Scalar())) {
      fb.score = json::string(v.Scalar());
      check_templates(v, path + ".score", v.Scalar(), false, /*allow_self=*/true);
    } else {
      error(v, path + ".score", "must be a number between 0 and 1 or a template");
    }
  }
  s.feedback = std::move(fb);
}

void DefinitionParser::read_budget(const YAML::Node& b) {
  if (!b.IsMap()) {
    error(b, "budget", "must be a mapping {max_steps, max_tokens, max_cost_usd, max_time_ms}");
    return;
  }
  check_keys(b, "budget", {"max_steps", "max_tokens", "max_cost_usd", "max_time_ms"});
  RunBudget& out = def_.budget;
  if (auto n = b["max_steps"]) get_int(n, "budget.max_steps", out.max_steps, 0);
  if (auto n = b["max_tokens"]) get_int(n, "budget.max_tokens", out.max_tokens, 0);
  if (auto n = b["max_cost_usd"]) get_double(n, "budget.max_cost_usd", out.max_cost_usd, 0.0);
  if (auto n = b["max_time_ms"]) get_int(n, "budget.max_time_ms", out.max_time_ms, 0);
}

void DefinitionParser::read_retry(const YAML::Node& r, const std::string& path, StepDef& s) {
  if (!r.IsMap()) {
    error(r, path, "must be a mapping");
    return;
  }
  check_keys(r, path, {"max_attempts", "initial_ms", "multiplier", "max_ms", "jitter"});
  int64_t v = 0;
  if (auto n = r["max_attempts"]; n && get_int(n, path + ".max_attempts", v, 1))
    s.retry.max_attempts = static_cast<int>(v);
  if (auto n = r["initial_ms"]) get_int(n, path + ".initial_ms", s.retry.initial_ms, 0);
  if (auto n = r["max_ms"]) get_int(n, path + ".max_ms", s.retry.max_ms, 0);
  if (auto n = r["multiplier"]) get_double(n, path + ".multiplier", s.retry.multiplier, 1.0);
  if (auto n = r["jitter"]) {
    if (get_double(n, path + ".jitter", s.retry.jitter, 0.0) && s.retry.jitter > 1.0)
      error(n, path + ".jitter", "must be <= 1");
  }
}

}  // namespace switchboard::workflow::detail
