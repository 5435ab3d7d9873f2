#include "common/status.h"

#include <gtest/gtest.h>

#include "common/clock.h"

namespace switchboard {
namespace {

TEST(StatusTest, OkAndError) {
  Status ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.to_string(), "OK");
  Status e = Status::not_found("no such run");
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(e.code(), StatusCode::kNotFound);
  EXPECT_EQ(e.to_string(), "NotFound: no such run");
}

TEST(StatusTest, ResultHoldsValueOrError) {
  Result<int> v = 42;
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 42);
  Result<int> e = Status::invalid_argument("bad");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
}

TEST(ClockTest, ManualClockAdvancesBothClocks) {
  ManualClock c;
  auto m0 = c.now();
  auto w0 = c.wall_now();
  c.advance(std::chrono::milliseconds(1500));
  EXPECT_EQ(c.now() - m0, std::chrono::milliseconds(1500));
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::milliseconds>(c.wall_now() - w0).count(), 1500);
}

}  // namespace
}  // namespace switchboard
