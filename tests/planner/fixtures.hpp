// Test fixtures for the planner: a short way to write releases, and the "years behind" vendor
// catalog the long-chain tests share.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "upkeep/packages/catalog.hpp"
#include "upkeep/packages/manifest.hpp"
#include "upkeep/packages/planner.hpp"

namespace upkeep::packages::testing {

inline Version V(const char* text) { return Version::Parse(text).value(); }

struct R {
  std::string name;
  std::string version;
  Kind kind = Kind::kSoftware;
  std::vector<std::pair<std::string, std::string>> requires_ = {};
  std::optional<std::string> upgrades_from = std::nullopt;
  std::uint32_t settle_hours = 0;

  Manifest ToManifest() const {
    Manifest m;
    m.name = name;
    m.version = V(version.c_str());
    m.kind = kind;
    for (const auto& [n, v] : requires_) m.requires_.push_back(Requirement{n, V(v.c_str())});
    if (upgrades_from) m.upgrades_from = V(upgrades_from->c_str());
    m.settle_hours = settle_hours;
    return m;
  }
};

inline std::vector<Manifest> Manifests(const std::vector<R>& rs) {
  std::vector<Manifest> out;
  for (const auto& r : rs) out.push_back(r.ToManifest());
  return out;
}

inline Catalog MakeCatalog(const std::vector<R>& rs) { return Catalog::FromManifests(Manifests(rs)).value(); }

inline Installed Inst(std::initializer_list<std::pair<const char*, const char*>> items) {
  Installed out;
  for (const auto& [n, v] : items) out[n] = V(v);
  return out;
}

constexpr Kind kBase = Kind::kBase;
constexpr Kind kSw = Kind::kSoftware;

// A vendor catalog an appliance at base 1.0.0 + software 5.0.0 is years behind on: intermediate
// gates on both lines, base and software interleaved (base 1.5 needs software 6.0, software 7.0
// needs base 1.5, base 2.0 needs software 7.2, software 8.0 needs base 2.0), and settle times.
inline std::vector<R> VendorReleases() {
  return {
      {"base", "1.0.0", kBase},
      {"base", "1.1.0", kBase},
      {"base", "1.2.0", kBase, {}, "1.1.0"},
      {"base", "1.3.0", kBase, {}, "1.1.0"},
      {"base", "1.5.0", kBase, {{"software", "6.0.0"}}, "1.3.0"},
      {"base", "2.0.0", kBase, {{"software", "7.2.0"}}, "1.5.0"},
      {"base", "2.1.0", kBase, {}, "2.0.0"},
      {"base", "2.2.0", kBase, {}, "2.0.0"},
      {"software", "5.0.0", kSw, {}, std::nullopt, 24},
      {"software", "5.1.0", kSw, {}, std::nullopt, 24},
      {"software", "5.2.0", kSw, {}, std::nullopt, 24},
      {"software", "6.0.0", kSw, {{"base", "1.2.0"}}, "5.2.0", 24},
      {"software", "6.1.0", kSw, {}, "6.0.0", 12},
      {"software", "7.0.0", kSw, {{"base", "1.5.0"}}, "6.1.0", 48},
      {"software", "7.1.0", kSw, {}, "7.0.0", 24},
      {"software", "7.2.0", kSw, {}, "7.0.0", 24},
      {"software", "8.0.0", kSw, {{"base", "2.0.0"}}, "7.2.0", 24},
      {"software", "8.1.0", kSw, {}, "8.0.0", 0},
      {"software", "9.0.0", kSw, {{"base", "2.1.0"}}, "8.1.0", 24},
  };
}

// "name version" of each step, for compact comparisons.
inline std::vector<std::string> StepLabels(const Plan& plan) {
  std::vector<std::string> out;
  for (const auto& s : plan.steps) out.push_back(s.name + " " + s.version.ToString());
  return out;
}

}  // namespace upkeep::packages::testing
