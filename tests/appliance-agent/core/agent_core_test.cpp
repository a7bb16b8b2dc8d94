// The agent core in-process (the world is in core_world.hpp). Covers the install walk,
// health-check rollback and retry, every refusal rule, the outbox while the updater is
// unreachable, maintenance windows, and a crash (SIGKILL-like, and power loss) at every Fs
// operation of an install.
#include "core_world.hpp"

namespace upkeep::agent {
namespace {

class AgentCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AddStandardReleases(vendor_);
    if (HasFatalFailure()) return;
    vendor_.channel = {"base-2.0.0", "software-7.1.0", "software-8.0.0"};
  }
  // A provisioned appliance (base 1.0.0, software 7.0.0) that checked in once.
  std::unique_ptr<World> Provisioned(bool check = true) {
    auto w = std::make_unique<World>(vendor_, clock_);
    w->Provision("base-1.0.0");
    w->Provision("software-7.0.0");
    if (check) w->Check();
    return w;
  }
  // Nothing on disk changed and the journal says why.
  void ExpectRefused(World& w, const std::map<std::string, std::string>& before, const std::string& type,
                     const std::string& why) {
    EXPECT_EQ(w.SystemTree(), before);
    EXPECT_EQ(w.Active("base"), V("1.0.0"));
    EXPECT_EQ(w.Active("software"), V("7.0.0"));
    EXPECT_EQ(w.InstalledVersion("base"), V("1.0.0"));
    EXPECT_EQ(w.InstalledVersion("software"), V("7.0.0"));
    EXPECT_FALSE(w.store->Get("operation").has_value());
    EXPECT_FALSE(w.JournalFind(type, why).is_null()) << "no journal '" << type << "' saying '" << why << "' in\n"
                                                     << w.JournalDump();
    if (type == "failure") {  // a refused release is also reported, with the reason
      ASSERT_OK(w.agent->FlushOutbox());
      bool reported = false;
      for (const auto& e : w.api.events) {
        reported |= e.type == "failure" && e.detail.value("error", "").find(why) != std::string::npos;
      }
      EXPECT_TRUE(reported) << why;
    }
  }

  FakeClock clock_{T0()};
  Vendor vendor_{clock_};
};

TEST_F(AgentCoreTest, HappyPathWalksEveryStep) {
  auto w = Provisioned(false);
  EXPECT_EQ(w->Active("base"), V("1.0.0"));
  EXPECT_EQ(w->Active("software"), V("7.0.0"));
  std::vector<std::string> installed;
  for (int i = 0; i < 10; ++i) {
    w->Check();
    auto r = w->agent->InstallNext(false);
    ASSERT_TRUE(r.ok()) << r.error().message();
    if (r->outcome == InstallOutcome::kNothing) break;
    ASSERT_EQ(r->outcome, InstallOutcome::kInstalled) << r->message << "\n" << w->JournalDump() << w->store->Get("installed")->dump();
    installed.push_back(r->name + " " + r->version);
    clock_.Advance(60s);
  }
  EXPECT_EQ(installed, (std::vector<std::string>{"base 2.0.0", "software 7.1.0", "software 8.0.0"}));
  EXPECT_EQ(w->Active("base"), V("2.0.0"));
  EXPECT_EQ(w->Active("software"), V("8.0.0"));
  EXPECT_EQ(w->InstalledVersion("base"), V("2.0.0"));
  EXPECT_EQ(w->InstalledVersion("software"), V("8.0.0"));
  EXPECT_EQ(ReadAll(w->config.system_root / "packages/software/current/app/version.txt"), "software 8.0.0\n");
  EXPECT_EQ(w->agent->InstalledJson()["packages"]["software"]["previous"], "7.1.0");
  EXPECT_FALSE(w->store->Get("operation").has_value());
  // Events: download, install, success for each step, each id once.
  ASSERT_OK(w->agent->FlushOutbox());
  EXPECT_EQ(w->agent->PendingReports(), 0u);
  std::vector<std::string> want;
  for (const auto& s : installed) {
    for (const char* t : {"download ", "install ", "success "}) want.push_back(t + s);
  }
  EXPECT_EQ(w->api.Summary(), want);
  EXPECT_EQ(w->api.Duplicates(), 0u);
  std::set<std::string> ids;
  for (const auto& e : w->api.events) ids.insert(e.id);
  EXPECT_EQ(ids.size(), w->api.events.size());
  // The journal tells the story: a backup and a success per step.
  int successes = 0, backups = 0;
  for (const auto& j : w->Journal()) {
    successes += j.value("type", "") == "success";
    backups += j.value("type", "") == "backup";
  }
  EXPECT_EQ(successes, 3);
  EXPECT_EQ(backups, 3);
}

TEST_F(AgentCoreTest, DownloadResumesAfterTheConnectionDrops) {
  auto w = Provisioned();
  w->http.drop_after = 2048;
  auto r = w->agent->InstallNext(false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kIo) << r.error().message();
  EXPECT_EQ(w->Active("base"), V("1.0.0"));
  EXPECT_FALSE(w->JournalFind("failure", "download").is_null()) << w->JournalDump();
  EXPECT_FALSE(w->store->Get("failed").has_value());  // I/O trouble is retried, not a release failure
  auto again = w->agent->InstallNext(false);
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->outcome, InstallOutcome::kInstalled);
  EXPECT_EQ(w->Active("base"), V("2.0.0"));
  EXPECT_GE(w->http.range_requests, 1);
}

TEST_F(AgentCoreTest, HealthCheckFailureRollsBackAndIsNotRetriedUntilAsked) {
  auto w = Provisioned();
  const auto marker = vendor_.HealthFailMarker("software", "7.1.0");
  WriteFile(marker, "");
  // base 2.0.0 first.
  auto r = w->agent->InstallNext(false);
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->outcome, InstallOutcome::kInstalled);
  w->Check();
  r = w->agent->InstallNext(false);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->outcome, InstallOutcome::kFailedRolledBack) << r->message;
  EXPECT_EQ(w->Active("software"), V("7.0.0"));
  EXPECT_EQ(w->InstalledVersion("software"), V("7.0.0"));
  EXPECT_EQ(ReadAll(w->config.system_root / "packages/software/current/app/version.txt"), "software 7.0.0\n");
  EXPECT_FALSE(fs::exists(w->config.system_root / "packages/software/slots/7.1.0"));
  EXPECT_FALSE(w->store->Get("operation").has_value());
  Json rb = w->JournalFind("rollback", "health check exited 3");
  ASSERT_FALSE(rb.is_null()) << w->JournalDump();
  EXPECT_NE(rb.value("log_tail", "").find("port 8080 closed"), std::string::npos);
  ASSERT_OK(w->agent->FlushOutbox());
  bool failure_with_tail = false, rollback_event = false;
  for (const auto& e : w->api.events) {
    if (e.type == "failure" && e.version == "7.1.0") {
      failure_with_tail = e.log_tail.find("port 8080 closed") != std::string::npos;
    }
    rollback_event |= e.type == "rollback" && e.version == "7.1.0";
  }
  EXPECT_TRUE(failure_with_tail);
  EXPECT_TRUE(rollback_event);
  // Marked failed: not tried again by itself.
  auto plan = w->agent->Plan();
  ASSERT_TRUE(plan.ok());
  bool planned_failed = false;
  for (const auto& p : *plan) planned_failed |= p.step.version == V("7.1.0") && p.state == "failed";
  EXPECT_TRUE(planned_failed);
  const int downloads = w->http.requests;
  r = w->agent->InstallNext(true);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->outcome, InstallOutcome::kNothing);
  EXPECT_NE(r->message.find("not retried"), std::string::npos) << r->message;
  EXPECT_EQ(w->http.requests, downloads);
  EXPECT_EQ(w->Active("software"), V("7.0.0"));
  // --retry: the failed marks go, the (now healthy) release installs.
  fs::remove(marker);
  ASSERT_OK(w->store->Remove("failed"));
  r = w->agent->InstallNext(false);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->outcome, InstallOutcome::kInstalled) << r->message;
  EXPECT_EQ(w->Active("software"), V("7.1.0"));
  EXPECT_EQ(w->InstalledVersion("software"), V("7.1.0"));
}

TEST_F(AgentCoreTest, FailedFirstInstallIsUndoneCompletely) {
  vendor_.channel = {"software-7.0.0"};
  auto w = std::make_unique<World>(vendor_, clock_);
  w->Provision("base-1.0.0");
  w->Check();
  WriteFile(vendor_.HealthFailMarker("software", "7.0.0"), "");
  auto r = w->agent->InstallNext(false);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->outcome, InstallOutcome::kFailedRolledBack) << r->message << "\n" << w->JournalDump();
  EXPECT_EQ(w->Active("software"), std::nullopt);
  EXPECT_EQ(w->InstalledVersion("software"), std::nullopt);
  EXPECT_FALSE(fs::exists(w->config.system_root / "packages/software/slots/7.0.0"));
  EXPECT_FALSE(w->store->Get("operation").has_value());
  EXPECT_FALSE(w->JournalFind("rollback", "health check exited 3").is_null()) << w->JournalDump();
}

// --- Refusals: nothing changes on disk, the journal says why. ---

TEST_F(AgentCoreTest, RefusesATamperedBlob) {
  auto w = Provisioned();
  const auto& step = vendor_.Get("base-2.0.0").step;
  const std::string served = "targets/base/" + step.sha256 + ".base-2.0.0.upk.enc";
  std::string bytes = ReadAll(vendor_.repo_dir() / served);
  ASSERT_FALSE(bytes.empty());
  bytes[bytes.size() / 2] ^= 0x01;
  w->http.overrides[served] = bytes;
  const auto before = w->SystemTree();
  auto r = w->agent->InstallNext(false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification) << r.error().message();
  ExpectRefused(*w, before, "failure", "base 2.0.0: download");
  EXPECT_FALSE(fs::exists(w->config.DownloadDir() / (step.sha256 + ".blob")));
}

TEST_F(AgentCoreTest, RefusesAPackageSignedByAnotherKey) {
  const PrivateKey other = PrivateKey::GenerateEd25519();
  vendor_.Add("base", "2.1.0", ReleaseOptions{&other, std::nullopt, {}, "", std::nullopt, false, {}});
  vendor_.Publish();
  vendor_.channel = {"base-2.1.0"};
  auto w = Provisioned();
  const auto before = w->SystemTree();
  auto r = w->agent->InstallNext(false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification) << r.error().message();
  ExpectRefused(*w, before, "failure", "package signature");
  EXPECT_TRUE(w->store->Get("failed").has_value());
}

TEST_F(AgentCoreTest, RefusesAManifestNamingAnotherVersion) {
  vendor_.Add("base", "2.2.0", ReleaseOptions{nullptr, std::string("2.3.0"), {}, "", std::nullopt, false, {}});
  vendor_.Publish();
  vendor_.channel = {"base-2.2.0"};
  auto w = Provisioned();
  const auto before = w->SystemTree();
  auto r = w->agent->InstallNext(false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification);
  ExpectRefused(*w, before, "failure", "not what was assigned");
}

TEST_F(AgentCoreTest, RefusesAnUnmetRequirement) {
  vendor_.channel = {"software-8.0.0"};  // needs base >= 2.0.0; base 1.0.0 is installed
  auto w = Provisioned();
  const auto before = w->SystemTree();
  auto r = w->agent->InstallNext(false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPolicy);
  ExpectRefused(*w, before, "failure", "needs base >= 2.0.0");
}

TEST_F(AgentCoreTest, RefusesTufTargetsDisagreeingWithTheAssignment) {
  auto w = Provisioned(false);
  for (int field = 0; field < 2; ++field) {
    w->api.assign = [&, field](const trust::InstalledSet& installed) {
      auto a = vendor_.AssignmentFor(installed);
      if (field == 0) a.steps[0].length += 1;
      if (field == 1) a.steps[0].sha256 = vendor_.Get("software-7.1.0").step.sha256;
      return vendor_.Sign(a);
    };
    w->Check();
    ASSERT_OK(w->store->Remove("failed"));
    const auto before = w->SystemTree();
    auto r = w->agent->InstallNext(false);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), Errc::kVerification) << r.error().message();
    ExpectRefused(*w, before, "failure", "disagree");
  }
}

TEST_F(AgentCoreTest, RefusesATargetTufDoesNotList) {
  vendor_.Add("base", "2.5.0");  // staged, never published
  vendor_.channel = {"base-2.5.0"};
  auto w = Provisioned();
  const auto before = w->SystemTree();
  auto r = w->agent->InstallNext(false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification) << r.error().message();
  ExpectRefused(*w, before, "failure", "the TUF targets do not list");
}

TEST_F(AgentCoreTest, RefusesAKeptAssignmentAlteredOnDisk) {
  auto w = Provisioned();
  Json doc = *w->store->Get("assignment");
  std::string text = doc["text"];
  const auto at = text.find("\"stable\"");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 8, "\"stabl3\"");
  doc["text"] = text;
  ASSERT_OK(w->store->Put("assignment", doc));
  const auto before = w->SystemTree();
  auto r = w->agent->InstallNext(true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification) << r.error().message();
  EXPECT_NE(r.error().message().find("kept assignment"), std::string::npos);
  EXPECT_EQ(w->SystemTree(), before);
}

TEST_F(AgentCoreTest, NeverInstallsAStepOlderThanInstalled) {
  vendor_.Add("base", "0.9.0");
  vendor_.Publish();
  auto w = Provisioned(false);
  w->api.assign = [&](const trust::InstalledSet& installed) {
    auto a = vendor_.AssignmentFor(installed);
    a.steps = {vendor_.Get("base-0.9.0").step};
    return vendor_.Sign(a);
  };
  w->Check();
  const auto before = w->SystemTree();
  auto r = w->agent->InstallNext(true);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->outcome, InstallOutcome::kNothing);
  EXPECT_EQ(w->SystemTree(), before);
  EXPECT_EQ(w->Active("base"), V("1.0.0"));
}

TEST_F(AgentCoreTest, RefusesBadAssignments) {
  auto w = Provisioned(false);
  const PrivateKey other = PrivateKey::GenerateEd25519();
  struct Case {
    const char* what;
    std::function<std::string(const trust::InstalledSet&)> make;
    Errc code;
  };
  const std::vector<Case> cases = {
      {"another appliance",
       [&](const trust::InstalledSet& s) {
         auto a = vendor_.AssignmentFor(s);
         a.appliance_id = trust::ApplianceIdentity::Generate().appliance_id();
         return vendor_.Sign(a);
       },
       Errc::kPolicy},
      {"another state",
       [&](const trust::InstalledSet& s) {
         auto other_state = s;
         other_state["base"] = V("2.0.0");
         auto a = vendor_.AssignmentFor(s);
         a.state_digest = trust::StateDigest(other_state);
         return vendor_.Sign(a);
       },
       Errc::kPolicy},
      {"another key", [&](const trust::InstalledSet& s) { return vendor_.Sign(vendor_.AssignmentFor(s), &other); },
       Errc::kVerification},
      {"expired",
       [&](const trust::InstalledSet& s) {
         auto a = vendor_.AssignmentFor(s);
         a.issued = clock_.Now() - std::chrono::days(8);
         a.expires = clock_.Now() - 1s;
         return vendor_.Sign(a);
       },
       Errc::kVerification},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    w->api.assign = c.make;
    const auto before = w->SystemTree();
    const std::size_t journal_before = w->Journal().size();
    auto r = w->agent->Check();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), c.code) << r.error().message();
    EXPECT_FALSE(w->store->Get("assignment").has_value());  // never kept
    auto i = w->agent->InstallNext(true);
    ASSERT_FALSE(i.ok());
    EXPECT_EQ(i.error().code(), Errc::kNotFound);
    ExpectRefused(*w, before, "refused", "assignment refused");
    EXPECT_GT(w->Journal().size(), journal_before);
  }
}

TEST_F(AgentCoreTest, RefusesRolledBackOrExpiredTufMetadata) {
  auto w = Provisioned();
  // The agent now trusts the current timestamp/snapshot; serve the older ones after a new publish.
  const std::string old_timestamp = ReadAll(vendor_.repo_dir() / "metadata/timestamp.json");
  vendor_.Add("software", "7.2.0");
  vendor_.Publish();
  w->Check();
  w->http.overrides["metadata/timestamp.json"] = old_timestamp;
  auto before = w->SystemTree();
  auto r = w->agent->Check();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification) << r.error().message();
  ExpectRefused(*w, before, "refused", "TUF metadata refused");
  auto i = w->agent->InstallNext(true);  // the install path refreshes too
  ASSERT_FALSE(i.ok());
  EXPECT_EQ(w->Active("base"), V("1.0.0"));
  w->http.overrides.clear();

  // Expired: a timestamp that expires in an hour, then the clock moves past it.
  vendor_.RefreshTimestamp(clock_.Now() + 1h);
  w->Check();
  clock_.Advance(2h);
  before = w->SystemTree();
  r = w->agent->Check();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification) << r.error().message();
  ExpectRefused(*w, before, "refused", "TUF metadata refused");
  EXPECT_NE(w->JournalFind("refused", "TUF metadata refused").value("message", "").find("expire"), std::string::npos)
      << w->JournalDump();
}

TEST_F(AgentCoreTest, UnreachableUpdaterQueuesEventsAndSendsThemOnce) {
  auto w = Provisioned();
  w->api.unreachable = true;
  auto r = w->agent->InstallNext(false);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->outcome, InstallOutcome::kInstalled);
  const std::size_t pending = w->agent->PendingReports();
  EXPECT_EQ(pending, 3u);  // download, install, success
  EXPECT_FALSE(w->agent->FlushOutbox().ok());
  auto c = w->agent->Check();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), Errc::kIo);
  EXPECT_EQ(w->Journal().back().value("type", ""), "check");
  EXPECT_FALSE(w->Journal().back().value("ok", true));
  EXPECT_NE(w->Journal().back().value("message", "").find("connection refused"), std::string::npos);
  EXPECT_EQ(w->agent->PendingReports(), pending);
  EXPECT_TRUE(w->api.events.empty());
  // Back: everything goes, once, and a crash-free resend is a no-op.
  w->api.unreachable = false;
  w->Check();
  EXPECT_EQ(w->agent->PendingReports(), 0u);
  EXPECT_EQ(w->api.events.size(), pending);
  auto again = w->agent->FlushOutbox();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0u);
  EXPECT_EQ(w->api.Duplicates(), 0u);
  // A busy updater is the same: queued.
  w->api.busy = true;
  auto b = w->agent->Check();
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kLimit);
}

TEST_F(AgentCoreTest, MaintenanceWindowClosedUnlessForced) {
  auto w = Provisioned();
  Settings s;
  s.maintenance_windows = {"daily 02:00-03:00"};
  ASSERT_OK(w->store->Put("settings", s.ToJson()));
  const auto before = w->SystemTree();
  auto r = w->agent->InstallNext(false);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->outcome, InstallOutcome::kNotAllowedNow);
  EXPECT_EQ(r->not_before, ParseTimestamp("2026-06-04T02:00:00Z").value());
  EXPECT_EQ(w->SystemTree(), before);
  clock_.Set(ParseTimestamp("2026-06-04T02:30:00Z").value());
  w->Check();
  auto inside = w->agent->InstallNext(false);
  ASSERT_TRUE(inside.ok());
  EXPECT_EQ(inside->outcome, InstallOutcome::kInstalled) << inside->message;
  clock_.Set(ParseTimestamp("2026-06-04T04:00:00Z").value());
  w->Check();
  auto forced = w->agent->InstallNext(true);
  ASSERT_TRUE(forced.ok()) << forced.error().message();
  EXPECT_EQ(forced->outcome, InstallOutcome::kInstalled) << forced->message;
  EXPECT_EQ(w->Active("software"), V("7.1.0"));
}

// --- Crash and power loss at every Fs operation of an install. ---

struct CrashStats {
  int points = 0;
  std::uint64_t ops = 0;
  std::map<std::string, int> recovered_to;  // base version right after Recover() -> points
  int torn_tails = 0;                        // reopened stores that cut a half-written record off
};

class AgentCrashTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    clock_ = new FakeClock(T0());
    vendor_ = new Vendor(*clock_);
    AddStandardReleases(*vendor_);
    vendor_->Add("base", "3.0.0");
    vendor_->Publish();
  }
  static void TearDownTestSuite() {
    delete vendor_;
    delete clock_;
  }
  void SetUp() override { clock_->Set(T0()); }

  // A provisioned appliance that checked in for `target`: provisioned once, then copied, so
  // every crash point starts from the same durable state.
  std::unique_ptr<World> Ready(const std::string& target) {
    if (!template_ || template_target_ != target) {
      vendor_->channel = {target};
      template_ = std::make_unique<World>(*vendor_, *clock_);
      template_target_ = target;
      template_->Provision("base-1.0.0");
      template_->Provision("software-7.0.0");
      template_->Check();
      template_->Close();
    }
    const fs::path from = template_->root();
    return std::make_unique<World>(*vendor_, *clock_, &from);
  }
  void TearDown() override { template_.reset(); }

  // The base image on disk is whole for the active version and matches the installed document.
  void ExpectConsistent(World& w, const std::set<std::string>& allowed) {
    const auto active = w.Active("base");
    ASSERT_TRUE(active.has_value());
    EXPECT_TRUE(allowed.count(active->ToString())) << active->ToString();
    EXPECT_EQ(w.InstalledVersion("base"), active);
    EXPECT_FALSE(w.store->Get("operation").has_value());
    const fs::path pkg = w.config.system_root / "packages" / "base";
    const Json a = Json::parse(ReadAll(pkg / "active"));
    const std::string want = vendor_->Get("base-" + active->ToString()).content;
    EXPECT_EQ(ReadAll(pkg / ("image-" + a.value("slot", "?"))).substr(0, want.size()), want);
    EXPECT_TRUE(fs::exists(pkg / "meta" / active->ToString() / "bin" / "health"));
    EXPECT_EQ(w.Active("software"), V("7.0.0"));
  }

  // Crashes the install of `target` at every Fs operation (every `stride`-th one), then recovers.
  CrashStats Enumerate(const std::string& target, bool power_loss, const std::string& end, std::uint64_t stride) {
    CrashStats stats;
    for (std::uint64_t n = 0;; n += stride) {
      SCOPED_TRACE("crash at operation " + std::to_string(n) + (power_loss ? " + power loss" : ""));
      clock_->Set(T0());
      auto w = Ready(target);
      if (::testing::Test::HasFatalFailure()) return stats;
      const std::uint64_t start = w->ffs->operations();
      w->ffs->SetTornWrites(!power_loss);  // SIGKILL inside write(2) leaves half a record
      w->ffs->CrashAfter(n);
      auto r = w->agent->InstallNext(true);
      if (!w->ffs->crashed()) {
        EXPECT_TRUE(r.ok()) << r.error().message();
        stats.ops = w->ffs->operations() - start;
        EXPECT_EQ(w->Active("base"), V(end));
        break;
      }
      EXPECT_FALSE(r.ok() && r->outcome == InstallOutcome::kInstalled);
      w->Close();
      if (power_loss) {
        EXPECT_TRUE(w->ffs->SimulatePowerLoss().ok());
      } else {
        w->ffs->Restart();
      }
      w->Open();
      if (::testing::Test::HasFatalFailure()) return stats;
      stats.torn_tails += !w->store->report().torn_tails.empty();
      auto rec = w->agent->Recover();
      EXPECT_TRUE(rec.ok()) << rec.error().message() << "\n" << w->JournalDump();
      ExpectConsistent(*w, {"1.0.0", end});
      if (auto a = w->Active("base")) ++stats.recovered_to[a->ToString()];
      auto next = w->agent->InstallNext(true);
      EXPECT_TRUE(next.ok()) << (next.ok() ? "" : next.error().message());
      EXPECT_EQ(w->Active("base"), V(end));
      EXPECT_EQ(w->InstalledVersion("base"), V(end));
      ExpectConsistent(*w, {end});
      // A report queued again after a crash keeps its id: one success, however it got there.
      EXPECT_TRUE(w->agent->FlushOutbox().ok());
      int successes = 0;
      for (const auto& e : w->api.events) successes += e.type == "success" && e.name == "base";
      EXPECT_EQ(successes, end == "1.0.0" ? 0 : 1);
      ++stats.points;
      if (::testing::Test::HasFailure()) return stats;
      EXPECT_LT(n, 2000u);
    }
    return stats;
  }

  static FakeClock* clock_;
  static Vendor* vendor_;
  std::unique_ptr<World> template_;
  std::string template_target_;
};

FakeClock* AgentCrashTest::clock_ = nullptr;
Vendor* AgentCrashTest::vendor_ = nullptr;

TEST_F(AgentCrashTest, CrashAtEveryOperationOfAnInstall) {
  auto s = Enumerate("base-2.0.0", false, "2.0.0", 1);
  EXPECT_GT(s.points, 10);
  EXPECT_GT(s.recovered_to.count("1.0.0"), 0u);  // undone before the commit
  EXPECT_GT(s.recovered_to.count("2.0.0"), 0u);  // finished from the commit on
  EXPECT_GT(s.torn_tails, 0);
  std::cout << "install base 1.0.0 -> 2.0.0: " << s.ops << " Fs operations, crashed at " << s.points
            << " (recovered to 1.0.0: " << s.recovered_to["1.0.0"] << ", torn log tails cut: " << s.torn_tails << ")\n";
}

TEST_F(AgentCrashTest, PowerLossAtEveryOperationOfAnInstall) {
  auto s = Enumerate("base-2.0.0", true, "2.0.0", 1);
  EXPECT_GT(s.points, 10);
  EXPECT_GT(s.recovered_to.count("1.0.0"), 0u);
  EXPECT_GT(s.recovered_to.count("2.0.0"), 0u);
  std::cout << "install base 1.0.0 -> 2.0.0: " << s.ops << " Fs operations, power loss at " << s.points << "\n";
}

TEST_F(AgentCrashTest, AReleaseInterruptedThreeTimesIsMarkedFailed) {
  auto w = Ready("base-2.0.0");
  const std::uint64_t start = w->ffs->operations();
  for (int attempt = 1; attempt <= 3; ++attempt) {
    SCOPED_TRACE("attempt " + std::to_string(attempt));
    // Operation 70 of an install is past the switch (after-activate), before the commit.
    w->ffs->CrashAfter(70);
    auto r = w->agent->InstallNext(true);
    ASSERT_TRUE(w->ffs->crashed());
    EXPECT_FALSE(r.ok());
    w->Close();
    w->ffs->Restart();
    w->Open();
    ASSERT_OK(w->agent->Recover());
    EXPECT_EQ(w->Active("base"), V("1.0.0"));
  }
  EXPECT_GT(w->ffs->operations() - start, 70u);
  EXPECT_FALSE(w->JournalFind("rollback", "interrupted install undone").is_null()) << w->JournalDump();
  auto r = w->agent->InstallNext(true);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->outcome, InstallOutcome::kNothing);
  EXPECT_NE(r->message.find("not retried"), std::string::npos) << r->message;
  EXPECT_EQ(w->Active("base"), V("1.0.0"));
}

TEST_F(AgentCrashTest, CrashDuringAFailedInstallAndItsRollback) {
  WriteFile(vendor_->HealthFailMarker("base", "3.0.0"), "");
  auto s = Enumerate("base-3.0.0", false, "1.0.0", 1);
  fs::remove(vendor_->HealthFailMarker("base", "3.0.0"));
  EXPECT_GT(s.points, 10);
  std::cout << "failed install base 3.0.0 + rollback: " << s.ops << " Fs operations, crashed at " << s.points
            << " (recovered to 1.0.0: " << s.recovered_to["1.0.0"] << ", torn log tails cut: " << s.torn_tails << ")\n";
}

TEST_F(AgentCrashTest, PowerLossDuringAFailedInstallAndItsRollback) {
  WriteFile(vendor_->HealthFailMarker("base", "3.0.0"), "");
  auto s = Enumerate("base-3.0.0", true, "1.0.0", 1);
  fs::remove(vendor_->HealthFailMarker("base", "3.0.0"));
  EXPECT_GT(s.points, 10);
  std::cout << "failed install base 3.0.0 + rollback: " << s.ops << " Fs operations, power loss at " << s.points << "\n";
}

}  // namespace
}  // namespace upkeep::agent
