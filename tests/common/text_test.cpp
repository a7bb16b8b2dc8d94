#include "upkeep/common/text.hpp"

#include <gtest/gtest.h>

#include "upkeep/common/bytes.hpp"

namespace upkeep {
namespace {

TEST(TextTest, EqualsIgnoreCaseIsAsciiOnly) {
  EXPECT_TRUE(EqualsIgnoreCase("Content-Length", "content-length"));
  EXPECT_FALSE(EqualsIgnoreCase("Content-Length", "content-lengt"));
  EXPECT_FALSE(EqualsIgnoreCase("a[", "A{"));  // '[' and '{' differ by the case bit but are not letters
}

TEST(TextTest, TrimSpaceTabKeepsOtherWhitespace) {
  EXPECT_EQ(TrimSpaceTab(" \t chunked\t "), "chunked");
  EXPECT_EQ(TrimSpaceTab("\r\nx\r\n"), "\r\nx\r\n");
  EXPECT_EQ(TrimSpaceTab("  "), "");
}

TEST(TextTest, ParseDecimalU64TakesDigitsOnly) {
  EXPECT_EQ(ParseDecimalU64("0"), 0u);
  EXPECT_EQ(ParseDecimalU64("9999999999999999999"), 9999999999999999999u);  // 19 digits: the most
  EXPECT_EQ(ParseDecimalU64("10000000000000000000"), std::nullopt);         // 20 digits
  for (const char* bad : {"", "+1", "-1", " 1", "1 ", "1a", "0x10"}) EXPECT_EQ(ParseDecimalU64(bad), std::nullopt) << bad;
}

TEST(TextTest, IsLowerHex) {
  EXPECT_TRUE(IsLowerHex("0123456789abcdef"));
  EXPECT_TRUE(IsLowerHex(""));
  EXPECT_FALSE(IsLowerHex("ABCDEF"));
  EXPECT_FALSE(IsLowerHex("g"));
  EXPECT_TRUE(IsLowerHex("00ff", 4));
  EXPECT_FALSE(IsLowerHex("00ff", 5));
}

}  // namespace
}  // namespace upkeep
