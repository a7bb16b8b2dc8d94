// The static TUF repository writer: builds and maintains a TUF 1.0 repository in a directory
// that any static web server can serve (DIR/metadata/ as the metadata base URL, DIR/targets/ as
// the target base URL), with consistent snapshots and hash-prefixed target files.
//
// Layout (see docs/repository.md):
//   DIR/metadata/N.root.json, root.json       every root version, and the newest one
//   DIR/metadata/N.targets.json               signed by the targets role
//   DIR/metadata/N.snapshot.json              signed by the snapshot role
//   DIR/metadata/timestamp.json               signed by the timestamp role, written last
//   DIR/targets/<dir>/<sha256>.<name>         one copy per listed hash; the sha512 name is a
//   DIR/targets/<dir>/<sha512>.<name>           hard link to the sha256 one
//   DIR/staging.json                          targets added/removed since the last publish
//                                             (not meant to be served)
//   DIR/.upk-repo.lock                        held (flock) by every mutating operation
//
// Private keys are passed in by the caller and never written into DIR. Every file is written
// atomically and the timestamp last, so a reader never sees metadata that points at a file that
// is not there yet; a failed operation leaves the served state unchanged.
//
// Not thread-safe; concurrent processes are serialised by the lock file (a second one fails).
// Time comes from the Clock given to the constructor, so tests can produce expired metadata.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/packages/manifest.hpp"

namespace upkeep::tuf {

// The TUF specification version written into every metadata file.
inline constexpr const char* kSpecVersion = "1.0.31";

enum class Role { kRoot, kTargets, kSnapshot, kTimestamp };
const char* RoleName(Role role);
Expected<Role> ParseRole(std::string_view name);

// How long freshly signed metadata stays valid, per role.
struct ExpiryPolicy {
  std::chrono::seconds root = std::chrono::days(365);
  std::chrono::seconds targets = std::chrono::days(90);
  std::chrono::seconds snapshot = std::chrono::days(7);
  std::chrono::seconds timestamp = std::chrono::days(1);

  std::chrono::seconds& For(Role role);
  std::chrono::seconds For(Role role) const;
  // Applies one "ROLE=DAYS" override (DAYS a positive integer, at most 36500).
  Status Override(std::string_view role_equals_days);
};

// One entry of targets metadata.
struct TargetInfo {
  std::string path;  // the TUF target path, e.g. "web/web-1.2.3.upk"
  std::uint64_t length = 0;
  std::string sha256, sha512;  // lower-case hex
  Json custom;                 // null when there is none

  Json ToJson() const;  // {"length", "hashes", "custom"?}
  static Expected<TargetInfo> FromJson(const std::string& path, const Json& json);
  bool operator==(const TargetInfo&) const = default;
};

// Target paths are '/'-separated components of [A-Za-z0-9._+-] (no ".", "..", empty components
// or leading '/'), at most 512 bytes, so they can be used verbatim in URLs and file names.
Status CheckTargetPath(std::string_view path);

// What a .upk package is published as: "<name>/<name>-<version>.upk" with
// custom {"upkeep": {"name", "version", "kind"}}.
std::string PackageTargetPath(const packages::Manifest& manifest);
Json PackageCustom(const packages::Manifest& manifest);

// The bodies ("signed" parts) the repository writer signs, public so the updater builds them the
// same way (it has the keyserver sign them): snapshot lists targets.json with its version;
// timestamp lists snapshot.json with its version, length and sha256 + sha512 of `snapshot_bytes`
// (the snapshot file exactly as served); targets lists `targets` with TargetInfo::ToJson().
Json SnapshotSigned(std::int64_t version, SysTime expires, std::int64_t targets_version);
Json TimestampSigned(std::int64_t version, SysTime expires, std::int64_t snapshot_version,
                     std::string_view snapshot_bytes);
Json TargetsSigned(std::int64_t version, SysTime expires, const std::map<std::string, TargetInfo>& targets);

// The bytes of a metadata file as the repository writes them (pretty-printed, trailing newline).
// Signatures cover the canonical JSON of "signed", so any serialisation keeps them valid; the
// timestamp's hashes are over these exact bytes.
Expected<std::string> SerializeMetadata(const Json& metadata);

// Wraps `signed_part` as {"signatures": [{"keyid", "sig"}...], "signed": ...}; each key signs the
// canonical JSON of `signed_part` once (duplicate keys sign once), signatures sorted by key id.
Expected<Json> SignMetadata(const Json& signed_part, const std::vector<packages::PrivateKey>& keys);

// Counts the distinct keys of `role` (as root_signed lists them) with a valid signature over
// the canonical JSON of metadata["signed"]; kVerification when fewer than the threshold.
Status VerifyRoleSignatures(const Json& metadata, const Json& root_signed, Role role);

struct InitOptions {
  std::vector<packages::PrivateKey> root_keys;
  int root_threshold = 1;
  std::vector<packages::PrivateKey> targets_keys, snapshot_keys, timestamp_keys;  // threshold 1
  ExpiryPolicy expiry;
};

struct AddOptions {
  std::string target_path;  // empty: the file's name
  Json custom;              // null: none
  bool replace = false;     // allow a different file under an existing target path
  std::function<void(std::uint64_t done, std::uint64_t total)> progress;
};

struct AddResult {
  TargetInfo target;
  bool unchanged = false;  // the same bytes were already listed under that path
};

struct PublishKeys {
  std::vector<packages::PrivateKey> targets, snapshot, timestamp;
};

struct RoleState {
  std::int64_t version = 0;
  SysTime expires{};
};

struct PublishResult {
  RoleState targets, snapshot, timestamp;
  std::size_t target_count = 0;
};

struct RotateRootOptions {
  std::vector<packages::PrivateKey> old_root_keys;  // must meet the current root threshold
  std::vector<packages::PrivateKey> new_root_keys;  // must meet new_root_threshold
  int new_root_threshold = 1;
  // Replacement public keys for the other roles; empty keeps the current ones. After replacing
  // one, run Publish with the new keys so the other metadata is re-signed.
  std::vector<packages::PublicKey> targets_keys, snapshot_keys, timestamp_keys;
  ExpiryPolicy expiry;
};

struct RepositoryStatus {
  RoleState root, targets, snapshot, timestamp;
  bool consistent_snapshot = false;
  std::vector<TargetInfo> targets_list;  // as published, sorted by path
  std::vector<TargetInfo> staged_adds;   // sorted by path
  std::vector<std::string> staged_removals;
};

class RepositoryWriter {
 public:
  explicit RepositoryWriter(std::filesystem::path dir, const Clock& clock = SystemClock::Instance());

  const std::filesystem::path& dir() const { return dir_; }

  // Creates the repository: root v1 and empty targets/snapshot/timestamp v1, all signed.
  // Refuses (kPolicy) a DIR that exists and is not empty.
  Status Init(const InitOptions& options);

  // Copies `file` into targets/ (both hash-prefixed names) and stages it for the next publish.
  // Refuses (kPolicy) a different file under an already listed path unless options.replace.
  Expected<AddResult> Add(const std::filesystem::path& file, const AddOptions& options);

  // Stages the removal (yank) of a listed target; the files stay for clients of older metadata.
  Status Remove(const std::string& target_path);

  // Writes targets N+1, snapshot M+1 and a new timestamp with everything staged.
  Expected<PublishResult> Publish(const PublishKeys& keys, const ExpiryPolicy& expiry);

  // Writes only a new timestamp (same snapshot, version + 1), expiring at `expires_at` if given.
  Expected<RoleState> RefreshTimestamp(const std::vector<packages::PrivateKey>& timestamp_keys,
                                       const ExpiryPolicy& expiry, std::optional<SysTime> expires_at = std::nullopt);

  // Writes root N+1 signed by both the old and the new root keys, then updates root.json.
  Expected<RoleState> RotateRoot(const RotateRootOptions& options);

  Expected<RepositoryStatus> GetStatus() const;

 private:
  std::filesystem::path dir_;
  const Clock& clock_;
};

}  // namespace upkeep::tuf
