#include "upkeep/keyserver/service.hpp"

#include <algorithm>
#include <charconv>
#include <optional>
#include <set>
#include <variant>

#include "upkeep/common/bytes.hpp"
#include "upkeep/db/audit.hpp"
#include "upkeep/db/errors.hpp"
#include "upkeep/net/api.hpp"
#include "upkeep/db/transaction.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/identity.hpp"
#include "upkeep/tuf/metadata.hpp"

namespace upkeep::keyserver {

using net::Method;
using net::Request;
using net::Response;

namespace {

constexpr std::size_t kMaxCustomerBytes = 200;
constexpr std::size_t kMaxFeatures = 64;
constexpr std::size_t kMaxFeatureBytes = 64;
constexpr std::size_t kMaxLicenceKeyBytes = 64;
constexpr std::size_t kMaxReasonBytes = 500;
constexpr std::int64_t kMaxAuditLimit = 1000;
constexpr std::int64_t kDefaultAuditLimit = 100;
// One page of the revocation feed; the updater asks again from the last revoked_at when truncated.
constexpr std::int64_t kMaxRevocations = 10000;

// The JSON API helpers every daemon shares (net/api.hpp).
Response Err(int status, std::string_view code, std::string_view message) { return net::ApiError(status, code, message); }
using net::BadField;
using net::BearerToken;
using net::Unauthorized;
inline std::optional<Response> ParseObject(const Request& req, std::initializer_list<std::string_view> allowed,
                                           Json& out) {
  return net::ParseJsonObject(req, allowed, out);
}

// Human-friendly and unambiguous: 20 characters of a 32-letter alphabet without I, O, 0 and 1
// (100 bits), in groups of five.
std::string NewLicenceKey(Random& random) {
  static constexpr std::string_view kAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  Bytes raw = random.Generate(20);
  std::string key;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (i > 0 && i % 5 == 0) key += '-';
    key += kAlphabet[raw[i] & 31u];
  }
  return key;
}

Expected<Json> SignEnvelope(const Json& signed_part, const packages::PrivateKey& key) {
  UPK_TRY_ASSIGN(std::string canonical, CanonicalJson(signed_part));
  Bytes sig = key.Sign(canonical);
  return Json{{"signatures", Json::array({Json{{"keyid", key.keyid()}, {"sig", ToHex(sig)}}})},
              {"signed", signed_part}};
}

Expected<std::vector<std::string>> FeaturesFromText(const std::string& text) {
  UPK_TRY_ASSIGN(Json json, ParseJson(text));
  std::vector<std::string> out;
  if (!json.is_array()) return Error(Errc::kParse, "features column is not an array");
  for (const Json& f : json) {
    if (!f.is_string()) return Error(Errc::kParse, "features column holds a non-string");
    out.push_back(f.get<std::string>());
  }
  return out;
}

struct LicenceRow {
  std::string licence_key;
  std::string customer;
  SysTime maintenance_end{};
  std::vector<std::string> features;
  std::optional<std::string> appliance_id;
};

Expected<std::optional<LicenceRow>> LoadLicence(db::Connection& c, const std::string& key, bool for_update) {
  std::string sql =
      "SELECT licence_key, customer, maintenance_end, features::text AS features, appliance_id "
      "FROM licences WHERE licence_key = $1";
  if (for_update) sql += " FOR UPDATE";
  UPK_TRY_ASSIGN(db::Result r, c.Exec(sql, key));
  if (r.rows() == 0) return std::optional<LicenceRow>();
  LicenceRow row;
  UPK_TRY_ASSIGN(row.licence_key, r.Get<std::string>(0, "licence_key"));
  UPK_TRY_ASSIGN(row.customer, r.Get<std::string>(0, "customer"));
  UPK_TRY_ASSIGN(row.maintenance_end, r.Get<SysTime>(0, "maintenance_end"));
  UPK_TRY_ASSIGN(std::string features, r.Get<std::string>(0, "features"));
  UPK_TRY_ASSIGN(row.features, FeaturesFromText(features));
  UPK_TRY_ASSIGN(row.appliance_id, r.GetOptional<std::string>(0, "appliance_id"));
  return std::optional<LicenceRow>(std::move(row));
}

}  // namespace

// ---------------------------------------------------------------------------------------------

Expected<ServiceConfig> ServiceConfig::FromJson(const Json& json) {
  ServiceConfig config;
  if (!json.is_object()) return Error(Errc::kParse, "config: must be a JSON object");
  auto days = [](std::int64_t n) { return std::chrono::seconds(n * 86400); };
  for (const auto& [name, value] : json.items()) {
    if (name == "max_expiry_days") {
      if (!value.is_object()) return Error(Errc::kParse, "config: max_expiry_days must be an object");
      for (const auto& [role, v] : value.items()) {
        if (!v.is_number_integer() || v.get<std::int64_t>() < 1 || v.get<std::int64_t>() > 3650) {
          return Error(Errc::kParse, "config: max_expiry_days." + role + " must be an integer 1..3650");
        }
        const std::int64_t n = v.get<std::int64_t>();
        if (role == "timestamp") config.max_timestamp_expiry = days(n);
        else if (role == "snapshot") config.max_snapshot_expiry = days(n);
        else if (role == "assignment") config.max_assignment_expiry = days(n);
        else return Error(Errc::kParse, "config: unknown role '" + role + "' in max_expiry_days");
      }
    } else if (name == "licence_document_days") {
      if (!value.is_number_integer() || value.get<std::int64_t>() < 1 || value.get<std::int64_t>() > 3650) {
        return Error(Errc::kParse, "config: licence_document_days must be an integer 1..3650");
      }
      config.licence_document_validity = days(value.get<std::int64_t>());
    } else if (name == "enrol_skew_seconds") {
      if (!value.is_number_integer() || value.get<std::int64_t>() < 1 || value.get<std::int64_t>() > 86400) {
        return Error(Errc::kParse, "config: enrol_skew_seconds must be an integer 1..86400");
      }
      config.enrol_skew = std::chrono::seconds(value.get<std::int64_t>());
    } else {
      return Error(Errc::kParse, "config: unknown field '" + name + "'");
    }
  }
  return config;
}

const std::vector<db::Migration>& Migrations() {
  static const std::vector<db::Migration> kMigrations = {
      {1, "licences, appliances, audit", R"sql(
CREATE TABLE licences (
  licence_key     text PRIMARY KEY,
  customer        text NOT NULL,
  maintenance_end timestamptz NOT NULL,
  features        jsonb NOT NULL,
  created_at      timestamptz NOT NULL,
  appliance_id    text UNIQUE,
  bound_at        timestamptz
);
CREATE TABLE appliances (
  appliance_id text PRIMARY KEY,
  public_key   jsonb NOT NULL,
  customer     text NOT NULL,
  licence_key  text NOT NULL UNIQUE REFERENCES licences (licence_key),
  status       text NOT NULL CHECK (status IN ('active', 'revoked')),
  enrolled_at  timestamptz NOT NULL,
  revoked_at   timestamptz
);
CREATE TABLE audit (
  id     bigserial PRIMARY KEY,
  at     timestamptz NOT NULL,
  actor  text NOT NULL,
  action text NOT NULL,
  target text NOT NULL,
  detail jsonb NOT NULL DEFAULT '{}'
);
CREATE FUNCTION keyserver_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the audit table is append-only';
END
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
  FOR EACH ROW EXECUTE FUNCTION keyserver_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
  FOR EACH STATEMENT EXECUTE FUNCTION keyserver_audit_append_only();
)sql"},
  };
  return kMigrations;
}

// ---------------------------------------------------------------------------------------------

struct Service::Impl {
  const KeySet& keys;
  db::Pool& pool;
  const Clock& clock;
  Random& random;
  ServiceConfig config;
  LogFn log;
  net::MetricsRegistry* metrics = nullptr;

  void Log(std::string_view line) const {
    if (log) log(line);
  }

  std::optional<Response> Authorize(const Request& req, Actor needed) const {
    auto token = BearerToken(req);
    if (!token) return Unauthorized("missing 'Authorization: Bearer TOKEN'");
    if (token->empty()) return Unauthorized("Authorization must be 'Bearer TOKEN'");
    auto actor = keys.Authenticate(*token);
    if (!actor) return Unauthorized("unknown token");
    if (*actor != needed) {
      return Err(403, "forbidden", "this endpoint needs the " + std::string(ActorName(needed)) + " token");
    }
    return std::nullopt;
  }

  Response DbFailure(std::string_view what, const Error& error) const {
    if (db::IsUnavailable(error)) {
      Response r = Err(503, "unavailable", "database unavailable, try again");
      r.SetHeader("Retry-After", "1");
      return r;
    }
    Log(std::string(what) + ": database error: " + error.message());
    return Err(500, "internal", "database error");
  }

  // Runs fn in a transaction. fn rejects a request by setting `reject` and returning an error,
  // which rolls everything back.
  template <typename T, typename F>
  std::variant<T, Response> Transact(std::string_view what, F&& fn, const db::TxOptions& options = {}) const {
    std::optional<Response> reject;
    auto result = db::WithTransaction(
        pool,
        [&](db::Connection& c) -> Expected<T> {
          reject.reset();
          return fn(c, reject);
        },
        options);
    if (reject) return std::move(*reject);
    if (!result.ok()) {
      if (db::IsUniqueViolation(result.error())) return Err(409, "conflict", "conflicting concurrent change, retry");
      return DbFailure(what, result.error());
    }
    return std::move(result).value();
  }

  Expected<Json> LicenceDocument(const LicenceRow& row) const {
    trust::Licence lic;
    lic.licence_key = row.licence_key;
    lic.customer = row.customer;
    lic.appliance_id = row.appliance_id;
    lic.maintenance_end = row.maintenance_end;
    lic.features = row.features;
    lic.issued = clock.Now();
    lic.expires = lic.issued + config.licence_document_validity;
    return SignEnvelope(lic.ToJson(), keys.signer(Role::kLicence));
  }

  void CountSignature(Role role) const {
    if (metrics) {
      metrics->GetCounter("upkeep_keyserver_signatures_total", "Documents signed by the keyserver, per key role",
                          {{"role", std::string(RoleName(role))}})
          .Inc();
    }
  }

  // --- handlers ---------------------------------------------------------------------------

  Response GetKeys(const Request&) const { return Response::Json(200, keys.PublicJson()); }

  Response CreateLicence(const Request& req) const {
    if (auto r = Authorize(req, Actor::kAdmin)) return *r;
    Json body;
    if (auto r = ParseObject(req, {"customer", "maintenance_end", "features"}, body)) return *r;
    LicenceRow row;
    auto customer = GetString(body, "customer");
    if (!customer.ok()) return BadField(customer.error());
    if (customer->empty() || customer->size() > kMaxCustomerBytes) {
      return Err(400, "invalid_field", "field 'customer': must be 1.." + std::to_string(kMaxCustomerBytes) + " bytes");
    }
    row.customer = *customer;
    auto end_text = GetString(body, "maintenance_end");
    if (!end_text.ok()) return BadField(end_text.error());
    auto end = ParseTimestamp(*end_text);
    if (!end.ok()) return Err(400, "invalid_field", "field 'maintenance_end': " + end.error().message());
    row.maintenance_end = *end;
    auto features = GetArray(body, "features");
    if (!features.ok()) return BadField(features.error());
    if ((*features)->size() > kMaxFeatures) {
      return Err(400, "invalid_field", "field 'features': at most " + std::to_string(kMaxFeatures) + " entries");
    }
    for (const Json& f : **features) {
      if (!f.is_string() || f.get<std::string>().empty() || f.get<std::string>().size() > kMaxFeatureBytes) {
        return Err(400, "invalid_field", "field 'features': entries must be strings of 1.." +
                                             std::to_string(kMaxFeatureBytes) + " bytes");
      }
      row.features.push_back(f.get<std::string>());
    }
    row.licence_key = NewLicenceKey(random);
    const SysTime now = clock.Now();
    const Json features_json = row.features;

    auto done = Transact<Ok>("create licence", [&](db::Connection& c, std::optional<Response>&) -> Expected<Ok> {
      UPK_TRY(c.Exec("INSERT INTO licences (licence_key, customer, maintenance_end, features, created_at) "
                     "VALUES ($1, $2, $3, $4::jsonb, $5)",
                     row.licence_key, row.customer, row.maintenance_end, features_json.dump(), now));
      // The audit row names the customer, never the licence key (it is a bearer secret for enrolment).
      UPK_TRY(InsertAudit(c, now, Actor::kAdmin, "licence.create", row.customer,
                          Json{{"maintenance_end", FormatTimestamp(row.maintenance_end)}, {"features", features_json}}));
      return Ok{};
    });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    auto doc = LicenceDocument(row);
    if (!doc.ok()) return Err(500, "internal", "cannot sign licence: " + doc.error().message());
    CountSignature(Role::kLicence);
    return Response::Json(201, Json{{"licence_key", row.licence_key}, {"licence", *doc}});
  }

  Response Enrol(const Request& req) const {
    Json body;
    if (auto r = ParseObject(req, {"licence_key", "public_key", "timestamp", "signature"}, body)) return *r;
    auto licence_key = GetString(body, "licence_key");
    if (!licence_key.ok()) return BadField(licence_key.error());
    if (licence_key->empty() || licence_key->size() > kMaxLicenceKeyBytes) {
      return Err(400, "invalid_field", "field 'licence_key': must be 1.." + std::to_string(kMaxLicenceKeyBytes) + " bytes");
    }
    auto key_json = GetObject(body, "public_key");
    if (!key_json.ok()) return BadField(key_json.error());
    auto appliance = trust::AppliancePublicKey::FromJson(**key_json);
    if (!appliance.ok()) return Err(400, "invalid_public_key", "field 'public_key': " + appliance.error().message());
    auto ts_text = GetString(body, "timestamp");
    if (!ts_text.ok()) return BadField(ts_text.error());
    auto ts = ParseTimestamp(*ts_text);
    if (!ts.ok()) return Err(400, "invalid_field", "field 'timestamp': " + ts.error().message());
    auto sig_text = GetString(body, "signature");
    if (!sig_text.ok()) return BadField(sig_text.error());
    auto sig = FromHex(*sig_text);
    if (!sig.ok() || sig->size() != 64) {
      return Err(400, "invalid_field", "field 'signature': must be 128 hex digits (an ed25519 signature)");
    }

    const SysTime now = clock.Now();
    const auto skew = now > *ts ? now - *ts : *ts - now;
    if (skew > config.enrol_skew) {
      return Err(401, "stale_timestamp",
                 "enrolment timestamp " + *ts_text + " is " + std::to_string(skew.count()) +
                     " s away from the keyserver's clock (" + FormatTimestamp(now) + "; allowed " +
                     std::to_string(config.enrol_skew.count()) + " s): check the appliance clock and NTP");
    }
    auto canonical = CanonicalJson(Json{{"licence_key", *licence_key}, {"public_key", **key_json}, {"timestamp", *ts_text}});
    if (!canonical.ok()) return Err(400, "invalid_field", canonical.error().message());
    if (!appliance->signing_key().Verify(*canonical, *sig)) {
      return Err(401, "bad_signature", "enrolment signature does not verify with the given public key");
    }
    const std::string id = appliance->appliance_id();
    auto public_key_text = CanonicalJson(appliance->signing_key().ToJson());
    if (!public_key_text.ok()) return Err(500, "internal", public_key_text.error().message());

    struct Outcome {
      LicenceRow licence;
      bool created = false;
    };
    auto done = Transact<Outcome>("enrol", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Outcome> {
      auto rejected = [&](Response r) -> Expected<Outcome> {
        reject = std::move(r);
        return Error(Errc::kPolicy, "rejected");
      };
      UPK_TRY_ASSIGN(db::Result existing,
                     c.Exec("SELECT status, licence_key FROM appliances WHERE appliance_id = $1 FOR UPDATE", id));
      std::optional<std::string> existing_licence;
      if (existing.rows() > 0) {
        UPK_TRY_ASSIGN(std::string status, existing.Get<std::string>(0, "status"));
        if (status == "revoked") return rejected(Err(403, "appliance_revoked", "appliance " + id + " is revoked"));
        UPK_TRY_ASSIGN(existing_licence, existing.Get<std::string>(0, "licence_key"));
      }
      UPK_TRY_ASSIGN(std::optional<LicenceRow> licence, LoadLicence(c, *licence_key, true));
      if (!licence) return rejected(Err(404, "unknown_licence", "no such licence key"));
      if (licence->appliance_id) {
        if (*licence->appliance_id == id) return Outcome{*licence, false};  // the same enrolment again
        return rejected(Err(409, "licence_bound", "this licence is already bound to another appliance"));
      }
      if (existing_licence) {
        return rejected(Err(409, "appliance_enrolled", "appliance " + id + " is already enrolled with another licence"));
      }
      if (licence->maintenance_end <= now) {
        return rejected(Err(403, "licence_expired",
                            "licence maintenance ended " + FormatTimestamp(licence->maintenance_end)));
      }
      UPK_TRY(c.Exec("INSERT INTO appliances (appliance_id, public_key, customer, licence_key, status, enrolled_at) "
                     "VALUES ($1, $2::jsonb, $3, $4, 'active', $5)",
                     id, *public_key_text, licence->customer, licence->licence_key, now));
      UPK_TRY(c.Exec("UPDATE licences SET appliance_id = $2, bound_at = $3 WHERE licence_key = $1",
                     licence->licence_key, id, now));
      UPK_TRY(InsertAudit(c, now, "appliance", "appliance.enrol", id, Json{{"customer", licence->customer}}));
      licence->appliance_id = id;
      return Outcome{*licence, true};
    });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    const Outcome& outcome = std::get<Outcome>(done);
    auto doc = LicenceDocument(outcome.licence);
    if (!doc.ok()) return Err(500, "internal", "cannot sign licence: " + doc.error().message());
    CountSignature(Role::kLicence);
    return Response::Json(200, Json{{"appliance_id", id}, {"enrolled", outcome.created ? "new" : "existing"},
                                    {"licence", *doc}});
  }

  Response GetAppliance(const Request& req) const {
    if (auto r = Authorize(req, Actor::kUpdater)) return *r;
    const std::string id(req.PathParam("id"));
    if (!trust::IsValidApplianceId(id)) return Err(400, "invalid_appliance_id", "not an appliance id: " + id);
    auto done = Transact<Json>("get appliance", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Json> {
      UPK_TRY_ASSIGN(db::Result r,
                     c.Exec("SELECT a.public_key::text AS public_key, a.customer, a.status, a.enrolled_at, "
                            "a.revoked_at, l.maintenance_end, l.features::text AS features "
                            "FROM appliances a JOIN licences l ON l.licence_key = a.licence_key "
                            "WHERE a.appliance_id = $1",
                            id));
      if (r.rows() == 0) {
        reject = Err(404, "unknown_appliance", "no appliance " + id);
        return Error(Errc::kNotFound, "rejected");
      }
      UPK_TRY_ASSIGN(std::string key_text, r.Get<std::string>(0, "public_key"));
      UPK_TRY_ASSIGN(Json key, ParseJson(key_text));
      UPK_TRY_ASSIGN(std::string customer, r.Get<std::string>(0, "customer"));
      UPK_TRY_ASSIGN(std::string status, r.Get<std::string>(0, "status"));
      UPK_TRY_ASSIGN(SysTime enrolled_at, r.Get<SysTime>(0, "enrolled_at"));
      UPK_TRY_ASSIGN(std::optional<SysTime> revoked_at, r.GetOptional<SysTime>(0, "revoked_at"));
      UPK_TRY_ASSIGN(SysTime maintenance_end, r.Get<SysTime>(0, "maintenance_end"));
      UPK_TRY_ASSIGN(std::string features_text, r.Get<std::string>(0, "features"));
      UPK_TRY_ASSIGN(Json features, ParseJson(features_text));
      return Json{{"appliance_id", id},
                  {"public_key", key},
                  {"customer", customer},
                  {"status", status},
                  {"enrolled_at", FormatTimestamp(enrolled_at)},
                  {"revoked_at", revoked_at ? Json(FormatTimestamp(*revoked_at)) : Json(nullptr)},
                  {"maintenance_end", FormatTimestamp(maintenance_end)},
                  {"in_maintenance", clock.Now() < maintenance_end},
                  {"features", features}};
    }, db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, std::get<Json>(done));
  }

  Response Revoke(const Request& req) const {
    if (auto r = Authorize(req, Actor::kAdmin)) return *r;
    const std::string id(req.PathParam("id"));
    if (!trust::IsValidApplianceId(id)) return Err(400, "invalid_appliance_id", "not an appliance id: " + id);
    std::string reason;
    if (!req.body().empty()) {
      Json body;
      if (auto r = ParseObject(req, {"reason"}, body)) return *r;
      if (body.contains("reason")) {
        auto text = GetString(body, "reason");
        if (!text.ok()) return BadField(text.error());
        if (text->size() > kMaxReasonBytes) return Err(400, "invalid_field", "field 'reason': too long");
        reason = *text;
      }
    }
    const SysTime now = clock.Now();
    auto done = Transact<bool>("revoke", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<bool> {
      UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT status FROM appliances WHERE appliance_id = $1 FOR UPDATE", id));
      if (r.rows() == 0) {
        reject = Err(404, "unknown_appliance", "no appliance " + id);
        return Error(Errc::kNotFound, "rejected");
      }
      UPK_TRY_ASSIGN(std::string status, r.Get<std::string>(0, "status"));
      if (status == "revoked") return false;  // idempotent: nothing changes, nothing to audit
      UPK_TRY(c.Exec("UPDATE appliances SET status = 'revoked', revoked_at = $2 WHERE appliance_id = $1", id, now));
      UPK_TRY(InsertAudit(c, now, Actor::kAdmin, "appliance.revoke", id, Json{{"reason", reason}}));
      return true;
    });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, Json{{"appliance_id", id}, {"status", "revoked"}, {"changed", std::get<bool>(done)}});
  }

  // The checks every signed body shares: "_type", then "expires" in (now, now + max].
  std::optional<Response> CheckTypeAndExpiry(const Json& body, std::string_view type, std::chrono::seconds max,
                                             SysTime* expires_out) const {
    auto type_field = GetString(body, "_type");
    if (!type_field.ok()) return BadField(type_field.error());
    if (*type_field != type) {
      return Err(400, "wrong_type",
                 "this endpoint signs '" + std::string(type) + "' documents, not '" + *type_field + "'");
    }
    auto expires_text = GetString(body, "expires");
    if (!expires_text.ok()) return BadField(expires_text.error());
    auto expires = ParseTimestamp(*expires_text);
    if (!expires.ok()) return Err(400, "invalid_field", "field 'expires': " + expires.error().message());
    const SysTime now = clock.Now();
    if (*expires <= now) return Err(400, "expired", "field 'expires' (" + *expires_text + ") is not in the future");
    if (*expires > now + max) {
      return Err(400, "expiry_too_far", "field 'expires' (" + *expires_text + ") is more than " +
                                            std::to_string(max.count() / 3600) + " hours ahead");
    }
    *expires_out = *expires;
    return std::nullopt;
  }

  Response SignTuf(const Request& req, Role role) const {
    if (auto r = Authorize(req, Actor::kUpdater)) return *r;
    auto json = ParseJson(req.body());
    if (!json.ok()) return Err(400, "malformed_json", "request body is not valid JSON: " + json.error().message());
    if (!json->is_object()) return Err(400, "invalid_body", "request body must be the metadata's 'signed' object");
    const Json& body = *json;
    const std::chrono::seconds max =
        role == Role::kTimestamp ? config.max_timestamp_expiry : config.max_snapshot_expiry;
    SysTime expires{};
    if (auto r = CheckTypeAndExpiry(body, RoleName(role), max, &expires)) return *r;
    auto version = GetInt(body, "version");
    if (!version.ok()) return BadField(version.error());
    if (*version <= 0) return Err(400, "invalid_field", "field 'version': must be an integer > 0");
    Status valid = OkStatus();
    if (role == Role::kTimestamp) {
      if (auto t = tuf::Timestamp::FromJson(body); !t.ok()) valid = t.error();
    } else {
      if (auto t = tuf::Snapshot::FromJson(body); !t.ok()) valid = t.error();
    }
    if (!valid.ok()) return Err(400, "invalid_metadata", valid.error().message());
    auto envelope = SignEnvelope(body, keys.signer(role));
    if (!envelope.ok()) return Err(400, "invalid_metadata", envelope.error().message());

    const SysTime now = clock.Now();
    const std::string action = "sign." + std::string(RoleName(role));
    auto done = Transact<Ok>(action, [&](db::Connection& c, std::optional<Response>&) -> Expected<Ok> {
      UPK_TRY(InsertAudit(c, now, Actor::kUpdater, action, "version " + std::to_string(*version),
                          Json{{"version", *version}, {"expires", FormatTimestamp(expires)},
                               {"keyid", keys.signer(role).keyid()}}));
      return Ok{};
    });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    CountSignature(role);
    return Response::Json(200, *envelope);
  }

  Response SignAssignment(const Request& req) const {
    if (auto r = Authorize(req, Actor::kUpdater)) return *r;
    auto json = ParseJson(req.body());
    if (!json.ok()) return Err(400, "malformed_json", "request body is not valid JSON: " + json.error().message());
    if (!json->is_object()) return Err(400, "invalid_body", "request body must be the assignment's 'signed' object");
    Json body = std::move(json).value();
    SysTime expires{};
    if (auto r = CheckTypeAndExpiry(body, trust::kAssignmentType, config.max_assignment_expiry, &expires)) return *r;
    auto assignment = trust::Assignment::FromJson(body);
    if (!assignment.ok()) return Err(400, "invalid_assignment", assignment.error().message());
    const std::string id = assignment->appliance_id;

    // The updater hands over content keys sealed to the keyserver's content key; open them all
    // before touching the database, so a bad one costs nothing and writes nothing. The plaintext
    // keys live only in these wiping ContentKeys until they are re-sealed below.
    std::vector<std::optional<trust::ContentKey>> content_keys;
    content_keys.reserve(assignment->steps.size());
    for (std::size_t i = 0; i < assignment->steps.size(); ++i) {
      const trust::AssignmentStep& step = assignment->steps[i];
      if (step.sealed_content_key.empty()) {
        content_keys.emplace_back();
        continue;
      }
      auto opened = keys.OpenContentKey(step.sealed_content_key);
      if (!opened.ok()) {
        return Err(400, "invalid_content_key",
                   "steps[" + std::to_string(i) + "] (package " + step.name + "): " + opened.error().message());
      }
      content_keys.emplace_back(std::move(opened).value());
    }

    const SysTime now = clock.Now();
    auto done = Transact<Json>("sign assignment", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Json> {
      // FOR SHARE: a revocation waits for this signature or happens before it, never in between.
      UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT status, public_key::text AS public_key FROM appliances "
                                          "WHERE appliance_id = $1 FOR SHARE",
                                          id));
      if (r.rows() == 0) {
        reject = Err(404, "unknown_appliance", "no appliance " + id);
        return Error(Errc::kNotFound, "rejected");
      }
      UPK_TRY_ASSIGN(std::string status, r.Get<std::string>(0, "status"));
      if (status != "active") {
        reject = Err(403, "appliance_revoked", "appliance " + id + " is revoked");
        return Error(Errc::kPolicy, "rejected");
      }
      Json signed_body = body;
      std::size_t resealed = 0;
      if (std::any_of(content_keys.begin(), content_keys.end(), [](const auto& k) { return k.has_value(); })) {
        // The key stored at enrolment, re-checked: the id is derived from it, so a mismatch
        // means a corrupted row, and sealing to it would hand the key to someone else.
        UPK_TRY_ASSIGN(std::string key_text, r.Get<std::string>(0, "public_key"));
        UPK_TRY_ASSIGN(Json key_json, ParseJson(key_text));
        UPK_TRY_ASSIGN(trust::AppliancePublicKey appliance, trust::AppliancePublicKey::FromJson(key_json));
        if (appliance.appliance_id() != id) {
          return Error(Errc::kInternal, "stored public key of " + id + " does not match its id");
        }
        for (std::size_t i = 0; i < content_keys.size(); ++i) {
          if (!content_keys[i]) continue;
          std::string sealed = trust::SealContentKey(*content_keys[i], appliance);
          if (sealed.empty()) return Error(Errc::kInternal, "cannot seal a content key to " + id);
          signed_body["steps"][i]["sealed_content_key"] = std::move(sealed);
          ++resealed;
        }
      }
      auto envelope = SignEnvelope(signed_body, keys.signer(Role::kDirector));
      if (!envelope.ok()) {
        reject = Err(400, "invalid_assignment", envelope.error().message());
        return Error(Errc::kInvalidArgument, "rejected");
      }
      UPK_TRY(InsertAudit(c, now, Actor::kUpdater, "sign.assignment", id,
                          Json{{"state_digest", assignment->state_digest}, {"expires", FormatTimestamp(expires)},
                               {"steps", assignment->steps.size()}, {"content_keys_resealed", resealed}}));
      return std::move(envelope).value();
    });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    CountSignature(Role::kDirector);
    return Response::Json(200, std::get<Json>(done));
  }

  // The revocation feed the updater polls: revoked appliances since a point in time (inclusive,
  // so a "since" equal to the previous page's last revoked_at or "now" never misses a row).
  Response GetRevocations(const Request& req) const {
    if (auto r = Authorize(req, Actor::kUpdater)) return *r;
    std::optional<SysTime> since;
    if (!req.query().empty()) {
      auto text = req.QueryParam("since");
      if (!text) return Err(400, "invalid_query", "the only query parameter is 'since' (RFC 3339)");
      auto parsed = ParseTimestamp(*text);
      if (!parsed.ok()) return Err(400, "invalid_query", "'since': " + parsed.error().message());
      since = *parsed;
    }
    // Read before the query: a revocation committed during it is then reported again next time
    // (since <= its revoked_at) rather than skipped.
    const SysTime now = clock.Now();
    auto done = Transact<Json>("revocations", [&](db::Connection& c, std::optional<Response>&) -> Expected<Json> {
      // One row more than a page tells whether the page is truncated.
      const SysTime from = since.value_or(SysTime{});
      UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT appliance_id, revoked_at FROM appliances "
                                          "WHERE status = 'revoked' AND revoked_at >= $1 "
                                          "ORDER BY revoked_at, appliance_id LIMIT $2",
                                          from, kMaxRevocations + 1));
      Json revoked = Json::array();
      const int rows = std::min<int>(r.rows(), static_cast<int>(kMaxRevocations));
      for (int i = 0; i < rows; ++i) {
        UPK_TRY_ASSIGN(std::string id, r.Get<std::string>(i, "appliance_id"));
        UPK_TRY_ASSIGN(SysTime at, r.Get<SysTime>(i, "revoked_at"));
        revoked.push_back(Json{{"appliance_id", id}, {"revoked_at", FormatTimestamp(at)}});
      }
      Json out = {{"revoked", std::move(revoked)}, {"now", FormatTimestamp(now)}};
      if (r.rows() > rows) out["truncated"] = true;
      return out;
    }, db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, std::get<Json>(done));
  }

  Response GetAudit(const Request& req) const {
    if (auto r = Authorize(req, Actor::kAdmin)) return *r;
    std::int64_t limit = kDefaultAuditLimit;
    if (!req.query().empty()) {
      auto text = req.QueryParam("limit");
      if (!text) return Err(400, "invalid_query", "the only query parameter is 'limit'");
      const char* end = text->data() + text->size();
      auto [ptr, ec] = std::from_chars(text->data(), end, limit);
      if (ec != std::errc() || ptr != end || limit < 1 || limit > kMaxAuditLimit) {
        return Err(400, "invalid_query", "'limit' must be an integer 1.." + std::to_string(kMaxAuditLimit));
      }
    }
    auto done = Transact<Json>("audit", [&](db::Connection& c, std::optional<Response>&) {
      return db::ListAudit(c, limit);
    }, db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, Json{{"entries", std::get<Json>(done)}});
  }

  static Status InsertAudit(db::Connection& c, SysTime at, std::string_view actor, std::string_view action,
                            std::string_view target, const Json& detail) {
    return db::InsertAudit(c, at, actor, action, target, detail);
  }
  static Status InsertAudit(db::Connection& c, SysTime at, Actor actor, std::string_view action,
                            std::string_view target, const Json& detail) {
    return InsertAudit(c, at, ActorName(actor), action, target, detail);
  }
};

Service::Service(const KeySet& keys, db::Pool& pool, const Clock& clock, Random& random, ServiceConfig config,
                 LogFn log)
    : impl_(std::make_shared<Impl>(Impl{keys, pool, clock, random, config, std::move(log)})) {}

Status Service::Register(net::Server& server) {
  impl_->metrics = &server.metrics();
  std::shared_ptr<Impl> impl = impl_;
  // Built field by field rather than with designated initializers: RouteOptions grows fields,
  // and -Wmissing-field-initializers would turn each addition into a build break here.
  auto route = [](std::size_t max_body, bool worker_pool) {
    net::RouteOptions options;
    options.max_body_bytes = max_body;
    options.use_worker_pool = worker_pool;
    return options;
  };
  const net::RouteOptions small = route(impl->config.max_body_bytes, true);
  const net::RouteOptions large = route(impl->config.max_metadata_body_bytes, true);
  UPK_TRY(server.Handle(Method::kGet, "/api/v1/keys", [impl](const Request& r) { return impl->GetKeys(r); },
                        route(impl->config.max_body_bytes, false)));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/licences", [impl](const Request& r) { return impl->CreateLicence(r); },
                        small));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/enrol", [impl](const Request& r) { return impl->Enrol(r); }, small));
  UPK_TRY(server.Handle(Method::kGet, "/api/v1/appliances/{id}",
                        [impl](const Request& r) { return impl->GetAppliance(r); }, small));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/appliances/{id}/revoke",
                        [impl](const Request& r) { return impl->Revoke(r); }, small));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/sign/timestamp",
                        [impl](const Request& r) { return impl->SignTuf(r, Role::kTimestamp); }, large));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/sign/snapshot",
                        [impl](const Request& r) { return impl->SignTuf(r, Role::kSnapshot); }, large));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/sign/assignment",
                        [impl](const Request& r) { return impl->SignAssignment(r); }, small));
  UPK_TRY(server.Handle(Method::kGet, "/api/v1/revocations",
                        [impl](const Request& r) { return impl->GetRevocations(r); }, small));
  UPK_TRY(server.Handle(Method::kGet, "/api/v1/audit", [impl](const Request& r) { return impl->GetAudit(r); }, small));
  return OkStatus();
}

}  // namespace upkeep::keyserver
