// Installation reports: what an air-gapped appliance did with a bundle, signed by its identity
// key and written next to the bundle, so the portal can accept it later and the fleet view stays
// true (docs/airgap.md). Carried in a SignedDocument envelope ("_type": "install-report").
//
// Signed fields: appliance_id, bundle_id, nonce (the download key's, when the bundle had one),
// created, expires (created + 90 days: a report older than that is refused), installed (NAME:
// "MAJOR.MINOR.BUILD" after the import), events: the agent's report events, each
// {"id", "type", "name", "version", "at", "detail", "log_tail"?} exactly as the online events API
// takes them (the same ids, so a report and a later online flush never count twice).
// Limits: 1 MiB envelope, 1000 events, 4 KiB log tail per event (longer tails keep their end).
// Pure functions, thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/identity.hpp"

namespace upkeep::trust {

constexpr const char* kInstallReportType = "install-report";
constexpr std::size_t kMaxReportEvents = 1000;
constexpr std::size_t kMaxReportLogTail = 4096;

struct InstallReport {
  std::string appliance_id;
  std::string bundle_id;
  std::optional<std::string> nonce;
  SysTime created{};
  InstalledSet installed;
  Json events = Json::array();
};

// Signs with the appliance's identity (kInvalidArgument if report.appliance_id is not its id;
// kLimit beyond the limits above, after cutting log tails). Returns the envelope text.
Expected<std::string> SignInstallReport(const InstallReport& report, const ApplianceIdentity& identity);

// Reads the appliance id a report claims, without checking anything else (to find its key).
Expected<std::string> InstallReportApplianceId(std::string_view text);

// Full check: signature by `appliance`'s key, type, not expired at clock.Now(), appliance id
// equal to the key's, every field well-formed (events: array of objects with string id/type/
// name/version/at). kParse/kLimit/kVerification/kPolicy with the reason.
Expected<InstallReport> VerifyInstallReport(std::string_view text, const AppliancePublicKey& appliance,
                                            const Clock& clock);

}  // namespace upkeep::trust
