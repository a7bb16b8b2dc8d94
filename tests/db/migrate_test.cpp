// Schema migrations: fresh apply, idempotent re-run, refusals, concurrent starters.
#include "upkeep/db/migrate.hpp"

#include <gtest/gtest.h>

#include <thread>

#include "db_test_util.hpp"
#include "upkeep/db/errors.hpp"

namespace upkeep::db {
namespace {

using MigrateTest = DbTest;

std::vector<Migration> Catalog() {
  return {
      {1, "create packages", R"sql(
        CREATE TABLE packages (name text PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now());
        CREATE TABLE counter (runs int NOT NULL);
        INSERT INTO counter VALUES (1);
      )sql"},
      {2, "add versions", R"sql(
        ALTER TABLE packages ADD COLUMN latest text;
        UPDATE counter SET runs = runs + 1;
      )sql"},
      {3, "add rollouts", R"sql(
        CREATE TABLE rollouts (id bigserial PRIMARY KEY, package text NOT NULL REFERENCES packages(name));
        UPDATE counter SET runs = runs + 1;
      )sql"},
  };
}

std::int64_t CounterRuns(Connection& c) {
  auto r = c.Exec("SELECT runs FROM counter");
  return r.ok() && r->rows() == 1 ? r->Get<std::int64_t>(0, "runs").value() : -1;
}

TEST_F(MigrateTest, FreshDatabaseGetsEverythingOnce) {
  EXPECT_EQ(*SchemaVersion(conn(), "updater"), 0);
  UPK_ASSERT_OK_AND_ASSIGN(MigrationReport rep, Migrate(conn(), "updater", Catalog()));
  EXPECT_EQ(rep.from_version, 0);
  EXPECT_EQ(rep.to_version, 3);
  EXPECT_EQ(rep.applied, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(*SchemaVersion(conn(), "updater"), 3);
  EXPECT_EQ(CounterRuns(conn()), 3);
  UPK_ASSERT_OK_AND_ASSIGN(Result r, conn().Exec("SELECT version, name, sha256, applied_at FROM schema_migrations "
                                                 "WHERE component = $1 ORDER BY version",
                                                 "updater"));
  ASSERT_EQ(r.rows(), 3);
  EXPECT_EQ(*r.Get<std::string>(2, "name"), "add rollouts");
  EXPECT_EQ(r.Get<std::string>(0, "sha256")->size(), 64u);
  EXPECT_TRUE(r.Get<SysTime>(0, "applied_at").ok());

  // Re-running changes nothing.
  UPK_ASSERT_OK_AND_ASSIGN(MigrationReport again, Migrate(conn(), "updater", Catalog()));
  EXPECT_TRUE(again.applied.empty());
  EXPECT_EQ(again.from_version, 3);
  EXPECT_EQ(again.to_version, 3);
  EXPECT_EQ(CounterRuns(conn()), 3);
}

TEST_F(MigrateTest, UpgradeAppliesOnlyTheNewOnes) {
  auto v1 = Catalog();
  v1.resize(2);
  UPK_ASSERT_OK_AND_ASSIGN(MigrationReport first, Migrate(conn(), "updater", v1));
  EXPECT_EQ(first.to_version, 2);
  UPK_ASSERT_OK_AND_ASSIGN(MigrationReport second, Migrate(conn(), "updater", Catalog()));
  EXPECT_EQ(second.from_version, 2);
  EXPECT_EQ(second.applied, (std::vector<int>{3}));
  EXPECT_EQ(CounterRuns(conn()), 3);
}

TEST_F(MigrateTest, ComponentsAreIndependent) {
  UPK_ASSERT_OK(Migrate(conn(), "updater", Catalog()));
  std::vector<Migration> keys = {{1, "create keys", "CREATE TABLE role_keys (role text PRIMARY KEY)"}};
  UPK_ASSERT_OK_AND_ASSIGN(MigrationReport rep, Migrate(conn(), "keyserver", keys));
  EXPECT_EQ(rep.applied, (std::vector<int>{1}));
  EXPECT_EQ(*SchemaVersion(conn(), "keyserver"), 1);
  EXPECT_EQ(*SchemaVersion(conn(), "updater"), 3);
}

TEST_F(MigrateTest, EditedMigrationIsRefused) {
  UPK_ASSERT_OK(Migrate(conn(), "updater", Catalog()));
  auto edited = Catalog();
  edited[2].sql += " -- tweak";
  auto r = Migrate(conn(), "updater", edited);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPolicy);
  EXPECT_NE(r.error().message().find("migration 3 'add rollouts' was edited after release"), std::string::npos)
      << r.error().message();
  // Refusing changed nothing, even with a new migration waiting behind the edited one.
  edited.push_back({4, "more", "UPDATE counter SET runs = runs + 100"});
  EXPECT_FALSE(Migrate(conn(), "updater", edited).ok());
  EXPECT_EQ(CounterRuns(conn()), 3);
  EXPECT_EQ(*SchemaVersion(conn(), "updater"), 3);
}

TEST_F(MigrateTest, DatabaseAheadOfBinaryIsRefused) {
  auto newer = Catalog();
  newer.push_back({4, "add audit", "CREATE TABLE audit (at timestamptz)"});
  UPK_ASSERT_OK(Migrate(conn(), "updater", newer));
  auto r = Migrate(conn(), "updater", Catalog());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPolicy);
  EXPECT_NE(r.error().message().find("version 4, newer than this binary knows (3)"), std::string::npos)
      << r.error().message();
}

TEST_F(MigrateTest, InsertedMigrationIsRefused) {
  auto gappy = Catalog();
  gappy.erase(gappy.begin() + 1);  // binary knows 1 and 3
  UPK_ASSERT_OK(Migrate(conn(), "updater", gappy));
  auto r = Migrate(conn(), "updater", Catalog());  // now 2 appears below applied 3
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("migration 2 'add versions'"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("appended"), std::string::npos) << r.error().message();
}

TEST_F(MigrateTest, FailingMigrationLeavesNothingBehind) {
  auto broken = Catalog();
  broken.push_back({4, "broken", "CREATE TABLE half (x int); SELECT no_such_function();"});
  auto r = Migrate(conn(), "updater", broken);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("migration 4 'broken' of 'updater' failed"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(SqlState(r.error()), std::optional<std::string>("42883"));
  EXPECT_EQ(*SchemaVersion(conn(), "updater"), 3);  // 1..3 stay applied, 4 left no trace
  UPK_ASSERT_OK_AND_ASSIGN(Result t, conn().Exec("SELECT to_regclass('half') IS NULL AS gone"));
  EXPECT_TRUE(*t.Get<bool>(0, "gone"));
}

TEST_F(MigrateTest, BadListsAreRefusedBeforeTouchingTheDatabase) {
  std::vector<Migration> unordered = {{2, "b", "SELECT 1"}, {1, "a", "SELECT 1"}};
  EXPECT_EQ(Migrate(conn(), "updater", unordered).error().code(), Errc::kInvalidArgument);
  std::vector<Migration> zero = {{0, "z", "SELECT 1"}};
  EXPECT_FALSE(Migrate(conn(), "updater", zero).ok());
  std::vector<Migration> empty_sql = {{1, "a", ""}};
  EXPECT_FALSE(Migrate(conn(), "updater", empty_sql).ok());
  EXPECT_EQ(*SchemaVersion(conn(), "updater"), 0);
}

TEST_F(MigrateTest, ConcurrentStartersApplyOnce) {
  // Migration 1 sleeps a little so the two starters overlap on the advisory lock.
  auto slow = Catalog();
  slow[0].sql += "SELECT pg_sleep(0.3);";
  Expected<MigrationReport> a = Error(Errc::kInternal, "not run"), b = Error(Errc::kInternal, "not run");
  auto run = [&](Expected<MigrationReport>* out) {
    auto c = db().Connect();
    if (!c.ok()) {
      *out = c.error();
      return;
    }
    *out = Migrate(*c, "updater", slow);
  };
  std::thread ta(run, &a);
  std::thread tb(run, &b);
  ta.join();
  tb.join();
  ASSERT_TRUE(a.ok()) << a.error().message();
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_EQ(a->applied.size() + b->applied.size(), 3u);
  EXPECT_EQ(a->to_version, 3);
  EXPECT_EQ(b->to_version, 3);
  EXPECT_EQ(CounterRuns(conn()), 3);
  UPK_ASSERT_OK_AND_ASSIGN(Result r, conn().Exec("SELECT count(*) AS n FROM schema_migrations"));
  EXPECT_EQ(*r.Get<std::int64_t>(0, "n"), 3);
}

TEST_F(MigrateTest, PoolOverloadWorks) {
  PoolOptions o;
  o.connect = db().options();
  o.max_size = 1;
  UPK_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(o));
  UPK_ASSERT_OK_AND_ASSIGN(MigrationReport rep, Migrate(*pool, "updater", Catalog()));
  EXPECT_EQ(rep.to_version, 3);
}

}  // namespace
}  // namespace upkeep::db
