// PgAccountRepository: web accounts of the support dashboard in PostgreSQL (dashboard.hpp).
#include "dashboard.hpp"

#include "upkeep/db/errors.hpp"
#include "upkeep/db/pool.hpp"
#include "upkeep/db/transaction.hpp"

namespace upkeep::updater {

namespace {

constexpr std::string_view kColumns = "name, role, password_hash, created_at, disabled";

Expected<web::Account> FromRow(const db::Result& r, int i) {
  web::Account a;
  UPK_TRY_ASSIGN(a.name, r.Get<std::string>(i, "name"));
  UPK_TRY_ASSIGN(std::string role, r.Get<std::string>(i, "role"));
  auto parsed = web::ParseRole(role);
  if (!parsed) return Error(Errc::kParse, "dashboard account '" + a.name + "': unknown role '" + role + "'");
  a.role = *parsed;
  UPK_TRY_ASSIGN(a.password_hash, r.Get<std::string>(i, "password_hash"));
  UPK_TRY_ASSIGN(a.created, r.Get<SysTime>(i, "created_at"));
  UPK_TRY_ASSIGN(a.disabled, r.Get<bool>(i, "disabled"));
  return a;
}

// What the table's CHECKs would refuse, refused first with a clear message.
Status Validate(const web::Account& a) {
  UPK_TRY(web::CheckAccountName(a.name));
  if (!a.password_hash.starts_with("$argon2id$")) {
    return Error(Errc::kInvalidArgument, "dashboard account '" + a.name + "': the password hash is not Argon2id");
  }
  return OkStatus();
}

}  // namespace

Expected<std::optional<web::Account>> PgAccountRepository::Find(std::string_view name) const {
  return db::WithTransaction(pool_, [&](db::Connection& c) -> Expected<std::optional<web::Account>> {
    UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT " + std::string(kColumns) + " FROM dashboard_accounts WHERE name = $1", name));
    if (r.rows() == 0) return std::optional<web::Account>();
    UPK_TRY_ASSIGN(web::Account a, FromRow(r, 0));
    return std::optional<web::Account>(std::move(a));
  }, db::TxOptions{.read_only = true});
}

Expected<std::vector<web::Account>> PgAccountRepository::List() const {
  return db::WithTransaction(pool_, [&](db::Connection& c) -> Expected<std::vector<web::Account>> {
    UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT " + std::string(kColumns) + " FROM dashboard_accounts ORDER BY name"));
    std::vector<web::Account> out;
    for (int i = 0; i < r.rows(); ++i) {
      UPK_TRY_ASSIGN(web::Account a, FromRow(r, i));
      out.push_back(std::move(a));
    }
    return out;
  }, db::TxOptions{.read_only = true});
}

Expected<std::size_t> PgAccountRepository::Count() const {
  return db::WithTransaction(pool_, [&](db::Connection& c) -> Expected<std::size_t> {
    UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT count(*) AS n FROM dashboard_accounts"));
    UPK_TRY_ASSIGN(std::int64_t n, r.Get<std::int64_t>(0, "n"));
    return static_cast<std::size_t>(n);
  }, db::TxOptions{.read_only = true});
}

Status PgAccountRepository::Insert(const web::Account& a, bool first) {
  UPK_TRY(Validate(a));
  auto done = db::WithTransaction(pool_, [&](db::Connection& c) -> Status {
    // The lock orders every insert, so "only while empty" holds against concurrent Create calls too.
    UPK_TRY(c.Exec("LOCK TABLE dashboard_accounts IN SHARE ROW EXCLUSIVE MODE"));
    if (first) {
      UPK_TRY_ASSIGN(db::Result any, c.Exec("SELECT 1 FROM dashboard_accounts LIMIT 1"));
      if (any.rows() > 0) return Error(Errc::kPolicy, "dashboard accounts exist already: setup is done");
    }
    UPK_TRY(c.Exec("INSERT INTO dashboard_accounts (name, role, password_hash, created_at, disabled, first) "
                   "VALUES ($1, $2, $3, $4, $5, $6)",
                   a.name, std::string(web::RoleName(a.role)), a.password_hash, a.created, a.disabled, first));
    return OkStatus();
  });
  if (!done.ok() && db::IsUniqueViolation(done.error())) {
    return Error(Errc::kPolicy, first ? "dashboard accounts exist already: setup is done"
                                      : "dashboard account '" + a.name + "' exists already");
  }
  return done;
}

Status PgAccountRepository::Create(const web::Account& account) {
  auto st = Insert(account, false);
  return st;
}

Status PgAccountRepository::CreateFirst(const web::Account& account) { return Insert(account, true); }

Status PgAccountRepository::Update(const web::Account& a) {
  UPK_TRY(Validate(a));
  return db::WithTransaction(pool_, [&](db::Connection& c) -> Status {
    UPK_TRY_ASSIGN(db::Result r, c.Exec("UPDATE dashboard_accounts SET role = $2, password_hash = $3, created_at = $4, "
                                        "disabled = $5 WHERE name = $1",
                                        a.name, std::string(web::RoleName(a.role)), a.password_hash, a.created,
                                        a.disabled));
    if (r.affected_rows() == 0) return Error(Errc::kNotFound, "no dashboard account '" + a.name + "'");
    return OkStatus();
  });
}

}  // namespace upkeep::updater
