// SharedLearning's batch encoding (issue 21): what one gateway learned reaches the others as it
// was, and a batch that does not parse (a peer of another version, a corrupted message) teaches
// nothing instead of something wrong.
#include "gateway/shared_learning.h"

#include <gtest/gtest.h>

namespace switchboard::gateway {
namespace {

TEST(SharedLearningTest, RecordsRoundTrip) {
  std::vector<LearnRecord> in(3);
  in[0].model = "gpt-4o-mini";
  in[0].category = "coding";
  in[0].reward = 1;
  in[1].kind = LearnRecord::Kind::kFeedback;
  in[1].model = "claude-haiku";
  in[1].reward = 0.25;
  in[1].transport_reward = 1;
  in[2].model = "m";
  in[2].category = "a category with spaces";
  in[2].reward = 0.123456789;
  auto out = SharedLearning::decode(SharedLearning::encode(in));
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(out[i].kind, in[i].kind);
    EXPECT_EQ(out[i].model, in[i].model);
    EXPECT_EQ(out[i].category, in[i].category);
    EXPECT_DOUBLE_EQ(out[i].reward, in[i].reward);
    EXPECT_DOUBLE_EQ(out[i].transport_reward, in[i].transport_reward);
    EXPECT_TRUE(out[i].counts_for_learning);
  }
}

TEST(SharedLearningTest, LinesThatDoNotParseAreSkipped) {
  const std::string batch =
      "0\t1\t0\tcoding\tgood\n"
      "2\t1\t0\tcoding\tpeer-kind-is-never-sent\n"  // a kind other than 0 or 1
      "0\t1.5\t0\tcoding\tover-one\n"               // rewards are in [0, 1]
      "0\t-0\t0\tcoding\tnegative-zero-is-zero\n"
      "0\tnan\t0\tcoding\tnot-a-number\n"
      "0\t1\t0\tcoding\t\n"                // no model
      "0\t1\t0\tcoding\tm\textra-field\n"  // a tab in the model name
      "0\t1\tcoding\tshort\n"              // a field missing
      "garbage\n"
      "\n"
      "1\t0\t1\t\tlast-without-newline";
  auto out = SharedLearning::decode(batch);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].model, "good");
  EXPECT_EQ(out[1].model, "negative-zero-is-zero");
  EXPECT_EQ(out[2].model, "last-without-newline");
  EXPECT_EQ(out[2].kind, LearnRecord::Kind::kFeedback);
  EXPECT_EQ(out[2].category, "");
}

TEST(SharedLearningTest, AHugeBatchIsBounded) {
  std::string batch;
  for (size_t i = 0; i < SharedLearning::kMaxBatchRecords + 10; ++i) batch += "0\t1\t0\t\tm\n";
  EXPECT_EQ(SharedLearning::decode(batch).size(), SharedLearning::kMaxBatchRecords);
}

}  // namespace
}  // namespace switchboard::gateway
