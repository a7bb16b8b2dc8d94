#include "upkeep/common/json.hpp"

#include <gtest/gtest.h>

namespace upkeep {
namespace {

TEST(CanonicalJsonTest, SortsKeysAndEscapesOnlyQuoteAndBackslash) {
  auto j = ParseJson(R"({"b": 1, "a": [true, null, "x\"y\\z\n"], "c": {"z": -3, "y": "é"}})");
  ASSERT_TRUE(j.ok());
  auto c = CanonicalJson(*j);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, "{\"a\":[true,null,\"x\\\"y\\\\z\n\"],\"b\":1,\"c\":{\"y\":\"é\",\"z\":-3}}");
}

TEST(CanonicalJsonTest, RefusesFloats) {
  auto j = ParseJson(R"({"a": 1.5})");
  ASSERT_TRUE(j.ok());
  EXPECT_FALSE(CanonicalJson(*j).ok());
}

TEST(ParseJsonTest, RefusesDuplicateKeysDeepNestingAndGarbage) {
  EXPECT_FALSE(ParseJson(R"({"a": 1, "a": 2})").ok());
  EXPECT_FALSE(ParseJson(std::string(100, '[') + std::string(100, ']')).ok());
  EXPECT_TRUE(ParseJson(std::string(10, '[') + std::string(10, ']')).ok());
  auto r = ParseJson("{\"a\":");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kParse);
  EXPECT_FALSE(ParseJson("").ok());
}

TEST(JsonFieldsTest, NameTheMissingField) {
  auto j = ParseJson(R"({"n": 5})").value();
  auto s = GetString(j, "name");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("'name'"), std::string::npos);
  EXPECT_EQ(*GetInt(j, "n"), 5);
}

}  // namespace
}  // namespace upkeep
