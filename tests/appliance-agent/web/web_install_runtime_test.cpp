// "Install this update" on a real agent state (the core tests' world, core_world.hpp): the install
// job (InstallUpTo) installs the plan in order up to the chosen step, with the agent's phase and
// percent lines reaching the job through JobQueue::OnLog; a release whose health check fails ends
// as a failed job naming the rollback; the window approval (DecideCycleInstall) makes the daemon's
// install loop run in a maintenance window and not before, and ends once its step is reached.
#include "../core/core_world.hpp"
#include "upkeep/agent/runtime.hpp"
#include "upkeep/agent/web_jobs.hpp"

namespace upkeep::agent {
namespace {

class NullReporter final : public JobReporter {
 public:
  void Phase(const std::string&) override {}
  void Progress(std::uint64_t, std::uint64_t) override {}
  void Line(const std::string& line) override { lines.push_back(line); }
  std::vector<std::string> lines;
};

class InstallJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AddStandardReleases(vendor_);
    vendor_.channel = {"base-2.0.0", "software-7.1.0", "software-8.0.0"};
    w_ = std::make_unique<World>(vendor_, clock_);
    w_->Provision("base-1.0.0");
    w_->Provision("software-7.0.0");
    w_->Check();
  }
  // An agent on the world's state whose log lines go to `queue` (as the daemon's OnLog does).
  std::unique_ptr<Agent> LoggingAgent(JobQueue& queue) {
    AgentDeps d;
    d.config = &w_->config;
    d.fs = w_->ffs.get();
    d.store = w_->store.get();
    d.clock = &clock_;
    d.random = &w_->random;
    d.identity = &vendor_.identity();
    d.director_key = &vendor_.director().public_key();
    d.api = &w_->api;
    d.http = &w_->http;
    d.tuf_fetcher = w_->tuf.get();
    d.runner = &RealProcessRunner::Instance();
    d.sleeper = &w_->sleeper;
    d.log = [&queue](const std::string& line) { queue.OnLog(line); };
    return std::make_unique<Agent>(std::move(d));
  }
  void SetWindows(const std::vector<std::string>& windows, bool auto_install) {
    Settings s = w_->agent->CurrentSettings();
    s.maintenance_windows = windows;
    s.auto_install = auto_install;
    ASSERT_TRUE(w_->store->Put("settings", s.ToJson()).ok());
  }

  FakeClock clock_{T0()};
  Vendor vendor_{clock_};
  std::unique_ptr<World> w_;
};

TEST_F(InstallJobTest, InstallsThePlanInOrderUpToTheChosenStepWithPhasesInTheJob) {
  JobQueue queue(clock_, {});
  auto agent = LoggingAgent(queue);
  Store& store = *w_->store;
  auto id = queue.Submit("install", "Install software 7.1.0", "admin", [&](AgentRuntime&, JobReporter& r) {
    return InstallUpTo(*agent, store, "software", "7.1.0", r);
  });
  ASSERT_TRUE(id.ok());
  AgentRuntime unused;
  queue.RunPending(unused);
  auto job = queue.Get(*id);
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->state, "succeeded") << job->result;
  EXPECT_EQ(job->result, "base 2.0.0, software 7.1.0 installed");
  EXPECT_EQ(w_->InstalledVersion("base"), V("2.0.0"));
  EXPECT_EQ(w_->InstalledVersion("software"), V("7.1.0"));  // not 8.0.0: the job stops at the chosen step
  // Phases in order, for both steps, as lines the queue recognised.
  std::vector<std::string> phases;
  for (const auto& l : job->lines) {
    if (auto at = l.find(": phase "); at != std::string::npos) phases.push_back(l.substr(0, at) + "/" + l.substr(at + 8));
  }
  const std::vector<std::string> want = {"base 2.0.0/download",     "base 2.0.0/verify",       "base 2.0.0/backup",
                                         "base 2.0.0/stage",        "base 2.0.0/activate",     "base 2.0.0/health_check",
                                         "base 2.0.0/commit",       "software 7.1.0/download", "software 7.1.0/verify",
                                         "software 7.1.0/backup",   "software 7.1.0/stage",    "software 7.1.0/activate",
                                         "software 7.1.0/health_check", "software 7.1.0/commit"};
  EXPECT_EQ(phases, want);
  EXPECT_EQ(job->phase, "commit");
  bool percent = false;
  for (const auto& l : job->lines) percent = percent || l == "download software 7.1.0: 100%";
  EXPECT_TRUE(percent);
  // The step is installed now: a second job says so and succeeds.
  NullReporter r;
  auto again = InstallUpTo(*w_->agent, store, "software", "7.1.0", r);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, "software 7.1.0 is installed already");
  // The check after the last step keeps the plan current: only 8.0.0 is left.
  auto plan = w_->agent->Plan();
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->size(), 1u);
  EXPECT_EQ(plan->at(0).step.version, V("8.0.0"));
}

TEST_F(InstallJobTest, AFailedHealthCheckEndsAsAFailedJobNamingTheRollback) {
  WriteFile(vendor_.HealthFailMarker("software", "7.1.0"), "");
  NullReporter r;
  auto result = InstallUpTo(*w_->agent, *w_->store, "software", "8.0.0", r);
  ASSERT_FALSE(result.ok());
  const std::string m = result.error().message();
  EXPECT_NE(m.find("software 7.1.0: health check exited"), std::string::npos) << m;
  EXPECT_NE(m.find("; rolled back to 7.0.0"), std::string::npos) << m;
  EXPECT_NE(m.find("(installed before it: base 2.0.0)"), std::string::npos) << m;
  EXPECT_EQ(w_->InstalledVersion("software"), V("7.0.0"));
  EXPECT_EQ(w_->Active("software"), V("7.0.0"));
  EXPECT_EQ(w_->InstalledVersion("base"), V("2.0.0"));
  // The failed release is not retried from the page.
  auto again = InstallUpTo(*w_->agent, *w_->store, "software", "8.0.0", r);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message().find("software 7.1.0 failed before"), std::string::npos) << again.error().message();
}

TEST_F(InstallJobTest, AStepTheAssignmentDoesNotNameIsRefused) {
  NullReporter r;
  auto result = InstallUpTo(*w_->agent, *w_->store, "software", "9.9.9", r);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), Errc::kNotFound);
  EXPECT_NE(result.error().message().find("no longer names software 9.9.9"), std::string::npos);
  EXPECT_EQ(w_->InstalledVersion("base"), V("1.0.0"));  // nothing installed
}

std::vector<PlannedStep> PlanOf(std::initializer_list<std::pair<const char*, const char*>> steps) {
  std::vector<PlannedStep> out;
  for (const auto& [id, state] : steps) {
    PlannedStep p;
    const std::string s = id;
    p.step.name = s.substr(0, s.find(' '));
    p.step.version = V(s.substr(s.find(' ') + 1));
    p.state = state;
    out.push_back(std::move(p));
  }
  return out;
}

TEST(DecideCycleInstallTest, ApprovalInstallsWithoutAutoInstallUntilItsStepIsReached) {
  const Json approval = {{"name", "site"}, {"version", "5.3.0"}, {"by", "admin"}, {"at", "2030-01-01T00:00:00Z"}};
  const auto plan = PlanOf({{"base 2.0.0", "next"}, {"site 5.3.0", "waiting"}, {"site 6.0.0", "waiting"}});
  // No approval: auto_install decides, nothing is dropped.
  auto d = DecideCycleInstall(false, nullptr, &plan);
  EXPECT_FALSE(d.install);
  EXPECT_FALSE(d.drop_approval);
  EXPECT_TRUE(DecideCycleInstall(true, nullptr, nullptr).install);
  // Approved and not reached: install even with auto_install off.
  d = DecideCycleInstall(false, &approval, &plan);
  EXPECT_TRUE(d.install);
  EXPECT_FALSE(d.drop_approval);
  // No plan (cannot be computed): keep the approval, auto_install decides.
  d = DecideCycleInstall(false, &approval, nullptr);
  EXPECT_FALSE(d.install);
  EXPECT_FALSE(d.drop_approval);
  // Reached: dropped; the next step waits for auto_install.
  const auto reached = PlanOf({{"base 2.0.0", "installed"}, {"site 5.3.0", "installed"}, {"site 6.0.0", "next"}});
  d = DecideCycleInstall(false, &approval, &reached);
  EXPECT_FALSE(d.install);
  EXPECT_TRUE(d.drop_approval);
  EXPECT_EQ(d.why, "site 5.3.0 is installed");
  EXPECT_TRUE(DecideCycleInstall(true, &approval, &reached).install);
  // The assignment no longer names it: dropped.
  const auto other = PlanOf({{"site 6.0.0", "next"}});
  d = DecideCycleInstall(false, &approval, &other);
  EXPECT_FALSE(d.install);
  EXPECT_TRUE(d.drop_approval);
  EXPECT_NE(d.why.find("no longer names site 5.3.0"), std::string::npos);
  // A step up to it failed: dropped.
  const auto failed = PlanOf({{"base 2.0.0", "failed"}, {"site 5.3.0", "waiting"}});
  d = DecideCycleInstall(false, &approval, &failed);
  EXPECT_FALSE(d.install);
  EXPECT_TRUE(d.drop_approval);
  // A malformed document: dropped.
  const Json bad = {{"name", 7}};
  d = DecideCycleInstall(false, &bad, &plan);
  EXPECT_TRUE(d.drop_approval);
  EXPECT_FALSE(d.install);
}

TEST_F(InstallJobTest, ApprovalInstallsInTheWindowAndNotBefore) {
  // T0 is 12:00 UTC; the window opens at 02:00 the next day.
  SetWindows({"daily 02:00-03:00"}, false);
  ASSERT_TRUE(w_->store->Put(kInstallApprovalDoc, Json{{"name", "base"}, {"version", "2.0.0"}, {"by", "admin"},
                                                       {"at", FormatTimestamp(clock_.Now())}})
                  .ok());
  // The daemon cycle's loop, as DaemonCycle runs it.
  auto cycle = [this]() -> std::vector<InstallResult> {
    std::vector<InstallResult> out;
    for (int i = 0; i < 10; ++i) {
      const auto approval = w_->store->Get(kInstallApprovalDoc);
      std::optional<std::vector<PlannedStep>> plan;
      if (approval) {
        if (auto p = w_->agent->Plan(); p.ok()) plan = *p;
      }
      const auto d = DecideCycleInstall(w_->agent->CurrentSettings().auto_install, approval ? &*approval : nullptr,
                                        plan ? &*plan : nullptr);
      if (d.drop_approval) {
        EXPECT_TRUE(w_->store->Remove(kInstallApprovalDoc).ok());
      }
      if (!d.install) break;
      auto r = w_->agent->InstallNext(false);
      EXPECT_TRUE(r.ok()) << r.error().message();
      if (!r.ok() || r->outcome == InstallOutcome::kNothing) break;
      out.push_back(*r);
      if (r->outcome != InstallOutcome::kInstalled) break;
      w_->Check();
    }
    return out;
  };
  auto before = cycle();
  ASSERT_EQ(before.size(), 1u);
  EXPECT_EQ(before[0].outcome, InstallOutcome::kNotAllowedNow);
  EXPECT_EQ(FormatTimestamp(before[0].not_before), "2026-06-04T02:00:00Z");
  EXPECT_EQ(w_->InstalledVersion("base"), V("1.0.0"));
  EXPECT_TRUE(w_->store->Get(kInstallApprovalDoc).has_value());

  clock_.Set(ParseTimestamp("2026-06-04T02:10:00Z").value());
  w_->Check();
  auto in_window = cycle();
  ASSERT_EQ(in_window.size(), 1u);  // up to the approved step, not beyond (auto_install is off)
  EXPECT_EQ(in_window[0].outcome, InstallOutcome::kInstalled);
  EXPECT_EQ(w_->InstalledVersion("base"), V("2.0.0"));
  EXPECT_EQ(w_->InstalledVersion("software"), V("7.0.0"));
  EXPECT_FALSE(w_->store->Get(kInstallApprovalDoc).has_value());  // reached: removed
}

}  // namespace
}  // namespace upkeep::agent
