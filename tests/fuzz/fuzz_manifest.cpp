// Manifest::Parse on arbitrary bytes: never crashes, and whatever it accepts serialises to
// canonical bytes that parse back to the same manifest (what the package signature relies on).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upkeep/packages/manifest.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto m = upkeep::packages::Manifest::Parse(text);
  if (!m) return 0;
  std::string once = m->Serialize();
  auto again = upkeep::packages::Manifest::Parse(once);
  if (!again || again->Serialize() != once) std::abort();
  return 0;
}
