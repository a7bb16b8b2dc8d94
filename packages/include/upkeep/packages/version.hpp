// Package versions: MAJOR.MINOR.BUILD, three non-negative decimal integers, totally ordered.
// A new MAJOR breaks compatibility, so a major line is a separate upgrade line: the planner
// never crosses into one without an explicit opt-in.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "upkeep/common/error.hpp"

namespace upkeep::packages {

struct Version {
  std::uint32_t major = 0;
  std::uint32_t minor = 0;
  std::uint32_t build = 0;

  // Strict: exactly three dot-separated components, digits only, no leading zeros (except "0"),
  // each at most 999999999.
  static Expected<Version> Parse(std::string_view text);
  std::string ToString() const;

  auto operator<=>(const Version&) const = default;
  bool operator==(const Version&) const = default;
};

}  // namespace upkeep::packages
