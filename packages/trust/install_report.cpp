// Signed installation reports (install_report.hpp).
#include "upkeep/trust/install_report.hpp"

#include <chrono>
#include <set>

#include "encoding.hpp"
#include "upkeep/trust/signed_document.hpp"

namespace upkeep::trust {
namespace {

constexpr std::chrono::seconds kReportValidity{90 * 24 * 3600};
constexpr std::size_t kMaxIdChars = 256;

// Keeps the last `max` bytes, not starting inside a UTF-8 sequence.
std::string KeepEnd(const std::string& s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t start = s.size() - max;
  while (start < s.size() && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) ++start;
  return s.substr(start);
}

// One event as the online events API takes it. `cut_tail` shortens a long log tail instead of
// refusing it (the signer); the verifier refuses (kLimit).
Expected<Json> CheckEvent(const Json& e, std::size_t i, bool cut_tail, Errc malformed) {
  const std::string where = "events[" + std::to_string(i) + "]";
  if (!e.is_object()) return Error(malformed, "install report: " + where + " is not an object");
  static const std::set<std::string, std::less<>> kKeys = {"id", "type", "name", "version", "at", "detail", "log_tail"};
  for (const auto& [key, value] : e.items()) {
    if (!kKeys.contains(key)) return Error(malformed, "install report: unknown field '" + where + "." + key + "'");
  }
  for (const char* key : {"id", "type", "name", "version", "at"}) {
    if (!e.contains(key) || !e[key].is_string()) {
      return Error(malformed, "install report: " + where + "." + key + " must be a string");
    }
    if (e[key].get_ref<const std::string&>().size() > kMaxIdChars) {
      return Error(malformed, "install report: " + where + "." + key + " is too long");
    }
  }
  if (e.contains("detail") && !e["detail"].is_object()) {
    return Error(malformed, "install report: " + where + ".detail must be an object");
  }
  Json out = e;
  if (e.contains("log_tail")) {
    if (!e["log_tail"].is_string()) return Error(malformed, "install report: " + where + ".log_tail must be a string");
    const std::string& tail = e["log_tail"].get_ref<const std::string&>();
    if (tail.size() > kMaxReportLogTail) {
      if (!cut_tail) {
        return Error(Errc::kLimit, "install report: " + where + ".log_tail is over " +
                                       std::to_string(kMaxReportLogTail) + " bytes");
      }
      out["log_tail"] = KeepEnd(tail, kMaxReportLogTail);
    }
  }
  return out;
}

Expected<std::string> GetIdLike(const Json& obj, const char* key) {
  UPK_TRY_ASSIGN(std::string s, GetString(obj, key));
  if (s.empty() || s.size() > kMaxIdChars) {
    return Error(Errc::kParse, std::string("install report: field '") + key + "' must be 1.." +
                                   std::to_string(kMaxIdChars) + " characters");
  }
  return s;
}

}  // namespace

Expected<std::string> SignInstallReport(const InstallReport& report, const ApplianceIdentity& identity) {
  if (report.appliance_id != identity.appliance_id()) {
    return Error(Errc::kInvalidArgument, "install report for " + report.appliance_id +
                                             " cannot be signed by the identity of " + identity.appliance_id());
  }
  if (report.bundle_id.empty() || report.bundle_id.size() > kMaxIdChars) {
    return Error(Errc::kInvalidArgument, "install report: bundle id must be 1.." + std::to_string(kMaxIdChars) +
                                             " characters");
  }
  if (report.nonce && (report.nonce->empty() || report.nonce->size() > kMaxIdChars)) {
    return Error(Errc::kInvalidArgument, "install report: malformed nonce");
  }
  if (!report.events.is_array()) return Error(Errc::kInvalidArgument, "install report: events must be an array");
  if (report.events.size() > kMaxReportEvents) {
    return Error(Errc::kLimit, "install report: " + std::to_string(report.events.size()) + " events, more than " +
                                   std::to_string(kMaxReportEvents));
  }
  Json events = Json::array();
  for (std::size_t i = 0; i < report.events.size(); ++i) {
    UPK_TRY_ASSIGN(Json e, CheckEvent(report.events[i], i, /*cut_tail=*/true, Errc::kInvalidArgument));
    events.push_back(std::move(e));
  }
  Json installed = Json::object();
  for (const auto& [name, version] : report.installed) installed[name] = version.ToString();

  Json s = Json::object();
  s["_type"] = kInstallReportType;
  s["appliance_id"] = report.appliance_id;
  s["bundle_id"] = report.bundle_id;
  if (report.nonce) s["nonce"] = *report.nonce;
  s["created"] = FormatTimestamp(report.created);
  s["expires"] = FormatTimestamp(report.created + kReportValidity);
  s["installed"] = std::move(installed);
  s["events"] = std::move(events);
  auto doc = SignedDocument::Sign(s, identity.signing_key());
  if (!doc.ok()) return doc.error().Wrap("install report");
  std::string text = doc->Serialize();
  if (text.size() > kMaxSignedDocumentBytes) {
    return Error(Errc::kLimit, "install report is " + std::to_string(text.size()) + " bytes, more than " +
                                   std::to_string(kMaxSignedDocumentBytes));
  }
  return text;
}

Expected<std::string> InstallReportApplianceId(std::string_view text) {
  auto doc = SignedDocument::Parse(text);
  if (!doc.ok()) return doc.error().Wrap("install report");
  auto id = GetString(doc->signed_part(), "appliance_id");
  if (!id.ok()) return id.error().Wrap("install report");
  if (!IsValidApplianceId(*id)) return Error(Errc::kParse, "install report: malformed appliance id");
  return *id;
}

Expected<InstallReport> VerifyInstallReport(std::string_view text, const AppliancePublicKey& appliance,
                                            const Clock& clock) {
  auto doc = SignedDocument::Parse(text);
  if (!doc.ok()) return doc.error().Wrap("install report");
  if (auto st = doc->Verify(appliance.signing_key(), kInstallReportType, clock); !st.ok()) {
    return st.error().Wrap("install report from " + appliance.appliance_id());
  }
  const Json& s = doc->signed_part();
  try {
    InstallReport r;
    UPK_TRY_ASSIGN(r.appliance_id, GetIdLike(s, "appliance_id"));
    if (r.appliance_id != appliance.appliance_id()) {
      return Error(Errc::kPolicy, "install report claims appliance " + r.appliance_id + " but is signed by " +
                                      appliance.appliance_id());
    }
    UPK_TRY_ASSIGN(r.bundle_id, GetIdLike(s, "bundle_id"));
    if (s.contains("nonce")) {
      UPK_TRY_ASSIGN(std::string nonce, GetIdLike(s, "nonce"));
      r.nonce = std::move(nonce);
    }
    UPK_TRY_ASSIGN(std::string created, GetString(s, "created"));
    auto created_t = ParseTimestamp(created);
    if (!created_t.ok()) return created_t.error().Wrap("install report: field 'created'");
    r.created = *created_t;
    UPK_TRY_ASSIGN(std::string expires, GetString(s, "expires"));
    auto expires_t = ParseTimestamp(expires);
    if (!expires_t.ok()) return expires_t.error().Wrap("install report: field 'expires'");
    if (*expires_t > r.created + kReportValidity) {
      return Error(Errc::kPolicy, "install report claims to be valid for more than 90 days");
    }
    UPK_TRY_ASSIGN(const Json* installed, GetObject(s, "installed"));
    for (const auto& [name, version] : installed->items()) {
      if (name.empty() || name.size() > kMaxIdChars || !version.is_string()) {
        return Error(Errc::kParse, "install report: malformed installed entry '" + name + "'");
      }
      auto v = packages::Version::Parse(version.get_ref<const std::string&>());
      if (!v.ok()) return v.error().Wrap("install report: installed '" + name + "'");
      r.installed.emplace(name, *v);
    }
    UPK_TRY_ASSIGN(const Json* events, GetArray(s, "events"));
    if (events->size() > kMaxReportEvents) {
      return Error(Errc::kLimit, "install report has " + std::to_string(events->size()) + " events, more than " +
                                     std::to_string(kMaxReportEvents));
    }
    for (std::size_t i = 0; i < events->size(); ++i) {
      UPK_TRY_ASSIGN(Json e, CheckEvent((*events)[i], i, /*cut_tail=*/false, Errc::kParse));
      r.events.push_back(std::move(e));
    }
    return r;
  } catch (const std::exception& e) {
    return Error(Errc::kParse, std::string("install report: ") + e.what());
  }
}

}  // namespace upkeep::trust
