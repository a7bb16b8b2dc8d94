#include "upkeep/db/testing.hpp"

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <filesystem>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/files.hpp"

namespace upkeep::db::testing {

Expected<std::string> AdminUrl() {
  if (const char* url = std::getenv("UPKEEP_TEST_DATABASE_URL"); url != nullptr && *url != '\0') {
    return std::string(url);
  }
  const char* dir = std::getenv("UPKEEP_TEST_PG_DIR");
  if (dir == nullptr || *dir == '\0') {
    return Error(Errc::kNotFound,
                 "no test database: set UPKEEP_TEST_DATABASE_URL, or run under CTest (the upkeep_db fixture "
                 "starts tools/pg), or run `tools/pg start DIR` and set UPKEEP_TEST_PG_DIR=DIR");
  }
  const std::filesystem::path file = std::filesystem::path(dir) / "url";
  auto text = ReadFileBounded(file, 4096);
  if (!text.ok()) {
    return text.error().Wrap("no test database: the upkeep_db fixture (tools/pg start " + std::string(dir) +
                             ") did not run or failed; is PostgreSQL installed (tools/deps)?");
  }
  std::string url = std::move(text).value();
  while (!url.empty() && (url.back() == '\n' || url.back() == '\r' || url.back() == ' ')) url.pop_back();
  return url;
}

Expected<TestDatabase> TestDatabase::Create(std::string_view label) {
  UPK_TRY_ASSIGN(std::string admin, AdminUrl());
  static std::atomic<int> counter{0};
  std::string clean;
  for (char c : label) {
    if (clean.size() >= 24) break;
    const auto u = static_cast<unsigned char>(c);
    clean += std::isalnum(u) ? static_cast<char>(std::tolower(u)) : '_';
  }
  const Bytes rnd = SystemRandom::Instance().Generate(4);
  const std::string name =
      "upkt_" + clean + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + ToHex(rnd);

  ConnectOptions admin_options;
  admin_options.conninfo = admin;
  admin_options.application_name = "upkeep-test-admin";
  UPK_TRY_ASSIGN(Connection conn, Connection::Open(admin_options));
  UPK_TRY_ASSIGN(std::string quoted, conn.QuoteIdentifier(name));
  // Identifiers cannot be bound parameters; the name is quoted and made of [a-z0-9_] anyway.
  UPK_TRY(conn.ExecScript("CREATE DATABASE " + quoted));
  UPK_TRY_ASSIGN(std::string url, ConninfoWithDatabase(admin, name));
  return TestDatabase(admin, name, url);
}

TestDatabase::TestDatabase(TestDatabase&& other) noexcept
    : admin_url_(std::move(other.admin_url_)), name_(std::move(other.name_)), url_(std::move(other.url_)) {
  other.name_.clear();
}

TestDatabase::~TestDatabase() {
  if (name_.empty()) return;
  auto conn = Connection::Open(admin_url_);
  if (!conn.ok()) return;  // the cluster is gone; the fixture's directory goes with it
  auto quoted = conn->QuoteIdentifier(name_);
  if (quoted.ok()) (void)conn->ExecScript("DROP DATABASE IF EXISTS " + *quoted + " WITH (FORCE)");
}

ConnectOptions TestDatabase::options() const {
  ConnectOptions o;
  o.conninfo = url_;
  o.application_name = "upkeep-test";
  return o;
}

}  // namespace upkeep::db::testing
