// Internal to upkeep_agent_backup (and its tests): the .upkbak writer with caller-supplied tar
// content, so tests can build hostile files that Create would never produce. Not a public header.
#pragma once

#include <functional>
#include <optional>
#include <string_view>

#include "upkeep/agent/backup.hpp"

struct archive;

namespace upkeep::agent::backup_internal {

// Writes `out` atomically (0600, never overwriting). `header` holds the caller's fields (created,
// reason, installed, roots, excluded); format/encrypted/kdf are added here. `fill` writes the tar
// entries into the (pax) archive it is given.
Status WriteBackupFile(const std::filesystem::path& out, Json header, std::optional<std::string_view> password,
                       const trust::KdfParams& kdf, Random& random, const std::function<Status(struct archive*)>& fill);

}  // namespace upkeep::agent::backup_internal
