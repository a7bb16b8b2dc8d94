// Configuration backups of the appliance: made by the agent before every install and by an admin
// by hand; listed, inspected, downloaded and restored (docs/agent/backup.md has the file format).
//
// A backup is one `.upkbak` file: a plain JSON header (created, reason, installed versions, KDF
// parameters, the secrets left out) followed by a pax tar stream of the configuration files, cut in
// chunks that are either sealed (crypto_secretstream_xchacha20poly1305 under an Argon2id key, the
// header bytes as additional data) or, without a password, covered by a BLAKE2b-256 digest of the
// whole file. Reading and writing stream in fixed-size chunks: memory does not grow with the size.
//
// Secrets (TLS private keys, the licence, the vault key) are left out unless asked for, and the
// vault key only ever goes into a password-protected backup. Restore verifies the whole file before
// it writes anything, then writes each entry atomically without following symlinks.
//
// Threads: a BackupStore is not thread-safe; use one per thread (files are written atomically, so
// concurrent readers only ever see complete backups). Passwords are borrowed, never copied into
// long-lived storage, never logged, never in an error message. Errors: kInvalidArgument (bad id,
// empty password, missing password), kNotFound, kIo, kParse (malformed header), kVerification
// (wrong password, tampered/truncated file), kUnsafe (hostile entry), kLimit (bounds below),
// kPolicy (vault key without a password).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/trust/key_store.hpp"

namespace upkeep::agent {

// Called with (bytes done, bytes total) of file content as it is backed up or restored.
using BackupProgressFn = std::function<void(std::uint64_t done, std::uint64_t total)>;

// Bounds on what a (possibly hostile) backup file may ask for; a file beyond them is refused
// (kLimit) before the work is done. Create refuses to make a backup it could not read back.
inline constexpr std::size_t kBackupMaxHeaderBytes = std::size_t{1} << 20;
inline constexpr std::size_t kBackupMaxEntries = 100000;
inline constexpr std::size_t kBackupMaxPathBytes = 4096;
inline constexpr std::uint64_t kBackupMaxTotalBytes = std::uint64_t{16} << 30;
inline constexpr std::uint64_t kBackupMaxOpslimit = 16;
inline constexpr std::size_t kBackupMaxMemlimit = std::size_t{1} << 30;

// What is backed up. All paths absolute.
struct BackupSource {
  std::vector<std::filesystem::path> paths;          // files or directories of configuration
  std::vector<std::filesystem::path> tls_key_paths;  // private keys: left out unless include_tls_keys
  std::filesystem::path licence_path;                // left out unless include_licence
  std::filesystem::path vault_key_path;              // only with a password and include_vault_key
};

struct BackupOptions {
  bool include_tls_keys = false;
  bool include_licence = false;
  bool include_vault_key = false;
  std::optional<std::string_view> password;  // borrowed; empty string refused
  std::string reason;                        // "before install of software 7.1.0", "manual"
  trust::KdfParams kdf = trust::KdfParams::Moderate();
};

// A secret that is not in a backup, and why.
struct ExcludedSecret {
  std::filesystem::path path;
  std::string kind;    // "tls_key", "licence", "vault_key"
  std::string reason;  // "not requested", "needs a password-protected backup"
};

struct BackupInfo {
  std::string id;  // "20261125T193000Z-7f3a": creation time (UTC) and a random suffix
  std::filesystem::path path;
  SysTime created{};
  std::string reason;
  std::uint64_t bytes = 0;  // size of the .upkbak file
  bool encrypted = false;
  Json installed = Json::object();           // the agent's installed versions when it was made
  std::vector<std::filesystem::path> roots;  // the source paths it holds
  std::vector<ExcludedSecret> excluded;
  std::optional<Error> error;  // set by List for a damaged file (the other fields may be empty)
};

struct RestoreOptions {
  // Empty: restore to the original absolute paths. Otherwise a prefix: "/etc/x" goes to root/etc/x.
  std::filesystem::path root;
  BackupProgressFn progress;
};

struct RestoreReport {
  std::string id;
  std::vector<std::filesystem::path> restored;  // destination paths, in archive order
  std::vector<ExcludedSecret> not_in_backup;    // secrets the backup left out
};

// A directory of backups (e.g. /var/lib/upkeep-agent/backups), created on first use (0700).
class BackupStore {
 public:
  BackupStore(std::filesystem::path dir, std::size_t keep_last_n, const Clock& clock, Random& random);

  // Makes a backup, then deletes all but the newest keep_last_n (never the one just made).
  // `installed` must be a JSON object. A missing source path is kNotFound; a source that is not a
  // regular file, directory or symlink is kUnsafe; include_vault_key without password is kPolicy.
  Expected<BackupInfo> Create(const BackupSource& source, const BackupOptions& options, const Json& installed,
                              BackupProgressFn progress = {});
  // Newest first. A damaged file is listed with `error` set; a missing dir is an empty list, only an
  // unreadable dir fails.
  Expected<std::vector<BackupInfo>> List();
  // Header only (no password needed, content not verified).
  Expected<BackupInfo> Inspect(const std::string& id);
  // Verifies the whole file (no writes until it passed), then restores every entry atomically.
  Expected<RestoreReport> Restore(const std::string& id, std::optional<std::string_view> password,
                                  const RestoreOptions& options);
  // The file of a backup, for download. The id is not validated here; Inspect validates it.
  std::filesystem::path PathOf(const std::string& id) const;

 private:
  std::filesystem::path dir_;
  std::size_t keep_last_n_;
  const Clock& clock_;
  Random& random_;
};

// The same operations on a backup file anywhere (a downloaded backup, a vault key export).
Expected<BackupInfo> InspectBackupFile(const std::filesystem::path& file);
// Full verification (digest or every sealed chunk, every tar entry) without writing anything.
Expected<BackupInfo> VerifyBackupFile(const std::filesystem::path& file, std::optional<std::string_view> password);
Expected<RestoreReport> RestoreBackupFile(const std::filesystem::path& file, std::optional<std::string_view> password,
                                          const RestoreOptions& options);

// The vault key alone, in a password-protected .upkbak at `out` (mode 0600, never overwritten);
// an empty password is kInvalidArgument. RestoreBackupFile restores it.
Status ExportVaultKey(const std::filesystem::path& vault_key, const std::filesystem::path& out,
                      std::string_view password, const trust::KdfParams& kdf, Random& random,
                      const Clock& clock = SystemClock::Instance());

}  // namespace upkeep::agent
