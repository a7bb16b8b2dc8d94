// Test support (library upkeep_db_testing): a fresh, uniquely named database per test.
//
// The cluster comes from the CTest fixture `upkeep_db` (tools/pg start on ${build}/pg, see
// db/CMakeLists.txt and upkeep_add_db_test). The admin connection string is read from
// $UPKEEP_TEST_DATABASE_URL, else from the file $UPKEEP_TEST_PG_DIR/url that tools/pg writes.
// TestDatabase::Create makes an empty database owned by the test role; the destructor drops it
// (WITH (FORCE), so connections a test leaked do not keep it alive). Names hold the label, the
// process id and a random suffix, so tests in parallel processes never collide.
// Not thread-safe per object; create one per test.
#pragma once

#include <string>
#include <string_view>

#include "upkeep/common/error.hpp"
#include "upkeep/db/connection.hpp"

namespace upkeep::db::testing {

// The admin connection string, or an error that says how to get one (run under CTest, or start
// a cluster with tools/pg and set UPKEEP_TEST_PG_DIR).
Expected<std::string> AdminUrl();

class TestDatabase {
 public:
  // label: a few characters naming the test, kept in the database name (sanitized to [a-z0-9_]).
  static Expected<TestDatabase> Create(std::string_view label = "t");

  TestDatabase(TestDatabase&& other) noexcept;
  TestDatabase& operator=(TestDatabase&& other) = delete;
  TestDatabase(const TestDatabase&) = delete;
  ~TestDatabase();

  const std::string& name() const { return name_; }
  // A key=value connection string for this database (for a server under test, a pool, ...).
  const std::string& url() const { return url_; }
  ConnectOptions options() const;
  Expected<Connection> Connect() const { return Connection::Open(options()); }

 private:
  TestDatabase(std::string admin_url, std::string name, std::string url)
      : admin_url_(std::move(admin_url)), name_(std::move(name)), url_(std::move(url)) {}
  std::string admin_url_;
  std::string name_;
  std::string url_;
};

}  // namespace upkeep::db::testing
