// Connection, parameter binding and typed results against a real PostgreSQL (fixture upkeep_db).
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

#include "db_test_util.hpp"
#include "upkeep/db/errors.hpp"

namespace upkeep::db {
namespace {

using ConnectionTest = DbTest;

TEST_F(ConnectionTest, TypedParamsRoundTrip) {
  const std::int64_t big = std::numeric_limits<std::int64_t>::max();
  const std::int64_t small = std::numeric_limits<std::int64_t>::min();
  UPK_ASSERT_OK_AND_ASSIGN(Result r, conn().Exec("SELECT $1::text AS s, $2::bigint AS big, $3::bigint AS small, "
                                                 "$4::boolean AS yes, $5::double precision AS d, $6::int AS i",
                                                 std::string("hello"), big, small, true, 2.5, 42));
  ASSERT_EQ(r.rows(), 1);
  EXPECT_EQ(*r.Get<std::string>(0, "s"), "hello");
  EXPECT_EQ(*r.Get<std::int64_t>(0, "big"), big);
  EXPECT_EQ(*r.Get<std::int64_t>(0, "small"), small);
  EXPECT_EQ(*r.Get<bool>(0, "yes"), true);
  EXPECT_EQ(*r.Get<double>(0, "d"), 2.5);
  EXPECT_EQ(*r.Get<std::int64_t>(0, 5), 42);
  EXPECT_EQ(r.column_name(1), "big");
}

TEST_F(ConnectionTest, NullsAreReportedNotInvented) {
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE t (id int PRIMARY KEY, note text, n bigint)"));
  UPK_ASSERT_OK(
      conn().Exec("INSERT INTO t VALUES ($1, $2, $3)", 1, std::optional<std::string>(), std::optional<std::int64_t>()));
  UPK_ASSERT_OK(conn().Exec("INSERT INTO t VALUES ($1, $2, $3)", 2, std::optional<std::string>("x"),
                            std::optional<std::int64_t>(5)));
  UPK_ASSERT_OK_AND_ASSIGN(Result r, conn().Exec("SELECT note, n FROM t ORDER BY id"));
  ASSERT_EQ(r.rows(), 2);
  auto missing = r.Get<std::string>(0, "note");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("'note' is NULL"), std::string::npos) << missing.error().message();
  EXPECT_EQ(*r.GetOptional<std::string>(0, "note"), std::nullopt);
  EXPECT_EQ(*r.GetOptional<std::int64_t>(0, "n"), std::nullopt);
  EXPECT_EQ(*r.GetOptional<std::string>(1, "note"), std::optional<std::string>("x"));
  EXPECT_EQ(*r.GetOptional<std::int64_t>(1, "n"), std::optional<std::int64_t>(5));
  EXPECT_TRUE(*r.IsNull(0, 0));
  // nullptr binds NULL too; IS NULL sees it.
  UPK_ASSERT_OK_AND_ASSIGN(Result n, conn().Exec("SELECT $1::text IS NULL AS isnull", nullptr));
  EXPECT_TRUE(*n.Get<bool>(0, "isnull"));
}

TEST_F(ConnectionTest, GettersRefuseTypeMismatchAndBadColumns) {
  UPK_ASSERT_OK_AND_ASSIGN(Result r, conn().Exec("SELECT 'abc'::text AS s, 7::int AS i, true AS b"));
  auto as_int = r.Get<std::int64_t>(0, "s");
  ASSERT_FALSE(as_int.ok());
  EXPECT_NE(as_int.error().message().find("column 's'"), std::string::npos) << as_int.error().message();
  EXPECT_FALSE(r.Get<std::string>(0, "i").ok());
  EXPECT_FALSE(r.Get<bool>(0, "i").ok());
  EXPECT_FALSE(r.Get<Bytes>(0, "s").ok());
  EXPECT_EQ(*r.GetText(0, "i"), "7");  // any type has a text form
  auto nocol = r.Get<std::string>(0, "nope");
  ASSERT_FALSE(nocol.ok());
  EXPECT_NE(nocol.error().message().find("'nope'"), std::string::npos);
  EXPECT_FALSE(r.Get<std::string>(1, "s").ok());  // no row 1
  EXPECT_FALSE(r.Get<std::string>(0, 9).ok());
}

TEST_F(ConnectionTest, UnicodeSurvivesBothWays) {
  const std::string text = "Grüße, 世界 🚀 \"quoted\" 'single' \\back";
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE u (s text)"));
  UPK_ASSERT_OK(conn().Exec("INSERT INTO u VALUES ($1)", text));
  UPK_ASSERT_OK_AND_ASSIGN(Result r, conn().Exec("SELECT s, char_length(s) AS chars, octet_length(s) AS bytes FROM u"));
  EXPECT_EQ(*r.Get<std::string>(0, "s"), text);
  EXPECT_EQ(*r.Get<std::int64_t>(0, "bytes"), static_cast<std::int64_t>(text.size()));
  EXPECT_EQ(*r.Get<std::int64_t>(0, "chars"), 35);  // code points, not bytes
  // Invalid UTF-8 is refused by the server as data, with its SQLSTATE (22021).
  auto bad = conn().Exec("SELECT $1::text", std::string("\xff\xfe"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(SqlState(bad.error()), std::optional<std::string>("22021")) << bad.error().message();
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
}

TEST_F(ConnectionTest, ByteaCarriesEveryByteValue) {
  Bytes all(256);
  for (int i = 0; i < 256; ++i) all[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE b (data bytea)"));
  UPK_ASSERT_OK(conn().Exec("INSERT INTO b VALUES ($1)", all));
  UPK_ASSERT_OK(conn().Exec("INSERT INTO b VALUES ($1)", Bytes{}));
  UPK_ASSERT_OK_AND_ASSIGN(Result r,
                           conn().Exec("SELECT data, length(data) AS n, sha256(data) AS h FROM b ORDER BY n DESC"));
  ASSERT_EQ(r.rows(), 2);
  EXPECT_EQ(*r.Get<Bytes>(0, "data"), all);
  EXPECT_EQ(*r.Get<std::int64_t>(0, "n"), 256);
  EXPECT_EQ(ToHex(*r.Get<Bytes>(0, "h")), "40aff2e9d2d8922e47afd4648e6967497158785fbd1da870e7110266bf944880");
  EXPECT_TRUE(r.Get<Bytes>(1, "data")->empty());
}

TEST_F(ConnectionTest, TimestampsAreUtc) {
  const SysTime t = std::chrono::sys_days(std::chrono::year(2031) / 2 / 28) + std::chrono::hours(23) +
                    std::chrono::minutes(59) + std::chrono::seconds(58);
  UPK_ASSERT_OK_AND_ASSIGN(Result r,
                           conn().Exec("SELECT $1::timestamptz AS t, $1::timestamptz + interval '2 seconds' AS u, "
                                       "extract(epoch FROM $1::timestamptz)::bigint AS e",
                                       t));
  EXPECT_EQ(*r.Get<SysTime>(0, "t"), t);
  EXPECT_EQ(*r.Get<SysTime>(0, "u"), t + std::chrono::seconds(2));
  EXPECT_EQ(*r.Get<std::int64_t>(0, "e"), t.time_since_epoch().count());
}

TEST_F(ConnectionTest, InjectionAttemptStaysData) {
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE users (name text PRIMARY KEY)"));
  const std::string hostile = "x'); DROP TABLE users; --";
  UPK_ASSERT_OK(conn().Exec("INSERT INTO users (name) VALUES ($1)", hostile));
  const std::string probe = "' OR '1'='1";
  UPK_ASSERT_OK_AND_ASSIGN(Result none, conn().Exec("SELECT count(*) AS n FROM users WHERE name = $1", probe));
  EXPECT_EQ(*none.Get<std::int64_t>(0, "n"), 0);
  UPK_ASSERT_OK_AND_ASSIGN(Result r, conn().Exec("SELECT name FROM users"));
  ASSERT_EQ(r.rows(), 1);  // the table still exists and holds the string verbatim
  EXPECT_EQ(*r.Get<std::string>(0, "name"), hostile);
  // Two statements in one Exec are refused: PQexecParams runs exactly one.
  auto two = conn().Exec("SELECT 1; SELECT 2");
  ASSERT_FALSE(two.ok());
  EXPECT_EQ(SqlState(two.error()), std::optional<std::string>("42601"));
}

TEST_F(ConnectionTest, UniqueViolationIsRecognisable) {
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE k (name text CONSTRAINT k_name_key UNIQUE)"));
  UPK_ASSERT_OK_AND_ASSIGN(Result ins, conn().Exec("INSERT INTO k VALUES ($1)", "a"));
  EXPECT_EQ(ins.affected_rows(), 1);
  auto dup = conn().Exec("INSERT INTO k VALUES ($1)", "a");
  ASSERT_FALSE(dup.ok());
  EXPECT_TRUE(IsUniqueViolation(dup.error())) << dup.error().message();
  EXPECT_EQ(dup.error().code(), Errc::kPolicy);
  EXPECT_NE(dup.error().message().find("k_name_key"), std::string::npos) << dup.error().message();
  EXPECT_FALSE(IsConnectionLost(dup.error()));
  // The connection stays usable after a statement error.
  UPK_ASSERT_OK_AND_ASSIGN(Result n, conn().Exec("SELECT count(*) AS n FROM k"));
  EXPECT_EQ(*n.Get<std::int64_t>(0, "n"), 1);
}

TEST_F(ConnectionTest, AffectedRowsAndCommandTag) {
  UPK_ASSERT_OK(conn().Exec("CREATE TABLE c (v int)"));
  UPK_ASSERT_OK(conn().Exec("INSERT INTO c SELECT generate_series(1, $1::int)", 10));
  UPK_ASSERT_OK_AND_ASSIGN(Result del, conn().Exec("DELETE FROM c WHERE v > $1", 3));
  EXPECT_EQ(del.affected_rows(), 7);
  EXPECT_EQ(del.command_tag(), "DELETE 7");
}

TEST_F(ConnectionTest, WrongPasswordIsAnAuthErrorWithoutThePassword) {
  // Same server and user as the test database; an explicit password wins over the passfile.
  const std::string url = db().url() + " password='WrongHorseBattery9'";
  auto c = Connection::Open(url);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().message().find("WrongHorseBattery9"), std::string::npos) << c.error().message();
  EXPECT_EQ(SqlState(c.error()), std::optional<std::string>("28P01")) << c.error().message();
  EXPECT_FALSE(IsConnectionLost(c.error()));
}

TEST_F(ConnectionTest, DbnameOptionOverridesTheConnectionString) {
  UPK_ASSERT_OK_AND_ASSIGN(std::string admin, testing::AdminUrl());
  ConnectOptions o;
  o.conninfo = admin;  // names the admin database
  o.dbname = db().name();
  o.application_name = "override-check";
  UPK_ASSERT_OK_AND_ASSIGN(Connection c, Connection::Open(o));
  UPK_ASSERT_OK_AND_ASSIGN(Result r, c.Exec("SELECT current_database() AS d, current_setting('application_name') AS a, "
                                            "current_setting('TimeZone') AS tz"));
  EXPECT_EQ(*r.Get<std::string>(0, "d"), db().name());
  EXPECT_EQ(*r.GetText(0, "a"), "override-check");
  EXPECT_EQ(*r.GetText(0, "tz"), "UTC");
}

TEST_F(ConnectionTest, QuoteIdentifierEscapes) {
  UPK_ASSERT_OK_AND_ASSIGN(std::string q, conn().QuoteIdentifier("we\"ird name"));
  EXPECT_EQ(q, "\"we\"\"ird name\"");
  UPK_ASSERT_OK(conn().ExecScript("CREATE TABLE " + q + " (x int)"));
  UPK_ASSERT_OK_AND_ASSIGN(Result r,
                           conn().Exec("SELECT count(*) AS n FROM pg_tables WHERE tablename = $1", "we\"ird name"));
  EXPECT_EQ(*r.Get<std::int64_t>(0, "n"), 1);
  EXPECT_NE(conn().Describe().find(db().name()), std::string::npos);
}

}  // namespace
}  // namespace upkeep::db
