// Shared helpers of the upkeep_db tests: assertion macros for Expected and a fixture that gives
// every test its own fresh database (dropped afterwards) and a connection to it.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "upkeep/db/connection.hpp"
#include "upkeep/db/testing.hpp"

#define UPK_ASSERT_OK(expr)                                           \
  do {                                                                \
    auto&& upk_assert_r = (expr);                                     \
    ASSERT_TRUE(upk_assert_r.ok()) << upk_assert_r.error().message(); \
  } while (0)

#define UPK_AOA_IMPL(tmp, decl, expr)             \
  auto tmp = (expr);                              \
  ASSERT_TRUE(tmp.ok()) << tmp.error().message(); \
  decl = std::move(tmp).value()
#define UPK_ASSERT_OK_AND_ASSIGN(decl, expr) UPK_AOA_IMPL(UPK_CONCAT(upk_aoa_, __LINE__), decl, expr)

namespace upkeep::db {

class DbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    auto db = testing::TestDatabase::Create(info->name());
    ASSERT_TRUE(db.ok()) << db.error().message();
    db_.emplace(std::move(db).value());
    auto conn = db_->Connect();
    ASSERT_TRUE(conn.ok()) << conn.error().message();
    conn_.emplace(std::move(conn).value());
  }
  void TearDown() override {
    conn_.reset();
    db_.reset();
  }
  Connection& conn() { return *conn_; }
  testing::TestDatabase& db() { return *db_; }

 private:
  std::optional<testing::TestDatabase> db_;
  std::optional<Connection> conn_;
};

}  // namespace upkeep::db
