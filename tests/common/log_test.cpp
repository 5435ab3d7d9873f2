#include "common/log.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

#include "common/config.h"

namespace switchboard {
namespace {

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sink_ = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    log::set_sink(sink_, log::Format::kText);
  }
  void TearDown() override {
    log::clear_secrets();
    log::init("info", log::Format::kText);
  }
  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

TEST_F(LogTest, ConfiguredSecretsNeverReachTheOutput) {
  auto load = load_config_string(
      "providers:\n  openai: { kind: openai, keys: [sk-live-0123456789abcdef, sk-live-zz] }\n"
      "auth: { gateway_keys: [gw-key-42], admin_key: admin-key-7 }\n",
      "t.yaml", Environment::from_map({}));
  ASSERT_TRUE(load.ok());
  for (const auto& [secret, id] : load.config->secrets()) log::add_secret(secret, id);

  log::info("upstream said: invalid api key sk-live-0123456789abcdef (Bearer sk-live-zz)");
  log::warn("client sent {} and admin {}", "gw-key-42", "admin-key-7");
  log::error("{}", "prefix-sk-live-0123456789abcdef-suffix");
  log::logger().flush();

  std::string text = out_.str();
  EXPECT_EQ(text.find("sk-live-0123456789abcdef"), std::string::npos) << text;
  EXPECT_EQ(text.find("sk-live-zz"), std::string::npos) << text;
  EXPECT_EQ(text.find("gw-key-42"), std::string::npos) << text;
  EXPECT_EQ(text.find("admin-key-7"), std::string::npos) << text;
  EXPECT_NE(text.find("[openai#1]"), std::string::npos) << text;
  EXPECT_NE(text.find("[openai#2]"), std::string::npos) << text;
  EXPECT_NE(text.find("[gateway#1]"), std::string::npos) << text;
  EXPECT_NE(text.find("[admin]"), std::string::npos) << text;
}

TEST_F(LogTest, LongerSecretsAreRedactedBeforeTheirPrefixes) {
  log::add_secret("abc", "short");
  log::add_secret("abcdef", "long");
  EXPECT_EQ(log::redact("x abcdef y abc"), "x [long] y [short]");
}

TEST_F(LogTest, JsonLinesAreEscapedAndRedacted) {
  log::set_sink(sink_, log::Format::kJson);
  log::add_secret("tok-secret", "p#1");
  log::info("quote \" newline \n tok-secret");
  log::logger().flush();
  std::string text = out_.str();
  EXPECT_NE(text.find("\"level\":\"info\""), std::string::npos) << text;
  EXPECT_NE(text.find("quote \\\" newline \\n [p#1]"), std::string::npos) << text;
  EXPECT_EQ(text.find("tok-secret"), std::string::npos);
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);
}

}  // namespace
}  // namespace switchboard

namespace switchboard {
namespace {

// Issue 17, finding 6: an upstream that echoes the key it was sent (whole, masked, or its tail)
// must not hand it to the client.
TEST(RedactRelayed, EchoedKeysAndTheirMaskedFormsAreTakenOut) {
  log::add_secret("sk-live-abcdef1234567890wxyz", "openai#1");
  const std::string body =
      R"({"error":{"message":"Incorrect API key provided: sk-live-abcdef1234567890wxyz. )"
      R"(Also seen as sk-live-****************wxyz and as a key ending in ...wxyz. )"
      R"(Did you mean sk-live-a?","type":"invalid_request_error"}})";
  const std::string out = log::redact_relayed(body);
  EXPECT_EQ(out.find("abcdef1234567890"), std::string::npos) << out;
  EXPECT_EQ(out.find("wxyz"), std::string::npos) << out;
  EXPECT_EQ(out.find("sk-live-a"), std::string::npos) << out;
  EXPECT_NE(out.find("[openai#1]"), std::string::npos) << out;
  // Everything else survives, the JSON included.
  EXPECT_NE(out.find("Incorrect API key provided: "), std::string::npos) << out;
  EXPECT_NE(out.find(R"("type":"invalid_request_error"}})"), std::string::npos) << out;
  // Text that merely shares a few characters with a key is kept.
  EXPECT_EQ(log::redact_relayed("the wxyz team and sk-live"), "the wxyz team and sk-live");
  log::clear_secrets();
}

}  // namespace
}  // namespace switchboard
