// The simulated fleet: deterministic identities, the appliance API's request bodies, signed
// requests, and the benchmark set-up files (seed SQL, presigned requests).
//
// Deterministic identity i (0-based): ed25519 seed = SHA-256("fleet-sim" || i as 8 bytes
// big-endian), so a benchmark script, the seed SQL and the load generator agree on the fleet
// without sharing key files. These keys are public knowledge: benchmark and test use only.
//
// Thread safety: free functions, safe to call concurrently; they share nothing.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/identity.hpp"

namespace upkeep::fleet_sim {

// Bounds on what one command may ask for, so a typo can't exhaust memory or disk.
inline constexpr std::uint64_t kMaxFleet = 10'000'000;     // seed-sql, presign --count-appliances
inline constexpr std::uint64_t kMaxPresigned = 5'000'000;  // presign --requests
inline constexpr std::uint64_t kMaxLoadedIdentities = 1'000'000;  // load keeps them in memory: ~1.3 KiB each

inline constexpr const char* kCheckinPath = "/api/v1/checkin";
inline constexpr const char* kEventsPath = "/api/v1/events";
inline constexpr const char* kEnrolPath = "/api/v1/enrol";

Bytes FleetSeed(std::uint64_t index);
Expected<trust::ApplianceIdentity> FleetIdentity(std::uint64_t index);
// Identities [0, count), derived on `threads` threads (ed25519 + X25519 derivation: ~50 us each).
Expected<std::vector<trust::ApplianceIdentity>> FleetIdentities(std::uint64_t count, unsigned threads);

// "--installed base=1.0.0" values into an installed set; duplicates and bad versions refused.
Expected<trust::InstalledSet> ParseInstalled(const std::vector<std::string>& items);

// {"installed": {NAME: VERSION}, "agent_version", "time"} (docs/updater-api.md, check-in).
std::string CheckinBody(const trust::InstalledSet& installed, std::string_view agent_version, SysTime now);
// {"events": [{"id", "type", "name", "version", "at"}]}.
std::string EventBody(std::string_view event_id, std::string_view type, std::string_view name,
                      std::string_view version, SysTime at);

// The four X-Upkeep-* headers plus Content-Type for a signed appliance request.
struct SignedHeaders {
  std::vector<std::pair<std::string, std::string>> headers;
};
Expected<SignedHeaders> SignAppliance(const trust::ApplianceIdentity& identity, std::string_view method,
                                      std::string_view path_and_query, std::string_view body, const Clock& clock,
                                      Random& random);

// seed-sql: COPY text files for both databases and the psql scripts that load them.
struct SeedSqlOptions {
  std::uint64_t count = 0;
  std::uint64_t customers = 100;                 // appliance i belongs to "fleet-sim-customer-(i % customers)"
  std::string enrolled_at = "2026-01-01T00:00:00Z";  // fixed, so the output is deterministic
  std::string maintenance_end = "2036-01-01T00:00:00Z";
  unsigned threads = 2;
};
// Writes DIR/keyserver-licences.copy, keyserver-appliances.copy, updater-appliances.copy,
// keyserver.sql and updater.sql (psql scripts of \copy lines with absolute paths).
Status WriteSeedSql(const SeedSqlOptions& options, const std::filesystem::path& dir);
// The licence key of fleet appliance i (same alphabet and shape as the keyserver's).
std::string FleetLicenceKey(std::uint64_t index);

// presign: `requests` signed check-ins, request j by identity j % appliances, one raw HTTP/1.1
// request per line with '\\' -> "\\\\", CR -> "\\r", LF -> "\\n" (bench/checkin/replay.lua
// reads them back).
struct PresignOptions {
  std::uint64_t appliances = 0;
  std::uint64_t requests = 0;
  std::uint64_t first_index = 0;  // identity index offset
  std::string host_header;        // Host: value, e.g. 127.0.0.1:8080
  std::string path_prefix;        // before /api/v1/checkin
  trust::InstalledSet installed;
  std::string agent_version = "0.1.0";
  unsigned threads = 2;
};
Status WritePresigned(const PresignOptions& options, const std::filesystem::path& out, const Clock& clock);
std::string EscapeLine(std::string_view raw);
Expected<std::string> UnescapeLine(std::string_view line);

}  // namespace upkeep::fleet_sim
