// The documents the server-facing upk commands build and sign offline before sending them to
// the updater (docs/updater-api.md): root v1 and targets v1 for bootstrap, targets N+1 for a
// publish or a yank, rollout waves. Pure functions of their inputs (the time is a parameter),
// so they are unit-tested without a server. Not a public header of upkeep_upk.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/packages/manifest.hpp"
#include "upkeep/tuf/repository.hpp"

namespace upkeep::upk {

// The `signed` part of root v1 as the updater expects it: consistent_snapshot true; root =
// `root_keys` with `root_threshold`; targets = `targets_keys` (threshold 1); snapshot and
// timestamp = the keyserver's online keys (threshold 1). kInvalidArgument for no root or
// targets key, or a threshold above the number of distinct root keys.
Expected<Json> BuildBootstrapRoot(const std::vector<packages::PublicKey>& root_keys, int root_threshold,
                                  const std::vector<packages::PublicKey>& targets_keys,
                                  const packages::PublicKey& snapshot_key, const packages::PublicKey& timestamp_key,
                                  SysTime expires);

// The `signed` part of an empty targets v1.
Json BuildEmptyTargets(SysTime expires);

// Parses bootstrap's --expires values: "root=365,targets=90" (comma-separated or repeated).
// Only root and targets are signed offline; snapshot and timestamp are the keyserver's business.
Expected<tuf::ExpiryPolicy> ParseBootstrapExpires(const std::vector<std::string>& values);

// How a release is published on the updater: "NAME/NAME-VERSION.upk.enc" with custom
// {"upkeep": {"name", "version", "kind", "encrypted": true}}.
std::string ReleaseTargetPath(const packages::Manifest& manifest);
Json ReleaseCustom(const packages::Manifest& manifest);

// targets N+1 for a publish: `current_signed` (the `signed` object of the current targets) with
// version + 1, `expires`, and `target` added; every other field is kept as it is. kPolicy when
// the path is already listed (the release exists), kParse when current_signed is not targets.
Expected<Json> BuildPublishTargets(const Json& current_signed, const tuf::TargetInfo& target, SysTime expires);

// targets N+1 for a yank: `current_signed` with version + 1, `expires`, and `target_path`
// removed. kNotFound when the path is not listed (already yanked, or never published).
Expected<Json> BuildYankTargets(const Json& current_signed, const std::string& target_path, SysTime expires);

// One --wave value: "PERCENT" (1..100) gives {"percent": P}; "group:A[,B...]" gives
// {"groups": ["A", "B"]}. kInvalidArgument otherwise.
Expected<Json> ParseWave(std::string_view spec);

}  // namespace upkeep::upk
