// The Authenticator facade end to end with FakeClock: first-start setup token, login and its
// refusals and rate limiting, authentication from the cookie, roles, CSRF, logout, password
// change and disable ending sessions.
#include <gtest/gtest.h>

#include <string>

#include "upkeep/web/authenticator.hpp"
#include "web_test_support.hpp"

namespace upkeep::web {
namespace {

using namespace std::chrono_literals;
using testing::CountingRandom;
using testing::MakeRequest;
using testing::T0;

const std::string kSite = "https://appliance.test:8443";
const std::string kAdminPw = "first admin password 1";

class AuthTest : public ::testing::Test {
 protected:
  AuthTest() : clock_(T0()), auth_(repo_, clock_, random_, Options()) {}

  static AuthOptions Options() {
    AuthOptions o;
    o.site_origin = kSite;
    o.password_cost = PasswordCost::MinForTests();
    return o;
  }

  // Runs setup and logs the admin in.
  LoginSuccess SetUpAdmin() {
    auto token = auth_.IssueSetupToken();
    EXPECT_TRUE(token.ok() && token->has_value());
    auto admin = auth_.Setup(**token, "admin", kAdminPw);
    EXPECT_TRUE(admin.ok()) << (admin.ok() ? "" : admin.refusal().reason);
    auto login = auth_.Login("admin", kAdminPw, "10.0.0.1");
    EXPECT_TRUE(login.ok());
    return login.value();
  }

  static net::Request WithCookie(const std::string& method, const std::string& path, const std::string& id,
                                 std::vector<std::string> extra = {}) {
    extra.push_back("Cookie: theme=dark; __Host-upkeep_session=" + id);
    return MakeRequest(method, path, extra);
  }

  Principal Auth(const std::string& id) {
    auto p = auth_.Authenticate(WithCookie("GET", "/", id));
    EXPECT_TRUE(p.ok()) << (p.ok() ? "" : p.refusal().reason);
    return p.value();
  }

  InMemoryAccountRepository repo_;
  FakeClock clock_;
  CountingRandom random_;
  Authenticator auth_;
};

TEST_F(AuthTest, SetupTokenCreatesFirstAdminOnce) {
  EXPECT_TRUE(auth_.SetupPending());
  auto none = auth_.Setup("whatever", "admin", kAdminPw);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.refusal().status, 409);  // nothing issued yet
  auto token = auth_.IssueSetupToken();
  ASSERT_TRUE(token.ok() && token->has_value());
  EXPECT_TRUE(IsLowerHex(**token, 32));  // 128 bits
  auto wrong = auth_.Setup(std::string(32, '0'), "admin", kAdminPw);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.refusal().status, 401);
  EXPECT_EQ(wrong.refusal().reason, "wrong setup token");
  auto weak = auth_.Setup(**token, "admin", "short");
  ASSERT_FALSE(weak.ok());
  EXPECT_EQ(weak.refusal().status, 400);
  EXPECT_NE(weak.refusal().reason.find("shorter than 12"), std::string::npos);
  auto bad_name = auth_.Setup(**token, "Admin!", kAdminPw);
  ASSERT_FALSE(bad_name.ok());
  EXPECT_EQ(bad_name.refusal().status, 400);
  auto admin = auth_.Setup(**token, "admin", kAdminPw);
  ASSERT_TRUE(admin.ok()) << admin.refusal().reason;
  EXPECT_EQ(admin->role, Role::kAdmin);
  EXPECT_TRUE(admin->password_hash.starts_with("$argon2id$"));
  EXPECT_FALSE(auth_.SetupPending());
  auto again = auth_.Setup(**token, "admin2", kAdminPw);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.refusal().status, 409);
  auto later = auth_.IssueSetupToken();
  ASSERT_TRUE(later.ok());
  EXPECT_FALSE(later->has_value());  // accounts exist: no more setup tokens
}

TEST_F(AuthTest, SetupTokenExpiresAfter24Hours) {
  auto token = auth_.IssueSetupToken();
  ASSERT_TRUE(token.ok() && token->has_value());
  clock_.Advance(24h);
  auto late = auth_.Setup(**token, "admin", kAdminPw);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.refusal().status, 401);
  EXPECT_NE(late.refusal().reason.find("expired"), std::string::npos);
  auto fresh = auth_.IssueSetupToken();  // a restart issues a new one; the old one stays dead
  ASSERT_TRUE(fresh.ok() && fresh->has_value());
  EXPECT_FALSE(auth_.Setup(**token, "admin", kAdminPw).ok());
  EXPECT_TRUE(auth_.Setup(**fresh, "admin", kAdminPw).ok());
}

TEST_F(AuthTest, LoginAndAuthenticate) {
  LoginSuccess login = SetUpAdmin();
  EXPECT_EQ(login.set_cookie, "__Host-upkeep_session=" + login.session_id + "; Path=/; Secure; HttpOnly; SameSite=Strict");
  Principal p = Auth(login.session_id);
  EXPECT_EQ(p.account.name, "admin");
  EXPECT_EQ(p.account.role, Role::kAdmin);

  auto no_cookie = auth_.Authenticate(MakeRequest("GET", "/"));
  ASSERT_FALSE(no_cookie.ok());
  EXPECT_EQ(no_cookie.refusal().status, 401);
  EXPECT_EQ(no_cookie.refusal().reason, "not logged in");
  auto other_cookie = auth_.Authenticate(MakeRequest("GET", "/", {"Cookie: theme=dark"}));
  ASSERT_FALSE(other_cookie.ok());
  EXPECT_EQ(other_cookie.refusal().reason, "not logged in");
  auto forged = auth_.Authenticate(WithCookie("GET", "/", std::string(64, 'f')));
  ASSERT_FALSE(forged.ok());
  EXPECT_EQ(forged.refusal().status, 401);
  auto junk = auth_.Authenticate(WithCookie("GET", "/", "\"<script>\""));
  ASSERT_FALSE(junk.ok());
  EXPECT_EQ(junk.refusal().reason, "malformed session cookie");
  auto twice = auth_.Authenticate(MakeRequest(
      "GET", "/", {"Cookie: __Host-upkeep_session=" + login.session_id + "; __Host-upkeep_session=" + login.session_id}));
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.refusal().status, 401);

  net::Response r = forged.refusal().ToResponse();
  EXPECT_EQ(r.status, 401);
  EXPECT_NE(r.body.find("unauthenticated"), std::string::npos);
}

TEST_F(AuthTest, LoginRefusalsLookTheSameForUnknownAccounts) {
  SetUpAdmin();
  auto wrong = auth_.Login("admin", "not the password", "10.0.0.2");
  auto unknown = auth_.Login("ghost", "not the password", "10.0.0.3");
  auto invalid = auth_.Login("../etc", "not the password", "10.0.0.4");
  ASSERT_FALSE(wrong.ok());
  ASSERT_FALSE(unknown.ok());
  ASSERT_FALSE(invalid.ok());
  EXPECT_EQ(wrong.refusal().status, 401);
  EXPECT_EQ(wrong.refusal().reason, unknown.refusal().reason);
  EXPECT_EQ(wrong.refusal().reason, invalid.refusal().reason);
  EXPECT_EQ(wrong.refusal().reason.find("not the password"), std::string::npos);
  auto huge = auth_.Login("admin", std::string(1025, 'x'), "10.0.0.5");
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.refusal().status, 400);
}

TEST_F(AuthTest, LoginRateLimitedThenBackOffAndSuccessResets) {
  SetUpAdmin();
  for (int i = 0; i < 5; ++i) {
    auto r = auth_.Login("admin", "wrong password " + std::to_string(i), "10.0.0.9");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.refusal().status, 401) << i;
  }
  auto limited = auth_.Login("admin", kAdminPw, "10.0.0.9");  // even the right password waits
  ASSERT_FALSE(limited.ok());
  EXPECT_EQ(limited.refusal().status, 429);
  EXPECT_EQ(limited.refusal().reason, "too many failed logins; try again in 1 s");
  net::Response resp = limited.refusal().ToResponse();
  EXPECT_EQ(resp.Header("Retry-After"), std::optional<std::string_view>("1"));
  clock_.Advance(1s);
  ASSERT_TRUE(auth_.Login("admin", kAdminPw, "10.0.0.10").ok());  // success resets the account
  EXPECT_TRUE(auth_.Login("admin", "wrong password x", "10.0.0.10").refusal().status == 401);
  // The address that failed five times stays throttled for other names.
  clock_.Advance(1s);
  (void)auth_.Login("nobody", "wrong password y", "10.0.0.9");
  auto addr = auth_.Login("someone", "wrong password z", "10.0.0.9");
  ASSERT_FALSE(addr.ok());
  EXPECT_EQ(addr.refusal().status, 429);
}

TEST_F(AuthTest, RolesGiveClear403) {
  LoginSuccess admin = SetUpAdmin();
  Principal a = Auth(admin.session_id);
  auto created = auth_.CreateAccount(a, "sue", Role::kSupport, "support password 1");
  ASSERT_TRUE(created.ok()) << created.refusal().reason;
  auto dup = auth_.CreateAccount(a, "sue", Role::kSupport, "support password 1");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.refusal().status, 409);
  auto weak = auth_.CreateAccount(a, "rita", Role::kReadOnly, "rita");
  ASSERT_FALSE(weak.ok());
  EXPECT_EQ(weak.refusal().status, 400);
  auto sue_login = auth_.Login("sue", "support password 1", "10.0.0.1");
  ASSERT_TRUE(sue_login.ok());
  Principal sue = Auth(sue_login->session_id);
  EXPECT_FALSE(auth_.RequireRole(sue, Role::kReadOnly).has_value());
  EXPECT_FALSE(auth_.RequireRole(sue, Role::kSupport).has_value());
  auto refusal = auth_.RequireRole(sue, Role::kAdmin);
  ASSERT_TRUE(refusal.has_value());
  EXPECT_EQ(refusal->status, 403);
  EXPECT_EQ(refusal->reason, "forbidden: needs role 'admin'; account 'sue' has 'support'");
  auto by_support = auth_.CreateAccount(sue, "eve", Role::kAdmin, "eve password 12");
  ASSERT_FALSE(by_support.ok());
  EXPECT_EQ(by_support.refusal().status, 403);
  EXPECT_EQ(auth_.SetDisabled(sue, "admin", true).refusal().status, 403);
}

TEST_F(AuthTest, CsrfOnStateChangingRequests) {
  LoginSuccess login = SetUpAdmin();
  Principal p = Auth(login.session_id);
  std::string token = auth_.CsrfToken(p, "/updates/install");
  auto form = [](const std::string& body) { return Form::Parse(body).value(); };
  auto post = WithCookie("POST", "/updates/install", login.session_id, {"Origin: " + kSite});
  EXPECT_FALSE(auth_.CheckCsrf(post, p, form("id=1&csrf_token=" + token)).has_value());
  auto missing = auth_.CheckCsrf(post, p, form("id=1"));
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->status, 403);
  EXPECT_NE(missing->reason.find("without a CSRF token"), std::string::npos);
  auto wrong_path = auth_.CheckCsrf(WithCookie("POST", "/backups/restore", login.session_id), p,
                                    form("csrf_token=" + token));
  ASSERT_TRUE(wrong_path.has_value());
  EXPECT_NE(wrong_path->reason.find("invalid CSRF token"), std::string::npos);
  auto doubled = auth_.CheckCsrf(post, p, form("csrf_token=" + token + "&csrf_token=" + token));
  ASSERT_TRUE(doubled.has_value());
  EXPECT_EQ(doubled->status, 403);
  auto cross = auth_.CheckCsrf(WithCookie("POST", "/updates/install", login.session_id, {"Origin: https://evil.test"}),
                               p, form("csrf_token=" + token));
  ASSERT_TRUE(cross.has_value());
  EXPECT_NE(cross->reason.find("evil.test"), std::string::npos);
  // GET needs no token.
  EXPECT_FALSE(auth_.CheckCsrf(WithCookie("GET", "/updates", login.session_id), p, form("")).has_value());
  // Another session's token does not fit this one.
  auto other = auth_.Login("admin", kAdminPw, "10.0.0.1");
  ASSERT_TRUE(other.ok());
  Principal q = Auth(other->session_id);
  EXPECT_TRUE(auth_.CheckCsrf(post, q, form("csrf_token=" + token)).has_value());
}

TEST_F(AuthTest, LogoutEndsTheSession) {
  LoginSuccess login = SetUpAdmin();
  std::string cookie = auth_.Logout(WithCookie("POST", "/logout", login.session_id));
  EXPECT_NE(cookie.find("Max-Age=0"), std::string::npos);
  EXPECT_FALSE(auth_.Authenticate(WithCookie("GET", "/", login.session_id)).ok());
  EXPECT_NE(auth_.Logout(MakeRequest("POST", "/logout")).find("Max-Age=0"), std::string::npos);
}

TEST_F(AuthTest, SessionTimeoutsThroughAuthenticate) {
  LoginSuccess login = SetUpAdmin();
  clock_.Advance(31min);
  auto idle = auth_.Authenticate(WithCookie("GET", "/", login.session_id));
  ASSERT_FALSE(idle.ok());
  EXPECT_NE(idle.refusal().reason.find("idle"), std::string::npos);
}

TEST_F(AuthTest, ChangePasswordEndsOtherSessions) {
  LoginSuccess first = SetUpAdmin();
  auto second = auth_.Login("admin", kAdminPw, "10.0.0.2");
  ASSERT_TRUE(second.ok());
  Principal p = Auth(first.session_id);
  auto wrong_old = auth_.ChangePassword(p, "not my password", "brand new password");
  ASSERT_FALSE(wrong_old.ok());
  EXPECT_EQ(wrong_old.refusal().status, 401);
  auto weak = auth_.ChangePassword(p, kAdminPw, "admin");
  ASSERT_FALSE(weak.ok());
  EXPECT_EQ(weak.refusal().status, 400);
  auto changed = auth_.ChangePassword(p, kAdminPw, "brand new password");
  ASSERT_TRUE(changed.ok()) << changed.refusal().reason;
  EXPECT_FALSE(auth_.Authenticate(WithCookie("GET", "/", first.session_id)).ok());
  EXPECT_FALSE(auth_.Authenticate(WithCookie("GET", "/", second->session_id)).ok());
  EXPECT_TRUE(auth_.Authenticate(WithCookie("GET", "/", changed->session_id)).ok());
  EXPECT_FALSE(auth_.Login("admin", kAdminPw, "10.0.0.3").ok());
  EXPECT_TRUE(auth_.Login("admin", "brand new password", "10.0.0.3").ok());
}

TEST_F(AuthTest, DisableEndsSessionsAndBlocksLogin) {
  LoginSuccess admin = SetUpAdmin();
  Principal a = Auth(admin.session_id);
  ASSERT_TRUE(auth_.CreateAccount(a, "sue", Role::kSupport, "support password 1").ok());
  auto sue = auth_.Login("sue", "support password 1", "10.0.0.1");
  ASSERT_TRUE(sue.ok());
  EXPECT_EQ(auth_.SetDisabled(a, "admin", true).refusal().status, 409);
  EXPECT_EQ(auth_.SetDisabled(a, "nobody", true).refusal().status, 404);
  ASSERT_TRUE(auth_.SetDisabled(a, "sue", true).ok());
  EXPECT_FALSE(auth_.Authenticate(WithCookie("GET", "/", sue->session_id)).ok());
  auto login = auth_.Login("sue", "support password 1", "10.0.0.1");
  ASSERT_FALSE(login.ok());
  EXPECT_EQ(login.refusal().status, 403);
  auto wrong = auth_.Login("sue", "not her password", "10.0.0.1");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.refusal().status, 401);  // a disabled account shows only to who knows its password
  ASSERT_TRUE(auth_.SetDisabled(a, "sue", false).ok());
  EXPECT_TRUE(auth_.Login("sue", "support password 1", "10.0.0.1").ok());
}

TEST_F(AuthTest, RehashesOnLoginWhenCostChanged) {
  SetUpAdmin();
  AuthOptions o = Options();
  o.password_cost.opslimit += 1;
  Authenticator stronger(repo_, clock_, random_, o);
  std::string before = (*repo_.Find("admin"))->password_hash;
  ASSERT_TRUE(stronger.Login("admin", kAdminPw, "10.0.0.1").ok());
  std::string after = (*repo_.Find("admin"))->password_hash;
  EXPECT_NE(before, after);
  EXPECT_NE(after.find("t=" + std::to_string(o.password_cost.opslimit)), std::string::npos);
}

}  // namespace
}  // namespace upkeep::web
