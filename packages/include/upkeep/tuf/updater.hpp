// The TUF client updater: runs the specification's detailed client workflow against a remote
// repository, keeps the trusted metadata in a local directory, finds target files through
// delegations and downloads them verified.
//
// Contract:
//  - metadata_dir holds root.json (put there out of band: the trust anchor) and whatever the
//    updater persisted: root.json, timestamp.json, snapshot.json, targets.json and
//    <role>.json for delegated roles (role names percent-encoded, so no name escapes the
//    directory). Every file is written atomically, only after it verified, with the exact
//    bytes fetched.
//  - Refresh() is one update cycle: it fixes the reference time from the Clock, reloads the
//    local trusted state, updates root (up to max_root_rotations steps), timestamp, snapshot
//    and top-level targets. It may be called again for a new cycle.
//  - GetTargetInfo() refreshes first if needed, then searches the delegation graph pre-order
//    depth-first (visited set, at most max_delegations roles, terminating roles end the
//    search), loading delegated metadata on the way.
//  - DownloadTarget() fetches (hash-prefixed name when the root sets consistent_snapshot),
//    streams to a temp file next to the destination while checking length and every hash,
//    and renames it into place only after it verified: a bad file never appears.
// Every network read is capped (UpdaterConfig) so endless data is cut off. The Updater borrows
// the Fetcher and Clock, which must outlive it. Not thread-safe; no global state.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/tuf/fetcher.hpp"
#include "upkeep/tuf/metadata.hpp"
#include "upkeep/tuf/trusted_set.hpp"

namespace upkeep::tuf {

// Limits; the defaults are python-tuf's.
struct UpdaterConfig {
  std::uint32_t max_root_rotations = 256;
  std::uint32_t max_delegations = 32;
  std::uint64_t root_max_length = 512000;
  std::uint64_t timestamp_max_length = 16384;
  std::uint64_t snapshot_max_length = 2000000;
  std::uint64_t targets_max_length = 5000000;
  // With consistent snapshots, fetch targets as "<dir>/<hash>.<name>".
  bool prefix_targets_with_hash = true;
};

struct UpdaterOptions {
  std::filesystem::path metadata_dir;
  std::string metadata_base_url;        // "<url>/" + "timestamp.json" etc.
  std::filesystem::path target_dir;     // where DownloadTarget() stores files by default
  std::string target_base_url;          // "<url>/" + target path
  UpdaterConfig config;
};

class Updater {
 public:
  // (bytes done, bytes expected) while a target downloads.
  using Progress = std::function<void(std::uint64_t done, std::uint64_t total)>;

  Updater(UpdaterOptions options, Fetcher& fetcher, const Clock& clock);

  Status Refresh();

  // nullopt when no role trusted for the path lists it.
  Expected<std::optional<TargetFile>> GetTargetInfo(const std::string& target_path);

  // Where DownloadTarget() stores a target by default: target_dir / percent-encoded path.
  std::filesystem::path DefaultTargetPath(const TargetFile& info) const;

  // The local file if it exists and matches length and hashes, else nullopt.
  std::optional<std::filesystem::path> FindCachedTarget(const TargetFile& info,
                                                        const std::filesystem::path& file = {}) const;

  // Downloads and verifies; returns the final path. `file` defaults to DefaultTargetPath(),
  // `base_url` to the options' target_base_url. Needs a Refresh() (or GetTargetInfo()) first.
  // With consistent snapshots the file is fetched as "<dir>/<sha256>.<name>" (the first hash
  // in byte order when there is no sha256).
  Expected<std::filesystem::path> DownloadTarget(const TargetFile& info, const std::filesystem::path& file = {},
                                                 const std::string& base_url = {}, const Progress& progress = {});

  // The state of the last Refresh() (nullptr before the first; partial if it failed).
  const TrustedMetadataSet* trusted_set() const { return trusted_ ? &*trusted_ : nullptr; }

 private:
  Status LoadRoot();
  Status LoadTimestamp();
  Status LoadSnapshot();
  Expected<const Targets*> LoadTargets(const std::string& role, const std::string& parent);
  Expected<std::string> DownloadMetadata(const std::string& role, std::uint64_t max_length,
                                         std::optional<std::int64_t> version);
  Expected<std::string> LoadLocal(const std::string& role, std::uint64_t max_length) const;
  Status Persist(const std::string& role, std::string_view data) const;
  std::filesystem::path MetadataPath(const std::string& role) const;

  UpdaterOptions options_;
  Fetcher& fetcher_;
  const Clock& clock_;
  std::optional<TrustedMetadataSet> trusted_;
};

// Percent-encodes everything but unreserved characters (as urllib.parse.quote(s, safe="")):
// how role names appear in URLs and file names.
std::string PercentEncode(std::string_view s, bool keep_slash = false);

}  // namespace upkeep::tuf
