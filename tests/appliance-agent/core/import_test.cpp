// Air-gapped import in the agent core: download keys, .upkb bundles built from the test vendor's
// TUF repository and director (core_world.hpp), installs with no network at all, the signed
// installation report, and every refusal (nothing changes: installed state, kept assignment, TUF
// metadata, store documents, package area).
#include <unistd.h>

#include <algorithm>
#include <sstream>

#include "core_world.hpp"
#include "upkeep/agent/cli.hpp"
#include "bundle_entries.hpp"
#include "upkeep/bundle/bundle.hpp"
#include "upkeep/trust/download_key.hpp"
#include "upkeep/trust/install_report.hpp"

namespace upkeep::agent {
namespace {

// Everything an import must leave alone when it refuses.
struct Snapshot {
  std::map<std::string, std::string> system, tuf, bundle_meta, downloads;
  std::map<std::string, std::string> docs;
  bool operator==(const Snapshot&) const = default;
};

std::map<std::string, std::string> TreeOf(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return {};
  return packages::testing::Snapshot(dir);
}

class ImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AddStandardReleases(vendor_);
    if (HasFatalFailure()) return;
    vendor_.channel = {"base-2.0.0", "software-7.1.0", "software-8.0.0"};
  }

  std::unique_ptr<World> Appliance(bool check) {
    auto w = std::make_unique<World>(vendor_, clock_);
    w->Provision("base-1.0.0");
    w->Provision("software-7.0.0");
    if (check) w->Check();
    return w;
  }

  DownloadKeyResult MakeKey(World& w, std::chrono::seconds validity = 72h) {
    auto k = w.agent->MakeDownloadKey(validity);
    EXPECT_TRUE(k.ok()) << k.error().message();
    return k.ok() ? *k : DownloadKeyResult{};
  }

  // What the portal does with a download key: an assignment for the key's state, bound to its
  // nonce, valid 30 days.
  trust::Assignment AssignmentForKey(const std::string& key_text) {
    auto decoded = trust::DecodeDownloadKey(key_text);
    EXPECT_TRUE(decoded.ok()) << decoded.error().message();
    trust::Assignment a = vendor_.AssignmentFor(decoded->key.installed);
    a.nonce = decoded->key.nonce_hex();
    a.expires = clock_.Now() + std::chrono::days(30);
    return a;
  }

  struct BundleParts {
    std::vector<std::pair<std::string, std::string>> assignments;  // appliance id -> signed text
    std::vector<std::string> releases;                             // release ids whose blobs go in
  };

  fs::path WriteBundle(const BundleParts& parts, const std::string& name = "update.upkb") {
    std::vector<std::string> ids;
    for (const auto& a : parts.assignments) ids.push_back(a.first);
    auto entries = BundleEntries(vendor_, parts.assignments, parts.releases);
    const fs::path out = bundles_.path() / name;
    auto h = bundle::WriteBundle(out, Sha256Hex(name + std::to_string(counter_++)).substr(0, 32), clock_.Now(), ids,
                                 std::move(entries));
    EXPECT_TRUE(h.ok()) << h.error().message();
    return out;
  }

  // The usual bundle: this appliance's assignment (and another node's), every blob it names.
  fs::path BundleFor(const trust::Assignment& a, const std::string& name = "update.upkb") {
    BundleParts p;
    p.assignments.emplace_back(vendor_.identity().appliance_id(), vendor_.Sign(a));
    p.releases = vendor_.channel;
    return WriteBundle(p, name);
  }

  Expected<ImportResult> Import(World& w, const fs::path& file, bool install = true) {
    auto src = packages::OpenFileSource(file);
    if (!src.ok()) return src.error();
    ImportOptions o;
    o.install = install;
    o.progress = [&](std::uint64_t done, std::uint64_t total) {
      EXPECT_LE(done, total);
      last_progress_ = {done, total};
    };
    return w.agent->ImportBundle(**src, o);
  }

  Snapshot Take(World& w) {
    Snapshot s;
    s.system = w.SystemTree();
    s.tuf = TreeOf(w.config.TufDir());
    s.bundle_meta = TreeOf(w.config.state_dir / "bundle-metadata");
    s.downloads = TreeOf(w.config.DownloadDir());
    for (const char* d :
         {"assignment", "installed", "download_keys", "last_import", "failed", "operation", "interrupted"}) {
      s.docs[d] = w.store->Get(d).value_or(Json(nullptr)).dump();
    }
    return s;
  }

  // The import is refused with `why` in its message and nothing changed.
  void ExpectRefused(World& w, const fs::path& file, const std::string& why, Errc code = Errc::kPolicy) {
    const Snapshot before = Take(w);
    auto r = Import(w, file);
    ASSERT_FALSE(r.ok()) << "accepted; expected: " << why;
    EXPECT_NE(r.error().message().find(why), std::string::npos) << r.error().message();
    EXPECT_EQ(r.error().code(), code) << r.error().message();
    const Snapshot after = Take(w);
    EXPECT_EQ(after.system, before.system);
    EXPECT_EQ(after.tuf, before.tuf);
    EXPECT_EQ(after.bundle_meta, before.bundle_meta);
    EXPECT_EQ(after.downloads, before.downloads);
    EXPECT_EQ(after.docs, before.docs);
    EXPECT_FALSE(fs::exists(w.config.state_dir / "import"));
    EXPECT_FALSE(w.JournalFind("refused", why).is_null()) << w.JournalDump();
  }

  FakeClock clock_{T0()};
  Vendor vendor_{clock_};
  TempDir bundles_;
  int counter_ = 0;
  std::pair<std::uint64_t, std::uint64_t> last_progress_{};
};

// --- The air-gapped walk ---

TEST_F(ImportTest, ImportsAndInstallsAThreeStepWalkOfflineAndReportsIt) {
  auto w = Appliance(false);
  const auto key = MakeKey(*w);
  EXPECT_EQ(key.appliance_id, vendor_.identity().appliance_id());
  EXPECT_EQ(key.expires - key.issued, std::chrono::seconds(72h));
  // A cluster bundle: another node's assignment comes first and is skipped.
  const auto other = trust::ApplianceIdentity::FromSeed(Bytes(32, 9)).value();
  trust::Assignment theirs = AssignmentForKey(key.text);
  theirs.appliance_id = other.appliance_id();
  BundleParts parts;
  parts.assignments.emplace_back(other.appliance_id(), vendor_.Sign(theirs));
  parts.assignments.emplace_back(key.appliance_id, vendor_.Sign(AssignmentForKey(key.text)));
  parts.releases = vendor_.channel;
  const fs::path file = WriteBundle(parts);

  clock_.Advance(2h);  // carried to the portal and back
  auto r = Import(*w, file);
  ASSERT_TRUE(r.ok()) << r.error().message() << "\n" << w->JournalDump();
  EXPECT_FALSE(r->install_error.has_value()) << r->install_error->message();
  EXPECT_FALSE(r->up_to_date);
  ASSERT_EQ(r->steps.size(), 3u);
  std::vector<std::string> installed;
  for (const auto& i : r->installs) {
    if (i.outcome == InstallOutcome::kInstalled) installed.push_back(i.name + " " + i.version);
  }
  EXPECT_EQ(installed, (std::vector<std::string>{"base 2.0.0", "software 7.1.0", "software 8.0.0"}));
  EXPECT_EQ(w->Active("base"), V("2.0.0"));
  EXPECT_EQ(w->Active("software"), V("8.0.0"));
  EXPECT_EQ(ReadAll(w->config.system_root / "packages/software/current/app/version.txt"), "software 8.0.0\n");
  // No network at all.
  EXPECT_EQ(w->http.requests, 0);
  EXPECT_EQ(w->api.checkins, 0);
  EXPECT_TRUE(w->api.events.empty());
  EXPECT_EQ(last_progress_.first, last_progress_.second);
  EXPECT_EQ(last_progress_.second, fs::file_size(file));
  EXPECT_TRUE(w->agent->AssignmentFromBundle());
  EXPECT_FALSE(w->JournalFind("import", "imported").is_null()) << w->JournalDump();
  EXPECT_FALSE(fs::exists(w->config.state_dir / "import"));

  // The signed report: the state now and the events of the walk, with the ids the online API gets.
  auto report = w->agent->LastImportReport();
  ASSERT_TRUE(report.ok()) << report.error().message();
  auto verified = trust::VerifyInstallReport(*report, vendor_.identity().public_key(), clock_);
  ASSERT_TRUE(verified.ok()) << verified.error().message();
  EXPECT_EQ(verified->bundle_id, r->bundle_id);
  EXPECT_EQ(verified->nonce, std::optional<std::string>(key.nonce_hex));
  EXPECT_EQ(verified->installed, w->agent->Installed());
  std::vector<std::string> summary;
  std::set<std::string> ids;
  for (const auto& e : verified->events) {
    summary.push_back(e.value("type", "") + " " + e.value("name", "") + " " + e.value("version", ""));
    ids.insert(e.value("id", ""));
  }
  std::vector<std::string> want;
  for (const auto& s : installed) {
    for (const char* t : {"download ", "install ", "success "}) want.push_back(t + s);
  }
  EXPECT_EQ(summary, want);
  // The same events sent online later are the same ids: the updater keeps one of each.
  ASSERT_OK(w->agent->FlushOutbox());
  std::set<std::string> online;
  for (const auto& e : w->api.events) online.insert(e.id);
  EXPECT_EQ(online, ids);
  // ... and the report still lists them after the outbox was compacted.
  auto again = w->agent->LastImportReport();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(trust::VerifyInstallReport(*again, vendor_.identity().public_key(), clock_)->events.size(), want.size());

  // A later online check replaces the bundle's assignment as usual.
  w->Check();
  EXPECT_FALSE(w->agent->AssignmentFromBundle());
}

TEST_F(ImportTest, NoInstallKeepsTheStepsStagedAndInstallAllInstallsThemOffline) {
  auto w = Appliance(false);
  const auto key = MakeKey(*w);
  const fs::path file = BundleFor(AssignmentForKey(key.text));
  // What an import a crash interrupted left behind goes.
  fs::create_directories(w->config.DownloadDir());
  WriteFile(w->config.DownloadDir() / (std::string(64, 'e') + ".blob.import-part"), "partial");
  auto r = Import(*w, file, /*install=*/false);
  EXPECT_FALSE(fs::exists(w->config.DownloadDir() / (std::string(64, 'e') + ".blob.import-part")));
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->installs.empty());
  EXPECT_EQ(w->Active("base"), V("1.0.0"));
  EXPECT_EQ(w->Active("software"), V("7.0.0"));
  for (const auto& id : vendor_.channel) {
    const auto& step = vendor_.Get(id).step;
    auto d = HashFile(w->config.DownloadDir() / (step.sha256 + ".blob"));
    ASSERT_TRUE(d.ok()) << id;
    EXPECT_EQ(d->sha256_hex, step.sha256);
    EXPECT_EQ(d->size, step.length);
  }
  auto plan = w->agent->Plan();
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  ASSERT_EQ(plan->size(), 3u);
  EXPECT_EQ((*plan)[0].state, "next");
  // `install --all` for an imported assignment: InstallNext until nothing is left, no check-in.
  std::vector<std::string> installed;
  for (int i = 0; i < 10; ++i) {
    auto n = w->agent->InstallNext(true);
    ASSERT_TRUE(n.ok()) << n.error().message();
    if (n->outcome != InstallOutcome::kInstalled) break;
    installed.push_back(n->name + " " + n->version);
    ASSERT_TRUE(w->agent->AssignmentFromBundle());
  }
  EXPECT_EQ(installed, (std::vector<std::string>{"base 2.0.0", "software 7.1.0", "software 8.0.0"}));
  EXPECT_EQ(w->Active("software"), V("8.0.0"));
  EXPECT_EQ(w->http.requests, 0);
  EXPECT_EQ(w->api.checkins, 0);
}

TEST_F(ImportTest, ASupportBundleWithoutNonceIsAcceptedOnIdAndState) {
  auto w = Appliance(true);
  trust::Assignment a = vendor_.AssignmentFor(w->agent->Installed());
  a.expires = clock_.Now() + std::chrono::days(30);
  auto r = Import(*w, BundleFor(a));
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(w->Active("software"), V("8.0.0"));
}

TEST_F(ImportTest, ABundleNamingNothingNewIsUpToDate) {
  auto w = Appliance(false);
  vendor_.channel = {};
  const auto key = MakeKey(*w);
  auto r = Import(*w, BundleFor(AssignmentForKey(key.text)));
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->up_to_date);
  EXPECT_TRUE(r->installs.empty());
}

TEST_F(ImportTest, DownloadKeysAreRememberedBoundedAndVerifiable) {
  auto w = Appliance(false);
  const auto first = MakeKey(*w, 1h);
  auto decoded = trust::DecodeDownloadKey(first.text);
  ASSERT_TRUE(decoded.ok()) << decoded.error().message();
  ASSERT_OK(trust::VerifyDownloadKeySignature(*decoded, vendor_.identity().public_key()));
  EXPECT_EQ(decoded->key.installed, w->agent->Installed());
  EXPECT_EQ(decoded->key.nonce_hex(), first.nonce_hex);
  EXPECT_TRUE((*w->store->Get("download_keys"))["keys"].contains(first.nonce_hex));
  clock_.Advance(std::chrono::days(32));  // the first one expired a bundle's lifetime ago: dropped
  std::vector<std::string> nonces;
  for (int i = 0; i < 25; ++i) nonces.push_back(MakeKey(*w).nonce_hex);
  const Json keys = (*w->store->Get("download_keys"))["keys"];
  EXPECT_EQ(keys.size(), 20u);
  EXPECT_FALSE(keys.contains(first.nonce_hex));
  EXPECT_TRUE(keys.contains(nonces.back()));
  EXPECT_EQ(std::set<std::string>(nonces.begin(), nonces.end()).size(), nonces.size());
  auto bad = w->agent->MakeDownloadKey(10s);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
}

// --- Refusals: each names its reason and changes nothing. ---

TEST_F(ImportTest, RefusesABundleForAnotherAppliance) {
  auto w = Appliance(true);
  const auto key = MakeKey(*w);
  const auto other = trust::ApplianceIdentity::FromSeed(Bytes(32, 9)).value();
  trust::Assignment a = AssignmentForKey(key.text);
  a.appliance_id = other.appliance_id();
  BundleParts p;
  p.assignments.emplace_back(other.appliance_id(), vendor_.Sign(a));
  p.releases = vendor_.channel;
  ExpectRefused(*w, WriteBundle(p),
                "this bundle is for " + other.appliance_id() + ", not for this appliance (" +
                    vendor_.identity().appliance_id() + ")");
  // The entry named after this appliance but holding another's assignment is refused too.
  BundleParts q;
  q.assignments.emplace_back(vendor_.identity().appliance_id(), vendor_.Sign(a));
  q.releases = vendor_.channel;
  ExpectRefused(*w, WriteBundle(q, "q.upkb"), "this bundle is for " + other.appliance_id());
}

TEST_F(ImportTest, RefusesATamperedBlob) {
  auto w = Appliance(true);
  const fs::path file = BundleFor(AssignmentForKey(MakeKey(*w).text));
  std::string bytes = ReadAll(file);
  bytes[bytes.size() - 100] ^= 0x01;  // inside the last blob
  WriteFile(file, bytes);
  ExpectRefused(*w, file, "is damaged or tampered with", Errc::kVerification);
}

TEST_F(ImportTest, RefusesATamperedAssignment) {
  auto w = Appliance(true);
  const auto key = MakeKey(*w);
  Json env = Json::parse(vendor_.Sign(AssignmentForKey(key.text)));
  env["signed"]["expires"] = FormatTimestamp(clock_.Now() + std::chrono::days(365));
  BundleParts p;
  p.assignments.emplace_back(key.appliance_id, env.dump());
  p.releases = vendor_.channel;
  ExpectRefused(*w, WriteBundle(p), "not signed by the director", Errc::kVerification);
  // Signed by another key.
  const PrivateKey other = PrivateKey::GenerateEd25519();
  BundleParts q;
  q.assignments.emplace_back(key.appliance_id, vendor_.Sign(AssignmentForKey(key.text), &other));
  q.releases = vendor_.channel;
  ExpectRefused(*w, WriteBundle(q, "q.upkb"), "not signed by the director", Errc::kVerification);
}

TEST_F(ImportTest, RefusesATruncatedBundle) {
  auto w = Appliance(true);
  const fs::path file = BundleFor(AssignmentForKey(MakeKey(*w).text));
  const std::string bytes = ReadAll(file);
  for (std::size_t cut : {bytes.size() - 1, bytes.size() / 2}) {
    WriteFile(file, bytes.substr(0, cut));
    ExpectRefused(*w, file, "bundle is truncated", Errc::kIo);
  }
}

TEST_F(ImportTest, RefusesAReplayedBundle) {
  auto w = Appliance(false);
  const fs::path file = BundleFor(AssignmentForKey(MakeKey(*w).text));
  // Kept but not installed: the state is the same, the key is used.
  ASSERT_TRUE(Import(*w, file, false).ok());
  ExpectRefused(
      *w, file,
      "replayed: the download key of this bundle was already used for an import on " + FormatTimestamp(clock_.Now()));
  // Installed: still a replay, not a confusing state mismatch.
  ASSERT_TRUE(w->agent->InstallNext(true).ok());
  ExpectRefused(*w, file, "replayed");
}

TEST_F(ImportTest, RefusesAnExpiredBundle) {
  auto w = Appliance(true);
  const auto key = MakeKey(*w);
  trust::Assignment a = AssignmentForKey(key.text);
  a.expires = clock_.Now() + std::chrono::days(1);
  const fs::path file = BundleFor(a);
  clock_.Advance(std::chrono::days(2));
  ExpectRefused(*w, file, "the bundle expired on " + FormatTimestamp(a.expires), Errc::kVerification);
}

TEST_F(ImportTest, RefusesABundleMadeAfterItsDownloadKeyExpired) {
  auto w = Appliance(true);
  const auto key = MakeKey(*w, 1h);
  clock_.Advance(2h);
  trust::Assignment a = AssignmentForKey(key.text);
  a.issued = clock_.Now();
  ExpectRefused(*w, BundleFor(a), "after its download key expired (" + FormatTimestamp(key.expires) + ")");
}

TEST_F(ImportTest, AcceptsABundleThatWaitedLongerThanItsKey) {
  auto w = Appliance(true);
  const auto key = MakeKey(*w, 1h);
  const fs::path file = BundleFor(AssignmentForKey(key.text));
  clock_.Advance(std::chrono::days(7));  // a week on a USB stick
  MakeKey(*w);                           // keys made meanwhile keep the old one's record
  auto r = Import(*w, file);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_FALSE(r->installs.empty());
}

TEST_F(ImportTest, RefusesANonceThisApplianceNeverMade) {
  auto w = Appliance(true);
  trust::Assignment a = AssignmentForKey(MakeKey(*w).text);
  a.nonce = std::string(32, 'a');
  ExpectRefused(*w, BundleFor(a), "not made from a download key of this appliance");
}

TEST_F(ImportTest, RefusesABundleOlderThanWhatIsInstalled) {
  auto w = Appliance(true);
  const fs::path file = BundleFor(AssignmentForKey(MakeKey(*w).text));
  // The appliance went online meanwhile and installed everything.
  for (int i = 0; i < 5; ++i) {
    auto r = w->agent->InstallNext(true);
    ASSERT_TRUE(r.ok()) << r.error().message();
    if (r->outcome != InstallOutcome::kInstalled) break;
    w->Check();
  }
  ASSERT_EQ(w->Active("software"), V("8.0.0"));
  const Snapshot before = Take(*w);
  auto r = Import(*w, file);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("older than what is installed"), std::string::npos) << r.error().message();
  EXPECT_EQ(Take(*w), before);
}

TEST_F(ImportTest, RefusesABundleForAnotherInstalledState) {
  auto w = Appliance(true);
  trust::Assignment a = AssignmentForKey(MakeKey(*w).text);
  a.state_digest = trust::StateDigest({{"base", V("1.0.0")}});
  ExpectRefused(*w, BundleFor(a), "made for another installed state: make a new download key");
}

TEST_F(ImportTest, RefusesADowngrade) {
  vendor_.Add("software", "6.5.0");
  vendor_.Publish();
  auto w = Appliance(true);
  vendor_.channel = {"software-6.5.0"};
  trust::Assignment a = AssignmentForKey(MakeKey(*w).text);
  a.steps = {vendor_.Get("software-6.5.0").step};
  ExpectRefused(*w, BundleFor(a), "would downgrade software from 7.0.0 to 6.5.0");
}

TEST_F(ImportTest, RefusesABundleFromTheFutureNamingTheClock) {
  auto w = Appliance(true);
  const auto key = MakeKey(*w);
  clock_.Advance(3h);  // the portal's time
  const fs::path file = BundleFor(AssignmentForKey(key.text));
  clock_.Set(T0());  // the appliance's clock: 3 h behind
  ExpectRefused(*w, file, "the appliance's clock is behind");
}

TEST_F(ImportTest, RefusesABundleMissingAPackage) {
  auto w = Appliance(true);
  BundleParts p;
  p.assignments.emplace_back(vendor_.identity().appliance_id(), vendor_.Sign(AssignmentForKey(MakeKey(*w).text)));
  p.releases = {"software-7.1.0", "software-8.0.0"};
  ExpectRefused(*w, WriteBundle(p), "the bundle does not carry the package of base 2.0.0");
}

TEST_F(ImportTest, RefusesTufMetadataDisagreeingWithTheAssignment) {
  auto w = Appliance(true);
  trust::Assignment a = AssignmentForKey(MakeKey(*w).text);
  a.steps[0].length += 1;
  ExpectRefused(*w, BundleFor(a), "the TUF targets and the assignment disagree", Errc::kVerification);
}

// --- The command line: download-key, import, report (real clock: the CLI uses SystemClock) ---

class ImportCliTest : public ImportTest {
 protected:
  ImportCliTest() { clock_.Set(std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now())); }

  // The world's configuration as a file, its identity and director key beside it; the world's
  // store is closed so the CLI can take the lock.
  fs::path WriteConfig(World& w) {
    const fs::path dir = w.root() / "cli";
    fs::create_directories(dir);
    EXPECT_TRUE(vendor_.identity().Save(dir / "identity.json").ok());
    WriteFile(dir / "director.pub", vendor_.director().public_key().ToJson().dump());
    Json j = {{"state_dir", w.config.state_dir.string()},
              {"system_root", w.config.system_root.string()},
              {"updater_url", kUpdater},
              {"identity_file", (dir / "identity.json").string()},
              {"director_key_file", (dir / "director.pub").string()}};
    WriteFile(dir / "agent.json", j.dump());
    w.Close();
    return dir / "agent.json";
  }

  int Run(const fs::path& config, std::vector<std::string> args, std::string* out, std::string* err = nullptr) {
    args.insert(args.begin(), {"appliance-agent", "--config", config.string()});
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    std::ostringstream o, e;
    const int rc = Main(static_cast<int>(argv.size()), argv.data(), o, e);
    *out = o.str();
    if (err) *err = e.str();
    return rc;
  }
};

TEST_F(ImportCliTest, DownloadKeyImportAndReportFromTheCommandLine) {
  auto w = Appliance(false);
  const fs::path config = WriteConfig(*w);
  std::string out, err;
  ASSERT_EQ(Run(config, {"download-key", "--json"}, &out, &err), 0) << err;
  const Json key = Json::parse(out);
  const std::string text = key.at("download_key").get<std::string>();
  EXPECT_EQ(text.rfind("UPK1-", 0), 0u);
  EXPECT_EQ(key.at("appliance_id"), vendor_.identity().appliance_id());
  ASSERT_EQ(Run(config, {"download-key", "--valid-hours", "1"}, &out, &err), 0) << err;
  EXPECT_NE(out.find("UPK1-"), std::string::npos);
  EXPECT_NE(out.find("\u2580"), std::string::npos) << "no QR code in\n" << out;  // its half blocks
  EXPECT_NE(out.find(vendor_.identity().appliance_id()), std::string::npos);
  ASSERT_EQ(Run(config, {"download-key", "--no-qr"}, &out, &err), 0) << err;
  EXPECT_EQ(out.find("\u2580"), std::string::npos);
  const fs::path file = BundleFor(AssignmentForKey(text));
  const int rc = Run(config, {"import", file.string()}, &out, &err);
  ASSERT_EQ(rc, 0) << out << err;
  EXPECT_NE(out.find("software 8.0.0 installed"), std::string::npos) << out;
  EXPECT_NE(err.find("reading bundle: 100%"), std::string::npos) << err;
  const fs::path report = file.string() + ".report.json";
  ASSERT_TRUE(fs::exists(report)) << out;
  auto verified = trust::VerifyInstallReport(ReadAll(report), vendor_.identity().public_key(), SystemClock::Instance());
  ASSERT_TRUE(verified.ok()) << verified.error().message();
  EXPECT_EQ(verified->events.size(), 9u);
  // Again, somewhere else; and a second import of the same bundle is a refusal (exit 1).
  const fs::path again = bundles_.path() / "again.json";
  ASSERT_EQ(Run(config, {"report", again.string()}, &out, &err), 0) << err;
  EXPECT_TRUE(
      trust::VerifyInstallReport(ReadAll(again), vendor_.identity().public_key(), SystemClock::Instance()).ok());
  // A directory it cannot write to (a write-protected stick): into STATE/reports/, and it says so.
  ASSERT_EQ(Run(config, {"report", (bundles_.path() / "missing-dir" / "r.json").string()}, &out, &err), 0) << err;
  const fs::path fallback = w->config.state_dir / "reports" / "r.json";
  EXPECT_NE(out.find(fallback.string()), std::string::npos) << out;
  EXPECT_NE(out.find("is not writable"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(fallback));
  EXPECT_EQ(Run(config, {"import", file.string()}, &out, &err), 1);
  EXPECT_NE(err.find("replayed"), std::string::npos) << err;
}

}  // namespace
}  // namespace upkeep::agent
