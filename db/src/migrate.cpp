#include "upkeep/db/migrate.hpp"

#include <algorithm>
#include <map>

#include "upkeep/common/hash.hpp"
#include "upkeep/db/errors.hpp"
#include "upkeep/db/transaction.hpp"

namespace upkeep::db {
namespace {

// One advisory lock for every component: they share schema_migrations, and creating that
// table concurrently is itself a race. The value is arbitrary but fixed forever ("upkmigra").
constexpr std::int64_t kMigrationLockKey = 0x75706b6d69677261;

constexpr const char* kCreateTable = R"sql(
CREATE TABLE IF NOT EXISTS schema_migrations (
  component  text        NOT NULL,
  version    integer     NOT NULL CHECK (version > 0),
  name       text        NOT NULL,
  sha256     text        NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (component, version)
))sql";

std::string Label(const Migration& m) { return "migration " + std::to_string(m.version) + " '" + m.name + "'"; }

Status Validate(std::string_view component, const std::vector<Migration>& migrations) {
  if (component.empty()) return Error(Errc::kInvalidArgument, "migrations: empty component name");
  int previous = 0;
  for (const Migration& m : migrations) {
    if (m.version <= previous) {
      return Error(Errc::kInvalidArgument, "migrations of '" + std::string(component) + "': " + Label(m) +
                                               " does not follow version " + std::to_string(previous) +
                                               " (versions must increase strictly from 1)");
    }
    if (m.name.empty() || m.sql.empty()) {
      return Error(Errc::kInvalidArgument,
                   "migrations of '" + std::string(component) + "': " + Label(m) + " has an empty name or SQL");
    }
    previous = m.version;
  }
  return OkStatus();
}

struct Step {
  int found_version = 0;  // highest version recorded before this step
  int applied = 0;        // version applied by this step, 0 when nothing was pending
};

}  // namespace

Expected<MigrationReport> Migrate(Connection& conn, std::string_view component,
                                  const std::vector<Migration>& migrations) {
  UPK_TRY(Validate(component, migrations));
  const std::string comp(component);
  std::map<int, std::string> checksums;
  for (const Migration& m : migrations) checksums[m.version] = Sha256Hex(m.sql);
  const int latest = migrations.empty() ? 0 : migrations.back().version;

  // One transaction per migration; each re-reads and re-checks the record under the lock, so
  // a concurrent starter that got there first is simply seen as "already applied".
  auto step = [&](Connection& c) -> Expected<Step> {
    UPK_TRY(c.Exec("SET LOCAL lock_timeout = '60s'"));
    UPK_TRY(c.Exec("SELECT pg_advisory_xact_lock($1)", kMigrationLockKey));
    UPK_TRY(c.ExecScript(kCreateTable));
    UPK_TRY_ASSIGN(Result rows,
                   c.Exec("SELECT version, sha256 FROM schema_migrations WHERE component = $1 ORDER BY version", comp));
    std::map<int, std::string> applied;
    for (int i = 0; i < rows.rows(); ++i) {
      UPK_TRY_ASSIGN(std::int64_t v, rows.Get<std::int64_t>(i, "version"));
      UPK_TRY_ASSIGN(std::string sha, rows.Get<std::string>(i, "sha256"));
      applied[static_cast<int>(v)] = sha;
    }
    Step out;
    out.found_version = applied.empty() ? 0 : applied.rbegin()->first;
    if (out.found_version > latest) {
      return Error(Errc::kPolicy, "database schema of '" + comp + "' is at version " +
                                      std::to_string(out.found_version) + ", newer than this binary knows (" +
                                      std::to_string(latest) + "); refusing to start: run the newer release");
    }
    for (const auto& [version, sha] : applied) {
      auto known = checksums.find(version);
      if (known == checksums.end()) {
        return Error(Errc::kPolicy, "database has migration " + std::to_string(version) + " of '" + comp +
                                        "' that this binary does not know; refusing to start");
      }
      if (known->second != sha) {
        const Migration& m = *std::find_if(migrations.begin(), migrations.end(),
                                           [&](const Migration& x) { return x.version == version; });
        return Error(Errc::kPolicy, Label(m) + " was edited after release (component '" + comp + "': applied sha256 " +
                                        sha.substr(0, 12) + "..., this binary has " + known->second.substr(0, 12) +
                                        "...); add a new migration instead");
      }
    }
    const Migration* pending = nullptr;
    for (const Migration& m : migrations) {
      if (!applied.contains(m.version)) {
        pending = &m;
        break;
      }
    }
    if (pending == nullptr) return out;
    if (pending->version < out.found_version) {
      return Error(Errc::kPolicy, Label(*pending) + " of '" + comp + "' is not applied but version " +
                                      std::to_string(out.found_version) +
                                      " is: migrations must be appended, never inserted");
    }
    if (Status s = c.ExecScript(pending->sql); !s.ok()) {
      return s.error().Wrap(Label(*pending) + " of '" + comp + "' failed");
    }
    UPK_TRY(c.Exec("INSERT INTO schema_migrations (component, version, name, sha256) VALUES ($1, $2, $3, $4)", comp,
                   pending->version, pending->name, checksums[pending->version]));
    out.applied = pending->version;
    return out;
  };

  MigrationReport report;
  for (bool first = true;; first = false) {
    UPK_TRY_ASSIGN(Step s, WithTransaction(conn, step));
    if (first) report.from_version = s.found_version;
    if (s.applied == 0) {
      report.to_version = s.found_version;
      return report;
    }
    report.applied.push_back(s.applied);
  }
}

Expected<MigrationReport> Migrate(Pool& pool, std::string_view component, const std::vector<Migration>& migrations) {
  UPK_TRY_ASSIGN(PooledConnection conn, pool.Acquire());
  return Migrate(*conn, component, migrations);
}

Expected<int> SchemaVersion(Connection& conn, std::string_view component) {
  UPK_TRY_ASSIGN(Result exists, conn.Exec("SELECT to_regclass('schema_migrations') IS NOT NULL AS present"));
  UPK_TRY_ASSIGN(bool present, exists.Get<bool>(0, "present"));
  if (!present) return 0;
  UPK_TRY_ASSIGN(Result r,
                 conn.Exec("SELECT coalesce(max(version), 0) AS v FROM schema_migrations WHERE component = $1",
                           std::string(component)));
  UPK_TRY_ASSIGN(std::int64_t v, r.Get<std::int64_t>(0, "v"));
  return static_cast<int>(v);
}

}  // namespace upkeep::db
