// What the appliance API needs on its hot path, in memory (docs/updater.md, "Appliance API"):
//
// - CatalogSnapshot: every release (manifest without its payload list, blob digest and length,
//   target path, sealed content key, yanked), channel membership, and per (release, channel) the
//   rollout that gates it, with waves. Immutable once built; shared by pointer. Rebuilt when
//   catalog_generation moves: checked at most once a second from check-ins, every second by a
//   background job, and right after this process's own changes (Refresh()). Parsed manifests
//   are carried over between snapshots, so a reload parses only new releases.
// - An appliance cache (bounded, kMaxCachedAppliances): key, channel, groups, allow_major, status, licence
//   end, the last assignment's digest/plan hash/expiry (and its envelope while the envelope bytes
//   fit kMaxCachedEnvelopeBytes, as the exact bytes the check-in answer splices in) and the
//   rollouts it is recorded in. A steady-state check-in reads nothing from the database (and is
//   answered on the I/O thread). Entries change copy-on-write; an operator's appliance update
//   anywhere is seen through its audit row when the generation moves (it bumps it).
// - Pending check-in writes (installed set, agent version, time, clock offset), written by a
//   background job every second in one statement per 2000 appliances. They stay in memory until
//   written, so a database outage or restart loses nothing but delays them.
// - The revocation feed poll (keyserver RevokedSince), marking the table and the cache.
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "context.hpp"
#include "rollout_policy.hpp"
#include "upkeep/packages/catalog.hpp"
#include "upkeep/packages/planner.hpp"
#include "upkeep/trust/identity.hpp"

namespace upkeep::updater {

inline constexpr std::size_t kMaxCachedAppliances = 2'000'000;
inline constexpr std::size_t kMaxCachedEnvelopeBytes = std::size_t{512} << 20;
inline constexpr std::size_t kMaxPendingCheckins = 2'000'000;

struct ReleaseInfo {
  packages::Manifest manifest;  // payload entries dropped: the planner needs none of them
  std::string version;          // manifest.version as text
  std::string target_path;
  std::string sha256;
  std::uint64_t length = 0;
  std::string sealed_content_key;  // sealed to the keyserver's content key
  SysTime published_at{};
  bool yanked = false;
};

struct RolloutView {
  std::int64_t id = 0;
  std::string name, version, channel, state;  // state: scheduled, active, paused, completed, aborted
  SysTime start_at{};
  int current_wave = 0;
  std::vector<policy::Wave> waves;
  std::unordered_set<std::string> members;  // loaded for paused rollouts only: who keeps the release
};

struct CatalogSnapshot {
  std::int64_t generation = 0;
  std::vector<ReleaseInfo> releases;
  std::map<std::pair<std::string, std::string>, std::size_t> by_id;    // (name, version) -> index
  std::map<std::string, std::vector<std::size_t>, std::less<>> channels;  // channel -> release indexes
  // (release index, channel) -> the live rollout, or the latest aborted one when none is live.
  std::map<std::pair<std::size_t, std::string>, RolloutView> gates;
  bool has_due_schedule = false;  // a scheduled rollout whose start_at had passed at load

  const ReleaseInfo* Find(std::string_view name, std::string_view version) const;

  // Planner catalogs per set of offered releases, built once and shared (bounded).
  mutable std::mutex catalogs_mu;
  mutable std::map<std::vector<std::size_t>, std::shared_ptr<const packages::Catalog>> catalogs;
};

struct StoredAssignment {
  std::string state_digest;
  std::string plan_hash;
  SysTime expires{};
  std::shared_ptr<const std::string> envelope;  // null: read it from the assignments table
};

struct CachedAppliance {
  std::string appliance_id;
  trust::AppliancePublicKey key;
  Json public_key;
  std::string customer;
  std::string channel = "stable";
  std::vector<std::string> groups;
  // Package names it may take into a newer MAJOR line (PlanOptions::allow_major); sorted, unique.
  std::vector<std::string> allow_major;
  bool revoked = false;
  // Non-empty while pinned: "pinned by ACTOR: REASON". A pinned appliance is offered nothing.
  std::string pin;
  SysTime enrolled_at{};
  SysTime maintenance_end{};
  std::optional<StoredAssignment> assignment;
  std::vector<std::int64_t> memberships;  // rollouts this appliance is recorded in
};

struct PendingCheckin {
  Json installed = Json::object();  // NAME -> "X.Y.Z"
  std::string state_digest;
  std::string agent_version;
  SysTime at{};
  std::int64_t clock_offset_seconds = 0;
};

// What an appliance may be offered now, and why not the rest.
struct Offer {
  std::shared_ptr<const packages::Catalog> catalog;
  // release index -> (rollout id, wave) for offered releases a live rollout gates
  std::map<std::size_t, std::pair<std::int64_t, int>> gated;
  std::vector<Json> withheld;  // with `explain`: {"name", "version", "reason"} per release of the channel not offered
};

// Uses the appliance's appliance_id, channel, groups and maintenance_end.
Offer OfferFor(const CatalogSnapshot& snapshot, const CachedAppliance& appliance, bool explain = false);

// The planner options an appliance's settings give (allow_major), shared by the check-in and
// the operator's view of the plan so both plan alike.
packages::PlanOptions PlanOptionsFor(const CachedAppliance& appliance);

class FleetState {
 public:
  explicit FleetState(Context& ctx) : ctx_(ctx) {}

  Status Init();
  std::shared_ptr<const CatalogSnapshot> snapshot() const;

  // Reloads when catalog_generation moved (or `force`), then drops cached appliances an operator
  // changed since the last look (their appliance.update audit rows).
  Status Refresh(bool force = false);
  // From the check-in path: Refresh() at most once a second, by one thread; errors only logged.
  void MaybeRefresh();
  // Whether MaybeRefresh() would reload now (then the caller must be allowed to block).
  bool RefreshDue() const;

  // The appliance cache.
  std::shared_ptr<const CachedAppliance> Find(const std::string& appliance_id) const;
  std::uint64_t epoch() const;
  // Stores `entry` unless an invalidation happened since `epoch_at_load` was read.
  void Remember(std::shared_ptr<const CachedAppliance> entry, std::uint64_t epoch_at_load);
  // Replaces `old` by `updated` if `old` is still the cached entry (copy-on-write updates).
  void Replace(const std::shared_ptr<const CachedAppliance>& old, std::shared_ptr<const CachedAppliance> updated);
  void Forget(const std::string& appliance_id);
  // Loads one appliance from the database (nullptr when it has no row).
  Expected<std::shared_ptr<const CachedAppliance>> Load(const std::string& appliance_id);

  // Pending check-in writes.
  void RecordCheckin(const std::string& appliance_id, PendingCheckin checkin);
  std::optional<PendingCheckin> Pending(const std::string& appliance_id) const;
  Status FlushCheckins();

  Status PollRevocations();
  Status StartDueRollouts();

 private:
  Expected<std::shared_ptr<CatalogSnapshot>> LoadSnapshot(db::Connection& c);
  Status InvalidateUpdated(db::Connection& c);

  Context& ctx_;
  mutable std::mutex snapshot_mu_;
  std::shared_ptr<const CatalogSnapshot> snapshot_;
  std::mutex refresh_mu_;  // one refresh at a time
  std::atomic<std::int64_t> last_refresh_ms_{0};
  std::int64_t audit_cursor_ = 0;  // under refresh_mu_

  mutable std::mutex cache_mu_;
  std::unordered_map<std::string, std::shared_ptr<const CachedAppliance>> cache_;
  std::size_t envelope_bytes_ = 0;
  std::uint64_t epoch_ = 0;

  mutable std::mutex pending_mu_;
  std::unordered_map<std::string, PendingCheckin> pending_;
  std::mutex flush_mu_;  // one flush at a time, so older rows never overwrite newer ones

  std::mutex revocation_mu_;
  std::optional<SysTime> revocations_since_;
};

// Rollout rows, shared by the fleet API (pause/resume/abort) and the events path (thresholds).
// ROLLOUT JSON per docs/updater-api.md, with per-wave counts; nullopt when there is no such row.
Expected<std::optional<Json>> LoadRolloutJson(db::Connection& c, std::int64_t id);
// Locks the rollout, applies the threshold decision (wave open, complete, auto-pause) with its
// audit row. Returns whether the rollout changed (the caller bumps the generation).
Expected<bool> EvaluateRollout(db::Connection& c, std::int64_t id, SysTime now);

// ---- operator actions shared by the operator API (fleet_api.cpp) and the dashboard ----
// Each runs in one transaction with its audit row (actor as given: "token:NAME",
// "dashboard:NAME"), bumps catalog_generation and refreshes `fleet`. On refusal the Response is
// the operator API's JSON error (status, {"error": {"code", "message"}}).

enum class RolloutTransition { kPause, kResume, kAbort };
// pause: active|scheduled -> paused (pause_reason = reason or "paused by ACTOR"); resume: paused
// -> active|scheduled; abort: active|scheduled|paused -> aborted. 404 unknown_rollout, 409
// invalid_state. Returns the ROLLOUT JSON.
std::variant<Json, net::Response> ChangeRolloutState(Context& ctx, FleetState& fleet, std::int64_t id, RolloutTransition t,
                                                     const std::optional<std::string>& reason, const std::string& actor);

struct PinChange {
  std::string reason;  // 1..500 printable characters (checked by the caller)
};
struct ApplianceChange {
  std::optional<std::string> channel;                  // an existing channel (404 unknown_channel)
  std::optional<std::vector<std::string>> groups;      // valid, sorted, unique
  std::optional<std::vector<std::string>> allow_major;  // valid, sorted, unique
  std::optional<std::optional<PinChange>> pinned;      // set (pinned by the actor) or nullopt: unpin
  bool revoke = false;                                 // status -> revoked (the updater's own table)
};
// One audit row "appliance.update" with {"FIELD": {"from", "to"}} per field given (revoke:
// "status"). 404 unknown_appliance / unknown_channel. Returns the SUMMARY JSON.
std::variant<Json, net::Response> ChangeAppliance(Context& ctx, FleetState& fleet, const std::string& id,
                                                  const ApplianceChange& change, const std::string& actor);

// Records the licence of an enrolment the keyserver accepted (its 2xx answer body, relayed by
// POST /api/v1/enrol): SHA-256 of the licence key per appliance id. Nothing is recorded for an
// answer without an appliance id and a licence key; the key never appears in an error.
Status RecordEnrolmentLicence(db::Pool& pool, std::string_view keyserver_answer, SysTime now);

}  // namespace upkeep::updater
