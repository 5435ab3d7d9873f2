#include "common/log.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <boost/json.hpp>
#include <regex>
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

TEST_F(LogTest, TimestampsAreRfc3339InUtcWithMicroseconds) {
  using namespace std::chrono;
  std::string out;
  // 2026-12-06T01:02:03.000045Z
  const auto tp =
      sys_days(year(2026) / 12 / 6) + hours(1) + minutes(2) + seconds(3) + microseconds(45);
  log::append_rfc3339(out, tp);
  EXPECT_EQ(out, "2026-12-06T01:02:03.000045Z");
  out.clear();
  log::append_rfc3339(out, sys_days(year(1969) / 12 / 31) + hours(23) + minutes(59) + seconds(59) +
                               microseconds(999999));
  EXPECT_EQ(out, "1969-12-31T23:59:59.999999Z");
  out.clear();
  log::append_rfc3339(out, sys_days(year(2024) / 2 / 29) + microseconds(1));  // cache changes
  EXPECT_EQ(out, "2024-02-29T00:00:00.000001Z");
}

log::AccessRecord sample_record() {
  log::AccessRecord r;
  r.request_id = "req-1";
  r.route = "smart";
  r.model = "openai/\"quoted\"";
  r.provider = "openai";
  r.key = "openai#2";
  r.client = "team-a";
  r.status = "ok";
  r.attempts = 2;
  r.layer = 1;
  r.latency_us = 1234;
  r.tokens_in = 12;
  r.tokens_out = 9;
  r.cost_usd = 0.0000125;
  return r;
}

TEST_F(LogTest, AccessRecordsInJsonHaveEveryFieldAtTheTopLevel) {
  log::set_sink(sink_, log::Format::kJson);
  log::add_secret("sk-secret-in-a-model-name", "openai#9");
  auto r = sample_record();
  const std::string model = "openai/sk-secret-in-a-model-name";
  r.model = model;
  log::access(r);
  log::info("plain line");
  log::logger().flush();
  std::istringstream lines(out_.str());
  std::string line;
  ASSERT_TRUE(std::getline(lines, line));
  boost::system::error_code ec;
  auto v = boost::json::parse(line, ec);
  ASSERT_FALSE(ec) << line;
  const auto& o = v.as_object();
  EXPECT_EQ(o.at("msg").as_string(), "access");
  EXPECT_EQ(o.at("level").as_string(), "info");
  EXPECT_EQ(o.at("request_id").as_string(), "req-1");
  EXPECT_EQ(o.at("route").as_string(), "smart");
  EXPECT_EQ(o.at("model").as_string(), "openai/[openai#9]");
  EXPECT_EQ(o.at("provider").as_string(), "openai");
  EXPECT_EQ(o.at("key").as_string(), "openai#2");
  EXPECT_EQ(o.at("client").as_string(), "team-a");
  EXPECT_EQ(o.at("status").as_string(), "ok");
  EXPECT_EQ(o.at("attempts").as_int64(), 2);
  EXPECT_EQ(o.at("layer").as_int64(), 1);
  EXPECT_EQ(o.at("latency_us").as_int64(), 1234);
  EXPECT_EQ(o.at("tokens_in").as_int64(), 12);
  EXPECT_EQ(o.at("tokens_out").as_int64(), 9);
  EXPECT_NEAR(o.at("cost_usd").to_number<double>(), 0.0000125, 1e-12);
  // 2026-12-06T01:02:03.123456Z
  const std::string ts(o.at("ts").as_string());
  EXPECT_EQ(ts.size(), 27u) << ts;
  EXPECT_EQ(ts[10], 'T');
  EXPECT_EQ(ts[19], '.');
  EXPECT_EQ(ts.back(), 'Z');
  EXPECT_EQ(out_.str().find("sk-secret"), std::string::npos) << out_.str();
  // Ordinary lines keep msg as a string.
  ASSERT_TRUE(std::getline(lines, line));
  auto plain = boost::json::parse(line, ec);
  ASSERT_FALSE(ec) << line;
  EXPECT_EQ(plain.as_object().at("msg").as_string(), "plain line");
}

TEST_F(LogTest, AccessRecordsInTextAreOneLineWithAJsonObject) {
  auto r = sample_record();
  r.client = {};
  log::access(r);
  log::logger().flush();
  const std::string text = out_.str();
  ASSERT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  const auto at = text.find(" info access {");
  ASSERT_NE(at, std::string::npos) << text;
  boost::system::error_code ec;
  auto v = boost::json::parse(text.substr(at + 13), ec);
  ASSERT_FALSE(ec) << text;
  EXPECT_EQ(v.as_object().at("model").as_string(), "openai/\"quoted\"");
  EXPECT_FALSE(v.as_object().contains("client"));  // no client key: no field
}

TEST_F(LogTest, TextLinesAreTimestampLevelAndMessage) {
  log::warn("disk {} full", "very");
  log::logger().flush();
  const std::string text = out_.str();
  static const std::regex kLine(
      R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z warning disk very full\n$)");
  EXPECT_TRUE(std::regex_match(text, kLine)) << text;
}

TEST_F(LogTest, AccessRecordsFollowTheLevel) {
  log::logger().set_level(spdlog::level::warn);
  log::access(sample_record());
  log::logger().flush();
  log::logger().set_level(spdlog::level::info);
  EXPECT_TRUE(out_.str().empty()) << out_.str();
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
