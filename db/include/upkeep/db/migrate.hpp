// Versioned schema migrations, compiled into the binary and applied at start-up.
//
// A component (e.g. "updater", "keyserver") passes its list of Migrations, versions strictly
// increasing from 1. Rules (see docs/database.md): forward only; a released migration is never
// edited; a new change is a new migration appended at the end.
// The table schema_migrations(component, version, name, sha256, applied_at) records what ran.
// Migrate applies each pending migration in its own transaction together with its record, so a
// failing migration leaves nothing behind. It refuses to go on, changing nothing, when:
//   - an applied migration's SQL no longer matches its recorded sha256 ("migration 3 'add
//     rollouts' of 'updater' was edited after release");
//   - the database holds a version this binary does not know (the database is ahead);
//   - a version is missing below an applied one (a migration was inserted, not appended).
// Concurrent starters serialize on a transaction-level advisory lock, so each migration runs
// once. Migration SQL runs as trusted multi-statement SQL inside a transaction: statements that
// cannot run in a transaction (CREATE INDEX CONCURRENTLY, VACUUM) are not allowed.
// Thread-safe as far as its Connection/Pool argument is.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/error.hpp"
#include "upkeep/db/connection.hpp"
#include "upkeep/db/pool.hpp"

namespace upkeep::db {

struct Migration {
  int version = 0;
  std::string name;
  std::string sql;
};

struct MigrationReport {
  int from_version = 0;      // the schema version found
  int to_version = 0;        // the schema version left
  std::vector<int> applied;  // versions this call applied, in order
};

Expected<MigrationReport> Migrate(Connection& conn, std::string_view component,
                                  const std::vector<Migration>& migrations);
Expected<MigrationReport> Migrate(Pool& pool, std::string_view component, const std::vector<Migration>& migrations);

// The version recorded for component, 0 when none (or no schema_migrations table yet).
Expected<int> SchemaVersion(Connection& conn, std::string_view component);

}  // namespace upkeep::db
