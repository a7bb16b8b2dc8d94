#include "upkeep/db/audit.hpp"

namespace upkeep::db {

Status InsertAudit(Connection& c, SysTime at, std::string_view actor, std::string_view action,
                   std::string_view target, const Json& detail) {
  auto r = c.Exec("INSERT INTO audit (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5::jsonb)", at, actor,
                  action, target, detail.dump());
  if (!r.ok()) return r.error();
  return OkStatus();
}

Expected<Json> ListAudit(Connection& c, std::int64_t limit) {
  UPK_TRY_ASSIGN(Result r, c.Exec("SELECT id, at, actor, action, target, detail::text AS detail "
                                  "FROM audit ORDER BY id DESC LIMIT $1",
                                  limit));
  Json entries = Json::array();
  for (int i = 0; i < r.rows(); ++i) {
    UPK_TRY_ASSIGN(std::int64_t id, r.Get<std::int64_t>(i, "id"));
    UPK_TRY_ASSIGN(SysTime at, r.Get<SysTime>(i, "at"));
    UPK_TRY_ASSIGN(std::string actor, r.Get<std::string>(i, "actor"));
    UPK_TRY_ASSIGN(std::string action, r.Get<std::string>(i, "action"));
    UPK_TRY_ASSIGN(std::string target, r.Get<std::string>(i, "target"));
    UPK_TRY_ASSIGN(std::string detail_text, r.Get<std::string>(i, "detail"));
    UPK_TRY_ASSIGN(Json detail, ParseJson(detail_text));
    entries.push_back(Json{{"id", id}, {"at", FormatTimestamp(at)}, {"actor", actor}, {"action", action},
                           {"target", target}, {"detail", detail}});
  }
  return entries;
}

}  // namespace upkeep::db
