// Workflow definitions: YAML/JSON → Definition, reporting every error with line and column.
#include <openssl/evp.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <boost/json.hpp>
#include <cctype>
#include <cmath>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "workflow/template_util.h"
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

// A YAML scalar with its natural JSON type; quoted scalars stay strings.
json::value scalar_to_json(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return json::value(s);
  if (s == "~" || s == "null" || s == "Null" || s == "NULL" || s.empty()) return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  static const std::regex kInt(R"([-+]?[0-9]+)");
  static const std::regex kFloat(R"([-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?)");
  if (std::regex_match(s, kInt)) {
    try {
      return json::value(static_cast<int64_t>(std::stoll(s)));
    } catch (...) {
    }
  }
  if (std::regex_match(s, kFloat)) {
    try {
      return json::value(std::stod(s));
    } catch (...) {
    }
  }
  return json::value(s);
}

json::value yaml_to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Scalar:
      return scalar_to_json(n);
    case YAML::NodeType::Sequence: {
      json::array a;
      for (const auto& e : n) a.push_back(yaml_to_json(e));
      return a;
    }
    case YAML::NodeType::Map: {
      json::object o;
      for (const auto& kv : n) o[kv.first.Scalar()] = yaml_to_json(kv.second);
      return o;
    }
    default:
      return nullptr;
  }
}

// Screens the parser's events before any node is built, for what a definition sent by a client
// must not do to this process:
//   - aliases: YAML::Load shares the aliased node, but every walk over the tree (validation,
//     YAML → JSON, rendering) expands it, so ~600 bytes of nested aliases ("billion laughs")
//     become billions of values. Anchors are refused too: without aliases they serve nothing.
//   - nesting deeper than kMaxDefinitionDepth: the walks recurse. (yaml-cpp 0.7 itself stops at
//     a depth of about 500 with a bare "bad file" error; this says what is wrong.)
// Linear in the text: it stops at the first too-deep node and after kMaxReported findings.
class Screen final : public YAML::EventHandler {
 public:
  struct Finding {
    YAML::Mark mark;
    std::string message;
  };
  // Thrown out of the parser to stop it; the findings are complete by then.
  struct Stop {};

  explicit Screen(const std::string& text) : text_(text) {}
  const std::vector<Finding>& findings() const { return findings_; }

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    add(mark, "YAML aliases (*name) are not allowed in workflow definitions" + name_at(mark, '*') +
                  "; write the value out in full");
  }
  void OnAnchor(const YAML::Mark& mark, const std::string& name) override {
    add(mark, "YAML anchors (&name) are not allowed in workflow definitions (found &" + name +
                  "); write the value out in full");
  }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    enter(mark);
  }
  void OnSequenceEnd() override { --depth_; }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    enter(mark);
  }
  void OnMapEnd() override { --depth_; }

 private:
  static constexpr size_t kMaxReported = 20;

  void enter(const YAML::Mark& mark) {
    if (++depth_ <= kMaxDefinitionDepth) return;
    findings_.push_back({mark, "nesting deeper than " + std::to_string(kMaxDefinitionDepth) +
                                   " levels is not allowed in workflow definitions"});
    throw Stop{};
  }
  void add(const YAML::Mark& mark, std::string message) {
    if (findings_.size() == kMaxReported) {
      findings_.push_back({mark, "more aliases or anchors follow (only the first " +
                                     std::to_string(kMaxReported) + " are listed)"});
      throw Stop{};
    }
    findings_.push_back({mark, std::move(message)});
  }
  // " (found *name)" from the text at an alias's mark, which points at the '*' (the event
  // carries only a number); at most 64 characters of it.
  std::string name_at(const YAML::Mark& mark, char sigil) const {
    if (mark.pos < 0) return "";
    const size_t start = static_cast<size_t>(mark.pos);
    if (start >= text_.size() || text_[start] != sigil) return "";
    size_t end = start + 1;
    while (end < text_.size() && end - start <= 64 &&
           !std::isspace(static_cast<unsigned char>(text_[end])) &&
           std::string_view(",[]{}").find(text_[end]) == std::string_view::npos)
      ++end;
    return " (found " + text_.substr(start, end - start) + ")";
  }

  const std::string& text_;
  int depth_ = 0;
  std::vector<Finding> findings_;
};

class Parser {
 public:
  explicit Parser(std::string source) : source_(std::move(source)) {}

  DefinitionLoad parse(const std::string& text) {
    // First the events (only the first document, as YAML::Load reads), then the nodes.
    Screen screen(text);
    std::optional<YAML::ParserException> syntax;
    try {
      std::istringstream in(text);
      YAML::Parser events(in);
      events.HandleNextDocument(screen);
    } catch (const Screen::Stop&) {
    } catch (const YAML::ParserException& e) {
      syntax = e;
    }
    for (const auto& f : screen.findings()) add(f.mark.line + 1, f.mark.column + 1, "", f.message);
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

 private:
  void add(int line, int col, const std::string& path, std::string msg) {
    ConfigError e;
    e.source = source_;
    e.line = line;
    e.column = col;
    e.path = path;
    e.message = std::move(msg);
    errors_.push_back(std::move(e));
  }
  void error(const YAML::Node& n, const std::string& path, std::string msg) {
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
  DefinitionLoad finish() {
    DefinitionLoad out;
    out.errors = std::move(errors_);
    if (out.errors.empty()) out.definition = std::move(def_);
    return out;
  }

  // Reports keys of `n` not in `allowed` (each at its own position).
  void check_keys(const YAML::Node& n, const std::string& path,
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
  static std::string join(const std::string& path, const std::string& k) {
    return path.empty() ? k : path + "." + k;
  }

  bool get_string(const YAML::Node& n, const std::string& path, std::string& out) {
    if (!n.IsScalar()) {
      error(n, path, "must be a string");
      return false;
    }
    out = n.Scalar();
    return true;
  }
  bool get_int(const YAML::Node& n, const std::string& path, int64_t& out, int64_t min) {
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
  bool get_double(const YAML::Node& n, const std::string& path, double& out, double min) {
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

  void read_root(const YAML::Node& root) {
    check_keys(root, "", {"name", "version", "description", "input", "steps"});
    if (auto n = root["name"]; !n) {
      error(root, "name", "is required");
    } else if (get_string(n, "name", def_.name) && def_.name.empty()) {
      error(n, "name", "must not be empty");
    }
    if (auto n = root["version"]) get_int(n, "version", def_.version, 0);
    if (auto n = root["description"]; n && !n.IsScalar())
      error(n, "description", "must be a string");
    if (auto n = root["input"]) read_input_schema(n);
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

  void read_input_schema(const YAML::Node& n) {
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

  void read_step(const YAML::Node& n, const std::string& path, StepDef& s, bool top,
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

  void read_on_failure(const YAML::Node& f, const std::string& path, StepDef& s, bool top) {
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

  void read_feedback(const YAML::Node& f, const std::string& path, StepDef& s) {
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

  void read_retry(const YAML::Node& r, const std::string& path, StepDef& s) {
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

  // Per-kind input fields; values may be templates.
  void read_input(const YAML::Node& in, const std::string& path, StepDef& s, bool in_for_each) {
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

  void walk_templates(const YAML::Node& n, const std::string& path, bool in_for_each) {
    if (n.IsScalar()) {
      check_templates(n, path, n.Scalar(), in_for_each);
    } else if (n.IsSequence()) {
      for (size_t i = 0; i < n.size(); ++i)
        walk_templates(n[i], path + "[" + std::to_string(i) + "]", in_for_each);
    } else if (n.IsMap()) {
      for (const auto& kv : n)
        walk_templates(kv.second, join(path, kv.first.Scalar()), in_for_each);
    }
  }

  // Syntax of every `${...}`, and references to steps that exist and come earlier.
  void check_templates(const YAML::Node& n, const std::string& path, const std::string& text,
                       bool in_for_each, bool allow_self = false) {
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

  static bool is_template(const std::string& s) { return s.find("${") != std::string::npos; }

  std::string source_;
  Definition def_;
  std::vector<ConfigError> errors_;
  std::vector<std::string> top_ids_;
  std::vector<std::string> top_kinds_;
  int current_index_ = 0;
};

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
  return Parser(source_name).parse(text);
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

}  // namespace switchboard::workflow
