// Pool: exhaustion, concurrency (run under TSan too), broken connections, health check.
#include "upkeep/db/pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "db_test_util.hpp"
#include "upkeep/db/errors.hpp"

namespace upkeep::db {
namespace {

using PoolTest = DbTest;
using std::chrono::milliseconds;

std::unique_ptr<Pool> MakePool(const testing::TestDatabase& db, std::size_t size, milliseconds timeout) {
  PoolOptions o;
  o.connect = db.options();
  o.max_size = size;
  o.acquire_timeout = timeout;
  auto p = Pool::Create(o);
  return p.ok() ? std::move(p).value() : nullptr;
}

std::int64_t BackendPid(Connection& c) {
  auto r = c.Exec("SELECT pg_backend_pid()::bigint AS pid");
  return r.ok() ? r->Get<std::int64_t>(0, "pid").value() : -1;
}

TEST_F(PoolTest, RejectsBadOptions) {
  PoolOptions o;
  o.connect = db().options();
  o.max_size = 0;
  EXPECT_FALSE(Pool::Create(o).ok());
  o.max_size = 1;
  o.connect.conninfo = "host=h bogus_key=1";
  EXPECT_FALSE(Pool::Create(o).ok());
}

TEST_F(PoolTest, ExhaustionGivesBusyAfterTheTimeout) {
  auto pool = MakePool(db(), 2, milliseconds(300));
  ASSERT_TRUE(pool);
  UPK_ASSERT_OK_AND_ASSIGN(PooledConnection a, pool->Acquire());
  UPK_ASSERT_OK_AND_ASSIGN(PooledConnection b, pool->Acquire());
  EXPECT_NE(BackendPid(*a), BackendPid(*b));

  const auto start = std::chrono::steady_clock::now();
  auto c = pool->Acquire();
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(IsBusy(c.error())) << c.error().message();
  EXPECT_TRUE(IsUnavailable(c.error()));
  EXPECT_NE(c.error().message().find("database busy"), std::string::npos);
  EXPECT_GE(waited, milliseconds(290));
  EXPECT_LT(waited, milliseconds(5000));
  EXPECT_EQ(pool->Stats().busy_timeouts, 1u);

  // A waiter is served as soon as a connection comes back, and gets the same session.
  const std::int64_t pid_a = BackendPid(*a);
  std::thread giver([&] {
    std::this_thread::sleep_for(milliseconds(50));
    PooledConnection gone = std::move(a);
  });
  UPK_ASSERT_OK_AND_ASSIGN(PooledConnection d, pool->Acquire(milliseconds(3000)));
  giver.join();
  EXPECT_EQ(BackendPid(*d), pid_a);
  EXPECT_EQ(pool->Stats().connects, 2u);
}

TEST_F(PoolTest, ManyThreadsShareFewConnections) {
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE hits (thread int, i int)"));
  auto pool = MakePool(db(), 3, milliseconds(10000));
  ASSERT_TRUE(pool);
  constexpr int kThreads = 8, kPerThread = 25;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        Status s = WithTransaction(*pool, [&](Connection& c) -> Status {
          UPK_TRY(c.Exec("INSERT INTO hits VALUES ($1, $2)", t, i));
          return OkStatus();
        });
        if (!s.ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  UPK_ASSERT_OK_AND_ASSIGN(Result r, conn().Exec("SELECT count(*) AS n, count(DISTINCT (thread, i)) AS d FROM hits"));
  EXPECT_EQ(*r.Get<std::int64_t>(0, "n"), kThreads * kPerThread);
  EXPECT_EQ(*r.Get<std::int64_t>(0, "d"), kThreads * kPerThread);
  const PoolStats s = pool->Stats();
  EXPECT_LE(s.connects, 3u);
  EXPECT_EQ(s.open, s.idle);  // all returned
}

TEST_F(PoolTest, TerminatedConnectionIsReplacedAtCheckout) {
  auto pool = MakePool(db(), 1, milliseconds(3000));
  ASSERT_TRUE(pool);
  std::int64_t first_pid = 0;
  {
    UPK_ASSERT_OK_AND_ASSIGN(PooledConnection c, pool->Acquire());
    first_pid = BackendPid(*c);
  }
  // Kill the idle pooled session from outside, as a restart or an administrator would.
  UPK_ASSERT_OK_AND_ASSIGN(Result k, conn().Exec("SELECT pg_terminate_backend($1::int, 5000) AS ok", first_pid));
  ASSERT_TRUE(*k.Get<bool>(0, "ok"));
  UPK_ASSERT_OK_AND_ASSIGN(PooledConnection c, pool->Acquire());
  UPK_ASSERT_OK_AND_ASSIGN(Result r, c->Exec("SELECT 41 + 1 AS v"));
  EXPECT_EQ(*r.Get<std::int64_t>(0, "v"), 42);
  EXPECT_NE(BackendPid(*c), first_pid);
  EXPECT_EQ(pool->Stats().dropped_broken, 1u);
}

TEST_F(PoolTest, LostConnectionInsideTransactionRunsAgainOnAFreshOne) {
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE once (v int)"));
  auto pool = MakePool(db(), 2, milliseconds(3000));
  ASSERT_TRUE(pool);
  int runs = 0;
  Status s = WithTransaction(*pool, [&](Connection& c) -> Status {
    ++runs;
    UPK_TRY(c.Exec("INSERT INTO once VALUES ($1)", runs));
    if (runs == 1) {
      // Our own backend dies mid-transaction (before COMMIT): the server rolls it back.
      (void)c.Exec("SELECT pg_terminate_backend(pg_backend_pid())");
      UPK_TRY(c.Exec("SELECT 1"));
    }
    return OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(runs, 2);
  UPK_ASSERT_OK_AND_ASSIGN(Result r, conn().Exec("SELECT array_agg(v)::text AS vs FROM once"));
  EXPECT_EQ(*r.GetText(0, "vs"), "{2}");  // exactly the second run's row
}

TEST_F(PoolTest, ConnectionLeftInTransactionIsRolledBackOnReturn) {
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE leak (v int)"));
  auto pool = MakePool(db(), 1, milliseconds(3000));
  ASSERT_TRUE(pool);
  {
    UPK_ASSERT_OK_AND_ASSIGN(PooledConnection c, pool->Acquire());
    UPK_ASSERT_OK(c->Exec("BEGIN"));
    UPK_ASSERT_OK(c->Exec("INSERT INTO leak VALUES (1)"));
  }
  UPK_ASSERT_OK_AND_ASSIGN(PooledConnection c, pool->Acquire());
  EXPECT_FALSE(c->InTransaction());
  UPK_ASSERT_OK_AND_ASSIGN(Result r, c->Exec("SELECT count(*) AS n FROM leak"));
  EXPECT_EQ(*r.Get<std::int64_t>(0, "n"), 0);
}

TEST_F(PoolTest, HealthCheckAnswersAndFailsFastWhenUnreachable) {
  auto pool = MakePool(db(), 2, milliseconds(2000));
  ASSERT_TRUE(pool);
  UPK_ASSERT_OK(pool->HealthCheck());

  PoolOptions o;
  o.connect.conninfo = "host=127.0.0.1 port=1 user=nobody dbname=none";
  o.connect.connect_timeout = std::chrono::seconds(2);
  o.max_size = 2;
  o.acquire_timeout = milliseconds(200);
  o.reconnect_backoff_min = milliseconds(1000);
  UPK_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> dead, Pool::Create(o));
  Status h = dead->HealthCheck();
  ASSERT_FALSE(h.ok());
  EXPECT_TRUE(IsConnectionLost(h.error())) << h.error().message();
  // Inside the back-off the next attempt does not even try; it reports the last error at once.
  const auto start = std::chrono::steady_clock::now();
  auto again = dead->Acquire();
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(IsUnavailable(again.error())) << again.error().message();
  EXPECT_NE(again.error().message().find("database unavailable"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(150));
  EXPECT_EQ(dead->Stats().failed_connects, 1u);
}

}  // namespace
}  // namespace upkeep::db
