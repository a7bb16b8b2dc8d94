#include "repository_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <system_error>

#include "upkeep/common/files.hpp"
#include "upkeep/db/transaction.hpp"
#include "upkeep/packages/keys.hpp"

namespace upkeep::updater {

namespace fs = std::filesystem;

namespace {

// "upkeep-r" as a number: the one advisory lock every repository write takes.
constexpr std::int64_t kRepositoryLock = 0x75706b6565702d72;
constexpr std::uint64_t kMaxMetadataFileBytes = 64u << 20;

Error IoError(const fs::path& path, std::string_view what, int err) {
  return Error(Errc::kIo, path.string() + ": " + std::string(what) + ": " + std::strerror(err));
}

Status MakeDirectories(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Error(Errc::kIo, dir.string() + ": cannot create directory: " + ec.message());
  return OkStatus();
}

Expected<OnlineKey> ParseOnlineKey(const Json& roles, const char* role) {
  auto parsed = [&]() -> Expected<OnlineKey> {
    UPK_TRY_ASSIGN(const Json* entry, GetObject(roles, role));
    OnlineKey key;
    UPK_TRY_ASSIGN(key.keyid, GetString(*entry, "keyid"));
    UPK_TRY_ASSIGN(const Json* pub, GetObject(*entry, "public_key"));
    UPK_TRY_ASSIGN(packages::PublicKey parsed_key, packages::PublicKey::FromJson(*pub));
    // The keyid is what root lists; it must be the key's own id, or clients would look up the
    // wrong key.
    if (parsed_key.keyid() != key.keyid) return Error(Errc::kParse, "keyid does not match its public key");
    key.public_key = *pub;
    return key;
  }();
  if (!parsed.ok()) return parsed.error().Wrap(std::string("keyserver keys: role '") + role + "'");
  return parsed;
}

// Writes `data` unless the file already holds exactly it (start-up rewrites skip the fsyncs).
Status WriteIfDifferent(const fs::path& path, std::string_view data) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec) && fs::file_size(path, ec) == data.size() && !ec) {
    auto current = ReadFileBounded(path, data.size());
    if (current.ok() && *current == data) return OkStatus();
  }
  return WriteFileAtomic(path, data);
}

// link(2) `src` to `dst` through a temporary sibling (so `dst` appears whole or not at all),
// copying when they are on different filesystems.
Status LinkOrCopy(const fs::path& src, const fs::path& dst) {
  const fs::path tmp = TempSibling(dst);
  if (::link(src.c_str(), tmp.c_str()) != 0) {
    const int err = errno;
    if (err != EXDEV && err != EPERM && err != EMLINK) return IoError(tmp, "link", err);
    std::error_code ec;
    fs::copy_file(src, tmp, fs::copy_options::none, ec);
    if (ec) {
      fs::remove(tmp, ec);
      return Error(Errc::kIo, tmp.string() + ": copy: " + ec.message());
    }
  }
  if (::rename(tmp.c_str(), dst.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return IoError(dst, "rename", err);
  }
  return OkStatus();
}

Expected<MetadataRow> RowFrom(const db::Result& r, int i) {
  MetadataRow row;
  UPK_TRY_ASSIGN(row.role, r.Get<std::string>(i, "role"));
  UPK_TRY_ASSIGN(row.version, r.Get<std::int64_t>(i, "version"));
  UPK_TRY_ASSIGN(row.body, r.Get<std::string>(i, "body"));
  UPK_TRY_ASSIGN(row.expires, r.Get<SysTime>(i, "expires_at"));
  return row;
}

}  // namespace

Status LockRepository(db::Connection& c) {
  auto r = c.Exec("SELECT pg_advisory_xact_lock($1)", kRepositoryLock);
  if (!r.ok()) return r.error();
  return OkStatus();
}

Expected<std::optional<MetadataRow>> NewestMetadata(db::Connection& c, std::string_view role) {
  UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT role, version, body, expires_at FROM tuf_metadata WHERE role = $1 "
                                      "ORDER BY version DESC LIMIT 1",
                                      role));
  if (r.rows() == 0) return std::optional<MetadataRow>();
  UPK_TRY_ASSIGN(MetadataRow row, RowFrom(r, 0));
  return std::optional<MetadataRow>(std::move(row));
}

Expected<std::optional<RepositoryHead>> LoadHead(db::Connection& c) {
  RepositoryHead head;
  struct Slot {
    const char* role;
    MetadataRow* row;
    Json* md;
  };
  const Slot slots[] = {{"root", &head.root, &head.root_md},
                        {"targets", &head.targets, &head.targets_md},
                        {"snapshot", &head.snapshot, &head.snapshot_md},
                        {"timestamp", &head.timestamp, &head.timestamp_md}};
  for (const Slot& slot : slots) {
    UPK_TRY_ASSIGN(std::optional<MetadataRow> row, NewestMetadata(c, slot.role));
    if (!row) return std::optional<RepositoryHead>();
    UPK_TRY_ASSIGN(*slot.md, ParseJson(row->body));
    *slot.row = std::move(*row);
  }
  return std::optional<RepositoryHead>(std::move(head));
}

Status InsertMetadata(db::Connection& c, const MetadataRow& row, SysTime now) {
  auto r = c.Exec("INSERT INTO tuf_metadata (role, version, body, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
                  row.role, row.version, row.body, row.expires, now);
  if (!r.ok()) return r.error();
  return OkStatus();
}

Expected<MetadataRow> SignOnline(keyserver::KeyserverClient& keyserver, tuf::Role role, const Json& signed_part,
                                 const Json& root_signed, SysTime expires) {
  const char* name = tuf::RoleName(role);
  UPK_TRY_ASSIGN(Json envelope, keyserver.Sign(name, signed_part));
  if (!envelope.is_object() || !envelope.contains("signed") || envelope["signed"] != signed_part) {
    return Error(Errc::kVerification, std::string("keyserver returned a ") + name + " envelope for another body");
  }
  if (auto st = tuf::VerifyRoleSignatures(envelope, root_signed, role); !st.ok()) {
    return Error(Errc::kVerification, std::string("keyserver's ") + name +
                                          " signature is not accepted by the current root: " + st.error().message());
  }
  MetadataRow row;
  row.role = name;
  row.version = signed_part["version"].get<std::int64_t>();
  UPK_TRY_ASSIGN(row.body, tuf::SerializeMetadata(envelope));
  row.expires = expires;
  return row;
}

Expected<std::vector<MetadataRow>> SignSnapshotAndTimestamp(keyserver::KeyserverClient& keyserver,
                                                            const Json& root_signed, std::int64_t snapshot_version,
                                                            std::int64_t targets_version,
                                                            std::int64_t timestamp_version, SysTime now,
                                                            const ServiceConfig& config) {
  // Expiries are whole seconds: the RFC 3339 text has no fraction, and the stored expires_at
  // must equal what the metadata says.
  const SysTime base = std::chrono::floor<std::chrono::seconds>(now);
  const SysTime snapshot_expires = base + config.snapshot_validity;
  const SysTime timestamp_expires = base + config.timestamp_validity;
  UPK_TRY_ASSIGN(MetadataRow snapshot,
                 SignOnline(keyserver, tuf::Role::kSnapshot,
                            tuf::SnapshotSigned(snapshot_version, snapshot_expires, targets_version), root_signed,
                            snapshot_expires));
  UPK_TRY_ASSIGN(MetadataRow timestamp,
                 SignOnline(keyserver, tuf::Role::kTimestamp,
                            tuf::TimestampSigned(timestamp_version, timestamp_expires, snapshot_version, snapshot.body),
                            root_signed, timestamp_expires));
  return std::vector<MetadataRow>{std::move(snapshot), std::move(timestamp)};
}

Expected<std::shared_ptr<RepositoryStore>> RepositoryStore::Create(keyserver::KeyserverClient& keyserver,
                                                                   const ServiceConfig& config) {
  auto keys = keyserver.Keys();
  if (!keys.ok()) {
    return Error(keys.error().code(),
                 "cannot fetch the keyserver's public keys (is the keyserver running and the "
                 "updater token valid?): " +
                     keys.error().message());
  }
  std::shared_ptr<RepositoryStore> store(new RepositoryStore());
  const Json& roles = (*keys)["roles"];
  UPK_TRY_ASSIGN(store->snapshot_key_, ParseOnlineKey(roles, "snapshot"));
  UPK_TRY_ASSIGN(store->timestamp_key_, ParseOnlineKey(roles, "timestamp"));
  auto content = [&]() -> Status {
    UPK_TRY_ASSIGN(const Json* entry, GetObject(roles, "content"));
    UPK_TRY_ASSIGN(store->content_keyid_, GetString(*entry, "keyid"));
    UPK_TRY_ASSIGN(store->content_x25519_, GetString(*entry, "x25519_public"));
    auto raw = FromHex(store->content_x25519_);
    if (!raw.ok() || raw->size() != 32) return Error(Errc::kParse, "x25519_public is not 32 bytes of hex");
    return OkStatus();
  }();
  if (!content.ok()) return content.error().Wrap("keyserver keys: role 'content'");

  store->repo_dir_ = config.repo_dir;
  store->blob_dir_ = config.blob_dir;
  for (const fs::path& dir : {config.repo_dir / "metadata", config.repo_dir / "targets", config.blob_dir / "sha256",
                              config.blob_dir / "uploads"}) {
    UPK_TRY(MakeDirectories(dir));
  }
  return store;
}

fs::path RepositoryStore::BlobPath(std::string_view sha256_hex) const {
  return blob_dir_ / "sha256" / std::string(sha256_hex);
}

Status RepositoryStore::LinkTarget(const TargetLink& link) {
  const fs::path src = BlobPath(link.sha256);
  struct stat src_st {};
  if (::stat(src.c_str(), &src_st) != 0) return IoError(src, "blob", errno);
  const fs::path path(link.target_path);
  const fs::path dir = repo_dir_ / "targets" / path.parent_path();
  UPK_TRY(MakeDirectories(dir));
  for (const std::string* hash : {&link.sha256, &link.sha512}) {
    const fs::path dst = dir / (*hash + "." + path.filename().string());
    struct stat dst_st {};
    if (::lstat(dst.c_str(), &dst_st) == 0 && S_ISREG(dst_st.st_mode) &&
        ((dst_st.st_dev == src_st.st_dev && dst_st.st_ino == src_st.st_ino) || dst_st.st_size == src_st.st_size)) {
      continue;  // already linked (or a complete copy: copies are renamed into place whole)
    }
    UPK_TRY(LinkOrCopy(src, dst));
  }
  return SyncDirectory(dir);
}

Status RepositoryStore::WriteRow(const MetadataRow& row) {
  const fs::path meta = repo_dir_ / "metadata";
  if (row.role == "timestamp") {
    if (row.version <= timestamp_written_) return OkStatus();  // a newer one is already served
    UPK_TRY(WriteFileAtomic(meta / "timestamp.json", row.body));
    timestamp_written_ = row.version;
    NoteTimestampExpiry(row.expires);
    return OkStatus();
  }
  if (row.body.size() > kMaxMetadataFileBytes) return Error(Errc::kLimit, "stored metadata too large");
  UPK_TRY(WriteIfDifferent(meta / (std::to_string(row.version) + "." + row.role + ".json"), row.body));
  if (row.role == "root") {
    if (row.version > root_written_) {
      UPK_TRY(WriteFileAtomic(meta / "root.json", row.body));
      root_written_ = row.version;
    }
  } else if (row.role == "targets") {
    targets_written_ = std::max(targets_written_, row.version);
  } else if (row.role == "snapshot") {
    snapshot_written_ = std::max(snapshot_written_, row.version);
  }
  return OkStatus();
}

Status RepositoryStore::SyncLocked(db::Connection& c, const std::function<void(std::string_view)>& log) {
  // Targets first: metadata never names a file that is not there yet. Releases added by a
  // targets version not written yet are exactly the ones whose links may be missing.
  UPK_TRY_ASSIGN(db::Result releases, c.Exec("SELECT r.target_path, r.blob_sha256, b.sha512 FROM releases r "
                                             "JOIN blobs b ON b.sha256 = r.blob_sha256 WHERE r.targets_version > $1 "
                                             "ORDER BY r.target_path",
                                             targets_written_));
  for (int i = 0; i < releases.rows(); ++i) {
    TargetLink link;
    UPK_TRY_ASSIGN(link.target_path, releases.Get<std::string>(i, "target_path"));
    UPK_TRY_ASSIGN(link.sha256, releases.Get<std::string>(i, "blob_sha256"));
    UPK_TRY_ASSIGN(link.sha512, releases.Get<std::string>(i, "sha512"));
    if (auto st = LinkTarget(link); !st.ok()) {
      // One lost blob must not keep the rest of the repository offline.
      if (log) log("repository: cannot link target " + link.target_path + ": " + st.error().message());
    }
  }
  // Bodies one at a time: at start the history can be far larger than memory should hold.
  UPK_TRY_ASSIGN(
      db::Result versions,
      c.Exec("SELECT role, version FROM tuf_metadata WHERE (role = 'root' AND version > $1) OR "
             "(role = 'targets' AND version > $2) OR (role = 'snapshot' AND version > $3) OR "
             "(role = 'timestamp' AND version > $4 AND version = (SELECT max(version) FROM tuf_metadata "
             "WHERE role = 'timestamp')) "
             "ORDER BY CASE role WHEN 'root' THEN 0 WHEN 'targets' THEN 1 WHEN 'snapshot' THEN 2 ELSE 3 END, "
             "version",
             root_written_, targets_written_, snapshot_written_, timestamp_written_));
  for (int i = 0; i < versions.rows(); ++i) {
    UPK_TRY_ASSIGN(std::string role, versions.Get<std::string>(i, "role"));
    UPK_TRY_ASSIGN(std::int64_t version, versions.Get<std::int64_t>(i, "version"));
    UPK_TRY_ASSIGN(db::Result one, c.Exec("SELECT role, version, body, expires_at FROM tuf_metadata "
                                          "WHERE role = $1 AND version = $2",
                                          role, version));
    if (one.rows() != 1) continue;  // cannot happen: rows are never deleted
    UPK_TRY_ASSIGN(MetadataRow row, RowFrom(one, 0));
    UPK_TRY(WriteRow(row));  // the ORDER BY puts the timestamp last
  }
  return OkStatus();
}

Status RepositoryStore::Sync(db::Pool& pool, const std::function<void(std::string_view)>& log) {
  std::lock_guard lock(write_mu_);
  db::TxOptions options;
  options.isolation = db::Isolation::kRepeatableRead;  // links, versions and bodies from one snapshot
  options.read_only = true;
  return db::WithTransaction(
      pool, [&](db::Connection& c) -> Status { return SyncLocked(c, log); }, options);
}

Status RepositoryStore::Materialise(db::Pool& pool, const std::function<void(std::string_view)>& log) {
  {
    std::lock_guard lock(write_mu_);
    // Start from nothing: every file is checked (and rewritten only when it differs).
    root_written_ = targets_written_ = snapshot_written_ = timestamp_written_ = 0;
  }
  return Sync(pool, log);
}

void RepositoryStore::NoteTimestampExpiry(SysTime expires) {
  const std::int64_t unix_seconds =
      std::chrono::duration_cast<std::chrono::seconds>(expires.time_since_epoch()).count();
  std::int64_t current = timestamp_expires_unix_.load();
  // Only forward: a later timestamp version never expires earlier than the one it replaces.
  while (unix_seconds > current && !timestamp_expires_unix_.compare_exchange_weak(current, unix_seconds)) {
  }
}

std::optional<SysTime> RepositoryStore::timestamp_expires() const {
  const std::int64_t v = timestamp_expires_unix_.load();
  if (v == 0) return std::nullopt;
  return SysTime(std::chrono::seconds(v));
}

}  // namespace upkeep::updater
