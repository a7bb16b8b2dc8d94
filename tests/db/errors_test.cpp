// Unit tests without a database: error classification, parameter binding, conninfo rewriting.
#include "upkeep/db/errors.hpp"

#include <gtest/gtest.h>

#include "upkeep/db/connection.hpp"

namespace upkeep::db {
namespace {

TEST(DbErrors, SqlStateSurvivesWrapping) {
  Error e = MakeDbError(kUniqueViolation, "query \"INSERT\" failed: duplicate key").Wrap("publish 'x'");
  EXPECT_EQ(SqlState(e), std::optional<std::string>("23505"));
  EXPECT_TRUE(IsUniqueViolation(e));
  EXPECT_FALSE(IsRetryableTransaction(e));
  EXPECT_FALSE(IsConnectionLost(e));
  EXPECT_EQ(e.code(), Errc::kPolicy);
}

TEST(DbErrors, ClassesMapToErrc) {
  EXPECT_EQ(MakeDbError("40001", "x").code(), Errc::kIo);
  EXPECT_TRUE(IsRetryableTransaction(MakeDbError("40001", "x")));
  EXPECT_TRUE(IsRetryableTransaction(MakeDbError("40P01", "x")));
  EXPECT_TRUE(IsConnectionLost(MakeDbError("08006", "x")));
  EXPECT_TRUE(IsConnectionLost(MakeDbError("57P01", "x")));
  EXPECT_TRUE(IsUnavailable(MakeDbError("08001", "x")));
  EXPECT_EQ(MakeDbError("22021", "x").code(), Errc::kInvalidArgument);
  EXPECT_EQ(MakeDbError("42601", "x").code(), Errc::kInternal);
  EXPECT_FALSE(IsConnectionLost(MakeDbError("42601", "x")));
}

TEST(DbErrors, UntaggedErrorsHaveNoState) {
  EXPECT_EQ(SqlState(Error(Errc::kIo, "disk full")), std::nullopt);
  // Only a trailing tag counts: a message quoting one elsewhere is not misread.
  EXPECT_EQ(SqlState(Error(Errc::kIo, "value '[SQLSTATE 40001]' rejected")), std::nullopt);
  EXPECT_EQ(SqlState(Error(Errc::kIo, "[SQLSTATE 4000]")), std::nullopt);
  EXPECT_TRUE(IsBusy(Error(Errc::kLimit, "database busy: all 2 pooled connections stayed in use")));
  EXPECT_FALSE(IsBusy(Error(Errc::kIo, "database busy")));
}

TEST(DbParams, BindsTypesAndNull) {
  EXPECT_TRUE(Param(nullptr).is_null());
  EXPECT_TRUE(Param(std::optional<std::string>()).is_null());
  EXPECT_EQ(*Param(std::optional<std::int64_t>(7)).value(), "7");
  EXPECT_EQ(*Param(std::int64_t{-9223372036854775807LL - 1}).value(), "-9223372036854775808");
  EXPECT_EQ(Param(std::int64_t{1}).oid(), 20u);
  EXPECT_EQ(*Param(true).value(), "t");
  EXPECT_EQ(*Param("abc").value(), "abc");
  EXPECT_EQ(Param("abc").oid(), 0u);
  const Bytes b = {0, 1, 255};
  Param pb(b);
  EXPECT_TRUE(pb.binary());
  EXPECT_EQ(pb.value()->size(), 3u);
  EXPECT_EQ((*pb.value())[0], '\0');
  EXPECT_EQ(*Param(0.5).value(), "0.5");
}

TEST(DbConninfo, WithDatabaseReplacesOnlyTheDatabase) {
  auto s = ConninfoWithDatabase("postgresql://u@127.0.0.1:5999/main?passfile=/tmp/x%20y/pgpass", "other");
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_NE(s->find("dbname='other'"), std::string::npos) << *s;
  EXPECT_NE(s->find("port='5999'"), std::string::npos) << *s;
  EXPECT_NE(s->find("passfile='/tmp/x y/pgpass'"), std::string::npos) << *s;
  EXPECT_EQ(s->find("main"), std::string::npos) << *s;
  auto q = ConninfoWithDatabase("host=h dbname=a", "it's");
  ASSERT_TRUE(q.ok());
  EXPECT_NE(q->find(R"(dbname='it\'s')"), std::string::npos) << *q;
}

TEST(DbConninfo, MalformedStringIsRefusedWithoutEchoingIt) {
  auto s = ConninfoWithDatabase("host=h password=Sup3rSecretValue bogus_option=1", "x");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(s.error().message().find("Sup3rSecretValue"), std::string::npos) << s.error().message();
  auto c = Connection::Open("postgresql://u:Sup3rSecretValue@[bad");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().message().find("Sup3rSecretValue"), std::string::npos) << c.error().message();
}

TEST(DbConnect, RefusedPortIsAConnectionError) {
  ConnectOptions o;
  // Port 1 on loopback: nothing listens there, the kernel refuses at once.
  o.conninfo = "host=127.0.0.1 port=1 user=nobody dbname=none password=NotPrintedEver";
  o.connect_timeout = std::chrono::seconds(2);
  auto c = Connection::Open(o);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(IsConnectionLost(c.error())) << c.error().message();
  EXPECT_EQ(c.error().code(), Errc::kIo);
  EXPECT_EQ(c.error().message().find("NotPrintedEver"), std::string::npos) << c.error().message();
}

}  // namespace
}  // namespace upkeep::db
