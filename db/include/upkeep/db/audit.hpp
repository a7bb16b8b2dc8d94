// The append-only audit table every daemon keeps in its own schema: (id, at, actor, action,
// target, detail jsonb), UPDATE/DELETE/TRUNCATE refused by a trigger. Writing a row inside the
// caller's transaction, and reading the newest rows, the same way in every daemon.
#pragma once

#include <cstdint>
#include <string_view>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/db/connection.hpp"

namespace upkeep::db {

Status InsertAudit(Connection& c, SysTime at, std::string_view actor, std::string_view action,
                   std::string_view target, const Json& detail);

// The newest `limit` rows, newest first: [{"id", "at", "actor", "action", "target", "detail"}].
Expected<Json> ListAudit(Connection& c, std::int64_t limit);

}  // namespace upkeep::db
