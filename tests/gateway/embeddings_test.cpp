// POST /v1/embeddings through a running gateway (issue 23): routed, keyed, failed over and
// accounted like chat completions, the provider's answer passed through.
#include <gtest/gtest.h>

#include <string>

#include "gateway_fixture.h"

namespace switchboard::gwtest {
namespace {

class EmbeddingsTest : public GatewayTest {
 protected:
  HttpResult embed(const std::string& body) { return post(port_, "/v1/embeddings", body); }
};

TEST_F(EmbeddingsTest, VectorsComeBackWithTheHeadersAndTheUsageIsCounted) {
  MockScenario failing;
  failing.error_rate = 1.0;
  auto& down = add_mock(failing);
  auto& up = add_mock();
  start_gateway(
      "providers:\n" + provider("down", down) + provider("up", up) +
      "  ant: { kind: anthropic, base_url: \"http://127.0.0.1:9/v1\", keys: [sk-ant-x] }\n"
      "models:\n"
      "  emb-a: { provider: down, upstream: text-embedding-3-small }\n"
      "  emb-b: { provider: up, upstream: text-embedding-3-small,"
      " cost: { input_per_mtok: 20, output_per_mtok: 0 } }\n"
      "  claude: { provider: ant }\n"
      "routes:\n  embed: { strategy: ordered, layers: [[emb-a], [emb-b]] }\n");
  auto r = embed(R"({"model":"embed","input":["the first text","a second one"]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchboard-model"), "emb-b");  // emb-a's provider failed: next layer
  EXPECT_EQ(r.header("x-switchboard-attempts"), "2");
  EXPECT_EQ(r.header("x-switchboard-layer"), "1");
  auto v = parse_json(r.body);
  ASSERT_TRUE(v.is_object()) << r.body;
  const auto& data = v.as_object().at("data").as_array();
  ASSERT_EQ(data.size(), 2u);
  EXPECT_EQ(data[1].as_object().at("index").to_number<int64_t>(), 1);
  EXPECT_EQ(data[0].as_object().at("embedding").as_array().size(), 8u);
  EXPECT_EQ(v.as_object().at("model"), "text-embedding-3-small");  // the upstream's name went up
  const int64_t tokens =
      v.as_object().at("usage").as_object().at("prompt_tokens").to_number<int64_t>();
  EXPECT_GT(tokens, 0);
  // Priced at the model's input price.
  EXPECT_NEAR(std::stod(r.header("x-switchboard-cost-usd")), double(tokens) * 20 / 1e6, 1e-9);
  EXPECT_EQ(up.stats().requests, 1u);
  EXPECT_EQ(down.stats().requests, 1u);
  // A single string works too, and the same text gives the same vector.
  auto one = parse_json(embed(R"({"model":"emb-b","input":"the first text"})").body);
  EXPECT_EQ(one.as_object().at("data").as_array()[0].as_object().at("embedding"),
            data[0].as_object().at("embedding"));
  // A model whose provider has no embeddings API is a clear 400, not a failed upstream call.
  r = embed(R"({"model":"claude","input":"x"})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("embeddings_unsupported"), std::string::npos) << r.body;
}

TEST_F(EmbeddingsTest, BadInputsAreRefusedBeforeAnyCall) {
  auto& up = add_mock();
  start_gateway("providers:\n" + provider("up", up) + "models:\n  emb: { provider: up }\n");
  for (const char* body : {
           R"({"model":"emb"})",
           R"({"model":"emb","input":""})",
           R"({"model":"emb","input":[]})",
           R"({"model":"emb","input":["a",1]})",
           R"({"model":"emb","input":[[1,2],["x"]]})",
           R"({"model":"emb","input":{"text":"a"}})",
           R"({"input":"a"})",
           R"([1,2])",
       }) {
    auto r = embed(body);
    EXPECT_EQ(r.status, 400) << body << " -> " << r.body;
    EXPECT_TRUE(is_openai_error(r.body)) << r.body;
  }
  std::string many = R"({"model":"emb","input":[)";
  for (int i = 0; i < 2049; ++i) many += (i ? ",\"x\"" : "\"x\"");
  EXPECT_EQ(embed(many + "]}").status, 400);
  EXPECT_EQ(embed(R"({"model":"nope","input":"a"})").status, 404);
  EXPECT_EQ(up.stats().requests, 0u);
  // Token ids are accepted as they are.
  EXPECT_EQ(embed(R"({"model":"emb","input":[[101,2023,102],[7]]})").status, 200);
}

}  // namespace
}  // namespace switchboard::gwtest
