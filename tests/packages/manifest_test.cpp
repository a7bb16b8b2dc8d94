#include "upkeep/packages/manifest.hpp"

#include <gtest/gtest.h>

namespace upkeep::packages {
namespace {

constexpr const char* kManifest = R"({
  "name": "site", "version": "8.1.0", "kind": "software",
  "requires": [{"name": "base", "min_version": "2.0.0"}],
  "upgrades_from": "7.2.0", "client_upgrade": true, "settle_hours": 24,
  "description": "Site software 8.1",
  "payload": [
    {"path": "bin", "type": "dir", "mode": 493},
    {"path": "bin/app", "type": "file", "size": 3, "sha256": "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", "mode": 493},
    {"path": "bin/app-link", "type": "symlink", "target": "app"}
  ],
  "x_vendor": {"ticket": 42}
})";

TEST(ManifestTest, ParsesEveryField) {
  auto m = Manifest::Parse(kManifest);
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->name, "site");
  EXPECT_EQ(m->version.ToString(), "8.1.0");
  EXPECT_EQ(m->kind, Kind::kSoftware);
  ASSERT_EQ(m->requires_.size(), 1u);
  EXPECT_EQ(m->requires_[0].name, "base");
  EXPECT_EQ(m->requires_[0].min_version.ToString(), "2.0.0");
  EXPECT_EQ(m->upgrades_from->ToString(), "7.2.0");
  EXPECT_TRUE(m->client_upgrade);
  EXPECT_EQ(m->settle_hours, 24u);
  ASSERT_EQ(m->payload.size(), 3u);
  EXPECT_EQ(m->payload[1].sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(m->payload[2].type, EntryType::kSymlink);
  EXPECT_EQ(m->PayloadBytes(), 3u);
}

TEST(ManifestTest, KeepsUnknownFieldsAndRoundTripsCanonically) {
  auto m = Manifest::Parse(kManifest);
  ASSERT_TRUE(m.ok());
  std::string s = m->Serialize();
  EXPECT_NE(s.find("\"x_vendor\":{\"ticket\":42}"), std::string::npos);
  auto again = Manifest::Parse(s);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->Serialize(), s);
}

TEST(ManifestTest, RefusesHostileOrMalformedFields) {
  const char* cases[] = {
      R"({"version": "1.0.0", "kind": "base"})",
      R"({"name": "Base", "version": "1.0.0", "kind": "base"})",
      R"({"name": "base", "version": "1.0", "kind": "base"})",
      R"({"name": "base", "version": "1.0.0", "kind": "kernel"})",
      R"({"name": "base", "version": "1.0.0", "kind": "base", "payload": [{"path": "/etc/passwd", "type": "file", "size": 1, "sha256": "00"}]})",
      R"({"name": "base", "version": "1.0.0", "kind": "base", "payload": [{"path": "a/../../x", "type": "dir"}]})",
      R"({"name": "base", "version": "1.0.0", "kind": "base", "payload": [{"path": "a", "type": "dir", "mode": 2541}]})",
      R"({"name": "base", "version": "1.0.0", "kind": "base", "payload": [{"path": "a", "type": "fifo"}]})",
      R"({"name": "base", "version": "1.0.0", "kind": "base", "payload": [{"path": "a", "type": "dir"}, {"path": "a", "type": "dir"}]})",
      R"({"name": "base", "version": "1.0.0", "kind": "base", "settle_hours": 1.5})",
      R"({"name": "base", "version": "1.0.0", "kind": "base", "requires": [{"name": "x"}]})",
      R"([1,2,3])",
      "{\"name\": \"base\", \"version\": \"1.0.0\", \"kind\": \"base\", \"description\": \"two\\nlines\"}",
      "{\"name\": \"base\", \"version\": \"1.0.0\", \"kind\": \"base\", \"x\\ty\": 1}",
  };
  for (const char* c : cases) {
    auto m = Manifest::Parse(c);
    EXPECT_FALSE(m.ok()) << c;
  }
}

TEST(ManifestTest, RelativePathRules) {
  EXPECT_TRUE(CheckRelativePath("a/b/c").ok());
  EXPECT_TRUE(CheckRelativePath("a/").ok());
  EXPECT_FALSE(CheckRelativePath("/a").ok());
  EXPECT_FALSE(CheckRelativePath("a//b").ok());
  EXPECT_FALSE(CheckRelativePath("./a").ok());
  EXPECT_FALSE(CheckRelativePath("..").ok());
  EXPECT_FALSE(CheckRelativePath("").ok());
}

}  // namespace
}  // namespace upkeep::packages
