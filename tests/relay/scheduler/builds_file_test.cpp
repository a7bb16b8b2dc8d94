// The client builds file: LoadClientBuilds (hostile lists refused naming the build) and
// AddSignedClientBuild (the vendor's side: hash, sign, add or replace, never write a list the
// relay would refuse).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/relay/build_signature.hpp"
#include "upkeep/relay/builds_file.hpp"

namespace upkeep::relay {
namespace {

namespace fs = std::filesystem;

class BuildsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("upkeep-builds-" + ToHex(SystemRandom::Instance().Generate(6)));
    fs::create_directories(dir_ / "pkg" / "clients");
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path Write(const std::string& rel, const std::string& content) {
    EXPECT_TRUE(WriteFileAtomic(dir_ / rel, content).ok());
    return dir_ / rel;
  }
  fs::path dir_;
  packages::PrivateKey key_ = packages::PrivateKey::GenerateEd25519();
};

TEST_F(BuildsFileTest, AddSignsAddsAndReplacesThePlatformsEntry) {
  const fs::path list = dir_ / "pkg" / "client-builds.json";
  const auto a = Write("pkg/clients/a.bin", std::string(3000, 'a'));
  const auto b = Write("pkg/clients/b.bin", std::string(5000, 'b'));
  auto e1 = AddSignedClientBuild(list, a, "linux-x86_64", "2.0.0", key_, true);
  ASSERT_TRUE(e1.ok()) << e1.error().message();
  EXPECT_EQ((*e1)["path"], "clients/a.bin");
  ASSERT_TRUE(AddSignedClientBuild(list, b, "win-x64", "2.0.0", key_, true).ok());
  ASSERT_TRUE(AddSignedClientBuild(list, b, "linux-x86_64", "2.1.0", key_, true).ok());
  auto builds = LoadClientBuilds(list, true);
  ASSERT_TRUE(builds.ok()) << builds.error().message();
  ASSERT_EQ(builds->size(), 2u);
  for (const auto& build : *builds) {
    EXPECT_EQ(build.path, b);
    EXPECT_EQ(build.length, 5000u);
    EXPECT_EQ(build.sha256, Sha256Hex(std::string(5000, 'b')));
    auto sig = FromHex(build.signature);
    ASSERT_TRUE(sig.ok());
    EXPECT_TRUE(key_.public_key().Verify(BuildSigningMessage(build.platform, build.version, build.sha256), *sig));
    EXPECT_FALSE(key_.public_key().Verify(BuildSigningMessage(build.platform, "9.9.9", build.sha256), *sig));
  }
}

TEST_F(BuildsFileTest, ABuildOutsideThePayloadOrABadListIsRefusedAndNothingIsWritten) {
  const fs::path list = dir_ / "pkg" / "client-builds.json";
  const auto outside = Write("outside.bin", "x");
  auto e = AddSignedClientBuild(list, outside, "linux-x86_64", "2.0.0", key_, true);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("must be inside"), std::string::npos) << e.error().message();
  EXPECT_FALSE(fs::exists(list));
  // Not confined (relay serve --builds): absolute paths are fine.
  auto loose = AddSignedClientBuild(dir_ / "builds.json", outside, "linux-x86_64", "2.0.0", key_, false);
  ASSERT_TRUE(loose.ok()) << loose.error().message();
  EXPECT_EQ((*loose)["path"], outside.string());
  // An existing list the relay would refuse is not touched.
  const std::string bad = R"({"builds": [{"platform": "p"}]})";
  Write("pkg/client-builds.json", bad);
  const auto a = Write("pkg/clients/a.bin", "aaaa");
  auto refused = AddSignedClientBuild(list, a, "linux-x86_64", "2.0.0", key_, true);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("build 0"), std::string::npos) << refused.error().message();
  EXPECT_EQ(ReadFileBounded(list, 1 << 20).value(), bad);
  EXPECT_FALSE(AddSignedClientBuild(list, dir_ / "pkg" / "clients" / "missing.bin", "p", "1.0.0", key_, true).ok());
}

TEST_F(BuildsFileTest, HostileListsAreRefusedNamingTheBuild) {
  const auto a = Write("pkg/clients/a.bin", "aaaa");
  const std::string good = R"("platform": "p", "version": "1.0.0", "sha256": "00", "signature": "ab")";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[]", "not a JSON object"},
      {R"({"builds": 3})", "builds"},
      {R"({"builds": [3]})", "build 0: not an object"},
      {"{\"builds\": [{" + good + ", \"path\": \"../a.bin\"}]}", "build 0: field 'path'"},
      {"{\"builds\": [{" + good + ", \"path\": \"/etc/passwd\"}]}", "build 0: field 'path'"},
      {"{\"builds\": [{" + good + ", \"path\": \"clients/none.bin\"}]}", "none.bin"},
      {"{\"builds\": [{" + good + "}]}", "field 'path'"},
  };
  for (const auto& [text, want] : cases) {
    const auto list = Write("pkg/client-builds.json", text);
    auto r = LoadClientBuilds(list, true);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.error().message().find(want), std::string::npos) << text << ": " << r.error().message();
    EXPECT_NE(r.error().message().find("client-builds.json"), std::string::npos) << r.error().message();
  }
  std::string many = "{\"builds\": [";
  for (int i = 0; i < 257; ++i) many += std::string(i ? "," : "") + "{" + good + ", \"path\": \"clients/a.bin\"}";
  auto r = LoadClientBuilds(Write("pkg/client-builds.json", many + "]}"), true);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("more than 256"), std::string::npos);
}

}  // namespace
}  // namespace upkeep::relay
