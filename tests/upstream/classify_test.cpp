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
    ErrorClass want;
  };
  const Case cases[] = {
      {200, "", ErrorClass::kSuccess},
      {201, "", ErrorClass::kSuccess},
      {204, "", ErrorClass::kSuccess},
      {429, R"({"error":{"type":"requests","code":"rate_limit_exceeded"}})",
       ErrorClass::kRateLimited},
      {429,
       R"({"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}})",
       ErrorClass::kAuthFailed},
      {401, "", ErrorClass::kAuthFailed},
      {403, "", ErrorClass::kAuthFailed},
      {408, "", ErrorClass::kTimeout},
      {400, R"({"error":{"message":"bad"}})", ErrorClass::kClientError},
      {400,
       R"({"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}})",
       ErrorClass::kAuthFailed},
      {404, "", ErrorClass::kClientError},
      {409, "", ErrorClass::kClientError},
      {413, "", ErrorClass::kClientError},
      {422, "", ErrorClass::kClientError},
      {418, "", ErrorClass::kClientError},
      {451, "", ErrorClass::kClientError},
      {500, "", ErrorClass::kServerError},
      {502, "", ErrorClass::kServerError},
      {503, "", ErrorClass::kServerError},
      {504, "", ErrorClass::kServerError},
      {529, R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})",
       ErrorClass::kServerError},
      {599, "", ErrorClass::kServerError},
      {302, "", ErrorClass::kServerError},
      {0, "", ErrorClass::kServerError},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(classify_http(c.status, c.body), c.want) << c.status << " " << c.body;
  }
}

TEST(ClassifyTransport, Table) {
  EXPECT_EQ(classify_transport(TransportError::kConnectFailed), ErrorClass::kConnectionError);
  EXPECT_EQ(classify_transport(TransportError::kConnectTimeout), ErrorClass::kConnectionError);
  EXPECT_EQ(classify_transport(TransportError::kReadTimeout), ErrorClass::kTimeout);
  EXPECT_EQ(classify_transport(TransportError::kReset), ErrorClass::kConnectionError);
  EXPECT_EQ(classify_transport(TransportError::kTlsFailed), ErrorClass::kConnectionError);
  EXPECT_EQ(classify_transport(TransportError::kDnsFailed), ErrorClass::kConnectionError);
  EXPECT_EQ(classify_transport(TransportError::kProtocolError), ErrorClass::kServerError);
  EXPECT_EQ(classify_transport(TransportError::kCancelled), ErrorClass::kCancelled);
  EXPECT_EQ(to_string(TransportError::kTlsFailed), "tls_failed");
}

TEST(ClassifyAnthropic, ErrorTypes) {
  EXPECT_EQ(classify_anthropic_error_type("rate_limit_error"), ErrorClass::kRateLimited);
  EXPECT_EQ(classify_anthropic_error_type("overloaded_error"), ErrorClass::kServerError);
  EXPECT_EQ(classify_anthropic_error_type("api_error"), ErrorClass::kServerError);
  EXPECT_EQ(classify_anthropic_error_type("authentication_error"), ErrorClass::kAuthFailed);
  EXPECT_EQ(classify_anthropic_error_type("permission_error"), ErrorClass::kAuthFailed);
  EXPECT_EQ(classify_anthropic_error_type("invalid_request_error"), ErrorClass::kClientError);
  EXPECT_EQ(classify_anthropic_error_type("not_found_error"), ErrorClass::kClientError);
  EXPECT_EQ(classify_anthropic_error_type("request_too_large"), ErrorClass::kClientError);
}

TEST(ErrorClassNames, MatchTheKeyPool) {
  EXPECT_EQ(to_string(ErrorClass::kSuccess), "success");
  EXPECT_EQ(to_string(ErrorClass::kRateLimited), "rate_limited");
  EXPECT_EQ(to_string(ErrorClass::kAuthFailed), "auth_failed");
  EXPECT_EQ(to_string(ErrorClass::kServerError), "server_error");
  EXPECT_EQ(to_string(ErrorClass::kTimeout), "timeout");
  EXPECT_EQ(to_string(ErrorClass::kConnectionError), "connection_error");
  EXPECT_EQ(to_string(ErrorClass::kClientError), "client_error");
  EXPECT_EQ(to_string(ErrorClass::kCancelled), "cancelled");
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
