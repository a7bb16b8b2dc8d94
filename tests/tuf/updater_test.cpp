// The client workflow end to end against a simulated repository: happy path, root rotation,
// rollback, freeze, mix-and-match, endless data, tampered targets, delegations, naming.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "tuf_test_util.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/tuf/trusted_set.hpp"
#include "upkeep/tuf/updater.hpp"

namespace upkeep::tuf {
namespace {

namespace fs = std::filesystem;
using testing::FakeFetcher;
using testing::MetadataRequests;
using testing::RepoSim;
using testing::TestKey;
using Strings = std::vector<std::string>;

const SysTime kNow = SysTime(std::chrono::seconds(1'900'000'000));

class UpdaterTest : public ::testing::Test {
 protected:
  UpdaterTest() : repo(kNow), fetcher(repo.files), clock(kNow) {
    dir = fs::temp_directory_path() / ("tuf-updater-" + std::to_string(::getpid()) + "-" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir / "metadata");
    fs::create_directories(dir / "targets");
    Init(repo.initial_root);
  }
  ~UpdaterTest() override { fs::remove_all(dir); }

  void Init(const std::string& root) { ASSERT_TRUE(WriteFileAtomic(dir / "metadata" / "root.json", root).ok()); }

  UpdaterOptions Options() {
    UpdaterOptions o;
    o.metadata_dir = dir / "metadata";
    o.metadata_base_url = std::string(FakeFetcher::kBaseUrl) + "metadata";
    o.target_dir = dir / "targets";
    o.target_base_url = std::string(FakeFetcher::kBaseUrl) + "targets/";
    o.config = config;
    return o;
  }

  Status Refresh() {
    Updater u(Options(), fetcher, clock);
    return u.Refresh();
  }

  // The version of a trusted metadata file on disk, 0 when absent.
  std::int64_t Version(const std::string& role) {
    auto bytes = ReadFileBounded(dir / "metadata" / (role + ".json"), 1 << 24);
    if (!bytes) return 0;
    return ParseJson(*bytes).value()["signed"]["version"].get<std::int64_t>();
  }
  std::string Local(const std::string& role) {
    auto bytes = ReadFileBounded(dir / "metadata" / (role + ".json"), 1 << 24);
    return bytes ? *bytes : std::string();
  }
  Strings TargetDirEntries() {
    Strings out;
    for (const auto& e : fs::directory_iterator(dir / "targets")) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  Strings MetaRequests() {
    auto r = MetadataRequests(fetcher.requests);
    fetcher.requests.clear();
    return r;
  }

  // Downloads one target through a fresh updater; returns the error message or "".
  std::string Download(const std::string& path) {
    Updater u(Options(), fetcher, clock);
    auto info = u.GetTargetInfo(path);
    if (!info) return info.error().message();
    if (!*info) return "not found";
    if (u.FindCachedTarget(**info)) return "";
    auto got = u.DownloadTarget(**info);
    return got ? "" : got.error().message();
  }

  RepoSim repo;
  FakeFetcher fetcher;
  FakeClock clock;
  UpdaterConfig config;
  fs::path dir;
};

TEST_F(UpdaterTest, HappyPathPersistsExactBytesAndDownloads) {
  repo.AddTarget("targets", "dir/file.txt", "payload bytes");
  repo.BumpTargets();
  repo.UpdateSnapshot();

  ASSERT_TRUE(Refresh().ok());
  EXPECT_EQ(MetaRequests(), (Strings{"2.root.json", "timestamp.json", "2.snapshot.json", "2.targets.json"}));
  EXPECT_EQ(Local("root"), repo.initial_root);
  EXPECT_EQ(Local("timestamp"), repo.files.at("metadata/timestamp.json"));
  EXPECT_EQ(Local("snapshot"), repo.files.at("metadata/2.snapshot.json"));
  EXPECT_EQ(Local("targets"), repo.files.at("metadata/2.targets.json"));

  // A second refresh with nothing new fetches only root N+1 and the timestamp.
  ASSERT_TRUE(Refresh().ok());
  EXPECT_EQ(MetaRequests(), (Strings{"2.root.json", "timestamp.json"}));

  EXPECT_EQ(Download("dir/file.txt"), "");
  EXPECT_EQ(TargetDirEntries(), Strings{"dir%2Ffile.txt"});
  EXPECT_EQ(ReadFileBounded(dir / "targets" / "dir%2Ffile.txt", 1000).value(), "payload bytes");
  EXPECT_EQ(fetcher.requests.back(), "targets/dir/" + Sha256Hex("payload bytes") + ".file.txt");
  // Cached: a second download does not fetch the file again.
  fetcher.requests.clear();
  EXPECT_EQ(Download("dir/file.txt"), "");
  for (const auto& r : fetcher.requests) EXPECT_NE(r.rfind("targets/", 0), 0u) << r;
  EXPECT_EQ(Download("missing.txt"), "not found");
}

TEST_F(UpdaterTest, WithoutConsistentSnapshotsNamesAreUnversioned) {
  RepoSim plain(kNow, /*consistent_snapshot=*/false);
  plain.AddTarget("targets", "a/b.bin", "bbb");
  plain.BumpTargets();
  plain.UpdateSnapshot();
  FakeFetcher f(plain.files);
  Init(plain.initial_root);
  Updater u(Options(), f, clock);
  auto info = u.GetTargetInfo("a/b.bin");
  ASSERT_TRUE(info.ok()) << info.error().message();
  ASSERT_TRUE(info->has_value());
  ASSERT_TRUE(u.DownloadTarget(**info).ok());
  EXPECT_EQ(f.requests, (Strings{"metadata/2.root.json", "metadata/timestamp.json", "metadata/snapshot.json",
                                 "metadata/targets.json", "targets/a/b.bin"}));
}

TEST_F(UpdaterTest, InitialRootMustBeSelfSignedAndNothingIsFetchedOtherwise) {
  Json env = ParseJson(repo.initial_root).value();
  env["signed"]["version"] = 5;  // signature no longer matches
  Init(env.dump());
  EXPECT_FALSE(Refresh().ok());
  EXPECT_TRUE(fetcher.requests.empty());
  fs::remove(dir / "metadata" / "root.json");
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("root.json"), std::string::npos);
  EXPECT_TRUE(fetcher.requests.empty());
}

TEST_F(UpdaterTest, RootRotationWithThresholdChangeAndKeyRemoval) {
  const TestKey old_key = repo.signers["root"][0];
  const TestKey k2 = TestKey::Ed25519(), k3 = TestKey::Ecdsa();
  // v2: root keys {old, k2, k3}, threshold 2 - signed by old (v1 threshold) and two of its own.
  repo.SetRoleKeys("root", {old_key, k2, k3}, 2);
  repo.signers["root"] = {k2, k3};
  repo.BumpRoot({old_key});
  // v3: old key removed, threshold 2 of {k2, k3}; signed by k2+k3 satisfies both v2 and v3.
  repo.root["keys"].erase(old_key.keyid());
  repo.SetRoleKeys("root", {k2, k3}, 2);
  repo.BumpRoot();

  ASSERT_TRUE(Refresh().ok());
  EXPECT_EQ(Version("root"), 3);
  EXPECT_EQ(Local("root"), repo.files.at("metadata/3.root.json"));
  EXPECT_EQ(MetaRequests(), (Strings{"2.root.json", "3.root.json", "4.root.json", "timestamp.json", "1.snapshot.json",
                                     "1.targets.json"}));

  // v4 signed only by the removed key plus one current key is below the v3 threshold.
  repo.signers["root"] = {k2};
  repo.BumpRoot({old_key});
  EXPECT_FALSE(Refresh().ok());
  EXPECT_EQ(Version("root"), 3);
}

TEST_F(UpdaterTest, NewRootNotSignedByTheOldRootIsRefused) {
  const TestKey fresh = TestKey::Ed25519();
  repo.SetRoleKeys("root", {fresh});
  repo.BumpRoot();  // only the new key signs
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kVerification);
  EXPECT_NE(st.error().message().find("trusted root"), std::string::npos) << st.error().message();
  EXPECT_EQ(Local("root"), repo.initial_root);
  EXPECT_EQ(Version("timestamp"), 0);  // the cycle stopped
}

TEST_F(UpdaterTest, NewRootNotSignedByItsOwnKeysIsRefused) {
  const TestKey old_key = repo.signers["root"][0];
  const TestKey fresh = TestKey::Ed25519();
  repo.SetRoleKeys("root", {fresh});
  repo.signers["root"] = {};
  repo.BumpRoot({old_key});  // only the old key signs
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("by itself"), std::string::npos) << st.error().message();
  EXPECT_EQ(Version("root"), 1);
}

TEST_F(UpdaterTest, RootVersionSkipIsRefused) {
  repo.BumpRoot();  // v2
  repo.BumpRoot();  // v3
  // Serve v3 where v2 is expected.
  fetcher.Inject("metadata/2.root.json", {FakeFetcher::Fault::kReplace, repo.files.at("metadata/3.root.json")});
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("expected version 2"), std::string::npos) << st.error().message();
  EXPECT_EQ(Version("root"), 1);
}

TEST_F(UpdaterTest, RootUpdateStopsAtMaxRotations) {
  for (int i = 0; i < 5; ++i) repo.BumpRoot();
  config.max_root_rotations = 3;
  ASSERT_TRUE(Refresh().ok());
  EXPECT_EQ(Version("root"), 4);
  ASSERT_TRUE(Refresh().ok());
  EXPECT_EQ(Version("root"), 6);
}

TEST_F(UpdaterTest, RootFetchErrorOtherThanNotFoundFails) {
  fetcher.Inject("metadata/2.root.json", {FakeFetcher::Fault::kIoError, ""});
  EXPECT_FALSE(Refresh().ok());
  EXPECT_EQ(Version("timestamp"), 0);
}

TEST_F(UpdaterTest, ExpiredRootIsAFreezeUnlessANewerRootExists) {
  clock.Advance(std::chrono::days(400));  // past root v1 expiry (365 days)
  repo.timestamp["expires"] = RepoSim::Expiry(kNow + std::chrono::days(500));
  repo.snapshot["expires"] = repo.timestamp["expires"];
  repo.targets["targets"]["expires"] = repo.timestamp["expires"];
  repo.BumpTargets();
  repo.UpdateSnapshot();
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("root.json version 1 expired"), std::string::npos) << st.error().message();
  EXPECT_EQ(Version("timestamp"), 0);
  // The repository publishes a fresh root: the client updates through its expired one.
  repo.root["expires"] = RepoSim::Expiry(kNow + std::chrono::days(800));
  repo.BumpRoot();
  ASSERT_TRUE(Refresh().ok());
  EXPECT_EQ(Version("root"), 2);
  EXPECT_EQ(Version("timestamp"), 2);
}

TEST_F(UpdaterTest, ExpiredTimestampIsRefusedAndNotPersisted) {
  ASSERT_TRUE(Refresh().ok());
  repo.timestamp["expires"] = RepoSim::Expiry(kNow - std::chrono::seconds(1));
  repo.UpdateTimestamp();
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("timestamp.json version 2 expired"), std::string::npos) << st.error().message();
  EXPECT_EQ(Version("timestamp"), 1);
  // Exactly at the expiry instant counts as expired.
  repo.timestamp["expires"] = RepoSim::Expiry(kNow);
  repo.UpdateTimestamp();
  EXPECT_FALSE(Refresh().ok());
}

TEST_F(UpdaterTest, ExpiredSnapshotIsRefused) {
  ASSERT_TRUE(Refresh().ok());
  repo.snapshot["expires"] = RepoSim::Expiry(kNow - std::chrono::hours(1));
  repo.UpdateSnapshot();
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("snapshot.json version 2 expired"), std::string::npos) << st.error().message();
  EXPECT_EQ(Version("snapshot"), 1);
}

TEST_F(UpdaterTest, ExpiredTargetsIsRefused) {
  ASSERT_TRUE(Refresh().ok());
  repo.targets["targets"]["expires"] = RepoSim::Expiry(kNow - std::chrono::hours(1));
  repo.BumpTargets();
  repo.UpdateSnapshot();
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("targets.json version 2 expired"), std::string::npos) << st.error().message();
  EXPECT_EQ(Version("targets"), 1);
  // Time passing makes already trusted metadata expire too: a freeze is noticed.
  FakeClock later(kNow + std::chrono::days(31));
  Updater u(Options(), fetcher, later);
  EXPECT_FALSE(u.Refresh().ok());
}

TEST_F(UpdaterTest, TimestampRollbackIsRefused) {
  repo.UpdateTimestamp();  // v2
  ASSERT_TRUE(Refresh().ok());
  ASSERT_EQ(Version("timestamp"), 2);
  repo.timestamp["version"] = 0;
  repo.UpdateTimestamp();  // v1 again, newer snapshot meta
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("older than the trusted 2"), std::string::npos) << st.error().message();
  EXPECT_EQ(Version("timestamp"), 2);
}

TEST_F(UpdaterTest, EqualTimestampVersionKeepsTheTrustedOne) {
  ASSERT_TRUE(Refresh().ok());
  const std::string trusted = Local("timestamp");
  repo.timestamp["meta"]["snapshot.json"]["version"] = 100;
  repo.Publish("timestamp");  // same version 1, other content
  ASSERT_TRUE(Refresh().ok());
  EXPECT_EQ(Local("timestamp"), trusted);
}

TEST_F(UpdaterTest, SnapshotVersionInTimestampMayNotGoBack) {
  repo.UpdateSnapshot();  // snapshot v2, timestamp v2
  ASSERT_TRUE(Refresh().ok());
  repo.timestamp["meta"]["snapshot.json"]["version"] = 1;
  repo.timestamp["version"] = 3;
  repo.Publish("timestamp");
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("snapshot version 1 is older"), std::string::npos) << st.error().message();
  EXPECT_EQ(Version("timestamp"), 2);
}

TEST_F(UpdaterTest, SnapshotRollbackIsRefused) {
  repo.compute_meta_hashes = true;
  repo.UpdateSnapshot();  // v2
  ASSERT_TRUE(Refresh().ok());
  repo.snapshot["version"] = 0;
  repo.UpdateSnapshot();  // v1 published, timestamp v3 names it
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("snapshot version 1 is older"), std::string::npos) << st.error().message();
  EXPECT_EQ(Version("snapshot"), 2);
  EXPECT_EQ(Version("timestamp"), 2);
}

TEST_F(UpdaterTest, TargetsRollbackInSnapshotIsRefused) {
  repo.BumpTargets();
  repo.BumpTargets();
  repo.UpdateSnapshot();  // targets v3
  ASSERT_TRUE(Refresh().ok());
  ASSERT_EQ(Version("targets"), 3);
  repo.targets["targets"]["version"] = 1;
  repo.BumpTargets();  // v2
  repo.UpdateSnapshot();
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("'targets.json' version 2 is older than the trusted 3"), std::string::npos)
      << st.error().message();
  EXPECT_EQ(Version("snapshot"), 2);
  EXPECT_EQ(Version("targets"), 3);
}

TEST_F(UpdaterTest, MixAndMatchSnapshotVersionMustEqualTimestampMeta) {
  // The server's snapshot is v2 while the timestamp still names v1.
  repo.snapshot["version"] = 2;
  repo.Publish("snapshot");
  fetcher.Inject("metadata/1.snapshot.json", {FakeFetcher::Fault::kReplace, repo.files.at("metadata/2.snapshot.json")});
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("is not the version 1 that timestamp.json names"), std::string::npos)
      << st.error().message();
  EXPECT_EQ(Version("timestamp"), 1);
  EXPECT_EQ(Version("snapshot"), 0);
}

TEST_F(UpdaterTest, TargetsVersionMustEqualSnapshotMeta) {
  ASSERT_TRUE(Refresh().ok());
  // Snapshot names targets v2, the server hands out the (validly signed) v1 under that name.
  repo.snapshot["meta"]["targets.json"]["version"] = 2;
  repo.snapshot["version"] = 2;
  repo.Publish("snapshot");
  repo.UpdateTimestamp();
  fetcher.Inject("metadata/2.targets.json", {FakeFetcher::Fault::kReplace, repo.files.at("metadata/1.targets.json")});
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("is not the version 2 that snapshot.json names"), std::string::npos)
      << st.error().message();
  EXPECT_EQ(Version("targets"), 1);
}

TEST_F(UpdaterTest, SnapshotMayNotDropARole) {
  repo.AddDelegation("targets", "team", TestKey::Ed25519(), {"team/*"});
  repo.BumpTargets();
  repo.UpdateSnapshot();
  ASSERT_TRUE(Refresh().ok());
  repo.targets.erase("team");
  repo.UpdateSnapshot();
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("'team.json' was removed"), std::string::npos) << st.error().message();
}

TEST_F(UpdaterTest, HashesInMetaAreChecked) {
  repo.compute_meta_hashes = true;
  repo.UpdateSnapshot();
  // Same version, one byte different: timestamp's hash catches it before parsing.
  std::string snap = repo.files.at("metadata/2.snapshot.json");
  snap[snap.size() - 2] = snap[snap.size() - 2] == ' ' ? '\n' : ' ';
  fetcher.Inject("metadata/2.snapshot.json", {FakeFetcher::Fault::kReplace, snap});
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kVerification);
  EXPECT_NE(st.error().message().find("snapshot.json"), std::string::npos) << st.error().message();
  EXPECT_EQ(Version("snapshot"), 0);
}

TEST_F(UpdaterTest, EndlessDataIsCutOff) {
  fetcher.Inject("metadata/timestamp.json", {FakeFetcher::Fault::kEndless, ""});
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kLimit);
  EXPECT_LE(fetcher.bytes_delivered, config.timestamp_max_length);
  fetcher.Clear();
  fetcher.bytes_delivered = 0;
  fetcher.Inject("metadata/2.root.json", {FakeFetcher::Fault::kEndless, ""});
  EXPECT_FALSE(Refresh().ok());
  EXPECT_LE(fetcher.bytes_delivered, config.root_max_length);
  EXPECT_GT(fetcher.bytes_delivered, 0u);
}

TEST_F(UpdaterTest, SnapshotLongerThanTimestampSaysIsCutOff) {
  repo.compute_meta_hashes = true;
  repo.UpdateSnapshot();
  std::string big = repo.files.at("metadata/2.snapshot.json") + std::string(100000, ' ');
  fetcher.Inject("metadata/2.snapshot.json", {FakeFetcher::Fault::kReplace, big});
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kLimit);
  EXPECT_LT(fetcher.bytes_delivered, 20000u);
}

TEST_F(UpdaterTest, TamperedTargetIsRefusedAndNeverWritten) {
  repo.AddTarget("targets", "app.bin", "genuine content");
  repo.BumpTargets();
  repo.UpdateSnapshot();
  const std::string url = "targets/" + Sha256Hex("genuine content") + ".app.bin";
  // Same length, other bytes: hash mismatch.
  fetcher.Inject(url, {FakeFetcher::Fault::kReplace, "genuine contenT"});
  std::string err = Download("app.bin");
  EXPECT_NE(err.find("hash does not match"), std::string::npos) << err;
  EXPECT_TRUE(TargetDirEntries().empty());
  // Longer: cut off at the length the metadata gives.
  fetcher.Inject(url, {FakeFetcher::Fault::kReplace, "genuine content plus a lot more"});
  err = Download("app.bin");
  EXPECT_NE(err.find("longer than the 15 bytes"), std::string::npos) << err;
  EXPECT_TRUE(TargetDirEntries().empty());
  // Shorter.
  fetcher.Inject(url, {FakeFetcher::Fault::kReplace, "genuine"});
  err = Download("app.bin");
  EXPECT_NE(err.find("length 7 does not match"), std::string::npos) << err;
  EXPECT_TRUE(TargetDirEntries().empty());
  // Endless.
  fetcher.Inject(url, {FakeFetcher::Fault::kEndless, ""});
  EXPECT_NE(Download("app.bin"), "");
  EXPECT_TRUE(TargetDirEntries().empty());
  // The genuine file then downloads; a tampered local copy is not taken for a cached one.
  fetcher.Clear();
  EXPECT_EQ(Download("app.bin"), "");
  ASSERT_TRUE(WriteFileAtomic(dir / "targets" / "app.bin", "genuine contenX").ok());
  EXPECT_EQ(Download("app.bin"), "");
  EXPECT_EQ(ReadFileBounded(dir / "targets" / "app.bin", 100).value(), "genuine content");
  EXPECT_EQ(TargetDirEntries(), Strings{"app.bin"});
}

TEST_F(UpdaterTest, TargetWithUnsupportedHashOnlyIsRefused) {
  repo.targets["targets"]["targets"]["odd.bin"] = {{"length", 3}, {"hashes", {{"md5", "00"}}}};
  repo.files["targets/odd.bin"] = "abc";
  repo.BumpTargets();
  repo.UpdateSnapshot();
  EXPECT_NE(Download("odd.bin"), "");
  EXPECT_TRUE(TargetDirEntries().empty());
}

TEST_F(UpdaterTest, DownloadBeforeRefreshIsRefused) {
  Updater u(Options(), fetcher, clock);
  TargetFile t;
  t.path = "x";
  t.length = 1;
  t.hashes = {{"sha256", Sha256Hex("x")}};
  auto r = u.DownloadTarget(t);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  EXPECT_TRUE(fetcher.requests.empty());
}

TEST_F(UpdaterTest, DownloadReportsProgress) {
  std::string big(3 * FakeFetcher::kChunk + 10, 'p');
  repo.AddTarget("targets", "big.bin", big);
  repo.BumpTargets();
  repo.UpdateSnapshot();
  Updater u(Options(), fetcher, clock);
  auto info = u.GetTargetInfo("big.bin");
  ASSERT_TRUE(info.ok() && info->has_value());
  std::vector<std::uint64_t> seen;
  auto path = u.DownloadTarget(**info, {}, {}, [&](std::uint64_t done, std::uint64_t total) {
    EXPECT_EQ(total, big.size());
    seen.push_back(done);
  });
  ASSERT_TRUE(path.ok()) << path.error().message();
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen.back(), big.size());
}

// Builds the delegation graph `edges` (delegator, role, paths, terminating) in order, then
// returns the delegated roles the client fetched while looking for `target`.
class DelegationTest : public UpdaterTest {
 protected:
  struct Edge {
    std::string from, to;
    Strings paths = {"*"};
    bool terminating = false;
  };
  void Build(const std::vector<Edge>& edges) {
    for (const auto& e : edges) {
      if (!keys.count(e.to)) keys.emplace(e.to, TestKey::Ed25519());
      if (repo.targets.count(e.to)) {
        // A second delegation to an existing role reuses its key.
        Json& d = repo.targets.at(e.from);
        if (!d.contains("delegations")) d["delegations"] = {{"keys", Json::object()}, {"roles", Json::array()}};
        d["delegations"]["keys"][keys.at(e.to).keyid()] = keys.at(e.to).PublicJson();
        d["delegations"]["roles"].push_back({{"name", e.to}, {"keyids", {keys.at(e.to).keyid()}}, {"threshold", 1},
                                             {"terminating", e.terminating}, {"paths", e.paths}});
      } else {
        repo.AddDelegation(e.from, e.to, keys.at(e.to), e.paths, e.terminating);
      }
    }
    for (auto& [name, part] : repo.targets) repo.BumpTargets(name);
    repo.UpdateSnapshot();
  }
  Strings Visited(const std::string& target, bool* found = nullptr) {
    // A fresh client each time: forget delegated metadata so every visit is a fetch.
    for (const auto& e : fs::directory_iterator(dir / "metadata")) {
      std::string n = e.path().filename().string();
      if (n != "root.json" && n != "timestamp.json" && n != "snapshot.json" && n != "targets.json") fs::remove(e.path());
    }
    fetcher.requests.clear();
    Updater u(Options(), fetcher, clock);
    auto info = u.GetTargetInfo(target);
    EXPECT_TRUE(info.ok()) << info.error().message();
    if (found) *found = info.ok() && info->has_value();
    Strings out;
    for (const auto& r : MetadataRequests(fetcher.requests)) {
      if (r.find(".root.json") != std::string::npos || r == "timestamp.json" || r.find("snapshot.json") != std::string::npos ||
          r.find(".targets.json") != std::string::npos) {
        continue;
      }
      out.push_back(r.substr(r.find('.') + 1, r.rfind(".json") - r.find('.') - 1));
    }
    return out;
  }
  std::map<std::string, TestKey> keys;
};

TEST_F(DelegationTest, PreOrderDepthFirst) {
  Build({{"targets", "A"}, {"targets", "B"}, {"A", "C"}, {"A", "D"}});
  EXPECT_EQ(Visited("missing"), (Strings{"A", "C", "D", "B"}));
}

TEST_F(DelegationTest, TerminatingRoleEndsTheSearchOutsideItsSubtree) {
  Build({{"targets", "A"}, {"targets", "B"}, {"A", "C", {"*"}, true}, {"A", "D"}, {"C", "E"}});
  EXPECT_EQ(Visited("missing"), (Strings{"A", "C", "E"}));
}

TEST_F(DelegationTest, PathsThatDoNotMatchPruneTheBranch) {
  Build({{"targets", "A", {"*.py"}}, {"targets", "B"}, {"A", "C"}});
  EXPECT_EQ(Visited("missing"), (Strings{"B"}));
}

TEST_F(DelegationTest, CyclesAreVisitedOnce) {
  Build({{"targets", "A"}, {"targets", "B"}, {"B", "C"}, {"C", "D"}, {"D", "B"}});
  EXPECT_EQ(Visited("missing"), (Strings{"A", "B", "C", "D"}));
}

TEST_F(DelegationTest, FindsTargetsThroughTheRightRoles) {
  Build({{"targets", "A", {"*.doc", "*.md"}},
         {"targets", "B", {"releases/*/*"}},
         {"B", "C", {"releases/x/*"}},
         {"B", "D", {"releases/y/*.zip"}}});
  repo.AddTarget("A", "README.md", "readme by A");
  repo.AddTarget("C", "releases/x/x_v1", "x by C");
  repo.AddTarget("D", "releases/y/y_v1.zip", "y by D");
  repo.AddTarget("D", "releases/z/z_v1.zip", "z by D (not delegated to D)");
  // An untrusted role listing a target it was not delegated must not be believed.
  repo.AddTarget("A", "releases/x/x_v1", "x by A");
  for (const char* r : {"A", "C", "D"}) repo.BumpTargets(r);
  repo.UpdateSnapshot();
  bool found = false;
  EXPECT_EQ(Visited("README.md", &found), (Strings{"A"}));
  EXPECT_TRUE(found);
  EXPECT_EQ(Visited("releases/x/x_v1", &found), (Strings{"B", "C"}));
  EXPECT_TRUE(found);
  EXPECT_EQ(Download("releases/x/x_v1"), "");
  EXPECT_EQ(ReadFileBounded(dir / "targets" / "releases%2Fx%2Fx_v1", 100).value(), "x by C");
  // Delegated metadata was persisted under its role name.
  EXPECT_EQ(Version("C"), 3);
  EXPECT_EQ(Visited("releases/z/z_v1.zip", &found), (Strings{"B"}));
  EXPECT_FALSE(found);
}

TEST_F(DelegationTest, HashPrefixDelegation) {
  const std::string path = "bins/pkg.bin";
  const std::string digest = Sha256Hex(path);
  Strings match = {digest.substr(0, 1)};
  Strings other = {digest[0] == '0' ? "1" : "0"};
  repo.AddDelegation("targets", "bin-x", TestKey::Ed25519(), {}, false, &other);
  repo.AddDelegation("targets", "bin-y", TestKey::Ed25519(), {}, false, &match);
  repo.AddTarget("bin-y", path, "hashed bin");
  repo.BumpTargets("bin-y");
  repo.BumpTargets();
  repo.UpdateSnapshot();
  bool found = false;
  EXPECT_EQ(Visited(path, &found), (Strings{"bin-y"}));
  EXPECT_TRUE(found);
}

TEST_F(DelegationTest, MaxDelegationsBoundsTheSearch) {
  std::vector<Edge> chain;
  std::string prev = "targets";
  for (int i = 0; i < 8; ++i) {
    std::string name = "r" + std::to_string(i);
    chain.push_back({prev, name});
    prev = name;
  }
  Build(chain);
  repo.AddTarget("r7", "deep.txt", "deep");
  repo.BumpTargets("r7");
  repo.UpdateSnapshot();
  config.max_delegations = 4;
  bool found = true;
  EXPECT_EQ(Visited("deep.txt", &found).size(), 4u);
  EXPECT_FALSE(found);
  config.max_delegations = 32;
  EXPECT_EQ(Visited("deep.txt", &found).size(), 8u);
  EXPECT_TRUE(found);
}

TEST_F(DelegationTest, DelegatedRoleWithBadSignatureFails) {
  Build({{"targets", "A"}});
  // A is re-signed by a key the delegation does not name.
  repo.signers["A"] = {TestKey::Ed25519()};
  repo.BumpTargets("A");
  repo.UpdateSnapshot();
  Updater u(Options(), fetcher, clock);
  auto info = u.GetTargetInfo("x");
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.error().code(), Errc::kVerification);
  EXPECT_NE(info.error().message().find("A: 0 valid signature(s)"), std::string::npos) << info.error().message();
}

TEST_F(DelegationTest, UnusualRoleNamesAreEncodedInUrlsAndFileNames) {
  Build({{"targets", "../evil"}, {"targets", "a?b#c"}});
  Visited("missing");
  Strings all = MetadataRequests(fetcher.requests);
  (void)all;
  EXPECT_TRUE(fs::exists(dir / "metadata" / "..%2Fevil.json"));
  EXPECT_TRUE(fs::exists(dir / "metadata" / "a%3Fb%23c.json"));
  EXPECT_FALSE(fs::exists(dir / "evil.json"));
}

TEST_F(UpdaterTest, FastForwardRecoveryAfterTimestampKeyRotation) {
  for (int i = 0; i < 9; ++i) repo.UpdateTimestamp();  // v10
  ASSERT_TRUE(Refresh().ok());
  ASSERT_EQ(Version("timestamp"), 10);
  // The repository adds a timestamp key (the old one stays valid, threshold 1) and starts
  // again from version 1: the rotation alone must make the client forget its timestamp.
  const TestKey old_key = repo.signers["timestamp"][0];
  const TestKey fresh = TestKey::Ed25519();
  repo.SetRoleKeys("timestamp", {old_key, fresh});
  repo.signers["timestamp"] = {fresh};
  repo.timestamp["version"] = 0;
  repo.UpdateTimestamp();
  // Until root names the new key, the new timestamp does not even verify.
  EXPECT_FALSE(Refresh().ok());
  EXPECT_EQ(Version("timestamp"), 10);
  // Once it does, the old v10 (still verifiable with the old key) must not block v1.
  repo.BumpRoot();
  ASSERT_TRUE(Refresh().ok());
  EXPECT_EQ(Version("timestamp"), 1);
  EXPECT_EQ(Version("root"), 2);
}

TEST_F(UpdaterTest, FastForwardRecoveryAfterSnapshotKeyRotation) {
  for (int i = 0; i < 5; ++i) repo.BumpTargets();
  repo.UpdateSnapshot();
  ASSERT_TRUE(Refresh().ok());
  ASSERT_EQ(Version("targets"), 6);
  repo.SetRoleKeys("snapshot", {TestKey::Ed25519()});
  repo.BumpRoot();
  repo.targets["targets"]["version"] = 1;
  repo.BumpTargets();
  repo.UpdateSnapshot();
  ASSERT_TRUE(Refresh().ok());
  EXPECT_EQ(Version("targets"), 2);
}

TEST_F(UpdaterTest, RepositorySignedWithEcdsaAndRsaPssKeys) {
  repo.SetRoleKeys("timestamp", {TestKey::Ecdsa()});
  repo.SetRoleKeys("snapshot", {TestKey::RsaPss()});
  repo.SetRoleKeys("targets", {TestKey::Ecdsa(false), TestKey::RsaPss()}, 2);
  repo.BumpRoot();
  repo.AddTarget("targets", "t.txt", "signed by mixed keys");
  repo.BumpTargets();
  repo.UpdateSnapshot();
  EXPECT_EQ(Download("t.txt"), "");
  EXPECT_EQ(Version("root"), 2);
  // Dropping one of the two targets signatures falls below the threshold of 2.
  repo.signers["targets"].pop_back();
  repo.BumpTargets();
  repo.UpdateSnapshot();
  auto st = Refresh();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("1 valid signature(s), threshold is 2"), std::string::npos) << st.error().message();
}

TEST_F(UpdaterTest, RealWorldTufOnCiRepository) {
  const fs::path data = fs::path(UPKEEP_SOURCE_DIR) / "tests/tuf/data/tuf-on-ci-0.11";
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(data)) {
    if (!e.is_regular_file()) continue;
    files[fs::relative(e.path(), data).generic_string()] = ReadFileBounded(e.path(), 1 << 20).value();
  }
  FakeFetcher f(files);
  Init(files.at("initial_root.json"));
  FakeClock then(ParseTimestamp("2025-02-09T09:17:23Z").value());
  Updater u(Options(), f, then);
  auto info = u.GetTargetInfo("delegatedrole/artifact");
  ASSERT_TRUE(info.ok()) << info.error().message();
  ASSERT_TRUE(info->has_value());
  auto path = u.DownloadTarget(**info);
  ASSERT_TRUE(path.ok()) << path.error().message();
  EXPECT_EQ(ReadFileBounded(*path, 100).value(), "artifact for tuf-on-ci repository\n");
  EXPECT_EQ(MetadataRequests(f.requests),
            (Strings{"2.root.json", "timestamp.json", "2.snapshot.json", "1.targets.json", "2.delegatedrole.json"}));
  // After its expiry the same repository is refused.
  FakeClock late(ParseTimestamp("2044-08-10T10:21:51Z").value());
  Updater expired(Options(), f, late);
  EXPECT_FALSE(expired.Refresh().ok());
}

TEST(TrustedMetadataSetTest, UpdatesMustComeInWorkflowOrder) {
  RepoSim repo(kNow);
  auto set = TrustedMetadataSet::Create(repo.initial_root, kNow);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->UpdateSnapshot(repo.files.at("metadata/1.snapshot.json")).error().code(), Errc::kInvalidArgument);
  EXPECT_FALSE(set->UpdateTargets(repo.files.at("metadata/1.targets.json")).ok());
  auto ts = set->UpdateTimestamp(repo.files.at("metadata/timestamp.json"));
  ASSERT_TRUE(ts.ok());
  EXPECT_EQ(*ts, TimestampUpdate::kAccepted);
  EXPECT_EQ(*set->UpdateTimestamp(repo.files.at("metadata/timestamp.json")), TimestampUpdate::kUnchanged);
  repo.BumpRoot();
  EXPECT_EQ(set->UpdateRoot(repo.files.at("metadata/2.root.json")).error().code(), Errc::kInvalidArgument);
  ASSERT_TRUE(set->UpdateSnapshot(repo.files.at("metadata/1.snapshot.json")).ok());
  auto t = set->UpdateTargets(repo.files.at("metadata/1.targets.json"));
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->version, 1);
  EXPECT_FALSE(set->UpdateSnapshot(repo.files.at("metadata/1.snapshot.json")).ok());
  // Metadata of the wrong role is refused, whatever its signatures.
  auto set2 = TrustedMetadataSet::Create(repo.initial_root, kNow);
  EXPECT_FALSE(set2->UpdateTimestamp(repo.files.at("metadata/1.snapshot.json")).ok());
  EXPECT_FALSE(TrustedMetadataSet::Create(repo.files.at("metadata/timestamp.json"), kNow).ok());
}

}  // namespace
}  // namespace upkeep::tuf
