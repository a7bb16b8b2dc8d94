// A PostgreSQL restart while a pool is in use: queries fail as "connection lost" while the
// server is down, and the next checkout after it is back reconnects by itself.
// Uses its own cluster (tools/pg on ${UPKEEP_TEST_PG_DIR}-restart) so other tests are not
// disturbed, and exercises the harness script's start/stop/url/status on the way.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "db_test_util.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/db/errors.hpp"
#include "upkeep/db/pool.hpp"

namespace upkeep::db {
namespace {

using std::chrono::milliseconds;

class RestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* shared = std::getenv("UPKEEP_TEST_PG_DIR");
    ASSERT_NE(shared, nullptr) << "UPKEEP_TEST_PG_DIR is not set; run this test through CTest";
    dir_ = std::string(shared) + "-restart";
  }
  void TearDown() override { (void)Pg("stop"); }

  // Runs tools/pg VERB DIR; returns its exit status.
  int Pg(const std::string& verb) {
    const std::string cmd = std::string(UPKEEP_SOURCE_DIR) + "/tools/pg " + verb + " '" + dir_ + "' >/dev/null";
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  }
  std::string Url() {
    auto u = ReadFileBounded(std::filesystem::path(dir_) / "url", 4096);
    if (!u.ok()) return "";
    std::string s = *u;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }

  std::string dir_;
};

std::int64_t BackendPid(Connection& c) {
  auto r = c.Exec("SELECT pg_backend_pid()::bigint AS pid");
  return r.ok() ? r->Get<std::int64_t>(0, "pid").value() : -1;
}

TEST_F(RestartTest, PoolReconnectsAfterServerRestart) {
  ASSERT_EQ(Pg("start"), 0) << "tools/pg start " << dir_ << " failed (PostgreSQL installed? tools/deps)";
  ASSERT_EQ(Pg("status"), 0);
  const std::string url = Url();
  ASSERT_FALSE(url.empty());
  EXPECT_EQ(url.find("password"), std::string::npos) << "the URL must not carry the password: " << url;
  ASSERT_EQ(Pg("start"), 0);  // idempotent on a running cluster
  EXPECT_EQ(Url(), url);

  PoolOptions o;
  o.connect.conninfo = url;
  o.max_size = 2;
  o.acquire_timeout = milliseconds(5000);
  o.reconnect_backoff_min = milliseconds(50);
  o.reconnect_backoff_max = milliseconds(500);
  UPK_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(o));
  std::int64_t pid_before = 0;
  {
    UPK_ASSERT_OK_AND_ASSIGN(PooledConnection a, pool->Acquire());
    UPK_ASSERT_OK_AND_ASSIGN(PooledConnection b, pool->Acquire());
    UPK_ASSERT_OK(a->Exec("CREATE TABLE IF NOT EXISTS probe (v int)"));
    UPK_ASSERT_OK(a->Exec("TRUNCATE probe"));
    pid_before = BackendPid(*b);
    ASSERT_GT(pid_before, 0);
  }  // both idle in the pool now
  UPK_ASSERT_OK_AND_ASSIGN(PooledConnection held, pool->Acquire());

  ASSERT_EQ(Pg("stop"), 0);
  EXPECT_EQ(Pg("status"), 3);
  EXPECT_EQ(Pg("stop"), 0);  // idempotent

  // The connection in use fails as "connection lost", not as a generic error.
  auto lost = held->Exec("SELECT 1");
  ASSERT_FALSE(lost.ok());
  EXPECT_TRUE(IsConnectionLost(lost.error())) << lost.error().message();
  { PooledConnection drop = std::move(held); }
  // While the server is down, a checkout fails with an "unavailable" error.
  auto down = pool->Acquire(milliseconds(1000));
  ASSERT_FALSE(down.ok());
  EXPECT_TRUE(IsUnavailable(down.error())) << down.error().message();
  EXPECT_FALSE(pool->HealthCheck().ok());

  ASSERT_EQ(Pg("start"), 0);
  EXPECT_EQ(Url(), url);  // same port: the connection string survives the restart

  // The very next checkout reconnects and its queries succeed.
  {
    UPK_ASSERT_OK_AND_ASSIGN(PooledConnection c, pool->Acquire());
    UPK_ASSERT_OK_AND_ASSIGN(Result r, c->Exec("SELECT 6 * 7 AS v"));
    EXPECT_EQ(*r.Get<std::int64_t>(0, "v"), 42);
    EXPECT_NE(BackendPid(*c), pid_before);
  }
  Status tx = WithTransaction(*pool, [](Connection& c) -> Status {
    UPK_TRY(c.Exec("INSERT INTO probe VALUES ($1)", 1));
    return OkStatus();
  });
  ASSERT_TRUE(tx.ok()) << tx.error().message();
  UPK_ASSERT_OK(pool->HealthCheck());
  const PoolStats s = pool->Stats();
  EXPECT_GE(s.dropped_broken, 2u);
  EXPECT_GE(s.failed_connects, 1u);
}

}  // namespace
}  // namespace upkeep::db
