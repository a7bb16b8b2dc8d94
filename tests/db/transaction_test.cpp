// WithTransaction: commit, rollback on error or exception, retry on serialization failure.
#include "upkeep/db/transaction.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "db_test_util.hpp"
#include "upkeep/db/errors.hpp"

namespace upkeep::db {
namespace {

using TransactionTest = DbTest;

std::int64_t Count(Connection& c, const char* table) {
  auto r = c.Exec(std::string("SELECT count(*) AS n FROM ") + table);
  if (!r.ok()) return -1;
  auto n = r->Get<std::int64_t>(0, "n");
  return n.ok() ? *n : -1;
}

TEST_F(TransactionTest, CommitsOnSuccess) {
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE t (v int)"));
  auto r = WithTransaction(conn(), [](Connection& c) -> Expected<std::int64_t> {
    UPK_TRY_ASSIGN(Result ins, c.Exec("INSERT INTO t VALUES (1), (2)"));
    return ins.affected_rows();
  });
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(*r, 2);
  EXPECT_FALSE(conn().InTransaction());
  EXPECT_EQ(Count(conn(), "t"), 2);
}

TEST_F(TransactionTest, RollsBackWhenTheBodyFails) {
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE t (v int PRIMARY KEY)"));
  int runs = 0;
  Status s = WithTransaction(conn(), [&](Connection& c) -> Status {
    ++runs;
    UPK_TRY(c.Exec("INSERT INTO t VALUES (1)"));
    UPK_TRY(c.Exec("INSERT INTO t VALUES (1)"));  // unique violation
    return OkStatus();
  });
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(IsUniqueViolation(s.error())) << s.error().message();
  EXPECT_EQ(runs, 1);  // not a retryable error
  EXPECT_FALSE(conn().InTransaction());
  EXPECT_EQ(Count(conn(), "t"), 0);  // the first insert went too

  // An error of the caller's own (not SQL) also rolls back.
  s = WithTransaction(conn(), [](Connection& c) -> Status {
    UPK_TRY(c.Exec("INSERT INTO t VALUES (5)"));
    return Error(Errc::kPolicy, "rollout 'r1' is paused");
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "rollout 'r1' is paused");
  EXPECT_EQ(Count(conn(), "t"), 0);
}

TEST_F(TransactionTest, ExceptionInBodyRollsBackAndBecomesAnError) {
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE t (v int)"));
  Status s = WithTransaction(conn(), [](Connection& c) -> Status {
    UPK_TRY(c.Exec("INSERT INTO t VALUES (1)"));
    throw std::runtime_error("boom");
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kInternal);
  EXPECT_NE(s.error().message().find("boom"), std::string::npos);
  EXPECT_EQ(Count(conn(), "t"), 0);
}

TEST_F(TransactionTest, SwallowedErrorDoesNotCommit) {
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE t (v int PRIMARY KEY)"));
  Status s = WithTransaction(conn(), [](Connection& c) -> Status {
    UPK_TRY(c.Exec("INSERT INTO t VALUES (1)"));
    (void)c.Exec("INSERT INTO t VALUES (1)");  // error ignored: the transaction is aborted
    return OkStatus();
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(SqlState(s.error()), std::optional<std::string>("25P02")) << s.error().message();
  EXPECT_EQ(Count(conn(), "t"), 0);
}

// A tiny rendezvous with a time-out, so a failing thread cannot hang the test.
class Rendezvous {
 public:
  explicit Rendezvous(int parties) : waiting_(parties) {}
  bool ArriveAndWait() {
    std::unique_lock lock(mu_);
    if (--waiting_ == 0) cv_.notify_all();
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return waiting_ <= 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_;
};

TEST_F(TransactionTest, SerializationFailureIsRetried) {
  // Write skew: each transaction numbers its row by counting the existing ones. Run serially,
  // the numbers are 1 and 2; two overlapping SERIALIZABLE runs conflict, one of them is
  // aborted with 40001 and WithTransaction runs it again.
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE seq (who text, n bigint)"));
  Rendezvous both_read(2);
  std::atomic<int> runs{0};
  auto body = [&](const std::string& who) {
    auto c = db().Connect();
    if (!c.ok()) return Status(c.error());
    int attempt = 0;
    TxOptions opts;
    opts.isolation = Isolation::kSerializable;
    return WithTransaction(
        *c,
        [&](Connection& tx) -> Status {
          ++attempt;
          ++runs;
          UPK_TRY_ASSIGN(Result r, tx.Exec("SELECT count(*) AS n FROM seq"));
          UPK_TRY_ASSIGN(std::int64_t n, r.Get<std::int64_t>(0, "n"));
          if (attempt == 1 && !both_read.ArriveAndWait()) return Error(Errc::kInternal, "rendezvous timed out");
          UPK_TRY(tx.Exec("INSERT INTO seq VALUES ($1, $2)", who, n + 1));
          return OkStatus();
        },
        opts);
  };
  Status a = OkStatus(), b = OkStatus();
  std::thread ta([&] { a = body("a"); });
  std::thread tb([&] { b = body("b"); });
  ta.join();
  tb.join();
  ASSERT_TRUE(a.ok()) << a.error().message();
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_GE(runs.load(), 3);  // at least one retry happened
  UPK_ASSERT_OK_AND_ASSIGN(Result r, conn().Exec("SELECT n FROM seq ORDER BY n"));
  ASSERT_EQ(r.rows(), 2);
  EXPECT_EQ(*r.Get<std::int64_t>(0, "n"), 1);
  EXPECT_EQ(*r.Get<std::int64_t>(1, "n"), 2);  // serial result, no duplicate number
}

TEST_F(TransactionTest, RetriesAreBounded) {
  int runs = 0;
  TxOptions opts;
  opts.max_attempts = 3;
  opts.backoff_base = std::chrono::milliseconds(1);
  Status s = WithTransaction(
      conn(),
      [&](Connection&) -> Status {
        ++runs;
        return MakeDbError(kSerializationFailure, "simulated conflict");
      },
      opts);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(IsRetryableTransaction(s.error()));
  EXPECT_EQ(runs, 3);
  EXPECT_FALSE(conn().InTransaction());
}

}  // namespace
}  // namespace upkeep::db
