// The client builds file: the list of endpoint client builds a software package brings
// (`client-builds.json` in its payload, docs/relay.md "Client builds") or `relay serve --builds`
// names. One format for both:
//
//   {"builds": [{"platform", "version", "path", "sha256", "signature"}]}
//
// `path` is relative to the file's directory (absolute paths only when `confined` is false); the
// length is the file's size; RelayCore::SetBuilds later hashes the file against `sha256`.
// Errors name the file and the build ("client-builds.json: build 2: field 'sha256': ..."); the
// file is read with a 1 MiB bound and at most 256 builds are accepted.
#pragma once

#include <filesystem>
#include <vector>

#include <string_view>

#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/relay/scheduler.hpp"

namespace upkeep::relay {

constexpr std::size_t kMaxClientBuilds = 256;

// confined: every path must be relative, without "." or ".." components (a package's payload
// cannot point outside itself).
Expected<std::vector<ClientBuild>> LoadClientBuilds(const std::filesystem::path& file, bool confined);

// The vendor's side (upk client-build, relay-sim make-build): hashes `build`, signs
// BuildSigningMessage(platform, version, sha256) with `key` and adds the entry to the list at
// `list` (created when missing), replacing that platform's entry. `confined`: the build must lie
// inside the list's directory and its path is written relative (a package payload); otherwise
// it is written absolute. The new list is checked with LoadClientBuilds before it atomically
// replaces the old one, so a list the relay would refuse is never written. Returns the entry.
Expected<Json> AddSignedClientBuild(const std::filesystem::path& list, const std::filesystem::path& build,
                                    std::string_view platform, std::string_view version,
                                    const packages::PrivateKey& key, bool confined);

}  // namespace upkeep::relay
