// The updater's database-backed service: the operator API (tokens, repository bootstrap, blobs,
// releases, channels, rollouts, appliances, audit), the appliance API (enrolment pass-through,
// signed check-in answered with a director-signed assignment, idempotent event reports) and the
// TUF repository it keeps in PostgreSQL and materialises under the repository directory for
// /repo/metadata/ and /repo/targets/. The API contract is docs/updater-api.md.
//
// Contract: a Service borrows a migrated db::Pool (Migrations()), a keyserver client, a Clock
// and a thread-safe Random, all of which must outlive it and the Server it was registered on.
// The updater never holds an offline key, a private online key or a plaintext content key: TUF
// snapshot/timestamp and assignments are signed by the keyserver, which also re-seals content
// keys per appliance. Every database write of a request runs in one transaction with its audit
// row, so a rejected request changes nothing.
//
// Thread safety: after Register(), handlers run concurrently on the server's threads; background
// jobs (timestamp refresh, revocation feed, token reload, batched check-in writes) run on one
// thread between StartBackground() and StopBackground().
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/db/migrate.hpp"
#include "upkeep/db/pool.hpp"
#include "upkeep/keyserver/client.hpp"
#include "upkeep/net/server.hpp"

namespace upkeep::updater {

struct ServiceConfig {
  std::filesystem::path repo_dir;  // metadata/ and targets/ (served under /repo/)
  std::filesystem::path blob_dir;  // sha256/<hex> blobs and uploads/ in progress; same filesystem as repo_dir
  std::chrono::seconds assignment_validity{std::chrono::hours(24 * 7)};
  std::chrono::seconds checkin_interval{1800};                          // told to appliances
  std::chrono::seconds timestamp_validity{std::chrono::hours(24)};      // refreshed at half-life
  std::chrono::seconds snapshot_validity{std::chrono::hours(24 * 7)};   // re-signed at half-life
  std::chrono::seconds request_skew{300};                               // appliance request clocks
  std::size_t replay_cache_entries = 1'000'000;
  std::chrono::seconds revocation_poll{30};
  std::uint64_t max_blob_bytes = std::uint64_t{16} << 30;
  std::size_t max_body_bytes = 1 << 20;              // JSON bodies
  std::size_t max_metadata_body_bytes = 32u << 20;   // bodies carrying TUF metadata
  std::size_t max_event_log_tail_bytes = 64 * 1024;
  // Download portal (docs/updater-api.md, "Download portal").
  std::chrono::seconds bundle_validity{std::chrono::hours(24 * 30)};    // of a bundle's assignment
  std::chrono::seconds bundle_link_validity{std::chrono::hours(24)};    // the download link, then deleted
  std::chrono::seconds portal_max_skew{300};                            // download key clock vs ours

  // From the --config file: {"assignment_validity_days", "checkin_interval_seconds",
  // "timestamp_validity_hours", "snapshot_validity_days", "request_skew_seconds",
  // "revocation_poll_seconds", "max_blob_gib", "bundle_validity_days", "bundle_link_validity_hours",
  // "portal_max_skew_seconds"}; every field optional, unknown ones refused.
  static Expected<ServiceConfig> FromJson(const Json& json);
};

// The updater's schema (component "updater").
const std::vector<db::Migration>& Migrations();

struct ServiceDeps {
  db::Pool& pool;
  keyserver::KeyserverClient& keyserver;
  const Clock& clock;
  Random& random;
  std::function<void(std::string_view line)> log;  // one event per line; may be empty
};

class Service {
 public:
  // Loads what the service keeps in memory (tokens, catalog, the keyserver's public keys) and
  // rewrites the repository directory from the database, so files lost in a crash come back.
  static Expected<std::unique_ptr<Service>> Create(ServiceDeps deps, ServiceConfig config);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Registers every route (before Start()): /api/v1/..., /repo/metadata/, /repo/targets/, /portal.
  Status Register(net::Server& server);

  void StartBackground();
  void StopBackground();  // idempotent; also done by the destructor
  // Runs every background job once, now (tests and `updater` start-up use it).
  Status RunBackgroundOnce();

  struct Impl;

 private:
  explicit Service(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

// Makes an operator token (printed once by `updater token create`): returns {"id", "token",
// "name", "role", "expires_at"}. Role: admin, publisher or support.
Expected<Json> CreateOperatorToken(db::Pool& pool, const Clock& clock, Random& random, std::string_view name,
                                   std::string_view role, std::chrono::seconds validity, std::string_view actor);

}  // namespace upkeep::updater
