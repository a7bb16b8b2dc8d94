// The updater's TUF repository as stored and served: the keyserver's online public keys, the
// metadata rows of table tuf_metadata, the blob directory, and the repository directory that
// /repo/metadata/ and /repo/targets/ serve. Internal to upkeep_updater (repository_api.cpp is
// the only writer).
//
// Storage model: PostgreSQL is the truth. Every metadata version is a row holding the exact bytes
// served; releases name their blob by sha256. The repository directory is a materialised view:
// written after each commit (target links first, versioned metadata, root.json, timestamp.json
// last) and rewritten from the database at start (Materialise), so a crash between commit and
// file write heals at the next start. Writers serialise on a PostgreSQL advisory lock
// (LockRepository) inside their transaction, so versions never fork, even across instances.
// After a commit the writer calls Sync(), which writes whatever the database holds beyond what
// this store already wrote, in one consistent read: requests that commit in one order and reach
// Sync() in the other still produce a complete chain before the timestamp that names it, and
// the periodic refresh job's Sync() picks up what another instance committed.
//
// Online signing: snapshot and timestamp bodies are built with the same functions `upk repo`
// uses (tuf/repository.hpp) and signed by the keyserver; what comes back is checked against the
// current root before it is stored, so a misconfigured keyserver cannot make the updater publish
// metadata that clients would refuse.
//
// Thread safety: the keys and paths are immutable after Create(). File writes take an internal
// mutex, and root.json / timestamp.json are only ever replaced by a newer version, so nothing
// can roll the served timestamp back.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/db/pool.hpp"
#include "upkeep/keyserver/client.hpp"
#include "upkeep/tuf/repository.hpp"
#include "upkeep/updater/service.hpp"

namespace upkeep::updater {

// One row of tuf_metadata.
struct MetadataRow {
  std::string role;  // root, targets, snapshot, timestamp
  std::int64_t version = 0;
  std::string body;  // the file bytes exactly as served
  SysTime expires{};
};

// A hash-prefixed pair of target files to link to a blob.
struct TargetLink {
  std::string target_path;
  std::string sha256, sha512;
};

// A key the keyserver holds, as GET /api/v1/keys lists it.
struct OnlineKey {
  std::string keyid;
  Json public_key;  // TUF key JSON
};

// The newest metadata of every role, as rows and parsed envelopes ({"signatures","signed"}).
struct RepositoryHead {
  MetadataRow root, targets, snapshot, timestamp;
  Json root_md, targets_md, snapshot_md, timestamp_md;
};

// Serialises every repository write; held until the transaction ends.
Status LockRepository(db::Connection& c);
// The newest row of `role`, or nullopt before bootstrap.
Expected<std::optional<MetadataRow>> NewestMetadata(db::Connection& c, std::string_view role);
// All four newest rows, or nullopt when the repository is not bootstrapped yet.
Expected<std::optional<RepositoryHead>> LoadHead(db::Connection& c);
Status InsertMetadata(db::Connection& c, const MetadataRow& row, SysTime now);

// Has the keyserver sign `signed_part` for `role` (snapshot or timestamp), checks that the
// envelope carries the body unchanged and verifies under `root_signed`, and returns the row.
// Keyserver errors come back as they are (kIo: unreachable); a signature the root does not
// accept is kVerification.
Expected<MetadataRow> SignOnline(keyserver::KeyserverClient& keyserver, tuf::Role role, const Json& signed_part,
                                 const Json& root_signed, SysTime expires);
// Snapshot `snapshot_version` listing targets `targets_version`, then a timestamp over it.
Expected<std::vector<MetadataRow>> SignSnapshotAndTimestamp(keyserver::KeyserverClient& keyserver,
                                                            const Json& root_signed, std::int64_t snapshot_version,
                                                            std::int64_t targets_version,
                                                            std::int64_t timestamp_version, SysTime now,
                                                            const ServiceConfig& config);

class RepositoryStore {
 public:
  // Fetches the keyserver's public keys (snapshot, timestamp, content) and creates the
  // directories (repo_dir/metadata, repo_dir/targets, blob_dir/sha256, blob_dir/uploads).
  static Expected<std::shared_ptr<RepositoryStore>> Create(keyserver::KeyserverClient& keyserver,
                                                           const ServiceConfig& config);

  const OnlineKey& snapshot_key() const { return snapshot_key_; }
  const OnlineKey& timestamp_key() const { return timestamp_key_; }
  const std::string& content_keyid() const { return content_keyid_; }
  const std::string& content_x25519_public() const { return content_x25519_; }
  const std::filesystem::path& repo_dir() const { return repo_dir_; }
  std::filesystem::path upload_dir() const { return blob_dir_ / "uploads"; }
  // blob_dir/sha256/<hex>; `sha256_hex` must have been checked (64 lower-case hex).
  std::filesystem::path BlobPath(std::string_view sha256_hex) const;

  // Rewrites the repository directory from the database: every release's target links, every
  // versioned metadata file, root.json and timestamp.json (newest, last). Files already holding
  // the right bytes are left alone. A release whose blob file is missing is logged and skipped.
  // Same as Sync() with nothing written yet.
  Status Materialise(db::Pool& pool, const std::function<void(std::string_view)>& log);

  // Writes what the database holds beyond what this store wrote: target links of releases added
  // by newer targets versions, then newer root/targets/snapshot files, root.json, and the newest
  // timestamp.json last. Read in one repeatable-read transaction, so the chain is consistent.
  Status Sync(db::Pool& pool, const std::function<void(std::string_view)>& log);

  // The newest timestamp's expiry this process knows of (for the metrics gauge).
  void NoteTimestampExpiry(SysTime expires);
  std::optional<SysTime> timestamp_expires() const;

 private:
  RepositoryStore() = default;
  Status LinkTarget(const TargetLink& link);
  Status WriteRow(const MetadataRow& row);
  Status SyncLocked(db::Connection& c, const std::function<void(std::string_view)>& log);

  OnlineKey snapshot_key_, timestamp_key_;
  std::string content_keyid_, content_x25519_;
  std::filesystem::path repo_dir_, blob_dir_;

  std::mutex write_mu_;
  // Newest version written per role (guarded by write_mu_); Sync() writes what lies beyond.
  std::int64_t root_written_ = 0, targets_written_ = 0, snapshot_written_ = 0, timestamp_written_ = 0;
  std::atomic<std::int64_t> timestamp_expires_unix_{0};  // 0: unknown
};

}  // namespace upkeep::updater
