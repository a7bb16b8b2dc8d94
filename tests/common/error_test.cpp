#include "upkeep/common/error.hpp"

#include <gtest/gtest.h>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/clock.hpp"

namespace upkeep {
namespace {

Expected<int> Half(int v) {
  if (v % 2) return Error(Errc::kInvalidArgument, "odd");
  return v / 2;
}

Expected<int> Quarter(int v) {
  UPK_TRY_ASSIGN(int h, Half(v));
  return Half(h);
}

TEST(ExpectedTest, PropagatesErrors) {
  EXPECT_EQ(*Quarter(8), 2);
  auto r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "odd");
  EXPECT_EQ(r.error().ExitCode(), 2);
  EXPECT_EQ(Error(Errc::kVerification, "x").ExitCode(), 1);
  EXPECT_EQ(Error(Errc::kIo, "b").Wrap("a").message(), "a: b");
}

TEST(HexTest, RoundTripsAndRefusesGarbage) {
  auto b = FromHex("00ff10Ab");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(ToHex(*b), "00ff10ab");
  EXPECT_FALSE(FromHex("abc").ok());
  EXPECT_FALSE(FromHex("zz").ok());
}

TEST(TimestampTest, ParsesAndFormatsRfc3339Utc) {
  auto t = ParseTimestamp("2030-01-02T03:04:05Z");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(FormatTimestamp(*t), "2030-01-02T03:04:05Z");
  EXPECT_FALSE(ParseTimestamp("2030-13-02T03:04:05Z").ok());
  EXPECT_FALSE(ParseTimestamp("2030-01-02 03:04:05").ok());
  EXPECT_FALSE(ParseTimestamp("2030-01-02T03:04:05+01:00").ok());
}

}  // namespace
}  // namespace upkeep
