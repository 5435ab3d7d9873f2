#include <gtest/gtest.h>

#include "test_util.h"
#include "upstream/translate.h"

namespace switchboard::upstream {
namespace {

using testing::parse_or_fail;

TEST(ClassifyHttp, Table) {
  struct Case {
    int status;
    const char* body;
    OutcomeClass want;
  };
  const Case cases[] = {
      {200, "", OutcomeClass::kSuccess},
      {201, "", OutcomeClass::kSuccess},
      {204, "", OutcomeClass::kSuccess},
      {429, R"({"error":{"type":"requests","code":"rate_limit_exceeded"}})",
       OutcomeClass::kRateLimited},
      {429,
       R"({"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}})",
       OutcomeClass::kAuthFailed},
      {401, "", OutcomeClass::kAuthFailed},
      {403, "", OutcomeClass::kAuthFailed},
      {408, "", OutcomeClass::kTimeout},
      {400, R"({"error":{"message":"bad"}})", OutcomeClass::kClientError},
      {400,
       R"({"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}})",
       OutcomeClass::kAuthFailed},
      {404, "", OutcomeClass::kClientError},
      {409, "", OutcomeClass::kClientError},
      {413, "", OutcomeClass::kClientError},
      {422, "", OutcomeClass::kClientError},
      {418, "", OutcomeClass::kClientError},
      {451, "", OutcomeClass::kClientError},
      {500, "", OutcomeClass::kServerError},
      {502, "", OutcomeClass::kServerError},
      {503, "", OutcomeClass::kServerError},
      {504, "", OutcomeClass::kServerError},
      {529, R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})",
       OutcomeClass::kServerError},
      {599, "", OutcomeClass::kServerError},
      {302, "", OutcomeClass::kServerError},
      {0, "", OutcomeClass::kServerError},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(classify_http(c.status, c.body), c.want) << c.status << " " << c.body;
  }
}

TEST(ClassifyTransport, Table) {
  EXPECT_EQ(classify_transport(TransportError::kConnectFailed), OutcomeClass::kConnectionError);
  EXPECT_EQ(classify_transport(TransportError::kConnectTimeout), OutcomeClass::kConnectionError);
  EXPECT_EQ(classify_transport(TransportError::kReadTimeout), OutcomeClass::kTimeout);
  EXPECT_EQ(classify_transport(TransportError::kReset), OutcomeClass::kConnectionError);
  EXPECT_EQ(classify_transport(TransportError::kTlsFailed), OutcomeClass::kConnectionError);
  EXPECT_EQ(classify_transport(TransportError::kDnsFailed), OutcomeClass::kConnectionError);
  EXPECT_EQ(classify_transport(TransportError::kProtocolError), OutcomeClass::kServerError);
  EXPECT_EQ(classify_transport(TransportError::kCancelled), OutcomeClass::kCancelled);
  EXPECT_EQ(to_string(TransportError::kTlsFailed), "tls_failed");
}

TEST(ClassifyAnthropic, ErrorTypes) {
  EXPECT_EQ(classify_anthropic_error_type("rate_limit_error"), OutcomeClass::kRateLimited);
  EXPECT_EQ(classify_anthropic_error_type("overloaded_error"), OutcomeClass::kServerError);
  EXPECT_EQ(classify_anthropic_error_type("api_error"), OutcomeClass::kServerError);
  EXPECT_EQ(classify_anthropic_error_type("authentication_error"), OutcomeClass::kAuthFailed);
  EXPECT_EQ(classify_anthropic_error_type("permission_error"), OutcomeClass::kAuthFailed);
  EXPECT_EQ(classify_anthropic_error_type("invalid_request_error"), OutcomeClass::kClientError);
  EXPECT_EQ(classify_anthropic_error_type("not_found_error"), OutcomeClass::kClientError);
  EXPECT_EQ(classify_anthropic_error_type("request_too_large"), OutcomeClass::kClientError);
}

TEST(ErrorClassNames, MatchTheKeyPool) {
  EXPECT_EQ(to_string(OutcomeClass::kSuccess), "success");
  EXPECT_EQ(to_string(OutcomeClass::kRateLimited), "rate_limited");
  EXPECT_EQ(to_string(OutcomeClass::kAuthFailed), "auth_failed");
  EXPECT_EQ(to_string(OutcomeClass::kServerError), "server_error");
  EXPECT_EQ(to_string(OutcomeClass::kTimeout), "timeout");
  EXPECT_EQ(to_string(OutcomeClass::kConnectionError), "connection_error");
  EXPECT_EQ(to_string(OutcomeClass::kClientError), "client_error");
  EXPECT_EQ(to_string(OutcomeClass::kCancelled), "cancelled");
}

TEST(OpenAiErrorJson, EscapesAndIsValidJson) {
  std::string msg = "bad \"model\"\n\\ \x01 caf\xC3\xA9";
  boost::json::value v =
      parse_or_fail(openai_error_json(msg, "invalid_request_error", "model_not_found"));
  EXPECT_EQ(v.at("error").at("message"), boost::json::value(msg));
  EXPECT_EQ(v.at("error").at("type"), "invalid_request_error");
  EXPECT_EQ(v.at("error").at("code"), "model_not_found");
  EXPECT_TRUE(parse_or_fail(openai_error_json("m", "t")).at("error").at("code").is_null());
  // Invalid UTF-8 from an upstream body must not make the error itself invalid JSON.
  boost::json::value bad = parse_or_fail(openai_error_json("x\xFF\xC3y\xED\xA0\x80z", "t", "c"));
  EXPECT_EQ(bad.at("error").at("message"),
            "x\xEF\xBF\xBD\xEF\xBF\xBDy\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz");
}

}  // namespace
}  // namespace switchboard::upstream
