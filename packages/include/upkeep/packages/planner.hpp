// The install planner: from what an appliance has installed and what the catalog offers, the
// ordered list of releases to install (with mandatory intermediate versions, base before
// software, and the waits that let endpoint clients follow), plus every newer release it cannot
// reach and why, in plain words. The rules are in docs/planner.md.
//
// MakePlan is a pure, deterministic function of its inputs: the same installed set, catalog
// content and options always give the same plan, whatever order the catalog was built in.
// It holds no state and is safe to call from several threads on one shared Catalog.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/catalog.hpp"
#include "upkeep/packages/manifest.hpp"
#include "upkeep/packages/version.hpp"

namespace upkeep::packages {

// What an appliance has installed: package name -> version.
using Installed = std::map<std::string, Version, std::less<>>;

struct PlanOptions {
  // Names allowed to cross into a newer MAJOR line; any other name stays in its installed line.
  std::set<std::string, std::less<>> allow_major;
  // Per-name cap: never plan a release above it (a rollout limits targets this way).
  std::map<std::string, Version, std::less<>> max_version;
  // settle_hours of the software installed last, when the caller knows it was installed recently;
  // the first software step of the plan waits this long.
  std::uint32_t last_software_settle_hours = 0;
};

struct PlanStep {
  std::string name;
  Version version;
  Kind kind = Kind::kSoftware;
  std::uint32_t wait_hours = 0;  // wait before installing this step so clients can follow
  std::string reason;            // why this step is in the plan, in plain words
};

struct BlockedRelease {
  std::string name;
  Version version;
  std::string reason;  // why the plan cannot reach it, naming what must happen first
};

struct Plan {
  std::vector<PlanStep> steps;           // in install order
  std::vector<BlockedRelease> blocked;   // sorted by kind (base, addon, software, client), name, version

  std::uint64_t TotalWaitHours() const;
  // {"steps": [{"name", "version", "kind", "wait_hours", "reason"}], "blocked": [{"name", "version", "reason"}]}
  Json ToJson() const;
};

Plan MakePlan(const Installed& installed, const Catalog& catalog, const PlanOptions& options = {});

// Parses "NAME=MAJOR.MINOR.BUILD" (as given to `upk plan --installed/--max`).
Expected<std::pair<std::string, Version>> ParseNameVersion(std::string_view text);

// Planning order of kinds: base 0, addon 1, software 2, client 3.
int KindRank(Kind kind);

}  // namespace upkeep::packages
