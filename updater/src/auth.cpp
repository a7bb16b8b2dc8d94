#include "auth.hpp"

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/hash.hpp"

namespace upkeep::updater {

std::string_view OperatorRoleName(OperatorRole role) {
  switch (role) {
    case OperatorRole::kSupport: return "support";
    case OperatorRole::kPublisher: return "publisher";
    case OperatorRole::kAdmin: return "admin";
  }
  return "unknown";
}

std::optional<OperatorRole> ParseOperatorRole(std::string_view name) {
  for (OperatorRole r : {OperatorRole::kSupport, OperatorRole::kPublisher, OperatorRole::kAdmin}) {
    if (OperatorRoleName(r) == name) return r;
  }
  return std::nullopt;
}

std::string NewOperatorToken(Random& random) { return "upkeep_" + ToHex(random.Generate(32)); }

std::string TokenHash(std::string_view token) { return ToHex(Sha256(token)); }

Status TokenStore::Reload(db::Pool& pool) {
  auto conn = pool.Acquire();
  if (!conn.ok()) return conn.error();
  UPK_TRY_ASSIGN(db::Result r, (*conn)->Exec("SELECT id, name, role, token_sha256, expires_at FROM operator_tokens "
                                             "WHERE revoked_at IS NULL"));
  std::map<std::string, Operator, std::less<>> fresh;
  for (int i = 0; i < r.rows(); ++i) {
    Operator op;
    UPK_TRY_ASSIGN(op.token_id, r.Get<std::int64_t>(i, "id"));
    UPK_TRY_ASSIGN(op.name, r.Get<std::string>(i, "name"));
    UPK_TRY_ASSIGN(std::string role, r.Get<std::string>(i, "role"));
    auto parsed = ParseOperatorRole(role);
    if (!parsed) return Error(Errc::kInternal, "operator_tokens: unknown role '" + role + "'");
    op.role = *parsed;
    UPK_TRY_ASSIGN(op.expires_at, r.Get<SysTime>(i, "expires_at"));
    UPK_TRY_ASSIGN(std::string hash, r.Get<std::string>(i, "token_sha256"));
    fresh.emplace(std::move(hash), std::move(op));
  }
  std::lock_guard lock(mu_);
  by_hash_ = std::move(fresh);
  return OkStatus();
}

TokenStore::Lookup TokenStore::Find(std::string_view token, SysTime now) const {
  // The map is keyed by the hash, so the lookup never compares secret bytes.
  const std::string hash = TokenHash(token);
  std::lock_guard lock(mu_);
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return {};
  return Lookup{now < it->second.expires_at ? Outcome::kOk : Outcome::kExpired, it->second};
}

TokenStore::Lookup TokenStore::FindOrReload(std::string_view token, SysTime now, db::Pool& pool) {
  Lookup found = Find(token, now);
  if (found.outcome != Outcome::kUnknown) return found;
  {
    std::lock_guard lock(mu_);
    // Bounded: strangers guessing tokens cost at most one query a second.
    const auto now_steady = std::chrono::steady_clock::now();
    if (last_miss_reload_ && now_steady - *last_miss_reload_ < std::chrono::seconds(1)) return found;
    last_miss_reload_ = now_steady;
  }
  if (!Reload(pool).ok()) return found;
  return Find(token, now);
}

void TokenStore::Remember(std::string_view token_hash, Operator op) {
  std::lock_guard lock(mu_);
  by_hash_.insert_or_assign(std::string(token_hash), std::move(op));
}

void TokenStore::Forget(std::int64_t token_id) {
  std::lock_guard lock(mu_);
  std::erase_if(by_hash_, [&](const auto& entry) { return entry.second.token_id == token_id; });
}

}  // namespace upkeep::updater
