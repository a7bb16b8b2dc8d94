// Tests of the static TUF repository writer: metadata shape, signatures, versions, hash-prefixed
// target files, key checks, conflicts, expiry and failure atomicity.
#include "upkeep/tuf/repository.hpp"

#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep::tuf {
namespace {

namespace fs = std::filesystem;
using packages::PrivateKey;
using namespace std::chrono_literals;

const SysTime kT0 = ParseTimestamp("2030-06-01T12:00:00Z").value();

fs::path MakeTempDir() {
  std::string tmpl = (fs::temp_directory_path() / "upk-repo-test-XXXXXX").string();
  char* made = ::mkdtemp(tmpl.data());
  EXPECT_NE(made, nullptr);
  return fs::path(tmpl);
}

std::string ReadAll(const fs::path& p) {
  auto text = ReadFileBounded(p, 64u << 20);
  EXPECT_TRUE(text.ok()) << p;
  return text.ok() ? *text : std::string();
}

Json ReadJson(const fs::path& p) {
  auto j = ParseJson(ReadAll(p));
  EXPECT_TRUE(j.ok()) << p;
  return j.ok() ? *j : Json();
}

std::string RandomBytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

void WriteFile(const fs::path& p, const std::string& data) { ASSERT_TRUE(WriteFileAtomic(p, data).ok()); }

// Checks every signature independently of the writer's own verification helper.
void ExpectSignedBy(const Json& md, const std::vector<const PrivateKey*>& keys) {
  ASSERT_TRUE(md.contains("signatures"));
  auto canonical = CanonicalJson(md["signed"]);
  ASSERT_TRUE(canonical.ok());
  std::set<std::string> seen;
  for (const auto& sig : md["signatures"]) {
    const std::string keyid = sig["keyid"].get<std::string>();
    seen.insert(keyid);
    const PrivateKey* signer = nullptr;
    for (const auto* k : keys) {
      if (k->keyid() == keyid) signer = k;
    }
    ASSERT_NE(signer, nullptr) << "unexpected signer " << keyid;
    auto raw = FromHex(sig["sig"].get<std::string>());
    ASSERT_TRUE(raw.ok());
    EXPECT_TRUE(signer->public_key().Verify(*canonical, *raw));
    // The same signature must not verify over different content.
    EXPECT_FALSE(signer->public_key().Verify(*canonical + " ", *raw));
  }
  EXPECT_EQ(seen.size(), keys.size());
  EXPECT_EQ(md["signatures"].size(), keys.size());
}

std::set<std::string> ListDir(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) out.insert(fs::relative(e.path(), dir).string());
  return out;
}

class RepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = MakeTempDir();
    dir_ = base_ / "repo";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  InitOptions Options() const {
    InitOptions o;
    o.root_keys = {root_};
    o.targets_keys = {targets_};
    o.snapshot_keys = {snapshot_};
    o.timestamp_keys = {timestamp_};
    return o;
  }
  PublishKeys Keys() const { return PublishKeys{{targets_}, {snapshot_}, {timestamp_}}; }

  void Init() { ASSERT_TRUE(RepositoryWriter(dir_, clock_).Init(Options()).ok()); }

  fs::path Meta(const std::string& name) const { return dir_ / "metadata" / name; }

  fs::path base_, dir_;
  FakeClock clock_{kT0};
  PrivateKey root_ = PrivateKey::GenerateEd25519();
  PrivateKey root2_ = PrivateKey::GenerateEd25519();
  PrivateKey targets_ = PrivateKey::GenerateEd25519();
  PrivateKey snapshot_ = PrivateKey::GenerateEd25519();
  PrivateKey timestamp_ = PrivateKey::GenerateEd25519();
  PrivateKey stranger_ = PrivateKey::GenerateEd25519();
};

// The fixture's writer needs dir_, known only after SetUp; tests use W().
#define W() RepositoryWriter(dir_, clock_)

TEST_F(RepositoryTest, InitWritesSignedSpecShapedMetadata) {
  ASSERT_TRUE(W().Init(Options()).ok());
  EXPECT_EQ(ListDir(dir_ / "metadata"),
            (std::set<std::string>{"1.root.json", "root.json", "1.targets.json", "1.snapshot.json", "timestamp.json"}));
  EXPECT_TRUE(fs::is_directory(dir_ / "targets"));
  EXPECT_EQ(ReadAll(Meta("1.root.json")), ReadAll(Meta("root.json")));

  Json root = ReadJson(Meta("root.json"));
  const Json& rs = root["signed"];
  EXPECT_EQ(rs["_type"], "root");
  EXPECT_EQ(rs["spec_version"], kSpecVersion);
  EXPECT_EQ(rs["version"], 1);
  EXPECT_EQ(rs["consistent_snapshot"], true);
  EXPECT_EQ(rs["expires"], FormatTimestamp(kT0 + std::chrono::days(365)));
  EXPECT_EQ(rs["expires"], "2031-06-01T12:00:00Z");
  EXPECT_EQ(rs["roles"]["root"]["keyids"], Json::array({root_.keyid()}));
  EXPECT_EQ(rs["roles"]["root"]["threshold"], 1);
  EXPECT_EQ(rs["roles"]["targets"]["keyids"], Json::array({targets_.keyid()}));
  EXPECT_EQ(rs["roles"]["snapshot"]["keyids"], Json::array({snapshot_.keyid()}));
  EXPECT_EQ(rs["roles"]["timestamp"]["keyids"], Json::array({timestamp_.keyid()}));
  EXPECT_EQ(rs["keys"].size(), 4u);
  EXPECT_EQ(rs["keys"][targets_.keyid()], targets_.public_key().ToJson());
  ExpectSignedBy(root, {&root_});

  Json targets = ReadJson(Meta("1.targets.json"));
  EXPECT_EQ(targets["signed"]["_type"], "targets");
  EXPECT_EQ(targets["signed"]["spec_version"], kSpecVersion);
  EXPECT_EQ(targets["signed"]["targets"], Json::object());
  EXPECT_EQ(targets["signed"]["expires"], FormatTimestamp(kT0 + std::chrono::days(90)));
  ExpectSignedBy(targets, {&targets_});

  Json snapshot = ReadJson(Meta("1.snapshot.json"));
  EXPECT_EQ(snapshot["signed"]["_type"], "snapshot");
  EXPECT_EQ(snapshot["signed"]["meta"], (Json{{"targets.json", {{"version", 1}}}}));
  EXPECT_EQ(snapshot["signed"]["expires"], FormatTimestamp(kT0 + std::chrono::days(7)));
  ExpectSignedBy(snapshot, {&snapshot_});

  Json ts = ReadJson(Meta("timestamp.json"));
  EXPECT_EQ(ts["signed"]["_type"], "timestamp");
  EXPECT_EQ(ts["signed"]["expires"], FormatTimestamp(kT0 + std::chrono::days(1)));
  const std::string snapshot_bytes = ReadAll(Meta("1.snapshot.json"));
  const Json& sm = ts["signed"]["meta"]["snapshot.json"];
  EXPECT_EQ(sm["version"], 1);
  EXPECT_EQ(sm["length"], snapshot_bytes.size());
  EXPECT_EQ(sm["hashes"]["sha256"], Sha256Hex(snapshot_bytes));
  EXPECT_EQ(sm["hashes"]["sha512"], Sha512Hex(snapshot_bytes));
  ExpectSignedBy(ts, {&timestamp_});

  // The writer's own verification agrees, and rejects a role signed by the wrong key.
  EXPECT_TRUE(VerifyRoleSignatures(ts, rs, Role::kTimestamp).ok());
  auto wrong = VerifyRoleSignatures(ts, rs, Role::kSnapshot);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), Errc::kVerification);

  // No private key material anywhere in the repository.
  for (const auto& name : ListDir(dir_)) {
    if (fs::is_regular_file(dir_ / name)) {
      EXPECT_EQ(ReadAll(dir_ / name).find("private"), std::string::npos) << name;
    }
  }
}

TEST_F(RepositoryTest, InitWithRootThreshold) {
  auto o = Options();
  o.root_keys = {root_, root2_};
  o.root_threshold = 2;
  ASSERT_TRUE(W().Init(o).ok());
  Json root = ReadJson(Meta("root.json"));
  EXPECT_EQ(root["signed"]["roles"]["root"]["threshold"], 2);
  EXPECT_EQ(root["signed"]["roles"]["root"]["keyids"].size(), 2u);
  ExpectSignedBy(root, {&root_, &root2_});
  EXPECT_TRUE(VerifyRoleSignatures(root, root["signed"], Role::kRoot).ok());
}

TEST_F(RepositoryTest, InitRefusesNonEmptyDirAndBadThreshold) {
  fs::create_directories(dir_);
  WriteFile(dir_ / "something", "x");
  auto s = W().Init(Options());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kPolicy);
  EXPECT_NE(s.error().message().find("not empty"), std::string::npos);
  EXPECT_EQ(ListDir(dir_), std::set<std::string>{"something"});

  const fs::path other = base_ / "other";
  auto o = Options();
  o.root_threshold = 2;  // only one root key
  auto t = RepositoryWriter(other, clock_).Init(o);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().code(), Errc::kInvalidArgument);
  EXPECT_FALSE(fs::exists(other));

  // Initialising twice is refused: the second init would replace the trusted root.
  ASSERT_TRUE(RepositoryWriter(base_ / "r2", clock_).Init(Options()).ok());
  auto again = RepositoryWriter(base_ / "r2", clock_).Init(Options());
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), Errc::kPolicy);
}

TEST_F(RepositoryTest, AddCopiesToBothHashPrefixedNamesAndPublishListsIt) {
  Init();
  // Bigger than the copy buffer, so the streaming loop runs several times.
  const std::string data = RandomBytes(700 * 1024 + 13, 1);
  WriteFile(base_ / "tool.bin", data);
  AddOptions add;
  add.target_path = "tools/tool.bin";
  add.custom = Json{{"note", "hello"}};
  std::uint64_t last_progress = 0;
  add.progress = [&](std::uint64_t done, std::uint64_t total) {
    EXPECT_EQ(total, data.size());
    last_progress = done;
  };
  auto r = W().Add(base_ / "tool.bin", add);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_FALSE(r->unchanged);
  EXPECT_EQ(last_progress, data.size());
  EXPECT_EQ(r->target.sha256, Sha256Hex(data));
  EXPECT_EQ(r->target.sha512, Sha512Hex(data));
  EXPECT_EQ(r->target.length, data.size());

  const fs::path p256 = dir_ / "targets" / "tools" / (Sha256Hex(data) + ".tool.bin");
  const fs::path p512 = dir_ / "targets" / "tools" / (Sha512Hex(data) + ".tool.bin");
  EXPECT_EQ(ReadAll(p256), data);
  EXPECT_EQ(ReadAll(p512), data);
  struct stat s1 {}, s2 {};
  ASSERT_EQ(::stat(p256.c_str(), &s1), 0);
  ASSERT_EQ(::stat(p512.c_str(), &s2), 0);
  EXPECT_EQ(s1.st_ino, s2.st_ino);  // hard link, not a second copy
  EXPECT_EQ(s1.st_nlink, 2u);
  EXPECT_EQ(ListDir(dir_ / "targets" / "tools").size(), 2u);  // no temporary left behind
  EXPECT_TRUE(fs::exists(dir_ / "staging.json"));

  // Staged, not yet published: clients still see version 1.
  auto status = W().GetStatus();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->targets.version, 1);
  ASSERT_EQ(status->staged_adds.size(), 1u);
  EXPECT_EQ(status->staged_adds[0].path, "tools/tool.bin");
  EXPECT_TRUE(status->targets_list.empty());

  clock_.Advance(1h);
  auto pub = W().Publish(Keys(), ExpiryPolicy{});
  ASSERT_TRUE(pub.ok()) << pub.error().message();
  EXPECT_EQ(pub->targets.version, 2);
  EXPECT_EQ(pub->snapshot.version, 2);
  EXPECT_EQ(pub->timestamp.version, 2);
  EXPECT_EQ(pub->target_count, 1u);
  EXPECT_FALSE(fs::exists(dir_ / "staging.json"));

  Json targets = ReadJson(Meta("2.targets.json"));
  ExpectSignedBy(targets, {&targets_});
  EXPECT_EQ(targets["signed"]["version"], 2);
  EXPECT_EQ(targets["signed"]["expires"], FormatTimestamp(kT0 + 1h + std::chrono::days(90)));
  const Json& t = targets["signed"]["targets"]["tools/tool.bin"];
  EXPECT_EQ(t["length"], data.size());
  EXPECT_EQ(t["hashes"]["sha256"], Sha256Hex(data));
  EXPECT_EQ(t["hashes"]["sha512"], Sha512Hex(data));
  EXPECT_EQ(t["custom"]["note"], "hello");

  Json snapshot = ReadJson(Meta("2.snapshot.json"));
  ExpectSignedBy(snapshot, {&snapshot_});
  EXPECT_EQ(snapshot["signed"]["meta"]["targets.json"]["version"], 2);
  Json ts = ReadJson(Meta("timestamp.json"));
  ExpectSignedBy(ts, {&timestamp_});
  EXPECT_EQ(ts["signed"]["version"], 2);
  EXPECT_EQ(ts["signed"]["meta"]["snapshot.json"]["version"], 2);
  EXPECT_EQ(ts["signed"]["meta"]["snapshot.json"]["hashes"]["sha256"], Sha256Hex(ReadAll(Meta("2.snapshot.json"))));
  // Older versions stay for clients that are mid-update.
  EXPECT_TRUE(fs::exists(Meta("1.targets.json")));

  // Another publish (nothing staged) still moves every version forward.
  auto pub2 = W().Publish(Keys(), ExpiryPolicy{});
  ASSERT_TRUE(pub2.ok());
  EXPECT_EQ(pub2->targets.version, 3);
  EXPECT_EQ(pub2->snapshot.version, 3);
  EXPECT_EQ(pub2->timestamp.version, 3);
  EXPECT_EQ(ReadJson(Meta("3.targets.json"))["signed"]["targets"], targets["signed"]["targets"]);
  status = W().GetStatus();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->timestamp.version, 3);
  ASSERT_EQ(status->targets_list.size(), 1u);
  EXPECT_TRUE(status->staged_adds.empty());
  EXPECT_TRUE(status->consistent_snapshot);
}

TEST_F(RepositoryTest, WrongKeysAreRefusedAndWriteNothing) {
  Init();
  const std::string ts_before = ReadAll(Meta("timestamp.json"));
  auto keys = Keys();
  keys.targets = {stranger_};
  auto r = W().Publish(keys, ExpiryPolicy{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPolicy);
  EXPECT_NE(r.error().message().find(stranger_.keyid()), std::string::npos);
  EXPECT_NE(r.error().message().find("targets"), std::string::npos);

  keys = Keys();
  keys.snapshot = {timestamp_};  // a real repository key, but for another role
  r = W().Publish(keys, ExpiryPolicy{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPolicy);

  keys = Keys();
  keys.timestamp.clear();
  r = W().Publish(keys, ExpiryPolicy{});
  ASSERT_FALSE(r.ok());

  auto t = W().RefreshTimestamp({snapshot_}, ExpiryPolicy{});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().code(), Errc::kPolicy);

  EXPECT_EQ(ReadAll(Meta("timestamp.json")), ts_before);
  EXPECT_FALSE(fs::exists(Meta("2.targets.json")));
  EXPECT_FALSE(fs::exists(Meta("2.snapshot.json")));
}

TEST_F(RepositoryTest, ReAddingADifferentFileNeedsReplace) {
  Init();
  WriteFile(base_ / "a.bin", "first contents");
  WriteFile(base_ / "b.bin", "second contents");
  AddOptions opts;
  opts.target_path = "app.bin";
  ASSERT_TRUE(W().Add(base_ / "a.bin", opts).ok());
  ASSERT_TRUE(W().Publish(Keys(), ExpiryPolicy{}).ok());

  // The same bytes again: nothing to do.
  auto same = W().Add(base_ / "a.bin", opts);
  ASSERT_TRUE(same.ok());
  EXPECT_TRUE(same->unchanged);
  EXPECT_FALSE(fs::exists(dir_ / "staging.json"));

  const auto before = ListDir(dir_ / "targets");
  auto conflict = W().Add(base_ / "b.bin", opts);
  ASSERT_FALSE(conflict.ok());
  EXPECT_EQ(conflict.error().code(), Errc::kPolicy);
  EXPECT_NE(conflict.error().message().find("app.bin"), std::string::npos);
  EXPECT_NE(conflict.error().message().find("--replace"), std::string::npos);
  EXPECT_EQ(ListDir(dir_ / "targets"), before);  // the copy made while hashing is gone
  EXPECT_FALSE(fs::exists(dir_ / "staging.json"));

  opts.replace = true;
  auto replaced = W().Add(base_ / "b.bin", opts);
  ASSERT_TRUE(replaced.ok()) << replaced.error().message();
  ASSERT_TRUE(W().Publish(Keys(), ExpiryPolicy{}).ok());
  Json targets = ReadJson(Meta("3.targets.json"));
  EXPECT_EQ(targets["signed"]["targets"]["app.bin"]["hashes"]["sha256"], Sha256Hex("second contents"));
  EXPECT_EQ(targets["signed"]["targets"].size(), 1u);
}

TEST_F(RepositoryTest, ExpiryFollowsTheClockAndCanBeExplicit) {
  Init();
  ExpiryPolicy policy;
  ASSERT_TRUE(policy.Override("timestamp=3").ok());
  clock_.Advance(std::chrono::days(2));
  auto t = W().RefreshTimestamp({timestamp_}, policy);
  ASSERT_TRUE(t.ok()) << t.error().message();
  EXPECT_EQ(t->version, 2);
  EXPECT_EQ(ReadJson(Meta("timestamp.json"))["signed"]["expires"], FormatTimestamp(kT0 + std::chrono::days(5)));

  const SysTime past = ParseTimestamp("2000-01-01T00:00:00Z").value();
  t = W().RefreshTimestamp({timestamp_}, policy, past);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->version, 3);
  Json ts = ReadJson(Meta("timestamp.json"));
  EXPECT_EQ(ts["signed"]["expires"], "2000-01-01T00:00:00Z");
  EXPECT_EQ(ts["signed"]["version"], 3);
  ExpectSignedBy(ts, {&timestamp_});
  // Still points at the current snapshot.
  EXPECT_EQ(ts["signed"]["meta"]["snapshot.json"]["version"], 1);
  EXPECT_EQ(ts["signed"]["meta"]["snapshot.json"]["hashes"]["sha256"], Sha256Hex(ReadAll(Meta("1.snapshot.json"))));

  // A clock in the past yields metadata that is already expired for everyone else.
  FakeClock old(ParseTimestamp("2001-01-01T00:00:00Z").value());
  auto pub = RepositoryWriter(dir_, old).Publish(Keys(), ExpiryPolicy{});
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(ReadJson(Meta("timestamp.json"))["signed"]["expires"], "2001-01-02T00:00:00Z");
  EXPECT_EQ(pub->timestamp.version, 4);
}

TEST_F(RepositoryTest, ExpiryOverrideParsing) {
  ExpiryPolicy p;
  EXPECT_TRUE(p.Override("targets=30").ok());
  EXPECT_EQ(p.targets, std::chrono::days(30));
  EXPECT_EQ(p.For(Role::kTargets), std::chrono::days(30));
  EXPECT_EQ(p.root, std::chrono::days(365));
  for (const char* bad : {"targets", "targets=", "targets=0", "targets=-1", "targets=1.5", "bogus=3", "=3",
                          "targets=99999999999", "root=36501"}) {
    auto s = p.Override(bad);
    EXPECT_FALSE(s.ok()) << bad;
    if (!s.ok()) {
      EXPECT_EQ(s.error().code(), Errc::kInvalidArgument) << bad;
    }
  }
  EXPECT_EQ(p.targets, std::chrono::days(30));
}

TEST_F(RepositoryTest, TargetPathRules) {
  for (const char* good : {"a", "web/web-1.2.3.upk", "x/y/z_1+2.tar.gz", "A.B"}) {
    EXPECT_TRUE(CheckTargetPath(good).ok()) << good;
  }
  for (const char* bad : {"", "/abs", "a//b", "a/./b", "../x", "a/..", "a b", "a?b", "a#b", "a%20", "a\\b", "é"}) {
    auto s = CheckTargetPath(bad);
    EXPECT_FALSE(s.ok()) << bad;
    if (!s.ok()) {
      EXPECT_EQ(s.error().code(), Errc::kInvalidArgument) << bad;
    }
  }
  EXPECT_FALSE(CheckTargetPath(std::string(121, 'a')).ok());
  EXPECT_TRUE(CheckTargetPath(std::string(120, 'a')).ok());
  EXPECT_FALSE(CheckTargetPath(std::string(300, 'a') + "/" + std::string(300, 'b')).ok());
}

TEST_F(RepositoryTest, FailuresLeaveNothingHalfWritten) {
  Init();
  const auto meta_before = ListDir(dir_ / "metadata");
  const std::string ts_before = ReadAll(Meta("timestamp.json"));

  // A missing source file, a directory, and a bad target path.
  auto r = W().Add(base_ / "missing.bin", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kNotFound);
  fs::create_directories(base_ / "adir");
  r = W().Add(base_ / "adir", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  WriteFile(base_ / "ok.bin", "payload");
  AddOptions bad;
  bad.target_path = "../escape.bin";
  r = W().Add(base_ / "ok.bin", bad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  EXPECT_TRUE(ListDir(dir_ / "targets").empty());
  EXPECT_FALSE(fs::exists(dir_ / "staging.json"));
  EXPECT_FALSE(fs::exists(base_ / "escape.bin"));

  // A staged target whose file vanished from targets/ is not published.
  auto added = W().Add(base_ / "ok.bin", {});
  ASSERT_TRUE(added.ok());
  fs::remove(dir_ / "targets" / (Sha512Hex("payload") + ".ok.bin"));
  auto pub = W().Publish(Keys(), ExpiryPolicy{});
  ASSERT_FALSE(pub.ok());
  EXPECT_EQ(pub.error().code(), Errc::kNotFound);
  EXPECT_NE(pub.error().message().find("ok.bin"), std::string::npos);
  EXPECT_EQ(ListDir(dir_ / "metadata"), meta_before);
  EXPECT_EQ(ReadAll(Meta("timestamp.json")), ts_before);

  // Adding it again restores the missing name, and then publish works.
  added = W().Add(base_ / "ok.bin", {});
  ASSERT_TRUE(added.ok());
  EXPECT_TRUE(fs::exists(dir_ / "targets" / (Sha512Hex("payload") + ".ok.bin")));
  ASSERT_TRUE(W().Publish(Keys(), ExpiryPolicy{}).ok());

  // Not a repository at all.
  fs::create_directories(base_ / "empty");
  auto st = RepositoryWriter(base_ / "empty", clock_).Publish(Keys(), ExpiryPolicy{});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kNotFound);
  EXPECT_NE(st.error().message().find("repo init"), std::string::npos);
  EXPECT_TRUE(fs::is_empty(base_ / "empty"));  // not even a lock file left in a mistyped DIR

  // Corrupt published metadata is reported, not trusted.
  WriteFile(Meta("timestamp.json"), "{\"signed\": 1}");
  auto corrupt = W().Publish(Keys(), ExpiryPolicy{});
  ASSERT_FALSE(corrupt.ok());
  EXPECT_EQ(corrupt.error().code(), Errc::kParse);
  EXPECT_NE(corrupt.error().message().find("timestamp.json"), std::string::npos);
}

TEST_F(RepositoryTest, RemoveYanksATargetButKeepsItsFiles) {
  Init();
  WriteFile(base_ / "one.bin", "one");
  WriteFile(base_ / "two.bin", "two");
  ASSERT_TRUE(W().Add(base_ / "one.bin", {}).ok());
  ASSERT_TRUE(W().Add(base_ / "two.bin", {}).ok());
  ASSERT_TRUE(W().Publish(Keys(), ExpiryPolicy{}).ok());
  ASSERT_TRUE(W().Remove("one.bin").ok());
  auto missing = W().Remove("never.bin");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
  auto status = W().GetStatus();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->staged_removals, std::vector<std::string>{"one.bin"});
  ASSERT_TRUE(W().Publish(Keys(), ExpiryPolicy{}).ok());
  Json targets = ReadJson(Meta("3.targets.json"));
  EXPECT_FALSE(targets["signed"]["targets"].contains("one.bin"));
  EXPECT_TRUE(targets["signed"]["targets"].contains("two.bin"));
  EXPECT_TRUE(fs::exists(dir_ / "targets" / (Sha256Hex("one") + ".one.bin")));
}

TEST_F(RepositoryTest, RotateRootIsSignedByOldAndNewKeys) {
  Init();
  Json old_root = ReadJson(Meta("root.json"));
  RotateRootOptions o;
  o.old_root_keys = {root_};
  o.new_root_keys = {root2_};
  o.targets_keys = {stranger_.public_key()};
  auto r = W().RotateRoot(o);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->version, 2);
  Json new_root = ReadJson(Meta("2.root.json"));
  EXPECT_EQ(ReadAll(Meta("2.root.json")), ReadAll(Meta("root.json")));
  EXPECT_EQ(new_root["signed"]["version"], 2);
  EXPECT_EQ(new_root["signed"]["roles"]["root"]["keyids"], Json::array({root2_.keyid()}));
  EXPECT_EQ(new_root["signed"]["roles"]["targets"]["keyids"], Json::array({stranger_.keyid()}));
  EXPECT_EQ(new_root["signed"]["roles"]["snapshot"]["keyids"], Json::array({snapshot_.keyid()}));
  EXPECT_FALSE(new_root["signed"]["keys"].contains(root_.keyid()));
  ExpectSignedBy(new_root, {&root_, &root2_});
  // What a client checks when walking from version 1 to 2.
  EXPECT_TRUE(VerifyRoleSignatures(new_root, old_root["signed"], Role::kRoot).ok());
  EXPECT_TRUE(VerifyRoleSignatures(new_root, new_root["signed"], Role::kRoot).ok());

  // The old targets key is no longer accepted; the new one is.
  auto keys = Keys();
  EXPECT_FALSE(W().Publish(keys, ExpiryPolicy{}).ok());
  keys.targets = {stranger_};
  EXPECT_TRUE(W().Publish(keys, ExpiryPolicy{}).ok());

  // Rotating again needs the now-current root key.
  o.old_root_keys = {root_};
  o.targets_keys.clear();
  auto again = W().RotateRoot(o);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), Errc::kPolicy);
  EXPECT_FALSE(fs::exists(Meta("3.root.json")));
}

TEST_F(RepositoryTest, ConcurrentWritersAreRefused) {
  Init();
  int fd = ::open((dir_ / ".upk-repo.lock").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  auto r = W().Publish(Keys(), ExpiryPolicy{});
  ::close(fd);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPolicy);
  EXPECT_NE(r.error().message().find("busy"), std::string::npos);
  EXPECT_TRUE(W().Publish(Keys(), ExpiryPolicy{}).ok());
}

TEST_F(RepositoryTest, PackageTargetNaming) {
  auto m = packages::Manifest::Parse(
      R"({"name": "web", "version": "2.10.3", "kind": "software", "payload": []})");
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(PackageTargetPath(*m), "web/web-2.10.3.upk");
  EXPECT_EQ(PackageCustom(*m), (Json{{"upkeep", {{"name", "web"}, {"version", "2.10.3"}, {"kind", "software"}}}}));
  EXPECT_TRUE(CheckTargetPath(PackageTargetPath(*m)).ok());
}

}  // namespace
}  // namespace upkeep::tuf
