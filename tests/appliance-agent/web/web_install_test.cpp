// "Install this update" on the appliance page (install_panel.cpp): the plan's install forms, their
// validation (refused forms shown again with 200 and the message next to the form), CSRF and
// roles, the jobs they submit (a JobQueue wired in as the daemon would), the maintenance-window
// approval and its cancellation, the status section's live operation and the history's
// failures. The page runs over real HTTPS on loopback with a fake UpdatesSource.
#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "page_test_kit.hpp"
#include "upkeep/agent/runtime.hpp"
#include "upkeep/agent/web_host.hpp"
#include "upkeep/agent/web_jobs.hpp"
#include "upkeep/common/text.hpp"
#include "upkeep/net/testing_cert.hpp"
#include "upkeep/web/password.hpp"

// In the kit's namespace: its names come first (net::test's HttpResponse, not the agent's).
namespace upkeep::agent::pagetest {
namespace {

Json PlanStatus() {
  return Json::parse(R"({
    "agent_version": "0.4.0", "system_time": "2030-01-01T12:00:00Z", "time_synchronised": true,
    "installed": [{"name": "base", "version": "1.0.0", "kind": "base"}, {"name": "site", "version": "5.2.0", "kind": "software"}],
    "last_check": {"at": "2030-01-01T11:59:00Z", "ok": true, "steps": 2}, "operation": null,
    "plan": [{"name": "base", "version": "1.0.0", "kind": "base", "state": "installed", "reason": ""},
             {"name": "base", "version": "2.0.0", "kind": "base", "state": "next", "reason": ""},
             {"name": "site", "version": "5.3.0", "kind": "software", "state": "waiting", "reason": "needs the steps before it first"}],
    "auto_install": false, "maintenance_windows": [], "next_window": null, "install_approval": null,
    "history": []
  })");
}

class InstallPageTest : public PageTest {
 protected:
  InstallPageTest() : PageTest(SysTime(std::chrono::seconds(1893456000))) { post_origin_ = true; }
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("agent_install_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    TrustCertificate(dir_);
    source_.status = PlanStatus();
  }
  void TearDown() override {
    PageTest::TearDown();
    std::filesystem::remove_all(dir_);
  }

  void Start(bool with_jobs) {
    WebDaemonLink link;
    if (with_jobs) link.jobs = &jobs_;
    StartWebHost(source_, link);
    DoSetup();
    admin_ = LoginAs("admin", kAdminPassword);
  }

  HttpResponse Install(const std::string& fields) { return Submit(admin_, "/", "/install", fields); }
  void SetStatus(const std::function<void(Json&)>& edit) {
    std::lock_guard lock(source_.mu);
    edit(source_.status);
  }

  std::filesystem::path dir_;
  FakeSource source_;
  Jar admin_;
};

TEST_F(InstallPageTest, PlanOffersInstallNowPerStepAndSaysLaterStepsInstallTheEarlierOnes) {
  Start(true);
  auto page = Do("GET", "/", &admin_);
  ASSERT_EQ(page.status, 200);
  EXPECT_TRUE(Has(page.body, "action=\"/install\" id=\"install-2\"")) << page.body;
  EXPECT_TRUE(Has(page.body, "action=\"/install\" id=\"install-3\""));
  EXPECT_FALSE(Has(page.body, "id=\"install-1\""));  // installed: no form
  EXPECT_TRUE(Has(page.body, "name=\"when\" value=\"now\">Install now</button>"));
  EXPECT_TRUE(Has(page.body, "installs the 1 step before it first, in order"));
  // No maintenance windows set: no window button.
  EXPECT_FALSE(Has(page.body, "Install in the next maintenance window"));
}

TEST_F(InstallPageTest, InstallNowSubmitsAnInstallJobAndRedirectsToIt) {
  Start(true);
  auto r = Install("name=site&version=5.3.0&when=now");
  ASSERT_EQ(r.status, 303) << r.body;
  EXPECT_EQ(r.Header("Location").value_or(""), "/jobs/1");
  auto job = jobs_.Get(1);
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->kind, "install");
  EXPECT_EQ(job->title, "Install site 5.3.0");
  EXPECT_EQ(job->by, "admin");
  EXPECT_EQ(job->state, "queued");
  // A second install while one waits: refused next to the form, 200.
  r = Install("name=base&version=2.0.0&when=now");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "install job is already queued")) << r.body;
  EXPECT_TRUE(Has(r.body, "id=\"install-error-2\""));
  EXPECT_EQ(jobs_.Recent(10).size(), 1u);
  // The job page shows it.
  auto jp = Do("GET", "/jobs/1", &admin_);
  EXPECT_EQ(jp.status, 200);
  EXPECT_TRUE(Has(jp.body, "Install site 5.3.0"));
}

TEST_F(InstallPageTest, EveryFieldIsValidatedAndRefusalsAreShownWith200) {
  Start(true);
  struct Case {
    std::string fields, message;
  };
  const std::vector<Case> cases = {
      {"name=nope&version=1.0.0&when=now", "nope 1.0.0 is not in the plan"},
      {"name=site&version=9.9.9&when=now", "site 9.9.9 is not in the plan"},
      {"name=base&version=1.0.0&when=now", "base 1.0.0 is installed already"},
      {"name=site&version=5.3.0&when=tomorrow", "choose when: now or in the next maintenance window"},
      {"name=site&version=5.3.0", "choose when: now or in the next maintenance window"},
      {"version=5.3.0&when=now", "choose a step of the plan to install"},
      {"name=site&version=" + std::string(300, '1') + "&when=now", "choose a step of the plan to install"},
      {"name=site&version=5.3.0&when=window", "no maintenance windows are set"},
  };
  for (const auto& c : cases) {
    auto r = Install(c.fields);
    EXPECT_EQ(r.status, 200) << c.fields;
    EXPECT_TRUE(Has(r.body, HtmlEscape(c.message))) << c.fields << "\n" << r.body;
    EXPECT_TRUE(Has(r.body, "role=\"alert\"")) << c.fields;
  }
  EXPECT_TRUE(jobs_.Recent(10).empty());
}

TEST_F(InstallPageTest, AStepAfterAFailedOneIsNotInstallable) {
  SetStatus([](Json& s) { s["plan"][1]["state"] = "failed"; });
  Start(true);
  auto page = Do("GET", "/", &admin_);
  EXPECT_TRUE(Has(page.body, "Not installable: its install failed and was rolled back"));
  EXPECT_TRUE(Has(page.body, "Not installable: needs base 2.0.0 first, whose install failed"));
  EXPECT_FALSE(Has(page.body, "action=\"/install\""));
  // Forged anyway: refused.
  auto r = Do("POST", "/install", &admin_, "csrf_token=x&name=site&version=5.3.0&when=now");
  EXPECT_EQ(r.status, 403);  // a wrong CSRF token
  SetStatus([](Json& s) { s["plan"][1]["state"] = "next"; });
  const std::string csrf = CsrfFor(Do("GET", "/", &admin_).body, "/install");
  SetStatus([](Json& s) { s["plan"][1]["state"] = "failed"; });
  r = Do("POST", "/install", &admin_, "csrf_token=" + csrf + "&name=site&version=5.3.0&when=now");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "needs base 2.0.0 first")) << r.body;
  EXPECT_TRUE(jobs_.Recent(10).empty());
}

TEST_F(InstallPageTest, CsrfAndRoleAreChecked) {
  Start(true);
  auto page = Do("GET", "/", &admin_);
  const std::string csrf = CsrfFor(page.body, "/install");
  ASSERT_FALSE(csrf.empty());
  EXPECT_EQ(Do("POST", "/install", &admin_, "name=site&version=5.3.0&when=now").status, 403);
  EXPECT_EQ(Do("POST", "/install", &admin_, "csrf_token=" + CsrfFor(page.body, "/check") +
                                                "&name=site&version=5.3.0&when=now")
                .status,
            403);  // another form's token
  EXPECT_EQ(Do("POST", "/install", nullptr, "csrf_token=" + csrf + "&name=site&version=5.3.0&when=now").status, 303);
  ASSERT_NO_FATAL_FAILURE(AddAccount("viewer", web::Role::kReadOnly, "viewer-password-1"));
  Jar jar = LoginAs("viewer", "viewer-password-1");
  auto vp = Do("GET", "/", &jar);
  EXPECT_TRUE(Has(vp.body, "value=\"now\" disabled>Install now")) << vp.body;
  auto r = Do("POST", "/install", &jar, "csrf_token=" + CsrfFor(vp.body, "/install") + "&name=site&version=5.3.0&when=now");
  EXPECT_EQ(r.status, 403);
  r = Do("POST", "/install/cancel", &jar, "csrf_token=" + CsrfFor(vp.body, "/install"));
  EXPECT_EQ(r.status, 403);
  EXPECT_TRUE(jobs_.Recent(10).empty());
}

TEST_F(InstallPageTest, WithoutTheDaemonTheActionIsUnavailable) {
  Start(false);
  auto page = Do("GET", "/", &admin_);
  EXPECT_TRUE(Has(page.body, "Installing from this page needs the agent daemon"));
  EXPECT_TRUE(Has(page.body, "value=\"now\" disabled>Install now"));
  auto r = Do("POST", "/install", &admin_, "csrf_token=" + CsrfFor(page.body, "/install") + "&name=site&version=5.3.0&when=now");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "needs the agent daemon"));
}

TEST_F(InstallPageTest, WindowApprovalIsAJobAndTheScheduleIsShownWithCancel) {
  SetStatus([](Json& s) {
    s["maintenance_windows"] = Json::array({"Sat 01:00-05:00"});
    s["next_window"] = "2030-01-05T01:00:00Z";
  });
  Start(true);
  auto page = Do("GET", "/", &admin_);
  EXPECT_TRUE(Has(page.body, "the next one opens at 2030-01-05T01:00:00Z"));
  EXPECT_TRUE(Has(page.body, "value=\"window\">Install in the next maintenance window (2030-01-05T01:00:00Z)"));
  // Nothing scheduled: nothing to cancel.
  auto r = Do("POST", "/install/cancel", &admin_, "csrf_token=" + CsrfFor(page.body, "/install"));
  EXPECT_EQ(r.status, 403);  // the install form's token is not the cancel form's
  r = Install("name=site&version=5.3.0&when=window");
  ASSERT_EQ(r.status, 303) << r.body;
  auto job = jobs_.Get(1);
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->kind, "install");
  EXPECT_EQ(job->title, "Install site 5.3.0 in the next maintenance window");
  // What the job keeps, as the status shows it.
  SetStatus([](Json& s) {
    s["install_approval"] = {{"name", "site"}, {"version", "5.3.0"}, {"by", "admin"}, {"at", "2030-01-01T12:00:00Z"}};
  });
  page = Do("GET", "/", &admin_);
  EXPECT_TRUE(Has(page.body, "site 5.3.0: scheduled for the maintenance window at 2030-01-05T01:00:00Z (approved by admin"))
      << page.body;
  const std::string csrf = CsrfFor(page.body, "/install/cancel");
  ASSERT_FALSE(csrf.empty());
  // The approval job still waits: the cancel is refused next to the form (200).
  r = Do("POST", "/install/cancel", &admin_, "csrf_token=" + csrf);
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "is already queued")) << r.body;
  EXPECT_EQ(jobs_.Recent(10).size(), 1u);
}

TEST_F(InstallPageTest, CancelIsAJobAndNeedsSomethingScheduled) {
  Start(true);
  const std::string csrf = CsrfFor(Do("GET", "/", &admin_).body, "/logout");  // any page token for the scope test
  auto r = Do("POST", "/install/cancel", &admin_, "csrf_token=" + csrf);
  EXPECT_EQ(r.status, 403);
  SetStatus([](Json& s) {
    s["install_approval"] = {{"name", "site"}, {"version", "5.3.0"}, {"by", "admin"}, {"at", "2030-01-01T12:00:00Z"}};
  });
  auto page = Do("GET", "/", &admin_);
  const std::string cancel = CsrfFor(page.body, "/install/cancel");
  SetStatus([](Json& s) { s["install_approval"] = nullptr; });
  r = Do("POST", "/install/cancel", &admin_, "csrf_token=" + cancel);
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "no install is scheduled"));
  SetStatus([](Json& s) {
    s["install_approval"] = {{"name", "site"}, {"version", "5.3.0"}, {"by", "admin"}, {"at", "2030-01-01T12:00:00Z"}};
  });
  r = Do("POST", "/install/cancel", &admin_, "csrf_token=" + cancel);
  ASSERT_EQ(r.status, 303) << r.body;
  EXPECT_EQ(jobs_.Get(1)->title, "Cancel the scheduled install");
}

TEST_F(InstallPageTest, StatusShowsARunningInstallWithItsPhaseAndTheLiveScript) {
  Start(true);
  auto page = Do("GET", "/", &admin_);
  EXPECT_FALSE(Has(page.body, "/static/status.js"));
  SetStatus([](Json& s) { s["operation"] = {{"name", "site"}, {"version", "5.3.0"}, {"phase", "health_check"}}; });
  page = Do("GET", "/", &admin_);
  EXPECT_TRUE(Has(page.body, "<span id=\"operation-step\">site 5.3.0</span>: <span id=\"operation-phase\">health_check"))
      << page.body;
  EXPECT_TRUE(Has(page.body, "<script src=\"/static/status.js\"></script>"));
  auto js = Do("GET", "/static/status.js");
  EXPECT_EQ(js.status, 200);
  EXPECT_TRUE(Has(js.body, "/api/v1/status"));
  EXPECT_TRUE(Has(js.Header("Content-Type").value_or(""), "javascript"));
}

TEST_F(InstallPageTest, HistoryMakesFailuresAndRollbacksClear) {
  SetStatus([](Json& s) {
    s["history"] = Json::parse(R"([
      {"at": "2030-01-01T11:02:00Z", "type": "rollback", "name": "site", "version": "5.3.0", "to": "5.2.0",
       "message": "health check exited 1", "log_tail": "port <443> closed"},
      {"at": "2030-01-01T11:01:00Z", "type": "phase", "name": "site", "version": "5.3.0", "phase": "health_check"},
      {"at": "2030-01-01T11:00:00Z", "type": "failure", "name": "base", "version": "2.0.0", "phase": "verify",
       "message": "package signature: bad"}])");
  });
  Start(true);
  auto page = Do("GET", "/", &admin_);
  EXPECT_TRUE(Has(page.body, "<strong>site 5.3.0 failed</strong>: health check exited 1; <span class=\"restored\">rolled "
                             "back to 5.2.0</span>"))
      << page.body;
  EXPECT_TRUE(Has(page.body, "port &lt;443&gt; closed"));
  EXPECT_TRUE(Has(page.body, "<strong>base 2.0.0 failed</strong> during verify: package signature: bad"));
  EXPECT_FALSE(Has(page.body, "history-phase"));
}

TEST(JobQueuePhaseTest, AgentPhaseLinesSetThePhaseAndPercentLinesTheProgress) {
  FakeClock clock(SysTime(std::chrono::seconds(1893456000)));
  JobQueue q(clock, {});
  std::vector<std::pair<std::string, std::uint64_t>> seen;
  auto id = q.Submit("install", "Install site 5.3.0", "admin", [&](AgentRuntime&, JobReporter&) -> Expected<std::string> {
    for (const char* line : {"site 5.3.0: phase download", "download site 5.3.0: 50%", "download site 5.3.0: 100%",
                             "site 5.3.0: phase verify", "site 5.3.0: phase Not A Phase", "install site 5.3.0: 40%",
                             "site 5.3.0: phase health_check"}) {
      q.OnLog(line);
      auto j = q.Get(1);
      seen.emplace_back(j->phase, j->done);
    }
    return std::string("site 5.3.0 installed");
  });
  ASSERT_TRUE(id.ok());
  AgentRuntime unused;
  q.RunPending(unused);
  const std::vector<std::pair<std::string, std::uint64_t>> want = {
      {"download", 0}, {"download", 50}, {"download", 100}, {"verify", 0}, {"verify", 0}, {"install", 40},
      {"health_check", 0}};
  EXPECT_EQ(seen, want);
  auto j = q.Get(1);
  EXPECT_EQ(j->state, "succeeded");
  EXPECT_EQ(j->lines.size(), 7u);
}

}  // namespace
}  // namespace upkeep::agent::pagetest
