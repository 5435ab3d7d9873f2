// The module layering of DESIGN.md, enforced: every `#include "module/…"` under src/ points to
// the same module or one lower in the build's module order, and Boost.Asio/Beast appear only in
// the modules that do I/O. Every target has src/ on its include path, so without this test
// nothing would stop an upward include or a logic module that starts to include Beast.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct Rules {
  std::vector<std::string> order;  // lowest first
  std::vector<std::string> io;     // the modules that may include Asio and Beast
};

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

// One line per violation, "src/<module>/<file>:<line>: <why>"; empty when the tree obeys.
std::vector<std::string> check_tree(const fs::path& src, const Rules& rules) {
  std::map<std::string, size_t> rank;
  for (size_t i = 0; i < rules.order.size(); ++i) rank[rules.order[i]] = i;
  const std::regex local_include(R"re(^\s*#\s*include\s*"([a-z_0-9]+)/[^"]+")re");
  const std::regex io_include(R"re(^\s*#\s*include\s*<boost/(asio|beast)[/.>])re");

  std::vector<std::string> violations;
  for (const auto& dir : fs::directory_iterator(src)) {
    if (!dir.is_directory()) continue;
    const std::string module = dir.path().filename().string();
    auto own = rank.find(module);
    if (own == rank.end()) {
      violations.push_back("src/" + module + ": a module missing from the module order");
      continue;
    }
    const bool may_do_io = std::find(rules.io.begin(), rules.io.end(), module) != rules.io.end();
    for (const auto& file : fs::recursive_directory_iterator(dir.path())) {
      const std::string ext = file.path().extension().string();
      if (!file.is_regular_file() || (ext != ".h" && ext != ".cpp")) continue;
      const std::string where = fs::relative(file.path(), src.parent_path()).string();
      std::ifstream in(file.path());
      int line_no = 0;
      for (std::string line; std::getline(in, line);) {
        ++line_no;
        std::smatch m;
        if (std::regex_search(line, m, local_include)) {
          const std::string target = m[1];
          auto it = rank.find(target);
          if (it == rank.end()) {
            violations.push_back(where + ":" + std::to_string(line_no) +
                                 ": includes unknown module '" + target + "'");
          } else if (it->second > own->second) {
            violations.push_back(where + ":" + std::to_string(line_no) + ": " + module +
                                 " includes " + target + ", which is above it");
          }
        }
        if (!may_do_io && std::regex_search(line, io_include)) {
          violations.push_back(where + ":" + std::to_string(line_no) + ": " + module +
                               " is a logic module and includes Boost.Asio/Beast");
        }
      }
    }
  }
  std::sort(violations.begin(), violations.end());
  return violations;
}

Rules build_rules() {
  return {split(SWITCHBOARD_MODULE_ORDER), split(SWITCHBOARD_IO_MODULES)};
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

TEST(LayeringTest, EveryIncludeUnderSrcPointsDownward) {
  auto violations = check_tree(fs::path(SWITCHBOARD_SOURCE_DIR) / "src", build_rules());
  EXPECT_TRUE(violations.empty()) << joined(violations);
}

TEST(LayeringTest, TheOrderMatchesDesignLowestFirst) {
  // DESIGN.md's architecture list, read bottom-up; net (the Beast home) sits right above common.
  auto rules = build_rules();
  auto pos = [&](const std::string& m) {
    return std::find(rules.order.begin(), rules.order.end(), m) - rules.order.begin();
  };
  EXPECT_LT(pos("common"), pos("net"));
  EXPECT_LT(pos("net"), pos("upstream"));
  EXPECT_LT(pos("store"), pos("breaker"));
  EXPECT_LT(pos("keys"), pos("routing"));
  EXPECT_LT(pos("routing"), pos("upstream"));
  EXPECT_LT(pos("upstream"), pos("workflow"));
  EXPECT_LT(pos("workflow"), pos("gateway"));
  EXPECT_LT(pos("gateway"), pos("cli"));
}

// The checker itself: a small tree with each kind of violation, and a clean one.
class LayeringCheckerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("layering_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "src");
  }
  void TearDown() override { fs::remove_all(root_); }
  void write(const std::string& rel, const std::string& text) {
    fs::create_directories((root_ / "src" / rel).parent_path());
    std::ofstream(root_ / "src" / rel) << text;
  }
  std::vector<std::string> check() {
    return check_tree(root_ / "src", Rules{{"common", "keys", "gateway"}, {"gateway"}});
  }
  fs::path root_;
};

TEST_F(LayeringCheckerTest, AcceptsDownwardAndOwnIncludes) {
  write("common/a.h", "#include \"common/b.h\"\n#include <string>\n");
  write("keys/k.cpp", "#include \"keys/k.h\"\n#include \"common/a.h\"\n");
  write("gateway/g.cpp", "#include <boost/asio/io_context.hpp>\n#include \"keys/k.h\"\n");
  EXPECT_TRUE(check().empty()) << joined(check());
}

TEST_F(LayeringCheckerTest, RefusesAnUpwardInclude) {
  write("keys/k.cpp", "#include \"common/a.h\"\n  #  include \"gateway/http.h\"\n");
  auto v = check();
  ASSERT_EQ(v.size(), 1u) << joined(v);
  EXPECT_EQ(v[0], "src/keys/k.cpp:2: keys includes gateway, which is above it");
}

TEST_F(LayeringCheckerTest, RefusesBeastInALogicModuleAndUnknownModules) {
  write("keys/k.h", "#include <boost/beast/http.hpp>\n#include \"nowhere/x.h\"\n");
  write("extra/e.h", "\n");
  auto v = check();
  ASSERT_EQ(v.size(), 3u) << joined(v);
  EXPECT_EQ(v[0], "src/extra: a module missing from the module order");
  EXPECT_EQ(v[1], "src/keys/k.h:1: keys is a logic module and includes Boost.Asio/Beast");
  EXPECT_EQ(v[2], "src/keys/k.h:2: includes unknown module 'nowhere'");
}

}  // namespace
