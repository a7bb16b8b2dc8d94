#include "context.hpp"

namespace upkeep::updater {

net::Response Context::DbFailure(std::string_view what, const Error& error) const {
  if (db::IsUnavailable(error)) {
    net::Response r = net::ApiError(503, "unavailable", "database unavailable, try again");
    r.SetHeader("Retry-After", "1");
    return r;
  }
  Log(std::string(what) + ": database error: " + error.message());
  return net::ApiError(500, "internal", "database error");
}

net::Response Context::KeyserverFailure(std::string_view what, const Error& error) const {
  Log(std::string(what) + ": " + error.message());
  if (error.code() == Errc::kIo) {
    net::Response r = net::ApiError(503, "unavailable", "keyserver unavailable, try again");
    r.SetHeader("Retry-After", "5");
    return r;
  }
  return net::ApiError(502, "keyserver_refused", error.message());
}

std::variant<Operator, net::Response> Context::Authorize(const net::Request& req, OperatorRole needed) {
  auto token = net::BearerToken(req);
  if (!token) return net::Unauthorized("missing 'Authorization: Bearer TOKEN'");
  if (token->empty()) return net::Unauthorized("Authorization must be 'Bearer TOKEN'");
  const SysTime now = clock.Now();
  TokenStore::Lookup found = tokens.FindOrReload(*token, now, pool);
  switch (found.outcome) {
    case TokenStore::Outcome::kUnknown:
      return net::Unauthorized("unknown or revoked token");
    case TokenStore::Outcome::kExpired:
      return net::Unauthorized("token '" + found.op.name + "' expired at " + FormatTimestamp(found.op.expires_at),
                               "token_expired");
    case TokenStore::Outcome::kOk:
      break;
  }
  if (found.op.role < needed) {
    return net::ApiError(403, "forbidden",
                         "this needs the " + std::string(OperatorRoleName(needed)) + " role; token '" + found.op.name +
                             "' has " + std::string(OperatorRoleName(found.op.role)));
  }
  return found.op;
}

Status Context::BumpCatalogGeneration(db::Connection& c) {
  auto r = c.Exec("UPDATE catalog_generation SET generation = generation + 1");
  if (!r.ok()) return r.error();
  return OkStatus();
}


}  // namespace upkeep::updater
