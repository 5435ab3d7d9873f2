// Definitions, templates and conditions.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>

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

// Invariant 10/11: a definition sent by a client cannot make the parser's walks explode.
TEST(DefinitionTest, AliasesAndAnchorsAreRefusedWithLineAndColumn) {
  auto load = parse_definition(R"(name: a
steps:
  - id: one
    kind: exec
    input: { argv: &cmd [echo, hi] }
  - id: two
    kind: exec
    input: { argv: *cmd }
)",
                               "a.yaml");
  ASSERT_FALSE(load.ok());
  std::vector<std::string> lines;
  for (const auto& e : load.errors) lines.push_back(e.to_string());
  ASSERT_EQ(lines.size(), 2u) << ::testing::PrintToString(lines);
  EXPECT_EQ(lines[0].rfind("a.yaml:5:20: ", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find("YAML anchors (&name) are not allowed in workflow definitions"),
            std::string::npos)
      << lines[0];
  EXPECT_EQ(lines[1].rfind("a.yaml:8:20: ", 0), 0u) << lines[1];
  EXPECT_NE(lines[1].find("YAML aliases (*name) are not allowed in workflow definitions"),
            std::string::npos)
      << lines[1];
  EXPECT_NE(lines[1].find("(found *cmd)"), std::string::npos) << lines[1];

  // A merge key is an alias too; an anchor alone is refused as well.
  EXPECT_FALSE(parse_definition("name: m\nbase: &b { kind: exec }\nsteps:\n  - <<: *b\n    id: x\n",
                                "m.yaml")
                   .ok());
  auto anchored = parse_definition(
      "name: n\nsteps:\n  - id: x\n    kind: exec\n    input: &in { argv: [x] }\n", "n.yaml");
  ASSERT_FALSE(anchored.ok());
  EXPECT_EQ(anchored.errors.front().line, 5);
  EXPECT_EQ(anchored.errors.front().column, 12);
}

TEST(DefinitionTest, BillionLaughsIsRefusedQuickly) {
  // Nine levels of nine aliases: 9^9 (387 million) strings once expanded by a tree walk.
  std::string text =
      "name: lol\nsteps:\n  - id: s\n    kind: exec\n    input:\n      argv: [echo]\n"
      "      env:\n        a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\","
      "\"lol\",\"lol\"]\n";
  for (char c = 'b'; c <= 'i'; ++c) {
    const char prev = static_cast<char>(c - 1);
    text += std::string("        ") + c + ": &" + c + " [";
    for (int i = 0; i < 9; ++i) text += std::string(i ? "," : "") + "*" + prev;
    text += "]\n";
  }
  ASSERT_LT(text.size(), 700u);
  auto start = std::chrono::steady_clock::now();
  auto load = parse_definition(text, "lol.yaml");
  auto took = std::chrono::steady_clock::now() - start;
  // Not a speed target: the expansion took minutes and gigabytes; refusing it takes microseconds.
  // The bound only tells the two apart, with room for sanitizers on a loaded machine.
  EXPECT_LT(took, std::chrono::seconds(10));
  ASSERT_FALSE(load.ok());
  bool alias_found = false;
  for (const auto& e : load.errors) {
    EXPECT_GT(e.line, 0) << e.to_string();
    EXPECT_GT(e.column, 0) << e.to_string();
    if (e.message.find("YAML aliases (*name) are not allowed") != std::string::npos &&
        !alias_found) {
      alias_found = true;
      EXPECT_EQ(e.line, 9) << e.to_string();  // the first *a, in `b: &b [*a,...`
      EXPECT_EQ(e.column, 16) << e.to_string();
    }
  }
  EXPECT_TRUE(alias_found);
  // The list of errors is bounded too.
  EXPECT_LE(load.errors.size(), 21u);
}

TEST(DefinitionTest, NestingDepthIsBounded) {
  const std::string head =
      "name: deep\nsteps:\n  - id: s\n    kind: http\n    input:\n"
      "      url: http://example.com\n      body: ";
  auto nested = [&](int depth, bool closed) {
    return head + std::string(static_cast<size_t>(depth), '[') + "1" +
           (closed ? std::string(static_cast<size_t>(depth), ']') : "") + "\n";
  };
  // Within the bound (the document itself uses 4 levels): fine.
  auto ok = parse_definition(nested(kMaxDefinitionDepth - 4, true), "deep.yaml");
  EXPECT_TRUE(ok.ok()) << (ok.errors.empty() ? "" : ok.errors.front().to_string());
  for (bool closed : {true, false}) {
    for (int depth : {kMaxDefinitionDepth, 100000}) {
      auto load = parse_definition(nested(depth, closed), "deep.yaml");
      ASSERT_FALSE(load.ok()) << depth;
      const auto& e = load.errors.front();
      EXPECT_NE(e.message.find("nesting deeper than 64 levels"), std::string::npos)
          << e.to_string();
      // The first level too many: line 7, just after `body: ` and 60 brackets. (Unclosed, each
      // `[` may start a flow pair too, a level of its own: fewer brackets then.)
      EXPECT_EQ(e.line, 7) << e.to_string();
      if (closed)
        EXPECT_EQ(e.column, 13 + kMaxDefinitionDepth - 4) << e.to_string();
      else
        EXPECT_GT(e.column, 13) << e.to_string();
    }
  }
  // Block style nests as deep as flow style.
  std::string block =
      "name: deep\nsteps:\n  - id: s\n    kind: http\n    input:\n"
      "      url: http://example.com\n      body:\n";
  for (int i = 0; i < 200; ++i) block += std::string(8 + 2 * static_cast<size_t>(i), ' ') + "k:\n";
  auto b = parse_definition(block, "deep.yaml");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.errors.front().message.find("nesting deeper"), std::string::npos)
      << b.errors.front().to_string();
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
