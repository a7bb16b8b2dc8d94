// The operator CLI against the real updater service: `upk repo bootstrap`, `upk publish`,
// `upk channel ...`, `upk yank`, `upk audit` and `upk token create` run in-process through
// upk::Main against ServiceFixture (real PostgreSQL, FakeKeyserver), and the server's state is
// checked through the API and the served /repo/ files. The offline keys are publish_support's
// TestKeys(), written to key files as an operator would keep them.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "publish_support.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::updater::test {
namespace {

namespace fs = std::filesystem;

struct UpkRun {
  int code;
  std::string out, err;
};

UpkRun Upk(std::vector<std::string> args) {
  args.insert(args.begin(), "upk");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  int code = upk::Main(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

void WriteFile(const fs::path& p, const std::string& data, unsigned mode = 0600) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << data;
  ::chmod(p.c_str(), mode);
}

class UpkPublishTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(work_);
    ASSERT_TRUE(TestKeys().root.Save(root_key_).ok());
    ASSERT_TRUE(TestKeys().targets.Save(targets_key_).ok());
    for (const char* role : {"admin", "publisher", "support"}) {
      WriteFile(work_ / (std::string(role) + ".token"), f_.token(role) + "\n");
    }
    WriteFile(work_ / "src/bin/tool", "#!/bin/sh\necho tool\n", 0755);
    WriteFile(work_ / "src/etc/tool.conf", std::string(200000, 'c'), 0644);
  }

  UpkRun As(const std::string& role, std::vector<std::string> args) {
    args.push_back("--server");
    args.push_back("http://127.0.0.1:" + std::to_string(f_.port()));
    args.push_back("--token-file");
    args.push_back((work_ / (role + ".token")).string());
    return Upk(args);
  }

  std::string Pack(const std::string& version) {
    const std::string out = (work_ / ("tool-" + version + ".upk")).string();
    UpkRun r = Upk({"pack", "--name", "tool", "--version", version, "--kind", "software", "--key", targets_key_,
                    "--dir", (work_ / "src").string(), "-o", out});
    EXPECT_EQ(r.code, 0) << r.err;
    return out;
  }

  ServiceFixture f_;
  TempDir tmp_;
  fs::path work_ = tmp_.path() / "operator";
  std::string root_key_ = (work_ / "root.key").string();
  std::string targets_key_ = (work_ / "targets.key").string();
};

TEST_F(UpkPublishTest, BootstrapPublishChannelsYankAuditAndTokens) {
  // Bootstrap needs an admin token: a publisher is refused by policy (exit 1).
  UpkRun denied = As("publisher", {"repo", "bootstrap", "--root-key", root_key_, "--targets-key", targets_key_});
  EXPECT_EQ(denied.code, 1) << denied.err;
  EXPECT_NE(denied.err.find("(forbidden, HTTP 403)"), std::string::npos) << denied.err;

  UpkRun boot = As("admin", {"repo", "bootstrap", "--root-key", root_key_, "--targets-key", targets_key_});
  ASSERT_EQ(boot.code, 0) << boot.err << boot.out;
  Reply repo = f_.Call("GET", "/api/v1/repository", "", f_.token("support"));
  ASSERT_EQ(repo.status, 200);
  EXPECT_EQ(repo.json["initialised"], true);
  EXPECT_EQ(repo.json["root"]["signed"]["roles"]["targets"]["keyids"], Json::array({TestKeys().targets.keyid()}));
  EXPECT_EQ(As("admin", {"repo", "bootstrap", "--root-key", root_key_, "--targets-key", targets_key_}).code, 1);

  UpkRun channel = As("publisher", {"channel", "create", "beta", "--description", "early adopters"});
  ASSERT_EQ(channel.code, 0) << channel.err;

  const std::string pkg = Pack("2.3.4");
  UpkRun pub = As("publisher", {"publish", pkg, "--targets-key", targets_key_, "--channel", "stable"});
  ASSERT_EQ(pub.code, 0) << pub.err << pub.out;
  EXPECT_NE(pub.out.find("published tool 2.3.4 (software) as tool/tool-2.3.4.upk.enc"), std::string::npos) << pub.out;

  Reply release = f_.Call("GET", "/api/v1/releases/tool/2.3.4", "", f_.token("support"));
  ASSERT_EQ(release.status, 200) << release.body;
  EXPECT_EQ(release.json["release"]["target_path"], "tool/tool-2.3.4.upk.enc");
  EXPECT_EQ(release.json["release"]["channels"], Json::array({"stable"}));
  // The served targets list the blob the updater stores, with the right hash.
  Json targets = CurrentTargets(f_);
  EXPECT_EQ(targets["signed"]["version"], 2);
  const Json& target = targets["signed"]["targets"]["tool/tool-2.3.4.upk.enc"];
  ASSERT_TRUE(target.is_object()) << targets.dump();
  Reply blob = f_.Call("GET", "/api/v1/blobs/sha256/" + target["hashes"]["sha256"].get<std::string>());
  ASSERT_EQ(blob.status, 200);
  EXPECT_EQ(Sha256Hex(blob.body), target["hashes"]["sha256"]);
  EXPECT_EQ(blob.body.size(), target["length"].get<std::size_t>());

  // Channels: add to beta, listed.
  ASSERT_EQ(As("publisher", {"channel", "add", "beta", "tool", "2.3.4"}).code, 0);
  UpkRun list = As("support", {"channel", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("beta"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("tool-2.3.4"), std::string::npos) << list.out;
  UpkRun unknown_channel = As("publisher", {"channel", "add", "nope", "tool", "2.3.4"});
  EXPECT_EQ(unknown_channel.code, 2) << unknown_channel.err;
  EXPECT_NE(unknown_channel.err.find("HTTP 404"), std::string::npos) << unknown_channel.err;

  // A second release, then yank the first.
  ASSERT_EQ(As("publisher", {"publish", Pack("2.3.5"), "--targets-key", targets_key_}).code, 0);
  UpkRun yank = As("publisher", {"yank", "tool", "2.3.4", "--targets-key", targets_key_, "--reason", "breaks LDAP"});
  ASSERT_EQ(yank.code, 0) << yank.err << yank.out;
  targets = CurrentTargets(f_);
  EXPECT_EQ(targets["signed"]["version"], 4);
  EXPECT_FALSE(targets["signed"]["targets"].contains("tool/tool-2.3.4.upk.enc"));
  EXPECT_TRUE(targets["signed"]["targets"].contains("tool/tool-2.3.5.upk.enc"));
  release = f_.Call("GET", "/api/v1/releases/tool/2.3.4", "", f_.token("support"));
  EXPECT_FALSE(release.json["release"]["yanked_at"].is_null()) << release.body;
  EXPECT_EQ(As("publisher", {"yank", "tool", "2.3.4", "--targets-key", targets_key_, "--reason", "again"}).code, 1);

  // The audit log names what happened; --json gives the server's document.
  UpkRun audit = As("support", {"--json", "audit", "--limit", "50"});
  ASSERT_EQ(audit.code, 0) << audit.err;
  auto entries = ParseJson(audit.out);
  ASSERT_TRUE(entries.ok()) << audit.out;
  std::set<std::string> actions;
  for (const auto& e : (*entries)["entries"]) actions.insert(e["action"].get<std::string>());
  for (const char* a : {"repository.bootstrap", "blob.upload", "release.publish", "release.yank", "channel.create"}) {
    EXPECT_TRUE(actions.count(a)) << a << " in " << audit.out;
  }

  // A token made by upk works for upk; only an admin may make one.
  UpkRun made = As("admin", {"token", "create", "--name", "ci", "--role", "support"});
  ASSERT_EQ(made.code, 0) << made.err;
  ASSERT_FALSE(made.out.empty());
  WriteFile(work_ / "ci.token", made.out);
  EXPECT_EQ(As("ci", {"channel", "list"}).code, 0);
  EXPECT_EQ(As("publisher", {"token", "create", "--name", "x", "--role", "admin"}).code, 1);
}

TEST_F(UpkPublishTest, RolloutsAndAppliances) {
  ASSERT_EQ(As("admin", {"repo", "bootstrap", "--root-key", root_key_, "--targets-key", targets_key_}).code, 0);
  ASSERT_EQ(As("publisher", {"publish", Pack("3.0.0"), "--targets-key", targets_key_, "--channel", "stable"}).code, 0);

  UpkRun created =
      As("publisher", {"--json", "rollout", "create", "tool", "3.0.0", "--channel", "stable", "--wave", "group:lab",
                       "--wave", "10", "--wave", "100", "--success-threshold", "95", "--error-threshold", "5"});
  ASSERT_EQ(created.code, 0) << created.err << created.out;
  auto rollout = ParseJson(created.out);
  ASSERT_TRUE(rollout.ok()) << created.out;
  const std::string id = (*rollout)["rollout"]["id"].is_string() ? (*rollout)["rollout"]["id"].get<std::string>()
                                                                 : (*rollout)["rollout"]["id"].dump();
  EXPECT_EQ((*rollout)["rollout"]["waves"].size(), 3u);
  // One per release and channel.
  UpkRun twice = As("publisher", {"rollout", "create", "tool", "3.0.0", "--channel", "stable", "--wave", "100",
                                  "--success-threshold", "95", "--error-threshold", "5"});
  EXPECT_EQ(twice.code, 1) << twice.err;
  EXPECT_NE(twice.err.find("HTTP 409"), std::string::npos) << twice.err;

  UpkRun status = As("support", {"rollout", "status", id});
  ASSERT_EQ(status.code, 0) << status.err;
  EXPECT_NE(status.out.find("tool 3.0.0 in stable"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("group:lab"), std::string::npos) << status.out;

  UpkRun paused = As("support", {"rollout", "pause", id, "--reason", "tickets from ACME"});
  ASSERT_EQ(paused.code, 0) << paused.err;
  UpkRun list = As("support", {"rollout", "list", "--state", "paused"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("tool 3.0.0"), std::string::npos) << list.out;
  EXPECT_EQ(As("support", {"rollout", "abort", id}).code, 1) << "abort needs the publisher role";
  ASSERT_EQ(As("support", {"rollout", "resume", id}).code, 0);
  ASSERT_EQ(As("publisher", {"rollout", "abort", id, "--reason", "superseded"}).code, 0);
  EXPECT_EQ(As("publisher", {"rollout", "pause", id}).code, 1) << "an aborted rollout can't be paused (409)";

  UpkRun appliances = As("support", {"appliance", "list", "--channel", "stable", "--limit", "10"});
  ASSERT_EQ(appliances.code, 0) << appliances.err;
  EXPECT_NE(appliances.out.find("APPLIANCE"), std::string::npos) << appliances.out;
  UpkRun missing = As("support", {"appliance", "show", "apl-kzdvvj2umnduyauf35o36k6kw462mujv"});
  EXPECT_EQ(missing.code, 2) << missing.err;
  EXPECT_NE(missing.err.find("HTTP 404"), std::string::npos) << missing.err;
}

TEST_F(UpkPublishTest, ApplianceSetAllowMajor) {
  // An appliance the updater knows: enrolled at the (fake) keyserver, checked in once.
  auto identity = trust::ApplianceIdentity::Generate();
  f_.keyserver().AddAppliance(identity);
  const Json checkin{{"installed", {{"base", "1.0.0"}}}, {"agent_version", "1.0.0"},
                     {"time", FormatTimestamp(SystemClock::Instance().Now())}};
  ASSERT_EQ(f_.ApplianceCall(identity, "POST", "/api/v1/checkin", checkin.dump()).status, 200);
  const std::string id = identity.appliance_id();
  auto allow_major = [&] {
    Reply r = f_.Call("GET", "/api/v1/appliances/" + id, "", f_.token("support"));
    EXPECT_EQ(r.status, 200) << r.body;
    return r.json["appliance"]["allow_major"];
  };

  UpkRun set = As("publisher", {"appliance", "set", id, "--allow-major", "software", "--allow-major", "base"});
  ASSERT_EQ(set.code, 0) << set.err;
  EXPECT_EQ(allow_major(), Json::array({"base", "software"}));
  UpkRun show = As("support", {"appliance", "show", id});
  ASSERT_EQ(show.code, 0) << show.err;
  EXPECT_NE(show.out.find("allow major base,software"), std::string::npos) << show.out;

  // Refused by upk itself (exit 2) or by the server (400); nothing changes.
  EXPECT_EQ(As("publisher", {"appliance", "set", id, "--allow-major", "base", "--clear-allow-major"}).code, 2);
  UpkRun dup = As("publisher", {"appliance", "set", id, "--allow-major", "base", "--allow-major", "base"});
  EXPECT_NE(dup.code, 0);
  EXPECT_NE(dup.err.find("allow_major"), std::string::npos) << dup.err;
  EXPECT_NE(As("publisher", {"appliance", "set", id, "--allow-major", "Bad Name"}).code, 0);
  EXPECT_NE(As("support", {"appliance", "set", id, "--clear-allow-major"}).code, 0) << "needs the publisher role";
  EXPECT_EQ(allow_major(), Json::array({"base", "software"}));

  UpkRun cleared = As("publisher", {"appliance", "set", id, "--clear-allow-major"});
  ASSERT_EQ(cleared.code, 0) << cleared.err;
  EXPECT_EQ(allow_major(), Json::array());
}

}  // namespace
}  // namespace upkeep::updater::test
