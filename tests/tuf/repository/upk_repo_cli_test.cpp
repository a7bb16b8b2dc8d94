// Drives the real `upk repo` binary: exit codes (0 ok, 1 policy, 2 usage/input), --json output,
// and the refusals an operator meets (wrong key, re-add conflict, non-empty directory).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep {
namespace {

namespace fs = std::filesystem;

struct Run {
  int code = -1;
  std::string out;  // stdout and stderr together
};

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

Run Upk(const std::string& args, bool with_stderr = true) {
  std::string cmd = Quote(std::string(UPKEEP_BIN_DIR) + "/upk") + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
  Run r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class UpkRepoCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "upk-repo-cli-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    for (const char* k : {"root", "targets", "snapshot", "timestamp", "other"}) {
      ASSERT_EQ(Upk("keygen " + Key(k)).code, 0);
    }
    repo_ = (dir_ / "repo").string();
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Key(const std::string& role) const { return Quote((dir_ / (role + ".key")).string()); }
  std::string InitArgs() const {
    return "repo init " + Quote(repo_) + " --root-key " + Key("root") + " --targets-key " + Key("targets") +
           " --snapshot-key " + Key("snapshot") + " --timestamp-key " + Key("timestamp");
  }
  std::string PublishKeys() const {
    return " --targets-key " + Key("targets") + " --snapshot-key " + Key("snapshot") + " --timestamp-key " +
           Key("timestamp");
  }
  std::string File(const std::string& name, const std::string& content) const {
    EXPECT_TRUE(WriteFileAtomic(dir_ / name, content).ok());
    return Quote((dir_ / name).string());
  }

  fs::path dir_;
  std::string repo_;
};

TEST_F(UpkRepoCli, InitAddPublishStatusWithJson) {
  auto init = Upk("--json " + InitArgs(), false);
  ASSERT_EQ(init.code, 0) << init.out;
  auto ij = ParseJson(init.out);
  ASSERT_TRUE(ij.ok()) << init.out;
  EXPECT_EQ((*ij)["root_version"], 1);
  EXPECT_TRUE(fs::exists(fs::path(repo_) / "metadata" / "1.root.json"));

  auto add = Upk("repo add " + Quote(repo_) + " " + File("a.txt", "alpha") + " --json", false);
  ASSERT_EQ(add.code, 0) << add.out;
  auto aj = ParseJson(add.out);
  ASSERT_TRUE(aj.ok()) << add.out;
  EXPECT_EQ((*aj)["added"][0]["path"], "a.txt");
  EXPECT_EQ((*aj)["added"][0]["hashes"]["sha256"], Sha256Hex("alpha"));

  auto pub = Upk("repo publish " + Quote(repo_) + PublishKeys() + " --expires targets=10");
  ASSERT_EQ(pub.code, 0) << pub.out;
  EXPECT_NE(pub.out.find("targets v2"), std::string::npos) << pub.out;

  auto status = Upk("--json repo status " + Quote(repo_), false);
  ASSERT_EQ(status.code, 0) << status.out;
  auto sj = ParseJson(status.out);
  ASSERT_TRUE(sj.ok()) << status.out;
  EXPECT_EQ((*sj)["targets"]["version"], 2);
  EXPECT_EQ((*sj)["timestamp"]["expired"], false);
  EXPECT_EQ((*sj)["target_files"].size(), 1u);

  auto text = Upk("repo status " + Quote(repo_));
  ASSERT_EQ(text.code, 0);
  EXPECT_NE(text.out.find("a.txt"), std::string::npos);

  auto expired = Upk("repo timestamp " + Quote(repo_) + " --timestamp-key " + Key("timestamp") +
                     " --expires-at 2000-01-01T00:00:00Z");
  ASSERT_EQ(expired.code, 0) << expired.out;
  auto sj2 = ParseJson(Upk("--json repo status " + Quote(repo_), false).out);
  ASSERT_TRUE(sj2.ok());
  EXPECT_EQ((*sj2)["timestamp"]["expired"], true);
  EXPECT_EQ((*sj2)["timestamp"]["expires"], "2000-01-01T00:00:00Z");
  EXPECT_EQ((*sj2)["timestamp"]["version"], 3);
}

TEST_F(UpkRepoCli, RefusalsHaveTheRightExitCodes) {
  ASSERT_EQ(Upk(InitArgs()).code, 0);

  // A non-empty directory: policy.
  auto again = Upk(InitArgs());
  EXPECT_EQ(again.code, 1) << again.out;
  EXPECT_NE(again.out.find("not empty"), std::string::npos);

  // A key of the wrong role: policy, naming the offending key file.
  auto wrong = Upk("repo publish " + Quote(repo_) + " --targets-key " + Key("other") + " --snapshot-key " +
                   Key("snapshot") + " --timestamp-key " + Key("timestamp"));
  EXPECT_EQ(wrong.code, 1) << wrong.out;
  EXPECT_NE(wrong.out.find("other.key"), std::string::npos) << wrong.out;
  EXPECT_NE(wrong.out.find("not a targets key"), std::string::npos) << wrong.out;
  auto wrong_json = Upk("--json repo timestamp " + Quote(repo_) + " --timestamp-key " + Key("snapshot"), false);
  EXPECT_EQ(wrong_json.code, 1);
  auto ej = ParseJson(wrong_json.out);
  ASSERT_TRUE(ej.ok()) << wrong_json.out;
  EXPECT_EQ((*ej)["error"]["code"], "policy");

  // Re-adding a different file under one path: policy, unless --replace.
  ASSERT_EQ(Upk("repo add " + Quote(repo_) + " " + File("v1", "one") + " --path app.bin").code, 0);
  auto conflict = Upk("repo add " + Quote(repo_) + " " + File("v2", "two") + " --path app.bin");
  EXPECT_EQ(conflict.code, 1) << conflict.out;
  EXPECT_NE(conflict.out.find("--replace"), std::string::npos);
  EXPECT_EQ(Upk("repo add " + Quote(repo_) + " " + Quote((dir_ / "v2").string()) + " --path app.bin --replace").code, 0);

  // Usage and input errors: 2.
  EXPECT_EQ(Upk("repo publish " + Quote(repo_)).code, 2);  // keys missing
  EXPECT_EQ(Upk("repo add " + Quote(repo_) + " " + Quote((dir_ / "missing").string())).code, 2);
  EXPECT_EQ(Upk("repo add " + Quote(repo_) + " " + File("x", "x") + " --path 'bad path'").code, 2);
  EXPECT_EQ(Upk("repo timestamp " + Quote(repo_) + " --timestamp-key " + Key("timestamp") + " --expires-at tomorrow").code, 2);
  EXPECT_EQ(Upk("repo publish " + Quote(repo_) + PublishKeys() + " --expires targets=0").code, 2);
  EXPECT_EQ(Upk("repo publish " + Quote(repo_) + " --targets-key " + Quote((dir_ / "nokey").string()) +
                " --snapshot-key " + Key("snapshot") + " --timestamp-key " + Key("timestamp"))
                .code,
            2);
  EXPECT_EQ(Upk("repo status " + Quote((dir_ / "nowhere").string())).code, 2);
  EXPECT_EQ(Upk("repo").code, 2);

  // Help everywhere.
  for (const char* sub : {"", " init", " add", " remove", " publish", " timestamp", " rotate-root", " status"}) {
    auto help = Upk(std::string("repo") + sub + " --help");
    EXPECT_EQ(help.code, 0) << sub;
    EXPECT_NE(help.out.find("Usage"), std::string::npos) << sub;
  }
}

TEST_F(UpkRepoCli, PackagesArePublishedUnderNameAndVersion) {
  ASSERT_EQ(Upk(InitArgs()).code, 0);
  fs::create_directories(dir_ / "payload");
  File("payload/hello.txt", "hello from a package");
  const std::string upk = Quote((dir_ / "odd-file-name.upk").string());
  auto pack = Upk("pack --name hello --version 1.2.3 --kind addon --key " + Key("other") + " --dir " +
                  Quote((dir_ / "payload").string()) + " -o " + upk);
  ASSERT_EQ(pack.code, 0) << pack.out;

  auto add = Upk("--json repo add " + Quote(repo_) + " " + upk, false);
  ASSERT_EQ(add.code, 0) << add.out;
  auto aj = ParseJson(add.out);
  ASSERT_TRUE(aj.ok()) << add.out;
  const Json& t = (*aj)["added"][0];
  EXPECT_EQ(t["path"], "hello/hello-1.2.3.upk");
  EXPECT_EQ(t["custom"], (Json{{"upkeep", {{"name", "hello"}, {"version", "1.2.3"}, {"kind", "addon"}}}}));
  auto bytes = ReadFileBounded(dir_ / "odd-file-name.upk", 1u << 20);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(t["hashes"]["sha256"], Sha256Hex(*bytes));
  EXPECT_TRUE(fs::exists(fs::path(repo_) / "targets" / "hello" / (Sha256Hex(*bytes) + ".hello-1.2.3.upk")));

  ASSERT_EQ(Upk("repo publish " + Quote(repo_) + PublishKeys()).code, 0);
  auto targets = ParseJson(*ReadFileBounded(fs::path(repo_) / "metadata" / "2.targets.json", 1u << 20));
  ASSERT_TRUE(targets.ok());
  EXPECT_EQ((*targets)["signed"]["targets"]["hello/hello-1.2.3.upk"]["custom"]["upkeep"]["kind"], "addon");

  // A file that only claims to be a package is refused with the reason.
  auto fake = Upk("repo add " + Quote(repo_) + " " + File("fake.upk", "not a tar archive"));
  EXPECT_NE(fake.code, 0);
  EXPECT_NE(fake.out.find("fake.upk"), std::string::npos) << fake.out;
}

}  // namespace
}  // namespace upkeep
