// Helpers agent.cpp and import.cpp share (private to the core library).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "upkeep/agent/config.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/tuf/fetcher.hpp"
#include "upkeep/tuf/updater.hpp"

namespace upkeep::agent::internal {

inline constexpr const char* kJournal = "journal";
inline constexpr const char* kOutbox = "outbox";

Json StateJson(const trust::InstalledSet& installed);
Expected<trust::InstalledSet> StateFromJson(const Json& j);
// The TUF client of this appliance: trusted metadata under STATE/tuf, the updater's /repo/.
tuf::UpdaterOptions TufOptions(const AgentConfig& config);
// Where the metadata of the last imported bundle is kept (served to TUF offline).
inline std::filesystem::path BundleMetadataDir(const AgentConfig& config) {
  return config.state_dir / "bundle-metadata";
}

// A TUF fetcher that serves the files of `dir` by the last component of the URL (no network):
// a missing file is kNotFound (how the root update loop learns there is no newer root).
std::unique_ptr<tuf::Fetcher> MakeDirFetcher(std::filesystem::path dir);

}  // namespace upkeep::agent::internal
