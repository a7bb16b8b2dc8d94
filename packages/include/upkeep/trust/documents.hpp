// The typed signed documents: the director's per-appliance Assignment and the keyserver's
// Licence, carried in a SignedDocument envelope (signed_document.hpp). Field lists and which key
// signs what are in docs/trust.md.
//
// Each type parses from and writes to the JSON of its "signed" object. Fields this version does
// not know are kept in `unknown` and written back, so an older reader re-serialising a newer
// document loses nothing (verification always uses the bytes as signed, never a re-encoding).
//
// The Verify* functions are the whole reader-side check: signature by the one trusted key,
// "_type", expiry against the Clock, then the binding to the reader (appliance id, state digest,
// nonce). They are pure functions of their inputs and thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/packages/manifest.hpp"
#include "upkeep/packages/version.hpp"
#include "upkeep/trust/identity.hpp"
#include "upkeep/trust/signed_document.hpp"

namespace upkeep::trust {

constexpr const char* kAssignmentType = "assignment";
constexpr const char* kLicenceType = "licence";
constexpr std::size_t kMaxAssignmentSteps = 1000;

// What an appliance has installed: package name -> version (the same type as
// packages::Installed in planner.hpp).
using InstalledSet = std::map<std::string, packages::Version, std::less<>>;

// SHA-256 hex of the canonical JSON object {NAME: "MAJOR.MINOR.BUILD", ...} of the installed set.
// The director and the appliance compute it the same way; an assignment carries the digest of
// the state it was computed for, so it can't be replayed onto an appliance in another state.
std::string StateDigest(const InstalledSet& installed);

struct AssignmentStep {
  std::string name;
  packages::Version version;
  packages::Kind kind = packages::Kind::kSoftware;
  std::uint32_t wait_hours = 0;
  std::string target_path;         // the TUF target path of the encrypted blob
  std::uint64_t length = 0;        // of the encrypted blob
  std::string sha256;              // of the encrypted blob, 64 lower-case hex
  std::string sealed_content_key;  // base64 (content_key.hpp), sealed to the assigned appliance
  Json unknown = Json::object();

  static Expected<AssignmentStep> FromJson(const Json& json);
  Json ToJson() const;
};

struct Assignment {
  std::string appliance_id;
  std::string state_digest;
  SysTime issued{};
  SysTime expires{};
  std::optional<std::string> nonce;  // echoes the appliance's request nonce when it sent one
  std::string channel;
  std::vector<AssignmentStep> steps;
  Json unknown = Json::object();

  static Expected<Assignment> FromJson(const Json& json);
  // The "signed" object, with "_type": "assignment".
  Json ToJson() const;
};

struct Licence {
  std::string licence_key;
  std::string customer;
  std::optional<std::string> appliance_id;  // set at enrolment
  SysTime maintenance_end{};
  std::vector<std::string> features;
  SysTime issued{};
  SysTime expires{};  // of this signed copy; the keyserver re-signs before it
  Json unknown = Json::object();

  static Expected<Licence> FromJson(const Json& json);
  Json ToJson() const;
  bool InMaintenance(const Clock& clock) const { return clock.Now() < maintenance_end; }
};

// What the verifying appliance knows about itself.
struct AssignmentExpectation {
  std::string appliance_id;
  std::string state_digest;
  std::optional<std::string> nonce;  // when set, the assignment must carry exactly this nonce
};

// Parses and verifies an assignment from the bytes the appliance received.
// kVerification: signature by another key, wrong _type, expired; kPolicy: for another appliance,
// another state, or another nonce; kParse/kLimit: malformed or oversized.
Expected<Assignment> VerifyAssignment(std::string_view text, const packages::PublicKey& director_key,
                                      const Clock& clock, const AssignmentExpectation& expect);

// Parses and verifies a licence signed by the keyserver's licence key. When `appliance_id` is
// given and the licence is bound to an appliance, they must match (kPolicy otherwise).
Expected<Licence> VerifyLicence(std::string_view text, const packages::PublicKey& licence_key, const Clock& clock,
                                std::optional<std::string_view> appliance_id = std::nullopt);

// The body of an enrolment request (docs/keyserver.md, "Enrolment"): {"licence_key", "public_key",
// "timestamp", "signature"}, the signature being the identity's ed25519 over the canonical JSON of
// the first three. The agent and fleet-sim send it; the keyserver checks it.
Expected<std::string> EnrolmentRequestBody(const ApplianceIdentity& identity, std::string_view licence_key,
                                           SysTime now);

}  // namespace upkeep::trust
