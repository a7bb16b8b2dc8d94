#include "upkeep/trust/documents.hpp"

#include <initializer_list>

#include "encoding.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/trust/identity.hpp"

namespace upkeep::trust {
namespace {

constexpr std::size_t kMaxNameChars = 128;
constexpr std::size_t kMaxTextChars = 256;
constexpr std::size_t kMaxPathChars = 1024;
constexpr std::size_t kMaxFeatures = 256;
constexpr std::int64_t kMaxWaitHours = 24 * 366 * 10;

Json UnknownFields(const Json& obj, std::initializer_list<std::string_view> known) {
  Json out = Json::object();
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    bool is_known = false;
    for (auto k : known) is_known = is_known || it.key() == k;
    if (!is_known) out[it.key()] = it.value();
  }
  return out;
}

Json WithUnknown(const Json& unknown, Json known) {
  Json out = unknown.is_object() ? unknown : Json::object();
  for (auto it = known.begin(); it != known.end(); ++it) out[it.key()] = std::move(it.value());
  return out;
}

Expected<std::string> GetBoundedString(const Json& obj, const char* key, std::size_t max_chars) {
  UPK_TRY_ASSIGN(std::string s, GetString(obj, key));
  if (s.empty() || s.size() > max_chars) {
    return Error(Errc::kParse, std::string("field '") + key + "': empty or longer than " + std::to_string(max_chars));
  }
  return s;
}

Expected<SysTime> GetTime(const Json& obj, const char* key) {
  UPK_TRY_ASSIGN(std::string s, GetString(obj, key));
  auto t = ParseTimestamp(s);
  if (!t) return t.error().Wrap(std::string("field '") + key + "'");
  return t;
}

Expected<std::int64_t> GetIntInRange(const Json& obj, const char* key, std::int64_t lo, std::int64_t hi) {
  UPK_TRY_ASSIGN(std::int64_t v, GetInt(obj, key));
  if (v < lo || v > hi) {
    return Error(Errc::kParse, std::string("field '") + key + "': " + std::to_string(v) + " is outside " +
                                   std::to_string(lo) + ".." + std::to_string(hi));
  }
  return v;
}

Status CheckType(const Json& obj, const char* want) {
  UPK_TRY_ASSIGN(std::string type, GetString(obj, "_type"));
  if (type != want) return Error(Errc::kParse, "_type '" + type.substr(0, 64) + "' is not '" + want + "'");
  return OkStatus();
}

// A TUF target path: relative, '/'-separated, no empty, "." or ".." segments, no NUL or '\'.
bool IsSafeTargetPath(std::string_view p) {
  if (p.empty() || p.size() > kMaxPathChars || p.front() == '/' || p.back() == '/') return false;
  std::size_t start = 0;
  while (start <= p.size()) {
    std::size_t end = p.find('/', start);
    if (end == std::string_view::npos) end = p.size();
    std::string_view seg = p.substr(start, end - start);
    if (seg.empty() || seg == "." || seg == "..") return false;
    start = end + 1;
  }
  for (char c : p) {
    if (c == '\0' || c == '\\') return false;
  }
  return true;
}

}  // namespace

std::string StateDigest(const InstalledSet& installed) {
  Json j = Json::object();
  for (const auto& [name, version] : installed) j[name] = version.ToString();
  // Names and versions are plain strings and cannot make canonical JSON fail.
  return Sha256Hex(CanonicalJson(j).value());
}

Expected<AssignmentStep> AssignmentStep::FromJson(const Json& json) {
  if (!json.is_object()) return Error(Errc::kParse, "step is not a JSON object");
  AssignmentStep s;
  UPK_TRY_ASSIGN(s.name, GetBoundedString(json, "name", kMaxNameChars));
  UPK_TRY_ASSIGN(std::string version, GetString(json, "version"));
  UPK_TRY_ASSIGN(s.version, packages::Version::Parse(version));
  UPK_TRY_ASSIGN(std::string kind, GetString(json, "kind"));
  UPK_TRY_ASSIGN(s.kind, packages::ParseKind(kind));
  UPK_TRY_ASSIGN(std::int64_t wait, GetIntInRange(json, "wait_hours", 0, kMaxWaitHours));
  s.wait_hours = static_cast<std::uint32_t>(wait);
  UPK_TRY_ASSIGN(s.target_path, GetString(json, "target_path"));
  if (!IsSafeTargetPath(s.target_path)) {
    return Error(Errc::kParse,
                 "field 'target_path': '" + s.target_path.substr(0, 64) + "' is not a safe relative path");
  }
  UPK_TRY_ASSIGN(std::int64_t length, GetIntInRange(json, "length", 0, INT64_MAX));
  s.length = static_cast<std::uint64_t>(length);
  UPK_TRY_ASSIGN(s.sha256, GetString(json, "sha256"));
  if (!internal::IsSha256Hex(s.sha256)) return Error(Errc::kParse, "field 'sha256': not 64 lower-case hex digits");
  UPK_TRY_ASSIGN(s.sealed_content_key, GetBoundedString(json, "sealed_content_key", kMaxTextChars));
  s.unknown = UnknownFields(
      json, {"name", "version", "kind", "wait_hours", "target_path", "length", "sha256", "sealed_content_key"});
  return s;
}

Json AssignmentStep::ToJson() const {
  return WithUnknown(unknown, {{"name", name},
                               {"version", version.ToString()},
                               {"kind", packages::KindName(kind)},
                               {"wait_hours", wait_hours},
                               {"target_path", target_path},
                               {"length", length},
                               {"sha256", sha256},
                               {"sealed_content_key", sealed_content_key}});
}

Expected<Assignment> Assignment::FromJson(const Json& json) {
  if (!json.is_object()) return Error(Errc::kParse, "assignment is not a JSON object");
  UPK_TRY(CheckType(json, kAssignmentType));
  Assignment a;
  UPK_TRY_ASSIGN(a.appliance_id, GetString(json, "appliance_id"));
  if (!IsValidApplianceId(a.appliance_id)) return Error(Errc::kParse, "field 'appliance_id': not an appliance id");
  UPK_TRY_ASSIGN(a.state_digest, GetString(json, "state_digest"));
  if (!internal::IsSha256Hex(a.state_digest)) {
    return Error(Errc::kParse, "field 'state_digest': not 64 lower-case hex digits");
  }
  UPK_TRY_ASSIGN(a.issued, GetTime(json, "issued"));
  UPK_TRY_ASSIGN(a.expires, GetTime(json, "expires"));
  if (a.expires < a.issued) return Error(Errc::kParse, "assignment expires before it was issued");
  if (json.contains("nonce")) {
    UPK_TRY_ASSIGN(std::string nonce, GetBoundedString(json, "nonce", kMaxNameChars));
    a.nonce = std::move(nonce);
  }
  UPK_TRY_ASSIGN(a.channel, GetBoundedString(json, "channel", kMaxNameChars));
  UPK_TRY_ASSIGN(const Json* steps, GetArray(json, "steps"));
  if (steps->size() > kMaxAssignmentSteps) {
    return Error(Errc::kLimit, "assignment has more than " + std::to_string(kMaxAssignmentSteps) + " steps");
  }
  for (std::size_t i = 0; i < steps->size(); ++i) {
    auto step = AssignmentStep::FromJson((*steps)[i]);
    if (!step) return step.error().Wrap("steps[" + std::to_string(i) + "]");
    a.steps.push_back(std::move(step).value());
  }
  a.unknown =
      UnknownFields(json, {"_type", "appliance_id", "state_digest", "issued", "expires", "nonce", "channel", "steps"});
  return a;
}

Json Assignment::ToJson() const {
  Json steps_json = Json::array();
  for (const auto& s : steps) steps_json.push_back(s.ToJson());
  Json known = {
      {"_type", kAssignmentType},          {"appliance_id", appliance_id},        {"state_digest", state_digest},
      {"issued", FormatTimestamp(issued)}, {"expires", FormatTimestamp(expires)}, {"channel", channel},
      {"steps", std::move(steps_json)}};
  if (nonce) known["nonce"] = *nonce;
  return WithUnknown(unknown, std::move(known));
}

Expected<Licence> Licence::FromJson(const Json& json) {
  if (!json.is_object()) return Error(Errc::kParse, "licence is not a JSON object");
  UPK_TRY(CheckType(json, kLicenceType));
  Licence l;
  UPK_TRY_ASSIGN(l.licence_key, GetBoundedString(json, "licence_key", kMaxNameChars));
  UPK_TRY_ASSIGN(l.customer, GetBoundedString(json, "customer", kMaxTextChars));
  if (json.contains("appliance_id")) {
    UPK_TRY_ASSIGN(std::string id, GetString(json, "appliance_id"));
    if (!IsValidApplianceId(id)) return Error(Errc::kParse, "field 'appliance_id': not an appliance id");
    l.appliance_id = std::move(id);
  }
  UPK_TRY_ASSIGN(l.maintenance_end, GetTime(json, "maintenance_end"));
  UPK_TRY_ASSIGN(const Json* features, GetArray(json, "features"));
  if (features->size() > kMaxFeatures) {
    return Error(Errc::kLimit, "licence has more than " + std::to_string(kMaxFeatures) + " features");
  }
  for (const Json& f : *features) {
    if (!f.is_string() || f.get_ref<const std::string&>().empty() ||
        f.get_ref<const std::string&>().size() > kMaxNameChars) {
      return Error(Errc::kParse, "field 'features': every feature must be a non-empty string");
    }
    l.features.push_back(f.get<std::string>());
  }
  UPK_TRY_ASSIGN(l.issued, GetTime(json, "issued"));
  UPK_TRY_ASSIGN(l.expires, GetTime(json, "expires"));
  if (l.expires < l.issued) return Error(Errc::kParse, "licence expires before it was issued");
  l.unknown = UnknownFields(
      json, {"_type", "licence_key", "customer", "appliance_id", "maintenance_end", "features", "issued", "expires"});
  return l;
}

Json Licence::ToJson() const {
  Json known = {{"_type", kLicenceType},
                {"licence_key", licence_key},
                {"customer", customer},
                {"maintenance_end", FormatTimestamp(maintenance_end)},
                {"features", features},
                {"issued", FormatTimestamp(issued)},
                {"expires", FormatTimestamp(expires)}};
  if (appliance_id) known["appliance_id"] = *appliance_id;
  return WithUnknown(unknown, std::move(known));
}

Expected<Assignment> VerifyAssignment(std::string_view text, const packages::PublicKey& director_key,
                                      const Clock& clock, const AssignmentExpectation& expect) {
  auto doc = SignedDocument::Parse(text);
  if (!doc) return doc.error().Wrap("assignment");
  // Authenticity first: nothing unsigned is interpreted beyond its shape.
  if (auto ok = doc->Verify(director_key, kAssignmentType, clock); !ok) return ok.error().Wrap("assignment");
  auto a = Assignment::FromJson(doc->signed_part());
  if (!a) return a.error().Wrap("assignment");
  if (a->appliance_id != expect.appliance_id) {
    return Error(Errc::kPolicy, "assignment is for appliance " + a->appliance_id + ", not " + expect.appliance_id);
  }
  if (a->state_digest != expect.state_digest) {
    return Error(Errc::kPolicy, "assignment was computed for installed state " + a->state_digest.substr(0, 16) +
                                    "..., but this appliance is in state " + expect.state_digest.substr(0, 16) + "...");
  }
  if (expect.nonce && a->nonce != expect.nonce) {
    return Error(Errc::kPolicy, "assignment does not answer this request (nonce mismatch)");
  }
  return a;
}

Expected<Licence> VerifyLicence(std::string_view text, const packages::PublicKey& licence_key, const Clock& clock,
                                std::optional<std::string_view> appliance_id) {
  auto doc = SignedDocument::Parse(text);
  if (!doc) return doc.error().Wrap("licence");
  if (auto ok = doc->Verify(licence_key, kLicenceType, clock); !ok) return ok.error().Wrap("licence");
  auto l = Licence::FromJson(doc->signed_part());
  if (!l) return l.error().Wrap("licence");
  if (appliance_id && l->appliance_id && *l->appliance_id != *appliance_id) {
    return Error(Errc::kPolicy, "licence " + l->licence_key + " is bound to appliance " + *l->appliance_id + ", not " +
                                    std::string(*appliance_id));
  }
  return l;
}

Expected<std::string> EnrolmentRequestBody(const ApplianceIdentity& identity, std::string_view licence_key,
                                           SysTime now) {
  const Json public_key = identity.public_key().signing_key().ToJson();
  const std::string ts = FormatTimestamp(now);
  UPK_TRY_ASSIGN(std::string canonical,
                 CanonicalJson(Json{{"licence_key", licence_key}, {"public_key", public_key}, {"timestamp", ts}}));
  return Json{{"licence_key", licence_key},
              {"public_key", public_key},
              {"timestamp", ts},
              {"signature", ToHex(identity.Sign(canonical))}}
      .dump();
}

}  // namespace upkeep::trust
