// The keyserver's HTTP API (/api/v1/...): public keys, licences, enrolment, appliance lookup,
// revocation and the revocation feed, online signing of TUF timestamp/snapshot metadata and
// director assignments (re-sealing their content keys to the appliance), and the audit log. See
// docs/keyserver.md for the table of routes and answers.
//
// Contract: a Service borrows a loaded KeySet, a database Pool (already migrated with
// Migrations()), a Clock and a Random, all of which must outlive it and the Server it was
// registered on. Every database write runs in one transaction together with its audit row;
// a rejected request (bad input, bad token, policy) rolls back and so changes nothing. Handlers
// that touch the database run on the server's worker pool. Answers are JSON; errors are
// {"error": {"code", "message"}}. Nothing here logs or returns a private key, a plaintext content key or a token.
//
// Thread safety: after Register(), handlers run concurrently; the Service only reads its
// members (the Random must be thread-safe, as SystemRandom is).
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/db/migrate.hpp"
#include "upkeep/db/pool.hpp"
#include "upkeep/keyserver/state.hpp"
#include "upkeep/net/server.hpp"

namespace upkeep::keyserver {

struct ServiceConfig {
  std::chrono::seconds max_timestamp_expiry{std::chrono::hours(24 * 7)};
  std::chrono::seconds max_snapshot_expiry{std::chrono::hours(24 * 30)};
  // 31 days: bundles carry assignments valid 30 days (docs/airgap.md), plus a day of slack.
  std::chrono::seconds max_assignment_expiry{std::chrono::hours(24 * 31)};
  std::chrono::seconds licence_document_validity{std::chrono::hours(24 * 365)};  // of each signed copy
  std::chrono::seconds enrol_skew{300};  // allowed clock difference of an enrolment request
  std::size_t max_body_bytes = 64 * 1024;             // licences, enrolment, assignments
  std::size_t max_metadata_body_bytes = 8 * 1024 * 1024;  // snapshot / timestamp bodies

  // From the --config file: {"max_expiry_days": {"timestamp": N, "snapshot": N, "assignment": N},
  // "licence_document_days": N, "enrol_skew_seconds": N}; every field optional, unknown ones refused.
  static Expected<ServiceConfig> FromJson(const Json& json);
};

// The keyserver's schema (component "keyserver"): licences, appliances, append-only audit.
const std::vector<db::Migration>& Migrations();

class Service {
 public:
  using LogFn = std::function<void(std::string_view line)>;
  Service(const KeySet& keys, db::Pool& pool, const Clock& clock, Random& random, ServiceConfig config,
          LogFn log = {});

  // Registers every /api/v1 route on `server` (before Start()).
  Status Register(net::Server& server);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace upkeep::keyserver
