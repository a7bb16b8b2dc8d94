// Operator authentication, tokens and the audit log of the updater service (real PostgreSQL).
#include <gtest/gtest.h>

#include "service_fixture.hpp"

namespace upkeep::updater::test {
namespace {

TEST(UpdaterAdminApi, TokensHaveRolesAndAreAudited) {
  ServiceFixture f;
  // No token, a malformed header, an unknown token.
  EXPECT_EQ(f.Call("GET", "/api/v1/audit").status, 401);
  auto bad = f.Call("GET", "/api/v1/audit", "", "", {{"Authorization", "Basic abc"}});
  EXPECT_EQ(bad.status, 401);
  EXPECT_EQ(bad.Header("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(f.Call("GET", "/api/v1/audit", "", "upkeep_" + std::string(64, '0')).ErrorCode(), "unauthenticated");

  // Support may read the audit log but not make tokens.
  EXPECT_EQ(f.Call("GET", "/api/v1/audit", "", f.token("support")).status, 200);
  auto forbidden = f.Call("POST", "/api/v1/tokens", R"({"name":"x","role":"support"})", f.token("publisher"));
  EXPECT_EQ(forbidden.status, 403) << forbidden.body;
  EXPECT_NE(forbidden.json["error"]["message"].get<std::string>().find("admin"), std::string::npos);

  auto made = f.Call("POST", "/api/v1/tokens", R"({"name":"ci","role":"publisher","expires_days":2})", f.token("admin"));
  ASSERT_EQ(made.status, 201) << made.body;
  const std::string token = made.json["token"].get<std::string>();
  EXPECT_EQ(token.size(), 7u + 64u);
  EXPECT_EQ(f.Call("GET", "/api/v1/audit", "", token).status, 200);

  auto audit = f.Call("GET", "/api/v1/audit?limit=10", "", f.token("admin"));
  ASSERT_EQ(audit.status, 200);
  const Json& newest = audit.json["entries"][0];
  EXPECT_EQ(newest["action"], "token.create");
  EXPECT_EQ(newest["actor"], "token:test-admin");
  EXPECT_EQ(newest["target"], "ci");
  EXPECT_EQ(audit.body.find(token), std::string::npos) << "the token value must never reach the audit log";

  const std::string id = std::to_string(made.json["id"].get<std::int64_t>());
  EXPECT_EQ(f.Call("POST", "/api/v1/tokens/" + id + "/revoke", "", f.token("admin")).status, 200);
  EXPECT_EQ(f.Call("GET", "/api/v1/audit", "", token).status, 401);
  EXPECT_EQ(f.Call("POST", "/api/v1/tokens/999999/revoke", "", f.token("admin")).status, 404);
}

TEST(UpdaterAdminApi, BadTokenRequestsChangeNothing) {
  ServiceFixture f;
  const std::string before = f.DumpTables();
  for (const char* body : {"", "{", "[]", R"({"name":"x"})", R"({"name":"x","role":"root"})",
                           R"({"name":"x","role":"admin","expires_days":0})", R"({"name":"x","role":"admin","extra":1})",
                           R"({"name":"","role":"admin"})", R"({"name":"a\nb","role":"admin"})",
                           R"({"name":"x","name":"y","role":"admin"})"}) {
    auto r = f.Call("POST", "/api/v1/tokens", body, f.token("admin"));
    EXPECT_EQ(r.status, 400) << body << " -> " << r.body;
  }
  EXPECT_EQ(f.Call("GET", "/api/v1/audit?limit=0", "", f.token("admin")).ErrorCode(), "invalid_query");
  EXPECT_EQ(f.DumpTables(), before);
}

TEST(UpdaterAdminApi, ExpiredTokenIsNamed) {
  ServiceFixture f;
  Json made = CreateOperatorToken(f.pool(), SystemClock::Instance(), SystemRandom::Instance(), "old", "support",
                                  std::chrono::seconds(-60), "test")
                  .value();
  auto r = f.Call("GET", "/api/v1/audit", "", made["token"].get<std::string>());
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.ErrorCode(), "token_expired");
}

TEST(UpdaterAdminApi, AuditIsAppendOnly) {
  ServiceFixture f;
  auto conn = f.pool().Acquire().value();
  EXPECT_FALSE(conn->Exec("UPDATE audit SET actor = 'x'").ok());
  EXPECT_FALSE(conn->Exec("DELETE FROM audit").ok());
  EXPECT_FALSE(conn->Exec("TRUNCATE audit").ok());
}

}  // namespace
}  // namespace upkeep::updater::test
