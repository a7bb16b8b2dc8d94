// Internal helpers shared by the package reader, writer and extractor (not a public header).
#pragma once

#include <string>
#include <string_view>

#include "upkeep/common/utf8_locale.hpp"

namespace upkeep::packages::internal {

using Utf8Locale = upkeep::ScopedUtf8Locale;

// Entry names in error messages: quoted and cut, so a hostile name can't flood a log line.
inline std::string Quote(std::string_view s) { return "'" + std::string(s.substr(0, 300)) + "'"; }

}  // namespace upkeep::packages::internal
