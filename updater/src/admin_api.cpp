// Tokens and the audit log (docs/updater-api.md, "Appliances, tokens, audit").
#include <charconv>

#include "context.hpp"

namespace upkeep::updater {

using net::ApiError;
using net::Method;
using net::Request;
using net::Response;

namespace {

constexpr std::int64_t kMaxTokenDays = 3650;
constexpr std::int64_t kDefaultTokenDays = 90;
constexpr std::int64_t kMaxAuditLimit = 1000;
constexpr std::int64_t kDefaultAuditLimit = 100;

Expected<Json> InsertToken(db::Connection& c, SysTime now, Random& random, std::string_view name,
                           OperatorRole role, std::chrono::seconds validity, std::string_view actor,
                           std::string* hash_out, Operator* op_out) {
  const std::string token = NewOperatorToken(random);
  const std::string hash = TokenHash(token);
  const SysTime expires = now + validity;
  UPK_TRY_ASSIGN(db::Result r, c.Exec("INSERT INTO operator_tokens (name, role, token_sha256, created_at, expires_at) "
                                      "VALUES ($1, $2, $3, $4, $5) RETURNING id",
                                      name, OperatorRoleName(role), hash, now, expires));
  UPK_TRY_ASSIGN(std::int64_t id, r.Get<std::int64_t>(0, "id"));
  // The audit row names the token, never its value.
  UPK_TRY(InsertAudit(c, now, actor, "token.create", std::string(name),
                      Json{{"id", id}, {"role", OperatorRoleName(role)}, {"expires_at", FormatTimestamp(expires)}}));
  if (hash_out) *hash_out = hash;
  if (op_out) *op_out = Operator{id, std::string(name), role, expires};
  return Json{{"id", id}, {"token", token}, {"name", name}, {"role", OperatorRoleName(role)},
              {"expires_at", FormatTimestamp(expires)}};
}

Status CheckTokenName(std::string_view name) {
  if (name.empty() || name.size() > 100) return Error(Errc::kInvalidArgument, "token name must be 1..100 bytes");
  for (char ch : name) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
      return Error(Errc::kInvalidArgument, "token name must not hold control characters");
    }
  }
  return OkStatus();
}

struct AdminApi {
  std::shared_ptr<Context> ctx;

  Response CreateToken(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kAdmin);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const Operator& op = std::get<Operator>(who);
    Json body;
    if (auto r = net::ParseJsonObject(req, {"name", "role", "expires_days"}, body)) return *r;
    auto name = GetString(body, "name");
    if (!name.ok()) return net::BadField(name.error());
    if (auto st = CheckTokenName(*name); !st.ok()) return ApiError(400, "invalid_field", "field 'name': " + st.error().message());
    auto role_text = GetString(body, "role");
    if (!role_text.ok()) return net::BadField(role_text.error());
    auto role = ParseOperatorRole(*role_text);
    if (!role) return ApiError(400, "invalid_field", "field 'role': must be admin, publisher or support");
    std::int64_t days = kDefaultTokenDays;
    if (body.contains("expires_days")) {
      auto d = GetInt(body, "expires_days");
      if (!d.ok()) return net::BadField(d.error());
      if (*d < 1 || *d > kMaxTokenDays) {
        return ApiError(400, "invalid_field", "field 'expires_days': must be 1.." + std::to_string(kMaxTokenDays));
      }
      days = *d;
    }
    std::string hash;
    Operator created;
    auto done = ctx->Transact<Json>("token.create", [&](db::Connection& c, std::optional<Response>&) {
      return InsertToken(c, ctx->clock.Now(), ctx->random, *name, *role, std::chrono::hours(24 * days), op.actor(),
                         &hash, &created);
    });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    ctx->tokens.Remember(hash, created);
    return Response::Json(201, std::get<Json>(done));
  }

  Response RevokeToken(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kAdmin);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const Operator& op = std::get<Operator>(who);
    std::string_view id_text = req.PathParam("id");
    std::int64_t id = 0;
    auto [ptr, ec] = std::from_chars(id_text.data(), id_text.data() + id_text.size(), id);
    if (ec != std::errc() || ptr != id_text.data() + id_text.size() || id < 1) {
      return ApiError(400, "invalid_field", "token id must be a positive integer");
    }
    auto done = ctx->Transact<bool>("token.revoke", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<bool> {
      const SysTime now = ctx->clock.Now();
      UPK_TRY_ASSIGN(db::Result r, c.Exec("UPDATE operator_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL "
                                          "RETURNING name", id, now));
      if (r.rows() == 0) {
        UPK_TRY_ASSIGN(db::Result exists, c.Exec("SELECT 1 FROM operator_tokens WHERE id = $1", id));
        if (exists.rows() == 0) {
          reject = ApiError(404, "unknown_token", "no token with id " + std::to_string(id));
          return Error(Errc::kNotFound, "unknown token");
        }
        return false;  // already revoked: idempotent, nothing to audit
      }
      UPK_TRY_ASSIGN(std::string name, r.Get<std::string>(0, "name"));
      UPK_TRY(InsertAudit(c, now, op.actor(), "token.revoke", name, Json{{"id", id}}));
      return true;
    });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    ctx->tokens.Forget(id);
    return Response::Json(200, Json{{"id", id}, {"revoked", true}, {"changed", std::get<bool>(done)}});
  }

  Response GetAudit(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kSupport);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    std::int64_t limit = kDefaultAuditLimit;
    if (auto text = req.QueryParam("limit")) {
      auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), limit);
      if (ec != std::errc() || ptr != text->data() + text->size() || limit < 1 || limit > kMaxAuditLimit) {
        return ApiError(400, "invalid_query", "'limit' must be an integer 1.." + std::to_string(kMaxAuditLimit));
      }
    }
    auto done = ctx->Transact<Json>("audit", [&](db::Connection& c, std::optional<Response>&) {
      return db::ListAudit(c, limit);
    }, db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, Json{{"entries", std::get<Json>(done)}});
  }
};

}  // namespace

Expected<Json> CreateOperatorToken(db::Pool& pool, const Clock& clock, Random& random, std::string_view name,
                                   std::string_view role, std::chrono::seconds validity, std::string_view actor) {
  UPK_TRY(CheckTokenName(name));
  auto parsed = ParseOperatorRole(role);
  if (!parsed) return Error(Errc::kInvalidArgument, "role must be admin, publisher or support, not '" + std::string(role) + "'");
  return db::WithTransaction(pool, [&](db::Connection& c) {
    return InsertToken(c, clock.Now(), random, name, *parsed, validity, actor, nullptr, nullptr);
  });
}

Status RegisterAdminApi(const std::shared_ptr<Context>& ctx, net::Server& server) {
  auto api = std::make_shared<AdminApi>(AdminApi{ctx});
  net::RouteOptions opts;
  opts.max_body_bytes = ctx->config.max_body_bytes;
  opts.use_worker_pool = true;
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/tokens", [api](const Request& r) { return api->CreateToken(r); }, opts));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/tokens/{id}/revoke",
                        [api](const Request& r) { return api->RevokeToken(r); }, opts));
  UPK_TRY(server.Handle(Method::kGet, "/api/v1/audit", [api](const Request& r) { return api->GetAudit(r); }, opts));
  return OkStatus();
}

}  // namespace upkeep::updater
