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

#include "upkeep/common/error.hpp"
#include "upkeep/relay/scheduler.hpp"

namespace upkeep::relay {

constexpr std::size_t kMaxClientBuilds = 256;

// confined: every path must be relative, without "." or ".." components (a package's payload
// cannot point outside itself).
Expected<std::vector<ClientBuild>> LoadClientBuilds(const std::filesystem::path& file, bool confined);

}  // namespace upkeep::relay
