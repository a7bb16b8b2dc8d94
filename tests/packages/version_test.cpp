#include "upkeep/packages/version.hpp"

#include <gtest/gtest.h>

namespace upkeep::packages {
namespace {

TEST(VersionTest, ParsesAndOrdersNumerically) {
  auto a = Version::Parse("2.10.0");
  auto b = Version::Parse("2.9.99");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_GT(*a, *b);
  EXPECT_EQ(a->ToString(), "2.10.0");
  EXPECT_LT(*Version::Parse("1.999.999"), *Version::Parse("2.0.0"));
  EXPECT_EQ(*Version::Parse("0.0.0"), (Version{0, 0, 0}));
}

TEST(VersionTest, RefusesMalformed) {
  for (const char* bad : {"", "1", "1.2", "1.2.3.4", "1.2.x", "01.2.3", "-1.2.3", "1..3", "1.2.3 ", " 1.2.3",
                          "1.2.3-beta", "1000000000.0.0"}) {
    auto v = Version::Parse(bad);
    EXPECT_FALSE(v.ok()) << bad;
    if (!v.ok()) {
      EXPECT_EQ(v.error().code(), Errc::kParse);
    }
  }
}

}  // namespace
}  // namespace upkeep::packages
