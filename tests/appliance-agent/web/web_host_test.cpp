// The appliance updates page (web_host.hpp) over real HTTPS on loopback, with a fake
// UpdatesSource and an in-memory account repository.
#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "page_test_kit.hpp"
#include "upkeep/agent/config.hpp"
#include "upkeep/agent/web_host.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/text.hpp"
#include "upkeep/net/testing_cert.hpp"
#include "upkeep/web/password.hpp"

// In the kit's namespace: its names come first (net::test's HttpResponse, not the agent's).
namespace upkeep::agent::pagetest {
namespace {

Json SampleStatus() {
  return Json::parse(R"({
    "agent_version": "0.4.0", "system_time": "2030-01-01T12:00:00Z", "time_synchronised": false,
    "installed": [{"name": "base-os", "version": "5.0.0", "kind": "base"},
                  {"name": "<script>alert(1)</script>", "version": "1.2.3", "kind": "software"}],
    "last_check": {"at": "2030-01-01T11:59:00Z", "ok": true, "steps": 2},
    "operation": null,
    "plan": [{"name": "base-os", "version": "5.1.0", "kind": "base", "state": "next", "reason": ""},
             {"name": "site-app", "version": "7.0.0", "kind": "software", "state": "waiting",
              "reason": "needs base-os 5.1.0 first"}],
    "history": [{"at": "2030-01-01T11:00:00Z", "type": "failure", "name": "site-app", "version": "6.9.0",
                 "phase": "health_check", "log_tail": "health check <b>failed</b>: port 443 closed"},
                {"at": "2030-01-01T10:00:00Z", "type": "check", "ok": true, "steps": 2}]
  })");
}

class WebHostTest : public PageTest {
 protected:
  WebHostTest() : PageTest(SysTime(std::chrono::seconds(1893456000))) {}
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("agent_web_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    TrustCertificate(dir_);
    source_.status = SampleStatus();
    StartWebHost(source_);
  }
  void TearDown() override {
    PageTest::TearDown();
    std::filesystem::remove_all(dir_);
  }

  std::filesystem::path dir_;
  FakeSource source_;
};

TEST_F(WebHostTest, FirstStartLogsTheTokenAndSetupCreatesTheAdminOnce) {
  const std::string token = SetupToken();
  ASSERT_EQ(token.size(), 32u);
  {
    std::lock_guard lock(log_mu_);
    ASSERT_EQ(log_.size(), 1u);
    EXPECT_EQ(log_[0], "web: first start: open https://127.0.0.1:" + std::to_string(host_->port()) +
                           "/setup with the one-time setup token " + token + " (valid 24 h)");
  }
  // Before setup every page leads to /setup.
  auto r = Do("GET", "/");
  EXPECT_EQ(r.status, 303);
  EXPECT_EQ(r.Header("Location").value_or(""), "/setup");
  EXPECT_EQ(Do("GET", "/login").Header("Location").value_or(""), "/setup");

  Jar jar;
  r = Submit(jar, "/setup", "/setup",
             "setup_token=00000000000000000000000000000000&name=admin&password=correct-horse-42&password2=correct-horse-42");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("id=\"setup_token-error\""), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("value=\"admin\""), std::string::npos);  // the name is kept, never a password
  EXPECT_EQ(r.body.find("correct-horse-42"), std::string::npos);

  r = Submit(jar, "/setup", "/setup", "setup_token=" + token + "&name=admin&password=correct-horse-42&password2=other-horse-42");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("id=\"password2-error\""), std::string::npos);

  r = Submit(jar, "/setup", "/setup", "setup_token=" + token + "&name=admin&password=short&password2=short");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("id=\"password-error\""), std::string::npos) << r.body;

  r = Submit(jar, "/setup", "/setup", "setup_token=" + token + "&name=Bad%20Name&password=correct-horse-42&password2=correct-horse-42");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("id=\"name-error\""), std::string::npos) << r.body;

  // What the user typed comes back escaped.
  r = Submit(jar, "/setup", "/setup", "setup_token=" + token + "&name=%22%3E%3Cscript%3Ex%3C%2Fscript%3E&password=correct-horse-42&password2=correct-horse-42");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("value=\"&quot;&gt;&lt;script&gt;x&lt;/script&gt;\""), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("<script"), std::string::npos);

  r = Submit(jar, "/setup", "/setup", "setup_token=" + token + "&name=admin&password=correct-horse-42&password2=correct-horse-42");
  EXPECT_EQ(r.status, 303) << r.body;
  EXPECT_EQ(r.Header("Location").value_or(""), "/login?setup=done");
  auto count = accounts_.Count();
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(*count, 1u);

  // Second setup: the form is gone and a replayed post is refused.
  EXPECT_EQ(Do("GET", "/setup").Header("Location").value_or(""), "/login");
  const std::string csrf = jar.cookies["__Host-upkeep_form"];
  r = Do("POST", "/setup", &jar,
         "csrf_token=" + csrf + "&setup_token=" + token + "&name=evil&password=correct-horse-42&password2=correct-horse-42");
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(*accounts_.Count(), 1u);
}

TEST_F(WebHostTest, ExpiredSetupTokenIsRefused) {
  const std::string token = SetupToken();
  clock_.Advance(std::chrono::hours(25));
  Jar jar;
  auto r = Submit(jar, "/setup", "/setup", "setup_token=" + token + "&name=admin&password=correct-horse-42&password2=correct-horse-42");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("id=\"setup_token-error\""), std::string::npos);
  EXPECT_EQ(*accounts_.Count(), 0u);
}

TEST_F(WebHostTest, LoginShowsTheUpdatesPageAndLogoutEndsTheSession) {
  DoSetup();
  Jar jar = LoginAs("admin", "correct-horse-42");
  const std::string session = jar.cookies["__Host-upkeep_session"];
  ASSERT_EQ(session.size(), 64u);
  auto page = Do("GET", "/", &jar);
  ASSERT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("Signed in as <strong>admin</strong>"), std::string::npos);
  auto logout = Do("POST", "/logout", &jar, "csrf_token=" + CsrfFor(page.body, "/logout"));
  EXPECT_EQ(logout.status, 303);
  EXPECT_EQ(logout.Header("Location").value_or(""), "/login");
  EXPECT_EQ(jar.cookies.count("__Host-upkeep_session"), 0u);
  Jar old;
  old.cookies["__Host-upkeep_session"] = session;
  auto r = Do("GET", "/", &old);
  EXPECT_EQ(r.status, 303);
  EXPECT_EQ(r.Header("Location").value_or(""), "/login");
  EXPECT_EQ(Do("GET", "/api/v1/status", &old).status, 401);
}

TEST_F(WebHostTest, WrongPasswordIsShownAtTheFieldThenRateLimited429) {
  DoSetup();
  Jar jar;
  auto r = Submit(jar, "/login", "/login", "name=admin&password=wrong-password-1");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("id=\"password-error\""), std::string::npos);
  EXPECT_NE(r.body.find("wrong account name or password"), std::string::npos);
  int status = 0;
  for (int i = 0; i < 6 && status != 429; ++i) status = Submit(jar, "/login", "/login", "name=admin&password=wrong-password-1").status;
  EXPECT_EQ(status, 429);
  // Even the right password waits now.
  r = Submit(jar, "/login", "/login", "name=admin&password=correct-horse-42");
  EXPECT_EQ(r.status, 429);
  EXPECT_TRUE(r.Header("Retry-After").has_value());
  EXPECT_EQ(jar.cookies.count("__Host-upkeep_session"), 0u);
  // Empty fields are answered next to the field, without a login attempt.
  r = Submit(jar, "/login", "/login", "name=&password=");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("id=\"name-error\""), std::string::npos);
}

TEST_F(WebHostTest, PagesNeedASession) {
  DoSetup();
  auto r = Do("GET", "/");
  EXPECT_EQ(r.status, 303);
  EXPECT_EQ(r.Header("Location").value_or(""), "/login");
  r = Do("POST", "/check", nullptr, "csrf_token=x");
  EXPECT_EQ(r.status, 303);
  EXPECT_EQ(r.Header("Location").value_or(""), "/login");
  Jar forged;
  forged.cookies["__Host-upkeep_session"] = std::string(64, 'a');
  EXPECT_EQ(Do("GET", "/", &forged).status, 303);
  r = Do("GET", "/api/v1/status", &forged);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.body.find("base-os"), std::string::npos);
  EXPECT_EQ(Do("GET", "/metrics").status, 404);
  EXPECT_EQ(source_.checks.load(), 0);
}

TEST_F(WebHostTest, CsrfMissingOrWrongIsRefused) {
  DoSetup();
  Jar jar = LoginAs("admin", "correct-horse-42");
  auto page = Do("GET", "/", &jar);
  const std::string check = CsrfFor(page.body, "/check");
  const std::string logout = CsrfFor(page.body, "/logout");
  ASSERT_FALSE(check.empty());
  auto r = Do("POST", "/check", &jar, "");
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("form without a CSRF token"), std::string::npos);
  EXPECT_EQ(Do("POST", "/check", &jar, "csrf_token=" + std::string(64, '0')).status, 403);
  EXPECT_EQ(Do("POST", "/check", &jar, "csrf_token=" + logout).status, 403);  // bound to its action
  EXPECT_EQ(Do("POST", "/check", &jar, "csrf_token=" + check, "Origin: https://evil.example\r\n").status, 403);
  EXPECT_EQ(source_.checks.load(), 0);
  EXPECT_EQ(Do("POST", "/logout", &jar, "csrf_token=" + check).status, 403);
  EXPECT_EQ(Do("GET", "/", &jar).status, 200);  // still signed in

  // Login and setup forms carry a token too (double-submit cookie).
  Jar fresh;
  EXPECT_EQ(Do("POST", "/login", &fresh, "name=admin&password=correct-horse-42").status, 403);
  Do("GET", "/login", &fresh);
  EXPECT_EQ(Do("POST", "/login", &fresh, "csrf_token=" + std::string(32, '0') + "&name=admin&password=correct-horse-42")
                .status,
            403);
  EXPECT_EQ(fresh.cookies.count("__Host-upkeep_session"), 0u);
}

TEST_F(WebHostTest, UpdatesPageShowsStatusPlanAndHistoryEscaped) {
  DoSetup();
  Jar jar = LoginAs("admin", "correct-horse-42");
  auto r = Do("GET", "/", &jar);
  ASSERT_EQ(r.status, 200);
  const std::string& b = r.body;
  EXPECT_NE(b.find("<td>base-os</td><td>base</td><td>5.0.0</td>"), std::string::npos) << b;
  EXPECT_NE(b.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_EQ(b.find("<script"), std::string::npos);
  EXPECT_EQ(b.find("<b>failed</b>"), std::string::npos);
  EXPECT_NE(b.find("health check &lt;b&gt;failed&lt;/b&gt;: port 443 closed"), std::string::npos);
  EXPECT_NE(b.find("0.4.0"), std::string::npos);
  EXPECT_NE(b.find("2030-01-01T12:00:00Z (NOT synchronised)"), std::string::npos);
  EXPECT_NE(b.find("2030-01-01T11:59:00Z ok, 2 update(s) to install"), std::string::npos);
  // Plan in install order, with the reason.
  const auto first = b.find("<td>1</td><td>base-os</td><td>base</td><td>5.1.0</td><td>next</td>");
  const auto second = b.find("<td>2</td><td>site-app</td><td>software</td><td>7.0.0</td><td>waiting</td><td>needs "
                             "base-os 5.1.0 first</td>");
  EXPECT_NE(first, std::string::npos) << b;
  EXPECT_NE(second, std::string::npos);
  EXPECT_LT(first, second);
  // History newest first.
  EXPECT_LT(b.find("2030-01-01T11:00:00Z"), b.find("2030-01-01T10:00:00Z"));
  EXPECT_NE(b.find("Check for updates"), std::string::npos);

  auto api = Do("GET", "/api/v1/status", &jar);
  ASSERT_EQ(api.status, 200);
  EXPECT_EQ(Json::parse(api.body), SampleStatus());

  {
    std::lock_guard lock(source_.mu);
    source_.fail = true;
  }
  r = Do("GET", "/", &jar);
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("store unreadable"), std::string::npos);
}

TEST_F(WebHostTest, HostileStatusFieldsAreShownAsAbsent) {
  DoSetup();
  Jar jar = LoginAs("admin", "correct-horse-42");
  {
    std::lock_guard lock(source_.mu);
    source_.status = Json::parse(R"({"installed": "nope", "plan": [1, {"name": ["x"]}], "history": {"a": 1},
                                     "last_check": 5, "time_synchronised": "yes"})");
  }
  auto r = Do("GET", "/", &jar);
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("Nothing is installed yet."), std::string::npos);
  EXPECT_NE(r.body.find("(unknown)"), std::string::npos);
}

TEST_F(WebHostTest, AdminCheckCallsTheSource) {
  DoSetup();
  Jar jar = LoginAs("admin", "correct-horse-42");
  auto page = Do("GET", "/", &jar);
  auto r = Do("POST", "/check", &jar, "csrf_token=" + CsrfFor(page.body, "/check"),
              "Origin: https://127.0.0.1:" + std::to_string(host_->port()) + "\r\n");
  EXPECT_EQ(r.status, 303) << r.body;
  EXPECT_EQ(r.Header("Location").value_or(""), "/?checked=1");
  EXPECT_EQ(source_.checks.load(), 1);
  r = Do("GET", "/?checked=1", &jar);
  EXPECT_NE(r.body.find("asked to check for updates"), std::string::npos);
}

TEST_F(WebHostTest, ReadOnlyAccountViewsButCannotCheck) {
  DoSetup();
  ASSERT_NO_FATAL_FAILURE(AddAccount("viewer", web::Role::kReadOnly, "viewer-password-1"));
  Jar jar = LoginAs("viewer", "viewer-password-1");
  auto page = Do("GET", "/", &jar);
  ASSERT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("<button type=\"submit\" disabled>Check for updates"), std::string::npos);
  EXPECT_NE(page.body.find("base-os"), std::string::npos);
  EXPECT_EQ(Do("GET", "/api/v1/status", &jar).status, 200);
  // A valid token does not help: the role decides.
  auto r = Do("POST", "/check", &jar, "csrf_token=" + CsrfFor(page.body, "/check"));
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("needs role &#39;admin&#39;"), std::string::npos) << r.body;
  EXPECT_EQ(source_.checks.load(), 0);
}

TEST_F(WebHostTest, SecurityHeadersOnEveryPage) {
  for (const std::string path : {"/setup", "/", "/static/style.css"}) {
    Jar jar;
    auto r = Do("GET", path, &jar);
    EXPECT_NE(r.Header("Content-Security-Policy").value_or("").find("default-src 'self'"), std::string::npos) << path;
    EXPECT_EQ(r.Header("X-Frame-Options").value_or(""), "DENY") << path;
    EXPECT_EQ(r.Header("X-Content-Type-Options").value_or(""), "nosniff") << path;
    if (path != "/static/style.css") {
      EXPECT_EQ(r.Header("Cache-Control").value_or(""), "no-store") << path;
    }
  }
  Jar jar;
  auto r = Do("GET", "/setup", &jar);
  const std::string cookie = r.Header("Set-Cookie").value_or("");
  EXPECT_NE(cookie.find("__Host-upkeep_form="), std::string::npos);
  EXPECT_NE(cookie.find("Secure"), std::string::npos);
  EXPECT_NE(cookie.find("HttpOnly"), std::string::npos);
  EXPECT_NE(cookie.find("SameSite=Strict"), std::string::npos);
  EXPECT_EQ(r.body.find("<script"), std::string::npos);
  EXPECT_EQ(r.body.find("style="), std::string::npos);  // no inline style: CSP default-src 'self'
  DoSetup();
  Jar in = LoginAs("admin", "correct-horse-42");
  auto page = Do("GET", "/", &in);
  EXPECT_EQ(page.Header("Cache-Control").value_or(""), "no-store");
  EXPECT_EQ(Do("GET", "/api/v1/status", &in).Header("Cache-Control").value_or(""), "no-store");
}

// The daemon service as the daemon makes it: accounts in STATE/web-accounts.json (0600), the
// setup token in the log, the system clock and randomness.
// Browsers ask for /favicon.ico on every page: it is served (an SVG), not a 404.
TEST_F(WebHostTest, FaviconIsServed) {
  Jar jar;
  auto fav = Do("GET", "/favicon.ico", &jar);
  EXPECT_EQ(fav.status, 200);
  EXPECT_EQ(fav.Header("Content-Type").value_or(""), "image/svg+xml");
  EXPECT_EQ(fav.body.rfind("<svg ", 0), 0u);
  EXPECT_EQ(fav.Header("X-Content-Type-Options").value_or(""), "nosniff");
}

TEST_F(WebHostTest, DaemonServiceKeepsAccountsInTheStateDirectory) {
  AgentConfig config;
  config.state_dir = dir_ / "state";
  std::filesystem::create_directories(config.state_dir);
  WebConfig wc;
  wc.listen = "127.0.0.1:0";
  wc.certificate = cert_.certificate;
  wc.private_key = cert_.private_key;
  config.web = wc;
  std::vector<std::string> lines;
  std::mutex mu;
  auto service = WebDaemonService()(config, [&](const std::string& l) {
    std::lock_guard lock(mu);
    lines.push_back(l);
  });
  ASSERT_TRUE(service.ok()) << service.error().message();
  ASSERT_NE(*service, nullptr);
  std::string token;
  std::uint16_t port = 0;
  {
    std::lock_guard lock(mu);
    ASSERT_GE(lines.size(), 1u);
    const std::string& l = lines[0];
    ASSERT_EQ(l.rfind("web: first start: open https://127.0.0.1:", 0), 0u) << l;
    port = static_cast<std::uint16_t>(std::stoi(l.substr(l.find("127.0.0.1:") + 10)));
    token = l.substr(l.find("token ") + 6, 32);
  }
  host_.reset();  // talk to the service's host instead
  RawClient get(port, ctx_);
  auto form = get.Request(net::test::Get("/setup"));
  ASSERT_TRUE(form.has_value());
  Jar jar;
  jar.Take(*form);
  const std::string body = "csrf_token=" + CsrfFor(form->body, "/setup") + "&setup_token=" + token +
                           "&name=admin&password=correct-horse-42&password2=correct-horse-42";
  RawClient post(port, ctx_);
  auto r = post.Request("POST /setup HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: " + jar.Header() +
                        "\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 303) << r->body;
  const auto file = config.WebAccountsFile();
  ASSERT_TRUE(std::filesystem::exists(file));
  EXPECT_EQ(std::filesystem::status(file).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  service->reset();

  // A restart with an account issues no token; a damaged accounts file stops the start.
  lines.clear();
  auto again = WebDaemonService()(config, [&](const std::string& l) { lines.push_back(l); });
  ASSERT_TRUE(again.ok());
  for (const auto& l : lines) EXPECT_EQ(l.find("setup token"), std::string::npos) << l;
  again->reset();
  ASSERT_TRUE(WriteFileAtomic(file, "{\"version\": 1, \"accounts\": 7}").ok());
  auto broken = WebDaemonService()(config, {});
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.error().message().find("web-accounts.json"), std::string::npos) << broken.error().message();
}

TEST(WebConfigTest, ParsesTheWebSectionStrictly) {
  Json j = {{"state_dir", "/var/lib/upkeep"},
            {"system_root", "/opt/site"},
            {"updater_url", "https://u.example"},
            {"director_key_file", "director.pub"},
            {"web", {{"listen", "[::]:8443"}, {"certificate", "web.crt"}, {"private_key", "web.key"}}}};
  auto c = AgentConfig::FromJson(j, "/etc/upkeep");
  ASSERT_TRUE(c.ok()) << c.error().message();
  ASSERT_TRUE(c->web.has_value());
  EXPECT_EQ(c->web->listen, "[::]:8443");
  EXPECT_EQ(c->web->certificate, std::filesystem::path("/etc/upkeep/web.crt"));
  EXPECT_EQ(c->WebAccountsFile(), std::filesystem::path("/var/lib/upkeep/web-accounts.json"));
  auto again = AgentConfig::FromJson(c->ToJson(), "/");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->web->private_key, c->web->private_key);

  Json bad = j;
  bad["web"]["port"] = 1;
  EXPECT_FALSE(AgentConfig::FromJson(bad, "/").ok());
  bad = j;
  bad["web"].erase("listen");
  auto e = AgentConfig::FromJson(bad, "/");
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message().find("web"), std::string::npos);
  bad = j;
  bad["web"]["origin"] = "http://x.example";
  EXPECT_FALSE(AgentConfig::FromJson(bad, "/").ok());
  bad["web"]["origin"] = "https://x.example:8443";
  EXPECT_TRUE(AgentConfig::FromJson(bad, "/").ok());
}

TEST(HtmlEscapeTest, EscapesMarkupAndQuotes) {
  EXPECT_EQ(HtmlEscape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
}

TEST_F(WebHostTest, AdminsManageAccountsAndEveryoneChangesTheirOwnPassword) {
  DoSetup();
  Jar admin = LoginAs("admin", "correct-horse-42");
  auto page = Do("GET", "/", &admin);
  EXPECT_NE(page.body.find("<a href=\"/account\">Account</a>"), std::string::npos);
  auto list = Do("GET", "/accounts", &admin);
  ASSERT_EQ(list.status, 200);
  EXPECT_NE(list.body.find("<td>admin</td><td>admin</td>"), std::string::npos) << list.body;
  EXPECT_EQ(list.body.find("name=\"name\" value=\"admin\""), std::string::npos);  // no disable button for oneself

  // Bad input: each message next to its field, nothing created.
  struct Case {
    std::string fields, field;
  };
  for (const Case& c : {Case{"name=Bad%20Name&role=read-only&password=viewer-pass-42&password2=viewer-pass-42", "name"},
                        Case{"name=viewer&role=support&password=viewer-pass-42&password2=viewer-pass-42", "role"},
                        Case{"name=viewer&role=read-only&password=short&password2=short", "password"},
                        Case{"name=viewer&role=read-only&password=viewer-pass-42&password2=other", "password2"},
                        Case{"name=admin&role=read-only&password=viewer-pass-42&password2=viewer-pass-42", "name"}}) {
    auto r = Submit(admin, "/accounts", "/accounts", c.fields);
    EXPECT_EQ(r.status, 200) << c.fields;
    EXPECT_NE(r.body.find("id=\"" + c.field + "-error\""), std::string::npos) << c.fields << "\n" << r.body;
    EXPECT_EQ(r.body.find("viewer-pass-42"), std::string::npos);
  }
  EXPECT_EQ(*accounts_.Count(), 1u);
  auto made = Submit(admin, "/accounts", "/accounts", "name=viewer&role=read-only&password=viewer-pass-42&password2=viewer-pass-42");
  ASSERT_EQ(made.status, 303) << made.body;
  EXPECT_EQ(made.Header("Location").value_or(""), "/accounts?done=created");
  auto viewer_account = accounts_.Find("viewer");
  ASSERT_TRUE(viewer_account.ok() && viewer_account->has_value());
  EXPECT_EQ((*viewer_account)->role, web::Role::kReadOnly);

  // A read-only account may not manage accounts, but changes its own password.
  Jar viewer = LoginAs("viewer", "viewer-pass-42");
  EXPECT_EQ(Do("GET", "/accounts", &viewer).status, 403);
  auto r = Submit(viewer, "/account", "/account", "current_password=wrong-pass-42&new_password=viewer-pass-43&new_password2=viewer-pass-43");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("id=\"current_password-error\""), std::string::npos) << r.body;
  r = Submit(viewer, "/account", "/account", "current_password=viewer-pass-42&new_password=short&new_password2=short");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("id=\"new_password-error\""), std::string::npos) << r.body;
  r = Submit(viewer, "/account", "/account", "current_password=viewer-pass-42&new_password=viewer-pass-43&new_password2=viewer-pass-44");
  EXPECT_NE(r.body.find("id=\"new_password2-error\""), std::string::npos) << r.body;
  r = Submit(viewer, "/account", "/account", "current_password=viewer-pass-42&new_password=viewer-pass-43&new_password2=viewer-pass-43");
  ASSERT_EQ(r.status, 303) << r.body;
  EXPECT_EQ(r.Header("Location").value_or(""), "/account?changed=1");
  EXPECT_EQ(Do("GET", "/", &viewer).status, 200);  // the fresh session cookie came with the answer
  Jar stale;
  EXPECT_EQ(Submit(stale, "/login", "/login", "name=viewer&password=viewer-pass-42").status, 200);  // old password
  Jar again = LoginAs("viewer", "viewer-pass-43");

  // Disabling ends the account's sessions; an admin cannot disable itself.
  r = Do("POST", "/accounts/state", &admin,
         "csrf_token=" + CsrfFor(Do("GET", "/accounts", &admin).body, "/accounts/state") + "&name=viewer&disabled=true");
  ASSERT_EQ(r.status, 303) << r.body;
  EXPECT_TRUE((*accounts_.Find("viewer"))->disabled);
  EXPECT_EQ(Do("GET", "/", &again).Header("Location").value_or(""), "/login");
  r = Do("POST", "/accounts/state", &admin,
         "csrf_token=" + CsrfFor(Do("GET", "/accounts", &admin).body, "/accounts/state") + "&name=admin&disabled=true");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("role=\"alert\""), std::string::npos) << r.body;
  EXPECT_FALSE((*accounts_.Find("admin"))->disabled);
  // Without the form's token nothing changes.
  EXPECT_EQ(Do("POST", "/accounts/state", &admin, "name=viewer&disabled=false").status, 403);
  EXPECT_TRUE((*accounts_.Find("viewer"))->disabled);
}

}  // namespace
}  // namespace upkeep::agent::pagetest
