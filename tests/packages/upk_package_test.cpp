// upk pack | inspect | verify | unpack, driven in-process through upkeep::upk::Main: exit codes
// (0 ok, 1 verification/policy, 2 usage/input) and the --json shapes.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <sstream>

#include "package_test_util.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::packages {
namespace {

using namespace testing;

struct UpkRun {
  int code;
  std::string out, err;
  Json json() const {
    auto j = ParseJson(out);
    EXPECT_TRUE(j.ok()) << out;
    return j.ok() ? *j : Json();
  }
};

UpkRun Upk(std::vector<std::string> args) {
  args.insert(args.begin(), "upk");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  int code = upk::Main(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

class UpkPackageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteFile(tmp_ / "src/bin/tool", "#!/bin/sh\n", 0755);
    WriteFile(tmp_ / "src/etc/tool.conf", "x=1\n", 0640);
    ASSERT_EQ(Upk({"keygen", key_}).code, 0);
    ASSERT_EQ(Upk({"keygen", other_}).code, 0);
  }

  UpkRun Pack(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--json", "pack", "--name", "tool", "--version", "2.3.4", "--kind", "software",
                                     "--requires", "base>=1.0.0", "--settle-hours", "12", "--key", key_,
                                     "--dir", (tmp_ / "src").string(), "-o", upk_};
    args.insert(args.end(), extra.begin(), extra.end());
    return Upk(args);
  }

  TempDir tmp_;
  std::string key_ = (tmp_ / "release.key").string();
  std::string other_ = (tmp_ / "other.key").string();
  std::string upk_ = (tmp_ / "tool.upk").string();
};

TEST_F(UpkPackageTest, PackPrintsIdSizeAndDigest) {
  UpkRun r = Pack();
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  Json j = r.json();
  EXPECT_EQ(j["id"], "tool-2.3.4");
  auto digest = HashFile(upk_);
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(j["sha256"], digest->sha256_hex);
  EXPECT_EQ(j["size"], digest->size);
  EXPECT_EQ(j["entries"], 4);
  EXPECT_EQ(j["payload_bytes"], 14);
  EXPECT_EQ(j["signed_by"].size(), 1u);

  UpkRun text = Upk({"pack", "--name", "tool", "--version", "2.3.5", "--kind", "software", "--key", key_, "--dir",
                  (tmp_ / "src").string(), "-o", (tmp_ / "t.upk").string()});
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("packed  tool-2.3.5"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("sha256  "), std::string::npos) << text.out;
}

TEST_F(UpkPackageTest, ManifestFileWithFlagOverridesAndExtraFields) {
  WriteFile(tmp_ / "m.json", R"({"name": "tool", "version": "1.0.0", "kind": "addon", "description": "from file",
                                 "client_upgrade": true})");
  WriteFile(tmp_ / "extra.json", R"({"x_vendor": {"ticket": 7}})");
  UpkRun r = Upk({"pack", "--manifest", (tmp_ / "m.json").string(), "--manifest-extra", (tmp_ / "extra.json").string(),
               "--version", "1.0.1", "--key", key_, "--dir", (tmp_ / "src").string(), "-o", upk_});
  ASSERT_EQ(r.code, 0) << r.err;
  UpkRun i = Upk({"--json", "inspect", upk_});
  ASSERT_EQ(i.code, 0) << i.err;
  Json j = i.json();
  EXPECT_EQ(j["manifest"]["version"], "1.0.1");
  EXPECT_EQ(j["manifest"]["kind"], "addon");
  EXPECT_EQ(j["manifest"]["description"], "from file");
  EXPECT_EQ(j["manifest"]["client_upgrade"], true);
  EXPECT_EQ(j["manifest"]["x_vendor"]["ticket"], 7);
  EXPECT_EQ(j["verified"], false);
  EXPECT_EQ(j["payload"]["files"], 2);
  EXPECT_EQ(j["payload"]["dirs"], 2);
  EXPECT_EQ(j["signatures"].size(), 1u);

  WriteFile(tmp_ / "bad-extra.json", R"({"name": "evil"})");
  UpkRun bad = Upk({"pack", "--manifest", (tmp_ / "m.json").string(), "--manifest-extra", (tmp_ / "bad-extra.json").string(),
                 "--key", key_, "--dir", (tmp_ / "src").string(), "-o", (tmp_ / "x.upk").string()});
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("'name'"), std::string::npos) << bad.err;
}

TEST_F(UpkPackageTest, PackUsageAndInputErrors) {
  EXPECT_EQ(Upk({"pack", "--name", "tool", "--version", "1.0.0", "--kind", "base", "--dir", (tmp_ / "src").string(), "-o", upk_}).code, 2)
      << "missing --key";
  EXPECT_EQ(Upk({"pack", "--name", "tool", "--version", "1.0.0", "--kind", "base", "--key", key_, "-o", upk_}).code, 2)
      << "no payload";
  UpkRun req = Pack({"--requires", "base"});
  EXPECT_EQ(req.code, 2);
  EXPECT_NE(req.out.find("NAME>=VERSION"), std::string::npos) << req.out;
  EXPECT_EQ(Upk({"pack", "--name", "Tool!", "--version", "1.0.0", "--kind", "base", "--key", key_, "--dir",
                 (tmp_ / "src").string(), "-o", upk_}).code, 2);
  ::mkfifo((tmp_ / "src/pipe").c_str(), 0644);
  UpkRun fifo = Pack();
  EXPECT_EQ(fifo.code, 1);
  Json j = fifo.json();
  EXPECT_EQ(j["error"]["code"], "unsafe_content");
  EXPECT_NE(j["error"]["message"].get<std::string>().find("'pipe'"), std::string::npos);
  EXPECT_FALSE(fs::exists(upk_));
}

TEST_F(UpkPackageTest, VerifyExitCodesAndJson) {
  ASSERT_EQ(Pack().code, 0);
  UpkRun ok = Upk({"--json", "verify", upk_, "--key", key_ + ".pub"});
  ASSERT_EQ(ok.code, 0) << ok.out << ok.err;
  Json j = ok.json();
  EXPECT_EQ(j["ok"], true);
  EXPECT_EQ(j["id"], "tool-2.3.4");
  EXPECT_EQ(j["integrity_only"], false);
  EXPECT_EQ(j["threshold"], 1);
  EXPECT_EQ(j["entries"], 4);

  UpkRun integrity = Upk({"verify", upk_});
  ASSERT_EQ(integrity.code, 0);
  EXPECT_NE(integrity.out.find("integrity only"), std::string::npos) << integrity.out;
  EXPECT_EQ(Upk({"--json", "verify", upk_}).json()["integrity_only"], true);

  UpkRun wrong = Upk({"--json", "verify", upk_, "--key", other_ + ".pub"});
  EXPECT_EQ(wrong.code, 1);
  EXPECT_EQ(wrong.json()["error"]["code"], "verification_failed");

  UpkRun both = Upk({"verify", "--key", key_ + ".pub", "--key", other_ + ".pub", "--threshold", "2", upk_});
  EXPECT_EQ(both.code, 1) << both.err;
  EXPECT_NE(both.err.find("1 of the 2"), std::string::npos) << both.err;

  EXPECT_EQ(Upk({"verify", upk_, "--threshold", "2"}).code, 2) << "threshold without keys";
  EXPECT_EQ(Upk({"verify", (tmp_ / "missing.upk").string()}).code, 2);
  EXPECT_EQ(Upk({"verify"}).code, 2);

  std::string bytes = ReadAll(upk_);
  bytes[bytes.find("x=1")] = 'y';
  std::ofstream(upk_, std::ios::binary | std::ios::trunc) << bytes;
  UpkRun bad = Upk({"verify", upk_, "--key", key_ + ".pub"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("etc/tool.conf"), std::string::npos) << bad.err;
}

TEST_F(UpkPackageTest, UnpackExtractsOrLeavesNothing) {
  ASSERT_EQ(Pack().code, 0);
  std::string dest = (tmp_ / "out").string();
  UpkRun ok = Upk({"--json", "unpack", upk_, dest, "--key", key_ + ".pub"});
  ASSERT_EQ(ok.code, 0) << ok.out << ok.err;
  EXPECT_EQ(ok.json()["dest"], dest);
  EXPECT_EQ(ok.json()["integrity_only"], false);
  EXPECT_EQ(Snapshot(dest), Snapshot(tmp_ / "src"));
  EXPECT_EQ(Upk({"unpack", upk_, dest}).code, 2) << "destination exists";

  std::string bytes = ReadAll(upk_);
  bytes[bytes.find("x=1")] = 'y';
  std::ofstream(upk_, std::ios::binary | std::ios::trunc) << bytes;
  std::string dest2 = (tmp_ / "out2").string();
  UpkRun bad = Upk({"--json", "unpack", upk_, dest2});
  EXPECT_EQ(bad.code, 1);
  EXPECT_EQ(bad.json()["error"]["code"], "verification_failed");
  EXPECT_FALSE(fs::exists(dest2));
}

TEST_F(UpkPackageTest, InspectTextAndHelp) {
  ASSERT_EQ(Pack().code, 0);
  UpkRun i = Upk({"inspect", upk_, "--list"});
  ASSERT_EQ(i.code, 0) << i.err;
  EXPECT_NE(i.out.find("package      tool-2.3.4"), std::string::npos) << i.out;
  EXPECT_NE(i.out.find("base>=1.0.0"), std::string::npos) << i.out;
  EXPECT_NE(i.out.find("not verified"), std::string::npos) << i.out;
  EXPECT_NE(i.out.find("0640"), std::string::npos) << i.out;
  EXPECT_EQ(Upk({"inspect", (tmp_ / "missing.upk").string()}).code, 2);

  // A damaged manifest.sig still shows the manifest, and says the signatures are unreadable.
  std::string broken = (tmp_ / "broken.upk").string();
  WriteRawTar(broken, {RawFile("manifest.json", BaseManifest().Serialize()), RawFile("manifest.sig", "nonsense")});
  UpkRun b = Upk({"--json", "inspect", broken});
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_EQ(b.json()["id"], "site-8.1.0");
  EXPECT_NE(b.json()["signatures_error"].get<std::string>().find("manifest.sig"), std::string::npos);
  EXPECT_EQ(Upk({"verify", broken}).code, 1);
  std::vector<std::pair<std::string, std::string>> helps = {{"pack", "Example: upk pack"},
                                                             {"inspect", "use 'upk verify'"},
                                                             {"verify", "Exit code 0"},
                                                             {"unpack", "DEST must not exist"}};
  for (const auto& [cmd, text] : helps) {
    UpkRun h = Upk({cmd, "--help"});
    EXPECT_EQ(h.code, 0) << cmd;
    EXPECT_NE(h.out.find(text), std::string::npos) << cmd << ": " << h.out;
  }
}

}  // namespace
}  // namespace upkeep::packages
