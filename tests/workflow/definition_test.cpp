// Definitions, templates and conditions.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "test_util.h"

namespace switchboard::workflow {
namespace {

using wftest::must_parse;

const char* kDesignExample = R"(name: review-files
version: 1
input:
  required: [files]
  properties: { files: { type: array } }
steps:
  - id: build
    kind: exec
    input: { argv: [sh, -c, "make -j2"], cwd: ".", env: { CI: "1" } }
    timeout_ms: 600000
    retry: { max_attempts: 3, initial_ms: 500, multiplier: 2.0, max_ms: 10000, jitter: 0.2 }
  - id: reviews
    kind: parallel
    for_each: ${input.files}
    max_concurrency: 4
    step:
      kind: llm
      input: { route: auto, complexity: moderate, messages: [{ role: user, content: "Review ${item}" }] }
  - id: summary
    kind: llm
    when: ${steps.reviews.status} == "completed"
    on_failure: continue
    input: { route: auto, messages: [{ role: user, content: "Summarise ${steps.reviews.output}" }] }
)";

TEST(DefinitionTest, ParsesTheDesignExample) {
  Definition d = must_parse(kDesignExample);
  EXPECT_EQ(d.name, "review-files");
  ASSERT_EQ(d.steps.size(), 3u);
  EXPECT_EQ(d.steps[0].retry.max_attempts, 3);
  EXPECT_EQ(d.steps[0].retry.max_ms, 10000);
  EXPECT_DOUBLE_EQ(d.steps[0].retry.jitter, 0.2);
  EXPECT_EQ(d.steps[0].timeout_ms, 600000);
  EXPECT_EQ(d.steps[1].kind, StepKind::kParallel);
  ASSERT_TRUE(d.steps[1].child);
  EXPECT_EQ(d.steps[1].child->kind, StepKind::kLlm);
  EXPECT_EQ(d.steps[1].max_concurrency, 4);
  EXPECT_EQ(d.steps[2].on_failure, FailureAction::kContinue);
  EXPECT_EQ(d.hash.rfind("sha256:", 0), 0u);
  // Quoted scalars stay strings; plain ones get their type.
  EXPECT_TRUE(d.steps[0].input.as_object().at("env").as_object().at("CI").is_string());
  EXPECT_TRUE(validate_input(d, boost::json::parse(R"({"files":["a"]})")).ok());
  EXPECT_FALSE(validate_input(d, boost::json::parse(R"({})")).ok());
  EXPECT_FALSE(validate_input(d, boost::json::parse(R"({"files":"a"})")).ok());
}

TEST(DefinitionTest, JsonDefinitionsParseToo) {
  Definition d = must_parse(
      R"({"name": "j", "version": 2, "steps": [{"id": "a", "kind": "sleep", "input": {"duration_ms": 5}}]})");
  EXPECT_EQ(d.version, 2);
  EXPECT_EQ(d.steps[0].kind, StepKind::kSleep);
}

TEST(DefinitionTest, ReportsEveryErrorWithLineAndColumn) {
  auto load = parse_definition(R"(name: bad
steps:
  - id: a
    kind: exec
    input: { argv: [true] }
    retries: 3
  - id: b
    kind: teleport
    input: {}
  - id: c
    kind: exec
    on_failure: goto:a
    input: { argv: [echo, "${steps.nope.output}"], shell: yes }
  - id: a
    kind: sleep
    input: { duration_ms: -1 }
)",
                               "bad.yaml");
  ASSERT_FALSE(load.ok());
  std::vector<std::string> lines;
  for (const auto& e : load.errors) lines.push_back(e.to_string());
  auto has = [&](const std::string& needle) {
    for (const auto& l : lines)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  };
  EXPECT_TRUE(has("bad.yaml:6:5: steps[0].retries: unknown field"))
      << ::testing::PrintToString(lines);
  EXPECT_TRUE(has("bad.yaml:8:11: steps[1].kind: unknown kind 'teleport'"));
  EXPECT_TRUE(has("bad.yaml:12:17: steps[2].on_failure: goto target 'a' must be a later step"));
  EXPECT_TRUE(has("steps[2].input.argv[1]: '${steps.nope.output}': no step 'nope'"));
  EXPECT_TRUE(has("bad.yaml:13:52: steps[2].input.shell: unknown field"));
  EXPECT_TRUE(has("steps[3].id: duplicate step id 'a'"));
  EXPECT_TRUE(has("steps[3].input.duration_ms: must be >= 0"));
  EXPECT_EQ(lines.size(), 7u) << ::testing::PrintToString(lines);
  for (const auto& e : load.errors) EXPECT_GT(e.line, 0) << e.to_string();
}

TEST(DefinitionTest, StructuralRules) {
  auto errs = [](const std::string& y) {
    auto l = parse_definition(y, "x.yaml");
    std::string all;
    for (const auto& e : l.errors) all += e.to_string() + "\n";
    return all;
  };
  EXPECT_NE(errs("name: x\nsteps:\n  - id: p\n    kind: parallel\n    max_concurrency: 2\n")
                .find("needs for_each (with step) or branches"),
            std::string::npos);
  EXPECT_NE(errs("name: x\nsteps:\n  - id: s\n    kind: exec\n    input: { argv: [x] }\n    "
                 "for_each: ${input.a}\n")
                .find("only parallel steps take this field"),
            std::string::npos);
  EXPECT_NE(errs("name: x\nsteps:\n  - id: s\n    kind: exec\n    input: { argv: [\"${item}\"] }\n")
                .find("${item} is only defined inside a for_each step"),
            std::string::npos);
  EXPECT_NE(errs("steps: []\n").find("name: is required"), std::string::npos);
  EXPECT_NE(
      errs("name: x\nsteps: [ {id: a, kind: exec, input: {argv: [x]}\n").find("YAML syntax error"),
      std::string::npos);
}

TEST(TemplateTest, WholeStringKeepsTypeAndInterpolationMakesText) {
  json::value input = json::parse(R"({"n": 3, "files": ["a.c", "b.c"], "o": {"k": true}})");
  TemplateScope sc;
  sc.input = &input;
  sc.attempt = 2;
  sc.step = [](const std::string& id) -> std::optional<StepView> {
    if (id != "a") return std::nullopt;
    return StepView{"completed", json::parse(R"({"x": [10, 20]})"), "", 1};
  };
  auto r = render(json::parse(R"({"a": "${input.n}", "b": "n=${input.n} f=${input.files[1]}",
      "c": "${steps.a.output.x.1}", "d": "${steps.a.status}", "e": ["${input.o}"],
      "f": "try ${attempt}", "g": "$${literal}"})"),
                  sc);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const auto& o = r->as_object();
  EXPECT_EQ(o.at("a"), json::value(3));
  EXPECT_EQ(o.at("b"), json::value("n=3 f=b.c"));
  EXPECT_EQ(o.at("c"), json::value(20));
  EXPECT_EQ(o.at("d"), json::value("completed"));
  EXPECT_EQ(o.at("e").as_array()[0], json::parse(R"({"k": true})"));
  EXPECT_EQ(o.at("f"), json::value("try 2"));
  EXPECT_EQ(o.at("g"), json::value("${literal}"));
  EXPECT_FALSE(render(json::value("${input.missing}"), sc).ok());
  EXPECT_FALSE(render(json::value("${steps.b.output}"), sc).ok());
}

TEST(TemplateTest, Conditions) {
  json::value input = json::parse(R"({"mode": "fast", "n": 2, "empty": [], "flag": false})");
  TemplateScope sc;
  sc.input = &input;
  auto eval = [&](const std::string& c) {
    auto r = evaluate_condition(c, sc);
    EXPECT_TRUE(r.ok()) << c << ": " << r.status().to_string();
    return r.ok() && *r;
  };
  EXPECT_TRUE(eval("${input.mode} == \"fast\""));
  EXPECT_TRUE(eval("${input.mode} == 'fast'"));
  EXPECT_TRUE(eval("${input.mode} == fast"));
  EXPECT_FALSE(eval("${input.mode} != fast"));
  EXPECT_TRUE(eval("${input.n} == 2.0"));
  EXPECT_TRUE(eval("${input.n}"));
  EXPECT_FALSE(eval("${input.empty}"));
  EXPECT_FALSE(eval("${input.flag}"));
  EXPECT_FALSE(eval("${input.missing}"));
  EXPECT_TRUE(eval("${input.missing} == null"));
  EXPECT_TRUE(eval("\"a == b\" == \"a == b\""));
}

TEST(RetryPolicyTest, BackoffBounds) {
  RetryPolicy p{6, 100, 2.0, 500, 0.5};
  EXPECT_EQ(p.backoff(1, 0.0), Millis(100));
  EXPECT_EQ(p.backoff(2, 0.0), Millis(200));
  EXPECT_EQ(p.backoff(3, 0.0), Millis(400));
  EXPECT_EQ(p.backoff(4, 0.0), Millis(500));
  EXPECT_EQ(p.backoff(4, 0.999), Millis(749));
}

}  // namespace
}  // namespace switchboard::workflow

namespace switchboard::workflow {
namespace {

TEST(DefinitionTest, ExamplesAreValid) {
  for (const char* name : {"code-review.yaml", "hello.yaml"}) {
    auto load = load_definition_file(std::string(WORKFLOW_EXAMPLES_DIR) + "/" + name);
    std::string all;
    for (const auto& e : load.errors) all += e.to_string() + "\n";
    EXPECT_TRUE(load.ok()) << all;
  }
}

}  // namespace
}  // namespace switchboard::workflow
