// The support dashboard (docs/dashboard.md) over real HTTP on loopback, with the real PostgreSQL
// fixture: first-start setup with the logged one-time token (wrong token, second setup, racing
// CreateFirst), sign-in and sign-out, wrong passwords and the rate limit, pages behind a session,
// CSRF (missing, wrong, foreign origin), search by id and customer, the appliance page (installed
// versions, the plan with an intermediate step and its reasons, history with an escaped hostile
// log tail), and re-enable (support: done and audited as dashboard:NAME; read-only: 403); search
// by licence reference (hash only), channel/groups (admin, audited), pin (the check-in plan and the
// API's plan hold, unpin restores; the API's "pinned" field), revoke (check-ins 403 afterwards),
// the fleet page (version counts, escaped SVG, waves, failure chart; pause/resume/abort by role
// and CSRF), account administration and the own password change with errors next to fields.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <thread>

#include "../../updater/src/dashboard.hpp"
#include "../../updater/src/fleet_state.hpp"
#include "fleet_support.hpp"
#include "upkeep/common/text.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/web/password.hpp"

namespace upkeep::updater::test {
namespace {

const bool kFastHashes = [] {
  SetDashboardPasswordCostForTests(web::PasswordCost::MinForTests());
  return true;
}();

constexpr std::string_view kPassword = "correct horse battery";

std::string FormEncode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.') {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += hex[ch >> 4];
      out += hex[ch & 15];
    }
  }
  return out;
}

// A browser: keeps cookies, reads CSRF tokens out of forms, posts forms with an Origin header.
struct Browser {
  std::uint16_t port;
  std::map<std::string, std::string> cookies;
  std::string origin;
  std::set<std::tuple<std::string, std::string, int>>* observed = nullptr;

  // test::Call sends "Host: 127.0.0.1": a browser's Origin names the host it was sent to.
  explicit Browser(std::uint16_t p) : port(p), origin("http://127.0.0.1") {}

  HttpReply Send(std::string_view method, const std::string& target, std::vector<std::pair<std::string, std::string>> headers,
                 std::string_view body = {}) {
    std::string jar;
    for (const auto& [k, v] : cookies) jar += (jar.empty() ? "" : "; ") + k + "=" + v;
    if (!jar.empty()) headers.emplace_back("Cookie", jar);
    HttpReply r = Call(port, method, target, headers, body);
    // Every "Set-Cookie: NAME=VALUE; ..." of the head (no std::regex: GCC 12 warns inside it under ASan).
    for (std::size_t at = 0; (at = r.head.find("\r\n", at)) != std::string::npos;) {
      at += 2;
      const std::size_t end = std::min(r.head.find("\r\n", at), r.head.size());
      const std::string line = r.head.substr(at, end - at);
      constexpr std::string_view kPrefix = "set-cookie: ";
      if (line.size() < kPrefix.size() || !EqualsIgnoreCase(std::string_view(line).substr(0, kPrefix.size()), kPrefix)) continue;
      const std::string pair = line.substr(kPrefix.size(), line.find(';') == std::string::npos ? std::string::npos
                                                                                              : line.find(';') - kPrefix.size());
      const std::size_t eq = pair.find('=');
      if (eq == std::string::npos || eq == 0) continue;
      const std::string name = pair.substr(0, eq), value = pair.substr(eq + 1);
      if (value.empty()) {
        cookies.erase(name);
      } else {
        cookies[name] = value;
      }
    }
    return r;
  }
  HttpReply Get(const std::string& target) { return Send("GET", target, {}); }
  HttpReply Post(const std::string& target, const std::string& body, bool with_origin = true) {
    std::vector<std::pair<std::string, std::string>> h = {{"Content-Type", "application/x-www-form-urlencoded"}};
    if (with_origin) h.emplace_back("Origin", origin);
    return Send("POST", target, h, body);
  }
  // The CSRF token of the form posting to `action` on `page`.
  static std::string Token(const std::string& page, const std::string& action) {
    std::size_t at = page.find("action=\"" + action + "\"");
    if (at == std::string::npos) return "";
    const std::string marker = "name=\"csrf_token\" value=\"";
    std::size_t t = page.find(marker, at);
    if (t == std::string::npos) return "";
    t += marker.size();
    return page.substr(t, page.find('"', t) - t);
  }
  HttpReply Login(const std::string& name, std::string_view password) {
    HttpReply page = Get("/dashboard/login");
    return Post("/dashboard/login", "csrf_token=" + Token(page.body, "/dashboard/login") + "&name=" + FormEncode(name) +
                                        "&password=" + FormEncode(password));
  }
};

bool Has(const std::string& body, std::string_view s) { return body.find(s) != std::string::npos; }

void AddAccount(ServiceFixture& f, const std::string& name, web::Role role) {
  PgAccountRepository repo(f.pool());
  web::PasswordHasher hasher(web::PasswordCost::MinForTests());
  web::Account a;
  a.name = name;
  a.role = role;
  a.password_hash = hasher.Hash(kPassword).value();
  a.created = SystemClock::Instance().Now();
  auto st = repo.Create(a);
  ASSERT_TRUE(st.ok()) << st.error().message();
}

void ExpectSecureHtml(const HttpReply& r) {
  EXPECT_TRUE(r.Header("Content-Type").value_or("").starts_with("text/html"));
  const std::string csp = r.Header("Content-Security-Policy").value_or("");
  EXPECT_TRUE(Has(csp, "default-src 'none'")) << csp;
  EXPECT_TRUE(Has(csp, "frame-ancestors 'none'")) << csp;
  EXPECT_EQ(r.Header("X-Frame-Options").value_or(""), "DENY");
  EXPECT_EQ(r.Header("Cache-Control").value_or(""), "no-store");
  EXPECT_FALSE(Has(r.body, "<script"));
}

// A service with a captured log, for the first-start token (ServiceFixture logs nowhere).
struct SetupStack {
  TempDir dir;
  std::optional<db::testing::TestDatabase> db;
  std::unique_ptr<db::Pool> pool;
  FakeKeyserver keyserver;
  std::mutex mu;
  std::vector<std::string> lines;
  std::unique_ptr<Service> service;
  std::unique_ptr<net::Server> server;
  std::set<std::tuple<std::string, std::string, int>> observed;
  std::uint16_t port = 0;

  SetupStack() {
    db.emplace(db::testing::TestDatabase::Create("dashboard").value());
    db::PoolOptions po;
    po.connect = db->options();
    pool = db::Pool::Create(po).value();
    EXPECT_TRUE(db::Migrate(*pool, "updater", Migrations()).ok());
    ServiceConfig config;
    config.repo_dir = dir.path() / "repo";
    config.blob_dir = dir.path() / "blobs";
    service = Service::Create(ServiceDeps{*pool, keyserver, SystemClock::Instance(), SystemRandom::Instance(),
                                          [this](std::string_view l) {
                                            std::lock_guard lock(mu);
                                            lines.emplace_back(l);
                                          }},
                              config)
                  .value();
    net::ServerOptions options;
    options.io_threads = 2;
    options.access_log = [this](const net::AccessLogEntry& e) {
      std::lock_guard lock(mu);
      observed.emplace(std::string(e.method), std::string(e.route), e.status);
    };
    server = std::make_unique<net::Server>(options);
    EXPECT_TRUE(service->Register(*server).ok());
    EXPECT_TRUE(server->Start().ok());
    port = server->ports().at(0);
  }
  ~SetupStack() {
    server->Stop(std::chrono::seconds(2));
    service->StopBackground();
    server.reset();
    service.reset();
    pool.reset();
  }
  std::vector<std::string> TokenLines() {
    std::lock_guard lock(mu);
    std::vector<std::string> out;
    for (const auto& l : lines) {
      if (l.starts_with("dashboard: first start")) out.push_back(l);
    }
    return out;
  }
};

int SqlCount(SetupStack& s) {
  auto conn = s.pool->Acquire();
  if (!conn.ok()) throw std::runtime_error(conn.error().message());
  auto r = (*conn)->Exec("SELECT count(*) AS n FROM dashboard_accounts");
  if (!r.ok()) throw std::runtime_error(r.error().message());
  return static_cast<int>(r->Get<std::int64_t>(0, "n").value());
}

TEST(UpdaterDashboard, FirstStartSetupWithTheOneTimeToken) {
  SetupStack s;
  Browser b(s.port);
  EXPECT_EQ(b.Get("/dashboard").status, 303) << "no session: to the login page";
  // Before the background job ran, no token was issued: setup is refused.
  ASSERT_TRUE(s.service->RunBackgroundOnce().ok());
  ASSERT_TRUE(s.service->RunBackgroundOnce().ok());
  auto lines = s.TokenLines();
  ASSERT_EQ(lines.size(), 1u) << "logged once";
  const std::string want_prefix = "/dashboard/setup with the one-time setup token ";
  const std::string want_suffix = " (valid 24 h)";
  const std::size_t url = lines[0].find("open https://");
  const std::size_t at = lines[0].find(":" + std::to_string(s.port) + want_prefix);
  ASSERT_TRUE(url != std::string::npos && at != std::string::npos) << lines[0];
  const std::size_t token_at = at + 1 + std::to_string(s.port).size() + want_prefix.size();
  ASSERT_TRUE(lines[0].size() == token_at + 32 + want_suffix.size() && lines[0].ends_with(want_suffix)) << lines[0];
  const std::string token = lines[0].substr(token_at, 32);
  ASSERT_EQ(token.find_first_not_of("0123456789abcdef"), std::string::npos) << lines[0];

  HttpReply page = b.Get("/dashboard/setup");
  ASSERT_EQ(page.status, 200);
  ExpectSecureHtml(page);
  auto post = [&](const std::string& tok, const std::string& name, const std::string& pw, const std::string& pw2) {
    HttpReply form = b.Get("/dashboard/setup");
    return b.Post("/dashboard/setup", "csrf_token=" + Browser::Token(form.body, "/dashboard/setup") +
                                          "&token=" + tok + "&name=" + FormEncode(name) + "&password=" + FormEncode(pw) +
                                          "&password2=" + FormEncode(pw2));
  };
  HttpReply wrong = post(std::string(32, '0'), "admin", std::string(kPassword), std::string(kPassword));
  EXPECT_EQ(wrong.status, 200) << "a refused form is shown again";
  EXPECT_TRUE(Has(wrong.body, "id=\"token-error\"")) << wrong.body;
  HttpReply short_pw = post(token, "admin", "short", "short");
  EXPECT_TRUE(Has(short_pw.body, "id=\"password-error\"")) << short_pw.body;
  HttpReply differ = post(token, "admin", std::string(kPassword), "something else entirely");
  EXPECT_TRUE(Has(differ.body, "id=\"password2-error\""));
  HttpReply bad_name = post(token, "<Bad Name>", std::string(kPassword), std::string(kPassword));
  EXPECT_TRUE(Has(bad_name.body, "id=\"name-error\""));
  EXPECT_FALSE(Has(bad_name.body, "<Bad Name>"));
  // Without the form cookie (a cross-site post): refused.
  {
    Browser stranger(s.port);
    HttpReply r = stranger.Post("/dashboard/setup", "csrf_token=" + std::string(64, 'a') + "&token=" + token +
                                                         "&name=admin&password=" + FormEncode(kPassword) + "&password2=" +
                                                         FormEncode(kPassword));
    EXPECT_EQ(r.status, 403);
  }
  EXPECT_EQ(SqlCount(s), 0);

  HttpReply early = b.Get("/dashboard/setup");
  const std::string early_token = Browser::Token(early.body, "/dashboard/setup");
  const std::string early_cookie = b.cookies["__Host-upkeep_dashboard_form"];
  HttpReply ok = post(token, "admin", std::string(kPassword), std::string(kPassword));
  ASSERT_EQ(ok.status, 303) << ok.body;
  EXPECT_EQ(ok.Header("Location").value_or(""), "/dashboard");
  EXPECT_TRUE(b.cookies.count("__Host-upkeep_session"));
  EXPECT_EQ(b.Get("/dashboard").status, 200);
  EXPECT_EQ(SqlCount(s), 1);

  // A second setup: the page has no form any more, and a form kept from before is refused too.
  EXPECT_TRUE(Has(b.Get("/dashboard/setup").body, "already done"));
  EXPECT_EQ(post(token, "admin2", std::string(kPassword), std::string(kPassword)).status, 403);
  b.cookies["__Host-upkeep_dashboard_form"] = early_cookie;
  HttpReply again = b.Post("/dashboard/setup", "csrf_token=" + early_token + "&token=" + token +
                                                   "&name=admin2&password=" + FormEncode(kPassword) +
                                                   "&password2=" + FormEncode(kPassword));
  EXPECT_EQ(again.status, 200);
  EXPECT_TRUE(Has(again.body, "already done")) << again.body;
  EXPECT_EQ(SqlCount(s), 1);

  // Every status seen here is declared in the API document.
  auto text = ReadFileBounded(std::string(UPKEEP_SOURCE_DIR) + "/docs/openapi/updater.json", 4 << 20);
  ASSERT_TRUE(text.ok());
  Json doc = ParseJson(*text).value();
  for (const auto& [method, route, status] : s.observed) {
    std::string lower = method == "HEAD" ? "get" : (method == "POST" ? "post" : "get");
    EXPECT_TRUE(doc["paths"].contains(route) && doc["paths"][route].contains(lower) &&
                doc["paths"][route][lower]["responses"].contains(std::to_string(status)))
        << method << " " << route << " " << status;
  }
}

TEST(UpdaterDashboard, CreateFirstLetsExactlyOneOfTwoRacingSetupsWin) {
  ServiceFixture f;
  PgAccountRepository repo(f.pool());
  web::PasswordHasher hasher(web::PasswordCost::MinForTests());
  const std::string hash = hasher.Hash(kPassword).value();
  for (int round = 0; round < 5; ++round) {
    Sql(f, "DELETE FROM dashboard_accounts");
    std::atomic<int> wins{0}, policy{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&, i] {
        web::Account a;
        a.name = "admin" + std::to_string(i);
        a.role = web::Role::kAdmin;
        a.password_hash = hash;
        a.created = SystemClock::Instance().Now();
        auto st = repo.CreateFirst(a);
        if (st.ok()) ++wins;
        if (!st.ok() && st.error().code() == Errc::kPolicy) ++policy;
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(wins.load(), 1);
    EXPECT_EQ(policy.load(), 3);
    EXPECT_EQ(repo.Count().value(), 1u);
  }
  web::Account dup;
  dup.name = repo.List().value().at(0).name;
  dup.password_hash = hash;
  EXPECT_EQ(repo.Create(dup).error().code(), Errc::kPolicy);
  dup.name = "nobody";
  EXPECT_EQ(repo.Update(dup).error().code(), Errc::kNotFound);
  dup.password_hash = "plain";
  EXPECT_EQ(repo.Create(dup).error().code(), Errc::kInvalidArgument);
  auto found = repo.Find(repo.List().value().at(0).name).value();
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->role, web::Role::kAdmin);
  EXPECT_FALSE(repo.Find("nobody").value().has_value());
}

TEST(UpdaterDashboard, LoginLogoutRateLimitAndSessions) {
  ServiceFixture f;
  AddAccount(f, "alice", web::Role::kReadOnly);
  Browser b(f.port());
  for (const char* page : {"/dashboard", "/dashboard/appliances/apl-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}) {
    HttpReply r = b.Get(page);
    EXPECT_EQ(r.status, 303) << page;
    EXPECT_EQ(r.Header("Location").value_or(""), "/dashboard/login");
  }
  HttpReply login_page = b.Get("/dashboard/login");
  ASSERT_EQ(login_page.status, 200);
  ExpectSecureHtml(login_page);
  HttpReply css = b.Get("/dashboard/style.css");
  EXPECT_EQ(css.status, 200);

  HttpReply wrong = b.Login("alice", "not the password at all");
  EXPECT_EQ(wrong.status, 200);
  EXPECT_TRUE(Has(wrong.body, "id=\"password-error\"")) << wrong.body;
  EXPECT_TRUE(Has(wrong.body, "wrong account name or password"));
  HttpReply empty = b.Login("", "");
  EXPECT_TRUE(Has(empty.body, "id=\"name-error\""));
  // Without the form cookie's twin: refused.
  EXPECT_EQ(b.Post("/dashboard/login", "name=alice&password=" + FormEncode(kPassword)).status, 403);

  HttpReply ok = b.Login("alice", kPassword);
  ASSERT_EQ(ok.status, 303) << ok.body;
  HttpReply home = b.Get("/dashboard");
  ASSERT_EQ(home.status, 200);
  ExpectSecureHtml(home);
  EXPECT_TRUE(Has(home.body, "signed in as alice (read-only)"));
  EXPECT_EQ(b.Get("/dashboard/login").status, 303) << "already signed in";

  // Logout: CSRF missing or wrong, and a foreign origin, are refused; then it works.
  const std::string token = Browser::Token(home.body, "/dashboard/logout");
  ASSERT_EQ(token.size(), 64u);
  EXPECT_EQ(b.Post("/dashboard/logout", "").status, 403);
  EXPECT_EQ(b.Post("/dashboard/logout", "csrf_token=" + std::string(64, '0')).status, 403);
  {
    Browser evil = b;
    evil.origin = "https://evil.example";
    EXPECT_EQ(evil.Post("/dashboard/logout", "csrf_token=" + token).status, 403);
  }
  EXPECT_EQ(b.Get("/dashboard").status, 200) << "still signed in";
  HttpReply out = b.Post("/dashboard/logout", "csrf_token=" + token);
  EXPECT_EQ(out.status, 303);
  EXPECT_EQ(out.Header("Location").value_or(""), "/dashboard/login");
  EXPECT_FALSE(b.cookies.count("__Host-upkeep_session"));
  EXPECT_EQ(b.Get("/dashboard").status, 303);

  // Rate limit: after the free failures, even the right password waits.
  Browser c(f.port());
  for (int i = 0; i < 5; ++i) (void)c.Login("alice", "wrong password number " + std::to_string(i));
  HttpReply limited = c.Login("alice", kPassword);
  EXPECT_EQ(limited.status, 200);
  EXPECT_TRUE(Has(limited.body, "too many failed logins")) << limited.body;
  EXPECT_TRUE(limited.Header("Retry-After").has_value());
}

struct Fleet {
  trust::ApplianceIdentity a = trust::ApplianceIdentity::Generate();
  explicit Fleet(ServiceFixture& f) {
    InsertRelease(f, {.name = "software", .version = "5.2.0"});
    InsertRelease(f, {.name = "software", .version = "5.3.0", .upgrades_from = "5.2.0"});
    Refresh(f);
    f.keyserver().AddAppliance(a, "Hostile <b>Customer</b> & Co");
    Reply r = Checkin(f, a, {{"software", "5.1.0"}});
    EXPECT_EQ(r.status, 200) << r.body;
    Json failure = Event("failure", "software", "5.2.0");
    failure["log_tail"] = "step 3 failed\n<script>alert('x')</script>";
    Reply ev = PostEvents(f, a, Json::array({Event("download", "software", "5.2.0"), failure}));
    EXPECT_EQ(ev.status, 200) << ev.body;
    Refresh(f);
    Sql(f, "INSERT INTO portal_downloads (appliance_id, name, version, bundle_id, downloaded_at) VALUES ('" +
               a.appliance_id() + "', 'software', '5.2.0', '" + std::string(32, 'b') + "', now())");
  }
};

TEST(UpdaterDashboard, SearchAndTheAppliancePage) {
  ServiceFixture f;
  Fleet fleet(f);
  AddAccount(f, "rita", web::Role::kReadOnly);
  Browser b(f.port());
  ASSERT_EQ(b.Login("rita", kPassword).status, 303);
  const std::string id = fleet.a.appliance_id();

  HttpReply by_id = b.Get("/dashboard?q=" + id);
  ASSERT_EQ(by_id.status, 200);
  EXPECT_TRUE(Has(by_id.body, "href=\"/dashboard/appliances/" + id + "\"")) << by_id.body;
  HttpReply by_customer = b.Get("/dashboard?q=hostile");
  EXPECT_TRUE(Has(by_customer.body, id));
  EXPECT_TRUE(Has(by_customer.body, "Hostile &lt;b&gt;Customer&lt;/b&gt; &amp; Co"));
  EXPECT_FALSE(Has(by_customer.body, "<b>Customer"));
  HttpReply none = b.Get("/dashboard?q=nobody-at-all");
  EXPECT_TRUE(Has(none.body, "No appliance matches"));
  EXPECT_FALSE(Has(none.body, id));
  EXPECT_TRUE(Has(b.Get("/dashboard?q=" + std::string(300, 'x')).body, "id=\"q-error\""));

  HttpReply page = b.Get("/dashboard/appliances/" + id);
  ASSERT_EQ(page.status, 200);
  ExpectSecureHtml(page);
  EXPECT_TRUE(Has(page.body, "<td>software</td><td>5.1.0</td>")) << page.body;
  EXPECT_TRUE(Has(page.body, "Agent version</th><td>1.0.0"));
  // The plan: 5.2.0 first (5.3.0 upgrades only from it), then 5.3.0, each with its reason.
  std::size_t p1 = page.body.find("<td>1</td><td>software</td><td>5.2.0</td>");
  std::size_t p2 = page.body.find("<td>2</td><td>software</td><td>5.3.0</td>");
  EXPECT_NE(p1, std::string::npos) << page.body;
  EXPECT_NE(p2, std::string::npos);
  EXPECT_LT(p1, p2);
  EXPECT_TRUE(Has(page.body, "id=\"assignment\">Issued"));
  // History with the failure and its escaped log tail.
  EXPECT_TRUE(Has(page.body, "class=\"failure\""));
  EXPECT_TRUE(Has(page.body, "step 3 failed\n&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
  EXPECT_FALSE(Has(page.body, "<script>"));
  // Read-only sees the withheld download but no button.
  EXPECT_TRUE(Has(page.body, "support role needed"));
  EXPECT_FALSE(Has(page.body, "/reenable\""));

  EXPECT_EQ(b.Get("/dashboard/appliances/apl-" + std::string(32, 'a')).status, 404);
  EXPECT_EQ(b.Get("/dashboard/appliances/nonsense").status, 404);
}

TEST(UpdaterDashboard, ReenableBySupportIsAuditedAndRefusedToReadOnly) {
  ServiceFixture f;
  Fleet fleet(f);
  AddAccount(f, "sam", web::Role::kSupport);
  AddAccount(f, "rita", web::Role::kReadOnly);
  const std::string id = fleet.a.appliance_id();
  const std::string action = "/dashboard/appliances/" + id + "/reenable";
  const std::string fields = "&name=software&version=5.2.0";

  Browser reader(f.port());
  ASSERT_EQ(reader.Login("rita", kPassword).status, 303);
  HttpReply rpage = reader.Get("/dashboard/appliances/" + id);
  // A read-only account has no button; a forged post with its own valid token is still 403.
  const std::string home = reader.Get("/dashboard").body;
  (void)home;
  Browser sup(f.port());
  ASSERT_EQ(sup.Login("sam", kPassword).status, 303);
  HttpReply page = sup.Get("/dashboard/appliances/" + id);
  const std::string token = Browser::Token(page.body, action);
  ASSERT_EQ(token.size(), 64u) << page.body;

  // CSRF: missing, wrong, another session's token.
  EXPECT_EQ(sup.Post(action, "x=1" + fields).status, 403);
  EXPECT_EQ(sup.Post(action, "csrf_token=" + std::string(64, 'f') + fields).status, 403);
  HttpReply forbidden = reader.Post(action, "csrf_token=" + token + fields);
  EXPECT_EQ(forbidden.status, 403);
  EXPECT_TRUE(Has(forbidden.body, "needs role &#39;support&#39;")) << forbidden.body;
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM portal_downloads"), "1");

  HttpReply done = sup.Post(action, "csrf_token=" + token + fields);
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_TRUE(Has(done.body, "Re-enabled the download of software 5.2.0")) << done.body;
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM portal_downloads"), "0");
  EXPECT_EQ(SqlValue(f, "SELECT actor || ' ' || action || ' ' || target || ' ' || (detail->>'version') FROM audit "
                        "WHERE action = 'portal.reenable'"),
            "dashboard:sam portal.reenable " + id + " 5.2.0");
  HttpReply twice = sup.Post(action, "csrf_token=" + token + fields);
  EXPECT_EQ(twice.status, 200);
  EXPECT_TRUE(Has(twice.body, "was not withheld")) << twice.body;

  // Read-only with its own valid token for the action: 403, nothing changes.
  Sql(f, "INSERT INTO portal_downloads (appliance_id, name, version, bundle_id, downloaded_at) VALUES ('" + id +
             "', 'software', '5.2.0', '" + std::string(32, 'c') + "', now())");
  (void)rpage;
  // The reader's page has no form for the action; its token for that path is what a forged form would need.
  HttpReply reader_home = reader.Get("/dashboard");
  const std::string logout_token = Browser::Token(reader_home.body, "/dashboard/logout");
  EXPECT_EQ(reader.Post(action, "csrf_token=" + logout_token + fields).status, 403) << "token bound to another path";
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM portal_downloads"), "1");
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM audit WHERE action = 'portal.reenable'"), "1");
}

// ---- item 2 rest: licence search, channel and groups, pin, revoke, the fleet page, accounts ----

// A signed-in browser of a new account with `role`.
Browser SignedIn(ServiceFixture& f, const std::string& name, web::Role role) {
  AddAccount(f, name, role);
  Browser b(f.port());
  EXPECT_EQ(b.Login(name, kPassword).status, 303);
  return b;
}

// Posts the form for `action` found on `page` with extra fields.
HttpReply PostForm(Browser& b, const std::string& page, const std::string& action, const std::string& fields) {
  HttpReply got = b.Get(page);
  const std::string token = Browser::Token(got.body, action);
  EXPECT_EQ(token.size(), 64u) << action << "\n" << got.body;
  return b.Post(action, "csrf_token=" + token + fields);
}

TEST(UpdaterDashboard, SearchByLicenceReferenceNeverTheKey) {
  ServiceFixture f;
  Fleet fleet(f);
  const std::string id = fleet.a.appliance_id();
  const std::string key = "UPKL-SECRET-LICENCE-KEY-0001";
  const Json answer{{"appliance_id", id}, {"enrolled", "new"},
                    {"licence", Json{{"signatures", Json::array()}, {"signed", Json{{"licence_key", key}, {"customer", "x"}}}}}};
  ASSERT_TRUE(RecordEnrolmentLicence(f.pool(), answer.dump(), SystemClock::Instance().Now()).ok());
  // Hostile or incomplete answers record nothing and never echo the key.
  auto bad = RecordEnrolmentLicence(f.pool(), Json{{"appliance_id", id}}.dump(), SystemClock::Instance().Now());
  EXPECT_FALSE(bad.ok());
  auto not_json = RecordEnrolmentLicence(f.pool(), "{" + key, SystemClock::Instance().Now());
  ASSERT_FALSE(not_json.ok());
  EXPECT_FALSE(Has(not_json.error().message(), key));
  EXPECT_FALSE(RecordEnrolmentLicence(f.pool(), Json{{"appliance_id", "apl-nope"}, {"licence", answer["licence"]}}.dump(),
                                      SystemClock::Instance().Now()).ok());
  const std::string digest = Sha256Hex(key);
  EXPECT_EQ(SqlValue(f, "SELECT licence_sha256 FROM appliance_licences WHERE appliance_id = '" + id + "'"), digest);
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM appliance_licences WHERE licence_sha256 LIKE '%SECRET%'"), "0");

  Browser b = SignedIn(f, "rita", web::Role::kReadOnly);
  HttpReply found = b.Get("/dashboard?q=" + digest.substr(0, 12));
  EXPECT_TRUE(Has(found.body, "href=\"/dashboard/appliances/" + id + "\"")) << found.body;
  HttpReply upper = b.Get("/dashboard?q=" + digest.substr(0, 10));
  EXPECT_TRUE(Has(upper.body, id));
  HttpReply too_short = b.Get("/dashboard?q=" + digest.substr(0, 4) + "zz");
  EXPECT_FALSE(Has(too_short.body, "href=\"/dashboard/appliances/" + id)) << "fewer than 8 characters match no licence";
  HttpReply other = b.Get("/dashboard?q=" + std::string(16, digest[0] == '0' ? '1' : '0'));
  EXPECT_TRUE(Has(other.body, "No appliance matches"));
  HttpReply page = b.Get("/dashboard/appliances/" + id);
  EXPECT_TRUE(Has(page.body, "id=\"licence\">" + digest.substr(0, 16) + "<")) << page.body;
  EXPECT_FALSE(Has(page.body, key));
}

TEST(UpdaterDashboard, MoveToChannelAndGroupsIsAuditedAndAdminOnly) {
  ServiceFixture f;
  Fleet fleet(f);
  Sql(f, "INSERT INTO channels (name) VALUES ('beta')");
  const std::string id = fleet.a.appliance_id();
  const std::string page = "/dashboard/appliances/" + id, action = page + "/assign";
  Browser sup = SignedIn(f, "sam", web::Role::kSupport);
  EXPECT_FALSE(Has(sup.Get(page).body, action)) << "support sees no move form";
  Browser admin = SignedIn(f, "ada", web::Role::kAdmin);
  HttpReply shown = admin.Get(page);
  EXPECT_TRUE(Has(shown.body, "<option value=\"beta\">beta</option>")) << shown.body;
  EXPECT_TRUE(Has(shown.body, "<option value=\"stable\" selected>"));
  const std::string token = Browser::Token(shown.body, action);
  // Support with a token for the path (taken from the admin's page: CSRF passes, the role does not).
  EXPECT_EQ(sup.Post(action, "csrf_token=" + token + "&channel=beta&groups=").status, 403);
  EXPECT_EQ(admin.Post(action, "channel=beta&groups=").status, 403) << "no CSRF token";

  HttpReply bad_group = admin.Post(action, "csrf_token=" + token + "&channel=beta&groups=" + FormEncode("lab, Bad!"));
  EXPECT_EQ(bad_group.status, 200);
  EXPECT_TRUE(Has(bad_group.body, "id=\"groups-error\"")) << bad_group.body;
  HttpReply bad_channel = admin.Post(action, "csrf_token=" + token + "&channel=nochan&groups=lab");
  EXPECT_EQ(bad_channel.status, 200);
  EXPECT_TRUE(Has(bad_channel.body, "id=\"channel-error\"")) << bad_channel.body;
  EXPECT_TRUE(Has(bad_channel.body, "no channel &#39;nochan&#39;"));
  EXPECT_EQ(SqlValue(f, "SELECT channel FROM appliances WHERE appliance_id = '" + id + "'"), "stable");
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM audit WHERE action = 'appliance.update'"), "0");

  HttpReply done = admin.Post(action, "csrf_token=" + token + "&channel=beta&groups=" + FormEncode("lab, east lab"));
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_TRUE(Has(done.body, "Saved the channel and groups"));
  EXPECT_EQ(SqlValue(f, "SELECT channel || ' ' || array_to_string(groups, ',') FROM appliances WHERE appliance_id = '" + id + "'"),
            "beta east,lab");
  EXPECT_EQ(SqlValue(f, "SELECT actor || ' ' || (detail->'channel'->>'from') || '>' || (detail->'channel'->>'to') || ' ' || "
                        "(detail->'groups'->'to')::text FROM audit WHERE action = 'appliance.update' AND target = '" + id + "'"),
            "dashboard:ada stable>beta [\"east\", \"lab\"]");
}

TEST(UpdaterDashboard, PinHoldsThePlanUntilUnpinned) {
  ServiceFixture f;
  Fleet fleet(f);
  const std::string id = fleet.a.appliance_id();
  const std::string page = "/dashboard/appliances/" + id;
  Browser reader = SignedIn(f, "rita", web::Role::kReadOnly);
  EXPECT_TRUE(Has(reader.Get(page).body, "support role needed to pin"));
  Browser sup = SignedIn(f, "sam", web::Role::kSupport);
  HttpReply empty = PostForm(sup, page, page + "/pin", "&reason=");
  EXPECT_EQ(empty.status, 200);
  EXPECT_TRUE(Has(empty.body, "id=\"reason-error\"")) << empty.body;
  HttpReply pinned = PostForm(sup, page, page + "/pin", "&reason=" + FormEncode("customer <freeze> until May"));
  ASSERT_EQ(pinned.status, 200) << pinned.body;
  const std::string why = "pinned by dashboard:sam: customer &lt;freeze&gt; until May";
  EXPECT_TRUE(Has(pinned.body, "id=\"plan\">Held at its installed versions, nothing newer is offered: " + why)) << pinned.body;
  EXPECT_FALSE(Has(pinned.body, "<td>1</td><td>software</td>"));
  // The check-in obeys: no step; the operator API's plan says why.
  const std::map<std::string, std::string> installed = {{"software", "5.1.0"}};
  EXPECT_TRUE(StepIds(Verified(f, fleet.a, Checkin(f, fleet.a, installed), installed)).empty());
  Reply detail = f.Call("GET", "/api/v1/appliances/" + id, "", f.token("support"));
  ASSERT_EQ(detail.status, 200) << detail.body;
  EXPECT_EQ(detail.json["appliance"]["plan"]["pinned"], "pinned by dashboard:sam: customer <freeze> until May");
  EXPECT_EQ(detail.json["appliance"]["pinned"]["by"], "dashboard:sam");
  EXPECT_TRUE(detail.json["appliance"]["plan"]["steps"].empty());
  EXPECT_EQ(SqlValue(f, "SELECT actor || ' ' || (detail->'pinned'->'to'->>'reason') FROM audit WHERE action = 'appliance.update'"),
            "dashboard:sam customer <freeze> until May");

  HttpReply unpinned = PostForm(sup, page, page + "/unpin", "");
  ASSERT_EQ(unpinned.status, 200);
  EXPECT_TRUE(Has(unpinned.body, "<td>1</td><td>software</td><td>5.2.0</td>")) << unpinned.body;
  EXPECT_EQ(StepIds(Verified(f, fleet.a, Checkin(f, fleet.a, installed), installed)),
            (std::vector<std::string>{"software 5.2.0", "software 5.3.0"}));

  // The operator API's field: {"reason"} pins, null unpins, anything else is 400 and changes nothing.
  Reply api = f.Call("POST", "/api/v1/appliances/" + id, Json{{"pinned", Json{{"reason", "freeze"}}}}.dump(), f.token("publisher"));
  ASSERT_EQ(api.status, 200) << api.body;
  EXPECT_EQ(api.json["appliance"]["pinned"]["reason"], "freeze");
  EXPECT_TRUE(StepIds(Verified(f, fleet.a, Checkin(f, fleet.a, installed), installed)).empty());
  for (const Json& wrong : {Json{{"pinned", "yes"}}, Json{{"pinned", Json{{"reason", ""}}}},
                            Json{{"pinned", Json{{"reason", "x"}, {"extra", 1}}}}}) {
    Reply r = f.Call("POST", "/api/v1/appliances/" + id, wrong.dump(), f.token("publisher"));
    EXPECT_EQ(r.status, 400) << wrong.dump();
    EXPECT_EQ(r.ErrorCode(), "invalid_field");
  }
  EXPECT_EQ(f.Call("POST", "/api/v1/appliances/" + id, R"({"pinned": null})", f.token("publisher")).status, 200);
  EXPECT_EQ(StepIds(Verified(f, fleet.a, Checkin(f, fleet.a, installed), installed)).size(), 2u);
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM audit WHERE action = 'appliance.update'"), "4");
}

TEST(UpdaterDashboard, RevokeNeedsAdminAndTheTypedIdThenCheckinsAreRefused) {
  ServiceFixture f;
  Fleet fleet(f);
  const std::string id = fleet.a.appliance_id();
  const std::string page = "/dashboard/appliances/" + id, action = page + "/revoke";
  Browser sup = SignedIn(f, "sam", web::Role::kSupport);
  EXPECT_FALSE(Has(sup.Get(page).body, action));
  Browser admin = SignedIn(f, "ada", web::Role::kAdmin);
  const std::string token = Browser::Token(admin.Get(page).body, action);
  EXPECT_EQ(sup.Post(action, "csrf_token=" + token + "&confirm=" + id).status, 403);
  EXPECT_EQ(admin.Post(action, "confirm=" + id).status, 403) << "no CSRF token";
  HttpReply wrong = admin.Post(action, "csrf_token=" + token + "&confirm=" + id.substr(0, 10));
  EXPECT_EQ(wrong.status, 200);
  EXPECT_TRUE(Has(wrong.body, "id=\"confirm-error\"")) << wrong.body;
  EXPECT_EQ(Checkin(f, fleet.a, {{"software", "5.1.0"}}).status, 200);

  HttpReply done = admin.Post(action, "csrf_token=" + token + "&confirm=" + id);
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_TRUE(Has(done.body, "Revoked"));
  EXPECT_TRUE(Has(done.body, "<th>Status</th><td>revoked</td>"));
  EXPECT_FALSE(Has(done.body, action)) << "no revoke form for a revoked appliance";
  Reply refused = Checkin(f, fleet.a, {{"software", "5.1.0"}});
  EXPECT_EQ(refused.status, 403) << refused.body;
  EXPECT_EQ(refused.ErrorCode(), "appliance_revoked");
  EXPECT_EQ(SqlValue(f, "SELECT actor || ' ' || (detail->'status'->>'to') FROM audit WHERE action = 'appliance.update'"),
            "dashboard:ada revoked");
}

TEST(UpdaterDashboard, FleetPageCountsVersionsInEscapedSvg) {
  ServiceFixture f;
  Fleet fleet(f);
  auto b2 = Enrolled(f);
  auto b3 = Enrolled(f);
  ASSERT_EQ(Checkin(f, b2, {{"software", "5.1.0"}}).status, 200);
  ASSERT_EQ(Checkin(f, b3, {{"software", "5.2.0"}}).status, 200);
  ASSERT_TRUE(f.service().RunBackgroundOnce().ok());  // flush the check-ins
  Sql(f, "UPDATE appliances SET installed = installed || '{\"<b>evil</b>\": \"1.0.0\"}' WHERE appliance_id = '" +
             fleet.a.appliance_id() + "'");
  Browser b = SignedIn(f, "rita", web::Role::kReadOnly);
  HttpReply page = b.Get("/dashboard/fleet");
  ASSERT_EQ(page.status, 200);
  ExpectSecureHtml(page);
  EXPECT_TRUE(Has(page.body, "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"versions-chart\"")) << page.body;
  EXPECT_TRUE(Has(page.body, "<td>software 5.1.0</td><td>2</td>")) << page.body;
  EXPECT_TRUE(Has(page.body, "<td>software 5.2.0</td><td>1</td>"));
  EXPECT_TRUE(Has(page.body, "&lt;b&gt;evil&lt;/b&gt; 1.0.0"));
  EXPECT_FALSE(Has(page.body, "<b>evil"));
  EXPECT_FALSE(Has(page.body, "style="));
  EXPECT_TRUE(Has(page.body, "No rollouts."));

  // The chart helpers: scaled bars, escaped labels, a line with one point per hour.
  const std::string bars = BarChartSvg("c\"", "t<", {{"a<b", 4}, {"c", 2}});
  EXPECT_TRUE(Has(bars, "id=\"c&quot;\""));
  EXPECT_TRUE(Has(bars, "<title>t&lt;</title>"));
  EXPECT_TRUE(Has(bars, "<title>a&lt;b: 4</title>"));
  EXPECT_TRUE(Has(bars, "width=\"320.0\""));  // the largest bar: full width
  EXPECT_TRUE(Has(bars, "width=\"160.0\""));  // half of it
  const std::string line = LineChartSvg("l", "rate", {{"10:00", 0}, {"11:00", 50}, {"12:00", 250}});
  EXPECT_TRUE(Has(line, "<polyline"));
  EXPECT_TRUE(Has(line, "<title>11:00: 50.0% failed</title>"));
  EXPECT_TRUE(Has(line, "<title>12:00: 100.0% failed</title>")) << "clamped to 100";
}

TEST(UpdaterDashboard, RolloutsWithWavesFailureChartAndPauseResumeAbortByRole) {
  ServiceFixture f;
  Fleet fleet(f);
  Reply created = f.Call("POST", "/api/v1/rollouts",
                         Json{{"name", "software"}, {"version", "5.3.0"}, {"channel", "stable"},
                              {"waves", Json::array({Json{{"percent", 100}}})}, {"success_threshold", 100},
                              {"error_threshold", 100}}.dump(),
                         f.token("publisher"));
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string rid = std::to_string(created.json["rollout"]["id"].get<std::int64_t>());
  Refresh(f);
  // A member that fails once: offered 1, failed 1, a point at 100 % on the chart.
  ASSERT_EQ(Checkin(f, fleet.a, {{"software", "5.2.0"}}).status, 200);
  ASSERT_EQ(PostEvents(f, fleet.a, Json::array({Event("failure", "software", "5.3.0")})).status, 200);
  Refresh(f);
  const std::string state_sql = "SELECT state FROM rollouts WHERE id = " + rid;
  const std::string before = SqlValue(f, state_sql);

  Browser reader = SignedIn(f, "rita", web::Role::kReadOnly);
  HttpReply page = reader.Get("/dashboard/fleet");
  ASSERT_EQ(page.status, 200);
  EXPECT_TRUE(Has(page.body, "id=\"rollout-" + rid + "\"")) << page.body;
  EXPECT_TRUE(Has(page.body, "<td>0</td><td>100 %</td>"));
  EXPECT_TRUE(Has(page.body, "</td><td>1</td><td>0</td><td>1</td></tr>")) << "offered 1, succeeded 0, failed 1";
  EXPECT_TRUE(Has(page.body, "id=\"rollout-" + rid + "-failures\""));
  EXPECT_TRUE(Has(page.body, "100.0% failed</title>"));
  EXPECT_FALSE(Has(page.body, "/dashboard/rollouts/" + rid + "/pause")) << "read-only: no controls";

  if (before != "active") Sql(f, "UPDATE rollouts SET state = 'active', pause_reason = NULL WHERE id = " + rid);
  Browser sup = SignedIn(f, "sam", web::Role::kSupport);
  Browser admin = SignedIn(f, "ada", web::Role::kAdmin);
  const std::string pause = "/dashboard/rollouts/" + rid + "/pause", resume = "/dashboard/rollouts/" + rid + "/resume",
                    abort = "/dashboard/rollouts/" + rid + "/abort";
  HttpReply sup_page = sup.Get("/dashboard/fleet");
  EXPECT_FALSE(Has(sup_page.body, abort)) << "support may not abort";
  const std::string pause_token = Browser::Token(sup_page.body, pause);
  ASSERT_EQ(pause_token.size(), 64u) << sup_page.body;
  EXPECT_EQ(reader.Post(pause, "csrf_token=" + pause_token).status, 403) << "read-only";
  EXPECT_EQ(sup.Post(pause, "reason=x").status, 403) << "no CSRF token";
  EXPECT_EQ(sup.Post(pause, "csrf_token=" + std::string(64, '0')).status, 403);
  EXPECT_EQ(SqlValue(f, state_sql), "active");

  HttpReply paused = sup.Post(pause, "csrf_token=" + pause_token + "&reason=" + FormEncode("too many <failures>"));
  ASSERT_EQ(paused.status, 200) << paused.body;
  EXPECT_TRUE(Has(paused.body, "pause done; it is now paused"));
  EXPECT_TRUE(Has(paused.body, "Paused: too many &lt;failures&gt;"));
  EXPECT_EQ(SqlValue(f, state_sql), "paused");
  EXPECT_EQ(SqlValue(f, "SELECT actor FROM audit WHERE action = 'rollout.pause'"), "dashboard:sam");
  HttpReply twice = sup.Post(pause, "csrf_token=" + pause_token);
  EXPECT_EQ(twice.status, 200);
  EXPECT_TRUE(Has(twice.body, "id=\"pause-" + rid + "-error\"")) << twice.body;

  HttpReply resumed = PostForm(sup, "/dashboard/fleet", resume, "");
  ASSERT_EQ(resumed.status, 200);
  EXPECT_EQ(SqlValue(f, state_sql), "active");
  const std::string abort_token = Browser::Token(admin.Get("/dashboard/fleet").body, abort);
  EXPECT_EQ(sup.Post(abort, "csrf_token=" + abort_token).status, 403) << "support may not abort";
  EXPECT_EQ(SqlValue(f, state_sql), "active");
  HttpReply aborted = admin.Post(abort, "csrf_token=" + abort_token + "&reason=bad");
  ASSERT_EQ(aborted.status, 200) << aborted.body;
  EXPECT_EQ(SqlValue(f, state_sql), "aborted");
  EXPECT_EQ(SqlValue(f, "SELECT actor || ' ' || (detail->>'reason') FROM audit WHERE action = 'rollout.abort'"), "dashboard:ada bad");
  EXPECT_EQ(admin.Post("/dashboard/rollouts/999/abort", "csrf_token=" +
                       Browser::Token(admin.Get("/dashboard/fleet").body, abort)).status, 403)
      << "a token is bound to its path";
}

TEST(UpdaterDashboard, AccountAdministrationAndOwnPasswordChange) {
  ServiceFixture f;
  Browser admin = SignedIn(f, "ada", web::Role::kAdmin);
  Browser sup = SignedIn(f, "sam", web::Role::kSupport);
  EXPECT_EQ(sup.Get("/dashboard/accounts").status, 403);
  EXPECT_FALSE(Has(sup.Get("/dashboard").body, "/dashboard/accounts"));
  HttpReply list = admin.Get("/dashboard/accounts");
  ASSERT_EQ(list.status, 200);
  ExpectSecureHtml(list);
  EXPECT_TRUE(Has(list.body, "<td>sam</td>"));
  const std::string create = "/dashboard/accounts";
  const std::string token = Browser::Token(list.body, create);
  EXPECT_EQ(sup.Post(create, "csrf_token=" + token + "&name=x&role=admin&password=" + FormEncode(kPassword)).status, 403);
  auto post = [&](const std::string& fields) { return admin.Post(create, "csrf_token=" + token + fields); };
  EXPECT_TRUE(Has(post("&name=&role=support&password=" + FormEncode(kPassword)).body, "id=\"name-error\""));
  EXPECT_TRUE(Has(post("&name=neo&role=boss&password=" + FormEncode(kPassword)).body, "id=\"role-error\""));
  EXPECT_TRUE(Has(post("&name=neo&role=support&password=short").body, "id=\"password-error\""));
  EXPECT_TRUE(Has(post("&name=sam&role=support&password=" + FormEncode(kPassword)).body, "id=\"name-error\""));
  EXPECT_TRUE(Has(post("&name=" + FormEncode("<Bad>") + "&role=support&password=" + FormEncode(kPassword)).body,
                  "id=\"name-error\""));
  HttpReply made = post("&name=neo&role=support&password=" + FormEncode(kPassword));
  ASSERT_EQ(made.status, 200);
  EXPECT_TRUE(Has(made.body, "Created the account neo")) << made.body;
  EXPECT_EQ(SqlValue(f, "SELECT role FROM dashboard_accounts WHERE name = 'neo'"), "support");

  HttpReply role = PostForm(admin, "/dashboard/accounts", "/dashboard/accounts/neo/role", "&role=read-only");
  EXPECT_TRUE(Has(role.body, "now has the role read-only")) << role.body;
  EXPECT_EQ(SqlValue(f, "SELECT role FROM dashboard_accounts WHERE name = 'neo'"), "read-only");
  HttpReply self = PostForm(admin, "/dashboard/accounts", "/dashboard/accounts/ada/role", "&role=support");
  EXPECT_TRUE(Has(self.body, "id=\"role-ada-error\"")) << self.body;
  EXPECT_EQ(SqlValue(f, "SELECT role FROM dashboard_accounts WHERE name = 'ada'"), "admin");
  HttpReply self_off = PostForm(admin, "/dashboard/accounts", "/dashboard/accounts/ada/disable", "&disabled=1");
  EXPECT_TRUE(Has(self_off.body, "id=\"disable-ada-error\"")) << self_off.body;
  HttpReply off = PostForm(admin, "/dashboard/accounts", "/dashboard/accounts/sam/disable", "&disabled=1");
  EXPECT_TRUE(Has(off.body, "sam is now disabled")) << off.body;
  EXPECT_EQ(sup.Get("/dashboard").status, 303) << "the disabled account's session ended";

  // The own password: errors next to the fields, then the change, a fresh session, the new password.
  Browser neo(f.port());
  ASSERT_EQ(neo.Login("neo", kPassword).status, 303);
  const std::string pw = "/dashboard/password";
  auto change = [&](const std::string& current, const std::string& next, const std::string& again) {
    return PostForm(neo, pw, pw, "&current=" + FormEncode(current) + "&password=" + FormEncode(next) + "&password2=" +
                                     FormEncode(again));
  };
  EXPECT_TRUE(Has(change("", "a new long password", "a new long password").body, "id=\"current-error\""));
  EXPECT_TRUE(Has(change("wrong password here", "a new long password", "a new long password").body, "id=\"current-error\""));
  EXPECT_TRUE(Has(change(std::string(kPassword), "a new long password", "another one").body, "id=\"password2-error\""));
  EXPECT_TRUE(Has(change(std::string(kPassword), "short", "short").body, "id=\"password-error\""));
  HttpReply ok = change(std::string(kPassword), "a new long password", "a new long password");
  ASSERT_EQ(ok.status, 303) << ok.body;
  EXPECT_EQ(ok.Header("Location").value_or(""), "/dashboard/password?changed=1");
  EXPECT_TRUE(Has(neo.Get("/dashboard/password?changed=1").body, "Your password was changed."));
  Browser again(f.port());
  EXPECT_EQ(again.Login("neo", kPassword).status, 200) << "the old password no longer works";
  EXPECT_EQ(again.Login("neo", "a new long password").status, 303);
}

}  // namespace
}  // namespace upkeep::updater::test
