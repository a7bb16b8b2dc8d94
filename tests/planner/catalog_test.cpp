// Catalog: indexing, duplicate detection naming both sources, loading a directory of manifests,
// and the bounds that keep a hostile directory from exhausting memory.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "fixtures.hpp"
#include "upkeep/packages/catalog.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/packages/package.hpp"

namespace upkeep::packages {
namespace {

using namespace testing;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("upkeep-catalog-test-" + std::to_string(::getpid()) + "-" +
                                         std::to_string(counter_++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  void Write(const std::string& name, const std::string& text) const { std::ofstream(path_ / name) << text; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

std::string ManifestJson(const char* name, const char* version, const char* kind) {
  return std::string(R"({"name": ")") + name + R"(", "version": ")" + version + R"(", "kind": ")" + kind + R"("})";
}

TEST(Catalog, IndexesByNameSortedByVersion) {
  Catalog catalog = MakeCatalog({{"software", "9.0.0"}, {"base", "1.0.0", kBase}, {"software", "8.10.0"},
                                 {"software", "8.2.0"}});
  EXPECT_EQ(catalog.size(), 4u);
  EXPECT_EQ(catalog.Names(), (std::vector<std::string>{"base", "software"}));
  auto rs = catalog.Releases("software");
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(rs[0].manifest.version, V("8.2.0"));
  EXPECT_EQ(rs[1].manifest.version, V("8.10.0"));
  EXPECT_EQ(rs[2].manifest.version, V("9.0.0"));
  EXPECT_EQ(catalog.Newest("software")->manifest.version, V("9.0.0"));
  ASSERT_NE(catalog.Find("software", V("8.10.0")), nullptr);
  EXPECT_EQ(catalog.Find("software", V("8.10.0"))->source, "manifest #2");
  EXPECT_EQ(catalog.Find("software", V("8.3.0")), nullptr);
  EXPECT_TRUE(catalog.Releases("nothing").empty());
  EXPECT_EQ(catalog.Newest("nothing"), nullptr);
  EXPECT_TRUE(Catalog().empty());
}

TEST(Catalog, DuplicateReleaseNamesBothSources) {
  auto dup = Catalog::FromManifests(Manifests({{"software", "8.0.0"}, {"base", "1.0.0", kBase}, {"software", "8.0.0"}}));
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(dup.error().message(), "catalog: duplicate release software 8.0.0 in manifest #0 and manifest #2");
}

TEST(Catalog, OneNameWithTwoKindsIsRefused) {
  auto mixed = Catalog::FromManifests(Manifests({{"software", "8.0.0"}, {"software", "8.1.0", kBase}}));
  ASSERT_FALSE(mixed.ok());
  EXPECT_THAT(mixed.error().message(), HasSubstr("package software has kind software in manifest #0 but kind base"));
}

TEST(Catalog, ReleaseCountIsBounded) {
  CatalogLimits limits;
  limits.max_releases = 2;
  auto many = Catalog::FromManifests(Manifests({{"a", "1.0.0"}, {"a", "1.1.0"}, {"a", "1.2.0"}}), limits);
  ASSERT_FALSE(many.ok());
  EXPECT_EQ(many.error().code(), Errc::kLimit);

  TempDir dir;
  for (int i = 0; i < 3; ++i) {
    std::string v = "1." + std::to_string(i) + ".0";
    dir.Write("a-" + v + ".manifest.json", ManifestJson("a", v.c_str(), "software"));
  }
  auto loaded = Catalog::LoadDirectory(dir.path(), limits);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.error().code(), Errc::kLimit);
  EXPECT_THAT(loaded.error().message(), HasSubstr("more than 2 release files"));

  CatalogLimits bytes;
  bytes.max_total_bytes = 100;
  auto big = Catalog::LoadDirectory(dir.path(), bytes);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code(), Errc::kLimit);
  EXPECT_TRUE(Catalog::LoadDirectory(dir.path()).ok());
}

TEST(Catalog, LoadsManifestFilesFromADirectory) {
  TempDir dir;
  dir.Write("base-1.0.0.manifest.json", ManifestJson("base", "1.0.0", "base"));
  dir.Write("software-8.0.0.manifest.json",
            R"({"name": "software", "version": "8.0.0", "kind": "software", "upgrades_from": "7.2.0",
                "requires": [{"name": "base", "min_version": "1.0.0"}], "settle_hours": 24})");
  dir.Write("README.txt", "not a manifest");
  dir.Write("notes.json", "{");  // not *.manifest.json: ignored
  fs::create_directories(dir.path() / "sub.manifest.json");  // a directory: ignored
  auto catalog = Catalog::LoadDirectory(dir.path());
  ASSERT_TRUE(catalog.ok()) << catalog.error().message();
  EXPECT_EQ(catalog->size(), 2u);
  const auto* sw = catalog->Find("software", V("8.0.0"));
  ASSERT_NE(sw, nullptr);
  EXPECT_EQ(sw->manifest.settle_hours, 24u);
  EXPECT_EQ(*sw->manifest.upgrades_from, V("7.2.0"));
  ASSERT_EQ(sw->manifest.requires_.size(), 1u);
  EXPECT_EQ(sw->source, (dir.path() / "software-8.0.0.manifest.json").string());
}

TEST(Catalog, DuplicateAcrossFilesNamesBothFiles) {
  TempDir dir;
  dir.Write("b.manifest.json", ManifestJson("software", "8.0.0", "software"));
  dir.Write("a.manifest.json", ManifestJson("software", "8.0.0", "software"));
  auto catalog = Catalog::LoadDirectory(dir.path());
  ASSERT_FALSE(catalog.ok());
  EXPECT_EQ(catalog.error().message(), "catalog: duplicate release software 8.0.0 in " +
                                           (dir.path() / "a.manifest.json").string() + " and " +
                                           (dir.path() / "b.manifest.json").string());
}

TEST(Catalog, BrokenFilesAreNamed) {
  struct BadCase {
    const char* text;
    const char* expect;
  };
  for (const auto& c : std::vector<BadCase>{{"{", ""},
                                            {R"({"name": "x", "version": "1.0", "kind": "software"})", "version"},
                                            {R"({"name": "x", "version": "1.0.0", "kind": "firmware"})", "kind"},
                                            {R"({"name": "x", "name": "y", "version": "1.0.0", "kind": "base"})", ""},
                                            {"[]", ""}}) {
    TempDir dir;
    dir.Write("good.manifest.json", ManifestJson("a", "1.0.0", "base"));
    dir.Write("bad.manifest.json", c.text);
    auto catalog = Catalog::LoadDirectory(dir.path());
    ASSERT_FALSE(catalog.ok()) << c.text;
    EXPECT_THAT(catalog.error().message(), HasSubstr((dir.path() / "bad.manifest.json").string())) << c.text;
    EXPECT_THAT(catalog.error().message(), HasSubstr(c.expect)) << c.text;
    EXPECT_EQ(catalog.error().ExitCode(), 2) << c.text;
  }
}

TEST(Catalog, LoadsUpkPackagesBesideManifests) {
  TempDir dir;
  TempDir payload;
  payload.Write("app.bin", "payload bytes");
  PackSpec spec;
  spec.manifest = R{"software", "8.1.0", kSw, {{"base", "1.0.0"}}, "8.0.0", 24}.ToManifest();
  spec.payload_dir = payload.path();
  auto written = WritePackage(spec, {PrivateKey::GenerateEd25519()}, dir.path() / "software-8.1.0.upk");
  ASSERT_TRUE(written.ok()) << written.error().message();
  dir.Write("software-8.0.0.manifest.json", ManifestJson("software", "8.0.0", "software"));
  auto catalog = Catalog::LoadDirectory(dir.path());
  ASSERT_TRUE(catalog.ok()) << catalog.error().message();
  ASSERT_EQ(catalog->size(), 2u);
  const auto* r = catalog->Find("software", V("8.1.0"));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->source, (dir.path() / "software-8.1.0.upk").string());
  EXPECT_EQ(*r->manifest.upgrades_from, V("8.0.0"));
  EXPECT_EQ(r->manifest.settle_hours, 24u);
  ASSERT_EQ(r->manifest.payload.size(), 1u);

  // The same release as a manifest file too: a duplicate naming both files.
  dir.Write("again.manifest.json", ManifestJson("software", "8.1.0", "software"));
  auto dup = Catalog::LoadDirectory(dir.path());
  ASSERT_FALSE(dup.ok());
  EXPECT_THAT(dup.error().message(), HasSubstr("again.manifest.json and " + (dir.path() / "software-8.1.0.upk").string()));
  fs::remove(dir.path() / "again.manifest.json");

  dir.Write("broken.upk", "not a tar archive at all");
  auto broken = Catalog::LoadDirectory(dir.path());
  ASSERT_FALSE(broken.ok());
  EXPECT_THAT(broken.error().message(), HasSubstr((dir.path() / "broken.upk").string()));
}

TEST(Catalog, MissingOrNonDirectory) {
  TempDir dir;
  auto missing = Catalog::LoadDirectory(dir.path() / "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
  EXPECT_THAT(missing.error().message(), HasSubstr("nope"));
  dir.Write("file", "x");
  auto file = Catalog::LoadDirectory(dir.path() / "file");
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(file.error().message(), HasSubstr("is not a directory"));
  auto empty = Catalog::LoadDirectory(dir.path());
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

}  // namespace
}  // namespace upkeep::packages
