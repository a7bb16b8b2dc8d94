// Small text helpers for protocol parsing (HTTP headers and the like), shared by the server in
// net/ and the agent's client so both read the wire the same way, and the one HTML escaper of the
// server-rendered pages (portal, dashboard, the appliance's updates page). ASCII only, no locale.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace upkeep {

// ASCII case-insensitive equality (header names, tokens).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
// Without leading and trailing spaces and tabs (HTTP's optional whitespace).
std::string_view TrimSpaceTab(std::string_view s);
// A decimal number of digits only: no sign, no spaces, at most 19 digits (so it can't overflow).
std::optional<std::uint64_t> ParseDecimalU64(std::string_view s);
// Text made safe for HTML element content and quoted attribute values (& < > " ').
std::string HtmlEscape(std::string_view s);

}  // namespace upkeep
