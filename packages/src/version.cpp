#include "upkeep/packages/version.hpp"

namespace upkeep::packages {

Expected<Version> Version::Parse(std::string_view text) {
  auto bad = [&](const char* why) {
    return Error(Errc::kParse, "version '" + std::string(text.substr(0, 64)) + "': " + why +
                                   " (expected MAJOR.MINOR.BUILD, e.g. 2.1.0)");
  };
  std::uint32_t parts[3] = {0, 0, 0};
  std::size_t pos = 0;
  for (int i = 0; i < 3; ++i) {
    std::size_t start = pos;
    std::uint64_t value = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      value = value * 10 + static_cast<std::uint64_t>(text[pos] - '0');
      if (value > 999999999) return bad("component too large");
      ++pos;
    }
    if (pos == start) return bad("missing number");
    if (pos - start > 1 && text[start] == '0') return bad("leading zero");
    parts[i] = static_cast<std::uint32_t>(value);
    if (i < 2) {
      if (pos >= text.size() || text[pos] != '.') return bad("expected three components");
      ++pos;
    }
  }
  if (pos != text.size()) return bad("trailing characters");
  return Version{parts[0], parts[1], parts[2]};
}

std::string Version::ToString() const {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(build);
}

}  // namespace upkeep::packages
