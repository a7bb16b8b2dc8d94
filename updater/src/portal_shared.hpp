// What the appliance API (online check-ins and events) and the download portal (download keys,
// bundles, install reports) share, so an air-gapped appliance is planned and recorded exactly
// like an online one: the plan an appliance gets in a given installed state, and the parsing and
// idempotent recording of its report events, and how an appliance first known from the keyserver
// becomes a cached appliance and a row. Implemented in appliance_api.cpp.
// Pure functions over their arguments (the plan) or the caller's transaction (the events).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "fleet_state.hpp"
#include "upkeep/keyserver/client.hpp"
#include "upkeep/trust/documents.hpp"

namespace upkeep::updater {

struct AppliancePlan {
  trust::Assignment assignment;      // issued now; steps carry content keys sealed to the keyserver
  std::vector<std::string> reasons;  // per step: why the planner put it there
  std::string plan_hash;             // the reuse key of check-ins (covers channel and allow_major)
  std::vector<std::pair<std::int64_t, int>> new_members;  // (rollout, wave) not yet recorded
};

// The plan of `appliance` in state `installed` over `snapshot` (channel, rollout gates,
// maintenance and allow_major rules): kInternal when the catalog is inconsistent.
Expected<AppliancePlan> PlanAppliance(const CatalogSnapshot& snapshot, const CachedAppliance& appliance,
                                      const packages::Installed& installed, SysTime now, std::chrono::seconds validity);

struct ApplianceEvent {
  std::string id, type, name, version, detail, log_tail;
  bool has_log_tail = false;
  SysTime at{};
};

// An "events" array as POST /api/v1/events takes it (1..max_events objects): the 400 answer
// naming the field on failure.
std::variant<std::vector<ApplianceEvent>, net::Response> ParseEvents(const Json& list, std::size_t max_events,
                                                                     std::size_t max_log_tail);

struct EventsOutcome {
  std::int64_t accepted = 0, duplicates = 0;
  bool rollouts_changed = false;  // then the caller refreshes the fleet state after the commit
  std::map<std::string, std::int64_t> by_type;
};

// Inserts the events (a known event id counts as a duplicate), updates rollout members and
// evaluates their rollouts, bumping the catalog generation when one changed. In the caller's
// transaction; the appliance's row must exist.
Expected<EventsOutcome> InsertEvents(db::Connection& c, const std::string& appliance_id,
                                     const std::vector<ApplianceEvent>& events, SysTime now);

// An appliance the updater has no row for yet, from the keyserver's record of `id`: kParse when the
// record's key is not that appliance's (the caller answers as a keyserver failure).
Expected<std::shared_ptr<CachedAppliance>> ApplianceFromRecord(const std::string& id,
                                                               const keyserver::ApplianceRecord& record);

// The appliances row of a first contact (no-op if it exists), inside the caller's transaction.
Status InsertAppliance(db::Connection& c, const CachedAppliance& a, SysTime now);

}  // namespace upkeep::updater
