// What the vendor's signature on a client build covers (docs/relay-protocol.md, "Build
// signature"): the platform, the version and the SHA-256 of the build, so a relay can neither
// hand one platform's build to another nor label an old signed build as new. The client hashes
// the stream once as it arrives, then checks one short message.
#pragma once

#include <string>
#include <string_view>

namespace upkeep::relay {

inline std::string BuildSigningMessage(std::string_view platform, std::string_view version, std::string_view sha256_hex) {
  std::string m = "upkeep-client-build-v1\n";
  m.append(platform).append("\n").append(version).append("\n").append(sha256_hex);
  return m;
}

}  // namespace upkeep::relay
