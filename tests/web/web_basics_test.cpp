// Forms and cookies (hostile input), password rules and hashing, sessions and their timeouts,
// CSRF tokens and the Origin/Referer check, and the login rate limiter.
#include <gtest/gtest.h>

#include <sodium.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "upkeep/web/forms.hpp"
#include "upkeep/web/password.hpp"
#include "upkeep/web/rate_limit.hpp"
#include "upkeep/web/sessions.hpp"
#include "web_test_support.hpp"

namespace upkeep::web {
namespace {

using namespace std::chrono_literals;
using testing::CountingRandom;
using testing::MakeRequest;
using testing::T0;

// --- cookies ---

TEST(Cookies, ParsesSeveralWithSpacesAndQuotes) {
  auto c = ParseCookieHeader("a=1;  b=\"two\" ;c=;bad;=x; d = 4 ");
  ASSERT_TRUE(c.ok()) << c.error().message();
  ASSERT_EQ(c->size(), 4u);
  EXPECT_EQ((*c)[0], (std::pair<std::string, std::string>{"a", "1"}));
  EXPECT_EQ((*c)[1], (std::pair<std::string, std::string>{"b", "two"}));
  EXPECT_EQ((*c)[2], (std::pair<std::string, std::string>{"c", ""}));
  EXPECT_EQ((*c)[3], (std::pair<std::string, std::string>{"d", "4"}));
}

TEST(Cookies, SkipsNamesWithSeparators) {
  auto c = ParseCookieHeader("a b=1; x(y)=2; ok=3");
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->size(), 1u);
  EXPECT_EQ((*c)[0].first, "ok");
}

TEST(Cookies, RefusesOversizeTooManyAndControlCharacters) {
  EXPECT_EQ(ParseCookieHeader(std::string(9000, 'a')).error().code(), Errc::kLimit);
  std::string many;
  for (int i = 0; i < 65; ++i) many += "c" + std::to_string(i) + "=v; ";
  EXPECT_EQ(ParseCookieHeader(many).error().code(), Errc::kLimit);
  EXPECT_EQ(ParseCookieHeader(std::string("a=1\x01")).error().code(), Errc::kParse);
  EXPECT_EQ(ParseCookieHeader(std::string("a=1\0b", 5)).error().code(), Errc::kParse);
}

TEST(Cookies, FindCookieAbsentPresentAndDuplicate) {
  auto none = FindCookie("x=1", kSessionCookieName);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto one = FindCookie("x=1; __Host-upkeep_session=abc", kSessionCookieName);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(**one, "abc");
  auto two = FindCookie("__Host-upkeep_session=a; __Host-upkeep_session=b", kSessionCookieName);
  ASSERT_FALSE(two.ok());
  EXPECT_EQ(two.error().code(), Errc::kPolicy);
  EXPECT_NE(two.error().message().find("more than once"), std::string::npos);
}

TEST(Cookies, CookieStrings) {
  EXPECT_EQ(SessionCookie("abc"), "__Host-upkeep_session=abc; Path=/; Secure; HttpOnly; SameSite=Strict");
  std::string out = LogoutCookie();
  EXPECT_NE(out.find("Max-Age=0"), std::string::npos);
  EXPECT_TRUE(out.starts_with("__Host-upkeep_session=;"));
  EXPECT_EQ(SessionCookie("x").find("Max-Age"), std::string::npos);
}

// --- forms ---

TEST(Forms, DecodesFieldsInOrder) {
  auto f = Form::Parse("name=a+b%20c&pw=%26%3D&&tag=1&tag=2&flag");
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(*f->Single("name"), "a b c");
  EXPECT_EQ(*f->Single("pw"), "&=");
  EXPECT_EQ(*f->Single("flag"), "");
  EXPECT_EQ(f->All("tag"), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(f->fields().size(), 5u);
}

TEST(Forms, SingleRefusesMissingAndDuplicate) {
  auto f = Form::Parse("a=1&a=2");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->Single("a").error().code(), Errc::kInvalidArgument);
  EXPECT_NE(f->Single("a").error().message().find("'a' given more than once"), std::string::npos);
  EXPECT_EQ(f->Single("b").error().code(), Errc::kNotFound);
  auto opt = f->Optional("b");
  ASSERT_TRUE(opt.ok());
  EXPECT_FALSE(opt->has_value());
}

TEST(Forms, RefusesLimitsAndBadEscapesWithoutEchoingValues) {
  EXPECT_EQ(Form::Parse(std::string(64 * 1024 + 1, 'a')).error().code(), Errc::kLimit);
  std::string many;
  for (int i = 0; i < 257; ++i) many += "f" + std::to_string(i) + "=1&";
  EXPECT_EQ(Form::Parse(many).error().code(), Errc::kLimit);
  auto bad = Form::Parse("password=Secret%zzValue");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kParse);
  EXPECT_NE(bad.error().message().find("'password'"), std::string::npos);
  EXPECT_EQ(bad.error().message().find("Secret"), std::string::npos);
  EXPECT_FALSE(Form::Parse("pw=abc%0").ok());
  EXPECT_FALSE(Form::Parse("pw=abc%").ok());
  EXPECT_FALSE(Form::Parse("pw=a%00b").ok());
  EXPECT_FALSE(Form::Parse("=value").ok());
  EXPECT_FALSE(Form::Parse("%zz=value").ok());
}

TEST(Forms, FromRequestNeedsUrlencodedContentType) {
  auto json = MakeRequest("POST", "/login", {"Content-Type: application/json"});
  EXPECT_EQ(Form::FromRequest(json).error().code(), Errc::kInvalidArgument);
  auto none = MakeRequest("POST", "/login");
  EXPECT_FALSE(Form::FromRequest(none).ok());
  auto ok = MakeRequest("POST", "/login", {"Content-Type: application/x-www-form-urlencoded; charset=UTF-8"});
  auto f = Form::FromRequest(ok);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->fields().empty());
}

// --- passwords ---

TEST(Passwords, RulesNameTheRuleNeverThePassword) {
  EXPECT_TRUE(CheckPasswordRules("correct horse battery", "alice").ok());
  auto short_pw = CheckPasswordRules("Short1!xyz", "alice");
  ASSERT_FALSE(short_pw.ok());
  EXPECT_NE(short_pw.error().message().find("shorter than 12"), std::string::npos);
  EXPECT_EQ(short_pw.error().message().find("Short1!xyz"), std::string::npos);
  EXPECT_NE(CheckPasswordRules(std::string(1025, 'x') + "y", "a").error().message().find("longer than 1024"),
            std::string::npos);
  EXPECT_TRUE(CheckPasswordRules(std::string(1023, 'x') + "y", "a").ok());
  EXPECT_NE(CheckPasswordRules(std::string(20, 'z'), "a").error().message().find("all one character"),
            std::string::npos);
  EXPECT_NE(CheckPasswordRules("administrator1", "administrator1").error().message().find("account name"),
            std::string::npos);
  EXPECT_TRUE(CheckPasswordRules("123456789012", "a").ok());  // exactly 12
}

TEST(Passwords, HashVerifyAndRehash) {
  PasswordHasher hasher(PasswordCost::MinForTests());
  auto hash = hasher.Hash("correct horse battery");
  ASSERT_TRUE(hash.ok());
  EXPECT_TRUE(hash->starts_with("$argon2id$"));
  EXPECT_TRUE(hasher.Verify(*hash, "correct horse battery"));
  EXPECT_FALSE(hasher.Verify(*hash, "correct horse batterz"));
  EXPECT_FALSE(hasher.Verify("not a hash", "correct horse battery"));
  EXPECT_FALSE(hasher.Verify("$argon2id$garbage", "correct horse battery"));
  EXPECT_FALSE(hasher.Verify(*hash, std::string(1025, 'x')));
  EXPECT_FALSE(hasher.NeedsRehash(*hash));
  EXPECT_TRUE(hasher.NeedsRehash("junk"));
  PasswordCost other = PasswordCost::MinForTests();
  other.opslimit += 1;
  PasswordHasher stronger(other);
  EXPECT_TRUE(stronger.NeedsRehash(*hash));
  EXPECT_TRUE(stronger.Verify(*hash, "correct horse battery"));  // old hashes still verify
  auto again = hasher.Hash("correct horse battery");
  ASSERT_TRUE(again.ok());
  EXPECT_NE(*again, *hash);  // fresh salt
  EXPECT_EQ(hasher.Hash(std::string(1025, 'x')).error().code(), Errc::kInvalidArgument);
  hasher.VerifyDummy("anything at all");  // must not crash
}

TEST(Passwords, InteractiveIsTheDefault) {
  PasswordCost c = PasswordCost::Interactive();
  EXPECT_EQ(c.opslimit, crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE);
  EXPECT_EQ(c.memlimit, crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE);
}

// --- sessions ---

TEST(Sessions, CreateTouchAndStoreOnlyHashes) {
  FakeClock clock(T0());
  CountingRandom random;
  SessionStore store(clock, random);
  auto s = store.Create("alice");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(IsLowerHex(s->id, 64));
  EXPECT_EQ(s->session.csrf_secret.size(), 32u);
  auto t = store.Touch(s->id);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->account, "alice");
  EXPECT_EQ(store.Touch(std::string(64, 'a')).error().message().find("unknown session"), 0u);
  EXPECT_EQ(store.Touch("ABC").error().message(), "malformed session cookie");
  std::string upper = s->id;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_FALSE(store.Touch(upper).ok());
}

TEST(Sessions, IdleTimeout) {
  FakeClock clock(T0());
  CountingRandom random;
  SessionStore store(clock, random);
  auto s = store.Create("alice");
  ASSERT_TRUE(s.ok());
  clock.Advance(29min);
  ASSERT_TRUE(store.Touch(s->id).ok());  // use refreshes the idle timer
  clock.Advance(29min);
  ASSERT_TRUE(store.Touch(s->id).ok());
  clock.Advance(30min);
  auto t = store.Touch(s->id);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().code(), Errc::kVerification);
  EXPECT_NE(t.error().message().find("idle"), std::string::npos);
  EXPECT_EQ(store.size(), 0u);
}

TEST(Sessions, AbsoluteTimeoutDespiteActivity) {
  FakeClock clock(T0());
  CountingRandom random;
  SessionStore store(clock, random);
  auto s = store.Create("alice");
  ASSERT_TRUE(s.ok());
  for (int i = 0; i < 12 * 3 - 1; ++i) {
    clock.Advance(20min);
    ASSERT_TRUE(store.Touch(s->id).ok()) << i;
  }
  clock.Advance(20min);  // 12 h since login
  auto t = store.Touch(s->id);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message().find("12 h"), std::string::npos);
}

TEST(Sessions, LogoutRemoveAllAndSweep) {
  FakeClock clock(T0());
  CountingRandom random;
  SessionStore store(clock, random);
  auto a1 = store.Create("alice");
  auto a2 = store.Create("alice");
  auto b = store.Create("bob");
  ASSERT_TRUE(a1.ok() && a2.ok() && b.ok());
  EXPECT_TRUE(store.Remove(a1->id));
  EXPECT_FALSE(store.Remove(a1->id));
  EXPECT_FALSE(store.Touch(a1->id).ok());
  EXPECT_EQ(store.RemoveAllFor("alice"), 1u);
  EXPECT_FALSE(store.Touch(a2->id).ok());
  EXPECT_TRUE(store.Touch(b->id).ok());
  clock.Advance(31min);
  EXPECT_EQ(store.Sweep(), 1u);
  EXPECT_EQ(store.size(), 0u);
}

TEST(Sessions, CapsPerAccountAndOverall) {
  FakeClock clock(T0());
  CountingRandom random;
  SessionPolicy policy;
  policy.max_per_account = 2;
  policy.max_sessions = 3;
  SessionStore store(clock, random, policy);
  auto first = store.Create("alice");
  clock.Advance(1s);
  auto second = store.Create("alice");
  clock.Advance(1s);
  auto third = store.Create("alice");  // drops the oldest of alice's
  ASSERT_TRUE(first.ok() && second.ok() && third.ok());
  EXPECT_FALSE(store.Touch(first->id).ok());
  EXPECT_TRUE(store.Touch(second->id).ok());
  ASSERT_TRUE(store.Create("bob").ok());
  auto full = store.Create("carol");
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code(), Errc::kLimit);
  clock.Advance(31min);  // all idle now: the next create sweeps them
  EXPECT_TRUE(store.Create("carol").ok());
  EXPECT_EQ(store.size(), 1u);
}

TEST(Sessions, ConcurrentFromFourThreads) {
  FakeClock clock(T0());
  CountingRandom random;
  SessionStore store(clock, random);
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::string account = "user" + std::to_string(t);
      for (int i = 0; i < 200; ++i) {
        auto s = store.Create(account);
        if (!s.ok() || !store.Touch(s->id).ok()) ++failures[t];
        if (i % 3 == 0 && !store.Remove(s->id)) ++failures[t];
        if (i % 50 == 49) store.RemoveAllFor(account);
        (void)store.size();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, (std::vector<int>{0, 0, 0, 0}));
  EXPECT_EQ(store.size(), 0u);  // every account's last RemoveAllFor was at i == 199
}

// --- CSRF ---

TEST(Csrf, TokenDependsOnSecretAndPath) {
  Bytes s1(32, 1), s2(32, 2);
  std::string t = MakeCsrfToken(s1, "/updates/install");
  EXPECT_TRUE(IsLowerHex(t, 64));
  EXPECT_TRUE(CsrfTokenValid(s1, "/updates/install", t));
  EXPECT_FALSE(CsrfTokenValid(s2, "/updates/install", t));
  EXPECT_FALSE(CsrfTokenValid(s1, "/backups/restore", t));
  EXPECT_FALSE(CsrfTokenValid(s1, "/updates/install", t.substr(0, 63)));
  EXPECT_FALSE(CsrfTokenValid(s1, "/updates/install", ""));
  EXPECT_FALSE(CsrfTokenValid(Bytes{}, "/updates/install", t));
  std::string flipped = t;
  flipped[10] = flipped[10] == 'a' ? 'b' : 'a';
  EXPECT_FALSE(CsrfTokenValid(s1, "/updates/install", flipped));
}

TEST(Csrf, OriginAndReferer) {
  const std::string site = "https://appliance.test:8443";
  EXPECT_TRUE(CheckOrigin(MakeRequest("POST", "/x"), site).ok());
  EXPECT_TRUE(CheckOrigin(MakeRequest("POST", "/x", {"Origin: https://appliance.test:8443"}), site).ok());
  auto evil = CheckOrigin(MakeRequest("POST", "/x", {"Origin: https://evil.test"}), site);
  ASSERT_FALSE(evil.ok());
  EXPECT_EQ(evil.error().code(), Errc::kPolicy);
  EXPECT_NE(evil.error().message().find("evil.test"), std::string::npos);
  EXPECT_FALSE(CheckOrigin(MakeRequest("POST", "/x", {"Origin: null"}), site).ok());
  EXPECT_TRUE(CheckOrigin(MakeRequest("POST", "/x", {"Referer: https://appliance.test:8443/updates"}), site).ok());
  EXPECT_FALSE(CheckOrigin(MakeRequest("POST", "/x", {"Referer: https://appliance.test:8443.evil.test/"}), site).ok());
  EXPECT_FALSE(CheckOrigin(MakeRequest("POST", "/x", {"Referer: https://evil.test/"}), site).ok());
  // Origin decides when both are present.
  EXPECT_FALSE(CheckOrigin(MakeRequest("POST", "/x", {"Origin: https://evil.test", "Referer: " + site + "/"}), site).ok());
  EXPECT_TRUE(IsStateChanging(net::Method::kPost));
  EXPECT_TRUE(IsStateChanging(net::Method::kDelete));
  EXPECT_FALSE(IsStateChanging(net::Method::kGet));
  EXPECT_FALSE(IsStateChanging(net::Method::kHead));
}

// --- rate limiting ---

TEST(RateLimit, FiveFailuresThenExponentialBackOffCapped) {
  FakeClock clock(T0());
  LoginRateLimiter limiter(clock);
  for (int i = 0; i < 4; ++i) {
    EXPECT_FALSE(limiter.Check("alice", "10.0.0.1").has_value()) << i;
    limiter.RecordFailure("alice", "10.0.0.1");
  }
  EXPECT_FALSE(limiter.Check("alice", "10.0.0.1").has_value());
  limiter.RecordFailure("alice", "10.0.0.1");  // 5th
  EXPECT_EQ(limiter.Check("alice", "10.0.0.1"), 1s);
  clock.Advance(1s);
  EXPECT_FALSE(limiter.Check("alice", "10.0.0.1").has_value());
  limiter.RecordFailure("alice", "10.0.0.1");
  EXPECT_EQ(limiter.Check("alice", "10.0.0.1"), 2s);
  clock.Advance(2s);
  limiter.RecordFailure("alice", "10.0.0.1");
  EXPECT_EQ(limiter.Check("alice", "10.0.0.1"), 4s);
  for (int i = 0; i < 20; ++i) {
    clock.Advance(15min);
    limiter.RecordFailure("alice", "10.0.0.1");
  }
  EXPECT_EQ(limiter.Check("alice", "10.0.0.1"), 15min);
  clock.Advance(10min);
  EXPECT_EQ(limiter.Check("alice", "10.0.0.1"), 5min);
}

TEST(RateLimit, PerAccountAndPerAddressIndependently) {
  FakeClock clock(T0());
  LoginRateLimiter limiter(clock);
  for (int i = 0; i < 5; ++i) limiter.RecordFailure("alice", "10.0.0." + std::to_string(i));
  EXPECT_TRUE(limiter.Check("alice", "192.0.2.9").has_value());  // the account is blocked from anywhere
  EXPECT_TRUE(limiter.Check("ALICE", "192.0.2.9").has_value());  // names count case-insensitively
  EXPECT_FALSE(limiter.Check("bob", "10.0.0.1").has_value());
  for (int i = 0; i < 5; ++i) limiter.RecordFailure("user" + std::to_string(i), "203.0.113.7");
  EXPECT_TRUE(limiter.Check("carol", "203.0.113.7").has_value());  // the address is blocked for all names
  EXPECT_FALSE(limiter.Check("carol", "203.0.113.8").has_value());
}

TEST(RateLimit, SuccessResetsTheAccountNotTheAddress) {
  FakeClock clock(T0());
  LoginRateLimiter limiter(clock);
  for (int i = 0; i < 5; ++i) limiter.RecordFailure("alice", "10.0.0.1");
  limiter.RecordSuccess("alice");
  EXPECT_FALSE(limiter.Check("alice", "10.0.0.2").has_value());
  EXPECT_TRUE(limiter.Check("alice", "10.0.0.1").has_value());
}

TEST(RateLimit, ForgetsAfterQuietPeriod) {
  FakeClock clock(T0());
  LoginRateLimiter limiter(clock);
  for (int i = 0; i < 4; ++i) limiter.RecordFailure("alice", "10.0.0.1");
  clock.Advance(61min);
  limiter.RecordFailure("alice", "10.0.0.1");  // counts as the first again
  EXPECT_FALSE(limiter.Check("alice", "10.0.0.1").has_value());
}

TEST(RateLimit, BoundedMemoryDropsLeastRecent) {
  FakeClock clock(T0());
  RateLimitPolicy policy;
  policy.max_entries = 100;
  LoginRateLimiter limiter(clock, policy);
  for (int i = 0; i < 5; ++i) limiter.RecordFailure("alice", "10.0.0.1");
  for (int i = 0; i < 1000; ++i) limiter.RecordFailure("u" + std::to_string(i), "198.51.100." + std::to_string(i));
  EXPECT_LE(limiter.size(), 100u);
  EXPECT_FALSE(limiter.Check("alice", "10.0.0.9").has_value());  // evicted
}

TEST(RateLimit, ClientAddressStripsPort) {
  EXPECT_EQ(ClientAddress("203.0.113.5:4711"), "203.0.113.5");
  EXPECT_EQ(ClientAddress("[2001:db8::1]:443"), "2001:db8::1");
  EXPECT_EQ(ClientAddress("2001:db8::1"), "2001:db8::1");
  EXPECT_EQ(ClientAddress("host"), "host");
}

TEST(Csrf, PreSessionDoubleSubmitToken) {
  CountingRandom random;
  const PreSessionToken token("__Host-test_form");
  // No cookie yet: a new value and the cookie that carries it.
  auto fresh = token.ForRequest(MakeRequest("GET", "/login"), random);
  ASSERT_EQ(fresh.value.size(), 64u);
  EXPECT_EQ(fresh.set_cookie, "__Host-test_form=" + fresh.value + "; Path=/; Secure; HttpOnly; SameSite=Strict");
  const std::string cookie = "Cookie: __Host-test_form=" + fresh.value;
  // The browser's cookie is kept (no new Set-Cookie), so two open tabs both work.
  auto kept = token.ForRequest(MakeRequest("GET", "/login", {cookie}), random);
  EXPECT_EQ(kept.value, fresh.value);
  EXPECT_TRUE(kept.set_cookie.empty());
  // A malformed cookie is replaced.
  auto replaced = token.ForRequest(MakeRequest("GET", "/login", {"Cookie: __Host-test_form=xyz"}), random);
  EXPECT_NE(replaced.value, "xyz");
  EXPECT_FALSE(replaced.set_cookie.empty());

  auto form = [](const std::string& body) { return *Form::Parse(body); };
  EXPECT_EQ(token.Check(MakeRequest("POST", "/login", {cookie}), form("csrf_token=" + fresh.value)), std::nullopt);
  std::string other = fresh.value;
  other[0] = other[0] == 'a' ? 'b' : 'a';
  EXPECT_NE(token.Check(MakeRequest("POST", "/login", {cookie}), form("csrf_token=" + other)), std::nullopt);
  EXPECT_NE(token.Check(MakeRequest("POST", "/login"), form("csrf_token=" + fresh.value)), std::nullopt);
  EXPECT_NE(token.Check(MakeRequest("POST", "/login", {cookie}), form("name=x")), std::nullopt);
  EXPECT_NE(token.Check(MakeRequest("POST", "/login", {"Cookie: __Host-test_form=" + std::string(63, 'a')}),
                        form("csrf_token=" + std::string(63, 'a'))),
            std::nullopt);
}

}  // namespace
}  // namespace upkeep::web
