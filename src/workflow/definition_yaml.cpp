// Definitions' YAML (definition_yaml.h): the event screen run before any node is built, and YAML
// values as JSON.
#include "workflow/definition_yaml.h"

#include <yaml-cpp/eventhandler.h>

#include <boost/json.hpp>
#include <cctype>
#include <regex>
#include <sstream>
#include <string_view>

namespace switchboard::workflow::detail {

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

namespace {

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
  using Finding = ScreenFinding;
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

}  // namespace

std::vector<ScreenFinding> screen_definition(const std::string& text,
                                             std::optional<YAML::ParserException>& syntax) {
  // Only the first document, as YAML::Load reads.
  Screen screen(text);
  try {
    std::istringstream in(text);
    YAML::Parser events(in);
    events.HandleNextDocument(screen);
  } catch (const Screen::Stop&) {
  } catch (const YAML::ParserException& e) {
    syntax = e;
  }
  return screen.findings();
}

}  // namespace switchboard::workflow::detail
