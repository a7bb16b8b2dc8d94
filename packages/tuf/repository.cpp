#include "upkeep/tuf/repository.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <system_error>
#include <utility>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"

namespace upkeep::tuf {

namespace fs = std::filesystem;
using packages::PrivateKey;
using packages::PublicKey;

namespace {

constexpr std::uint64_t kMaxRootBytes = 512 * 1024;
constexpr std::uint64_t kMaxTimestampBytes = 16 * 1024;
constexpr std::uint64_t kMaxSnapshotBytes = 2u << 20;
constexpr std::uint64_t kMaxTargetsBytes = 64u << 20;
constexpr std::uint64_t kMaxStagingBytes = 64u << 20;
constexpr std::size_t kMaxTargetPath = 512;
// Hash-prefixed names add up to 129 bytes (sha512 hex + '.') in front of the last component.
constexpr std::size_t kMaxTargetBaseName = 120;
constexpr std::size_t kCopyBuffer = 256 * 1024;

constexpr Role kAllRoles[] = {Role::kRoot, Role::kTargets, Role::kSnapshot, Role::kTimestamp};

Error IoError(const fs::path& path, int err) { return Error(Errc::kIo, path.string() + ": " + std::strerror(err)); }

// Closes a file descriptor on every path out of a function.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int Release() { return std::exchange(fd, -1); }
};

// An exclusive flock on DIR/.upk-repo.lock for the lifetime of a mutating operation.
class RepoLock {
 public:
  static Expected<std::unique_ptr<RepoLock>> Acquire(const fs::path& dir) {
    auto path = dir / ".upk-repo.lock";
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return IoError(path, errno);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int e = errno;
      ::close(fd);
      if (e == EWOULDBLOCK) return Error(Errc::kPolicy, dir.string() + ": repository is busy (another upk repo command holds its lock)");
      return IoError(path, e);
    }
    return std::unique_ptr<RepoLock>(new RepoLock(fd));
  }
  ~RepoLock() { ::close(fd_); }
  RepoLock(const RepoLock&) = delete;
  RepoLock& operator=(const RepoLock&) = delete;

 private:
  explicit RepoLock(int fd) : fd_(fd) {}
  int fd_;
};

Expected<std::string> Serialize(const Json& metadata) { return SerializeMetadata(metadata); }

Expected<Json> ReadJsonFile(const fs::path& path, std::uint64_t limit) {
  auto text = ReadFileBounded(path, limit);
  if (!text) return text.error();
  auto json = ParseJson(*text);
  if (!json) return json.error().Wrap(path.string());
  return json;
}

// Reads one metadata file and checks the parts this writer relies on.
Expected<Json> ReadMetadata(const fs::path& path, Role role, std::uint64_t limit) {
  UPK_TRY_ASSIGN(Json md, ReadJsonFile(path, limit));
  auto check = [&]() -> Status {
    if (!md.is_object()) return Error(Errc::kParse, "not a JSON object");
    UPK_TRY_ASSIGN(const Json* signed_part, GetObject(md, "signed"));
    UPK_TRY_ASSIGN(const Json* sigs, GetArray(md, "signatures"));
    (void)sigs;
    UPK_TRY_ASSIGN(std::string type, GetString(*signed_part, "_type"));
    if (type != RoleName(role)) return Error(Errc::kParse, "_type is '" + type + "', expected '" + RoleName(role) + "'");
    UPK_TRY_ASSIGN(std::int64_t version, GetInt(*signed_part, "version"));
    if (version < 1) return Error(Errc::kParse, "version " + std::to_string(version) + " is not positive");
    UPK_TRY_ASSIGN(std::string expires, GetString(*signed_part, "expires"));
    UPK_TRY(ParseTimestamp(expires));
    return OkStatus();
  }();
  if (!check) return check.error().Wrap(path.string());
  return md;
}

std::int64_t VersionOf(const Json& md) { return md["signed"]["version"].get<std::int64_t>(); }

RoleState StateOf(const Json& md) {
  RoleState s;
  s.version = VersionOf(md);
  s.expires = ParseTimestamp(md["signed"]["expires"].get<std::string>()).value();
  return s;
}

Expected<std::int64_t> MetaVersion(const Json& md, const char* file, const fs::path& where) {
  auto v = [&]() -> Expected<std::int64_t> {
    UPK_TRY_ASSIGN(const Json* meta, GetObject(md["signed"], "meta"));
    UPK_TRY_ASSIGN(const Json* entry, GetObject(*meta, file));
    UPK_TRY_ASSIGN(std::int64_t version, GetInt(*entry, "version"));
    if (version < 1) return Error(Errc::kParse, std::string("meta '") + file + "' version is not positive");
    return version;
  }();
  if (!v) return v.error().Wrap(where.string());
  return v;
}

// The published state a client sees: root.json and the chain timestamp -> snapshot -> targets.
struct State {
  Json root, timestamp, snapshot, targets;
  std::string snapshot_bytes;
  std::map<std::string, TargetInfo> published;
};

Expected<Json> LoadRoot(const fs::path& meta) {
  auto root = ReadMetadata(meta / "root.json", Role::kRoot, kMaxRootBytes);
  if (!root && root.error().code() == Errc::kNotFound) {
    return Error(Errc::kNotFound, meta.parent_path().string() + ": not a TUF repository (no metadata/root.json); run 'upk repo init' first");
  }
  return root;
}

// Locks an existing repository; a directory without metadata/root.json is refused before the
// lock file is created, so a mistyped DIR is not littered.
Expected<std::unique_ptr<RepoLock>> LockRepository(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir / "metadata" / "root.json", ec)) {
    return Error(Errc::kNotFound, dir.string() + ": not a TUF repository (no metadata/root.json); run 'upk repo init' first");
  }
  return RepoLock::Acquire(dir);
}

Expected<State> LoadState(const fs::path& dir) {
  State st;
  const fs::path meta = dir / "metadata";
  UPK_TRY_ASSIGN(st.root, LoadRoot(meta));
  UPK_TRY_ASSIGN(st.timestamp, ReadMetadata(meta / "timestamp.json", Role::kTimestamp, kMaxTimestampBytes));
  UPK_TRY_ASSIGN(std::int64_t sv, MetaVersion(st.timestamp, "snapshot.json", meta / "timestamp.json"));
  const fs::path snapshot_path = meta / (std::to_string(sv) + ".snapshot.json");
  UPK_TRY_ASSIGN(st.snapshot_bytes, ReadFileBounded(snapshot_path, kMaxSnapshotBytes));
  UPK_TRY_ASSIGN(st.snapshot, ReadMetadata(snapshot_path, Role::kSnapshot, kMaxSnapshotBytes));
  if (VersionOf(st.snapshot) != sv) return Error(Errc::kParse, snapshot_path.string() + ": version does not match its file name");
  UPK_TRY_ASSIGN(std::int64_t tv, MetaVersion(st.snapshot, "targets.json", snapshot_path));
  const fs::path targets_path = meta / (std::to_string(tv) + ".targets.json");
  UPK_TRY_ASSIGN(st.targets, ReadMetadata(targets_path, Role::kTargets, kMaxTargetsBytes));
  if (VersionOf(st.targets) != tv) return Error(Errc::kParse, targets_path.string() + ": version does not match its file name");
  auto list = GetObject(st.targets["signed"], "targets");
  if (!list) return list.error().Wrap(targets_path.string());
  for (auto it = (*list)->begin(); it != (*list)->end(); ++it) {
    auto info = TargetInfo::FromJson(it.key(), it.value());
    if (!info) return info.error().Wrap(targets_path.string());
    st.published.emplace(it.key(), std::move(*info));
  }
  return st;
}

// Targets added or removed since the last publish, kept in DIR/staging.json.
struct Staging {
  std::map<std::string, TargetInfo> adds;
  std::set<std::string> removals;

  bool empty() const { return adds.empty() && removals.empty(); }
};

fs::path StagingPath(const fs::path& dir) { return dir / "staging.json"; }

Expected<Staging> LoadStaging(const fs::path& dir) {
  Staging s;
  const fs::path path = StagingPath(dir);
  auto json = ReadJsonFile(path, kMaxStagingBytes);
  if (!json) {
    if (json.error().code() == Errc::kNotFound) return s;
    return json.error();
  }
  auto parsed = [&]() -> Status {
    UPK_TRY_ASSIGN(const Json* adds, GetObject(*json, "add"));
    for (auto it = adds->begin(); it != adds->end(); ++it) {
      UPK_TRY_ASSIGN(TargetInfo info, TargetInfo::FromJson(it.key(), it.value()));
      s.adds.emplace(it.key(), std::move(info));
    }
    UPK_TRY_ASSIGN(const Json* removals, GetArray(*json, "remove"));
    for (const auto& r : *removals) {
      if (!r.is_string()) return Error(Errc::kParse, "'remove' holds a non-string");
      s.removals.insert(r.get<std::string>());
    }
    return OkStatus();
  }();
  if (!parsed) return parsed.error().Wrap(path.string());
  return s;
}

Status SaveStaging(const fs::path& dir, const Staging& s) {
  const fs::path path = StagingPath(dir);
  if (s.empty()) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return IoError(path, errno);
    return SyncDirectory(dir);
  }
  Json adds = Json::object();
  for (const auto& [p, info] : s.adds) adds[p] = info.ToJson();
  Json removals = Json::array();
  for (const auto& p : s.removals) removals.push_back(p);
  UPK_TRY_ASSIGN(std::string text, Serialize(Json{{"add", adds}, {"remove", removals}}));
  return WriteFileAtomic(path, text, 0644);
}

// Published targets with the staged changes applied.
std::map<std::string, TargetInfo> Effective(const State& st, const Staging& s) {
  auto out = st.published;
  for (const auto& p : s.removals) out.erase(p);
  for (const auto& [p, info] : s.adds) out[p] = info;
  return out;
}

// Refuses keys that are not listed for `role` in root, and too few distinct ones.
Status CheckSigners(const Json& root_signed, Role role, const std::vector<PrivateKey>& keys) {
  const std::string name = RoleName(role);
  const Json& role_def = root_signed["roles"][name];
  std::set<std::string> allowed;
  for (const auto& id : role_def["keyids"]) allowed.insert(id.get<std::string>());
  const std::int64_t threshold = role_def["threshold"].get<std::int64_t>();
  std::set<std::string> used;
  for (const auto& k : keys) {
    if (!allowed.count(k.keyid())) {
      std::string expected;
      for (const auto& id : allowed) expected += (expected.empty() ? "" : ", ") + id;
      return Error(Errc::kPolicy, name + " key " + k.keyid() + " is not a " + name + " key of root version " +
                                      std::to_string(root_signed["version"].get<std::int64_t>()) +
                                      " (expected key ids: " + expected + ")");
    }
    used.insert(k.keyid());
  }
  if (static_cast<std::int64_t>(used.size()) < threshold) {
    return Error(Errc::kPolicy, name + " needs " + std::to_string(threshold) + " distinct signing key(s), got " +
                                    std::to_string(used.size()));
  }
  return OkStatus();
}

Json RoleDefinition(const std::vector<std::string>& keyids, int threshold) {
  std::set<std::string> sorted(keyids.begin(), keyids.end());
  Json ids = Json::array();
  for (const auto& id : sorted) ids.push_back(id);
  return Json{{"keyids", ids}, {"threshold", threshold}};
}

Json Common(Role role, std::int64_t version, SysTime expires) {
  return Json{{"_type", RoleName(role)}, {"spec_version", kSpecVersion}, {"version", version},
              {"expires", FormatTimestamp(expires)}};
}

SysTime Later(SysTime now, std::chrono::seconds d) { return now + d; }

// "<dir>/<hash>.<base>" for a target path.
fs::path HashPrefixed(const fs::path& targets_dir, const std::string& target_path, const std::string& hash) {
  fs::path p(target_path);
  return targets_dir / p.parent_path() / (hash + "." + p.filename().string());
}

// Streams `src` into a new file `dst`, hashing while copying; `dst` is removed on failure.
Expected<TargetInfo> CopyAndHash(const fs::path& src, const fs::path& dst,
                                 const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  Fd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.fd < 0) {
    int e = errno;
    return Error(e == ENOENT ? Errc::kNotFound : Errc::kIo, src.string() + ": " + std::strerror(e));
  }
  struct stat st {};
  if (::fstat(in.fd, &st) != 0) return IoError(src, errno);
  if (!S_ISREG(st.st_mode)) return Error(Errc::kInvalidArgument, src.string() + ": not a regular file");
  const auto total = static_cast<std::uint64_t>(st.st_size);

  Fd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (out.fd < 0) return IoError(dst, errno);
  auto fail = [&](Error e) -> Error {
    ::close(out.Release());
    ::unlink(dst.c_str());
    return e;
  };
  Hasher h256(HashAlgorithm::kSha256), h512(HashAlgorithm::kSha512);
  std::vector<char> buf(kCopyBuffer);
  std::uint64_t done = 0;
  for (;;) {
    ssize_t n = ::read(in.fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(IoError(src, errno));
    }
    if (n == 0) break;
    std::string_view chunk(buf.data(), static_cast<std::size_t>(n));
    h256.Update(chunk);
    h512.Update(chunk);
    for (std::size_t off = 0; off < chunk.size();) {
      ssize_t w = ::write(out.fd, chunk.data() + off, chunk.size() - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        return fail(IoError(dst, errno));
      }
      off += static_cast<std::size_t>(w);
    }
    done += static_cast<std::uint64_t>(n);
    if (progress) progress(done, total);
  }
  if (::fchmod(out.fd, 0644) != 0 || ::fsync(out.fd) != 0) return fail(IoError(dst, errno));
  if (::close(out.Release()) != 0) {
    int e = errno;
    ::unlink(dst.c_str());
    return IoError(dst, e);
  }
  TargetInfo info;
  info.length = done;
  info.sha256 = h256.FinishHex();
  info.sha512 = h512.FinishHex();
  return info;
}

Expected<std::vector<std::string>> KeyIds(const std::vector<PublicKey>& keys, Json& key_map) {
  std::vector<std::string> ids;
  for (const auto& k : keys) {
    key_map[k.keyid()] = k.ToJson();
    ids.push_back(k.keyid());
  }
  return ids;
}

std::vector<PublicKey> Publics(const std::vector<PrivateKey>& keys) {
  std::vector<PublicKey> out;
  for (const auto& k : keys) out.push_back(k.public_key());
  return out;
}

std::size_t Distinct(const std::vector<PrivateKey>& keys) {
  std::set<std::string> ids;
  for (const auto& k : keys) ids.insert(k.keyid());
  return ids.size();
}

// The current public keys of a role, as root_signed lists them.
Expected<std::vector<PublicKey>> RoleKeys(const Json& root_signed, Role role) {
  std::vector<PublicKey> out;
  for (const auto& id : root_signed["roles"][RoleName(role)]["keyids"]) {
    const std::string keyid = id.get<std::string>();
    if (!root_signed["keys"].contains(keyid)) return Error(Errc::kParse, "root lists key id " + keyid + " without its key");
    UPK_TRY_ASSIGN(PublicKey k, PublicKey::FromJson(root_signed["keys"][keyid]));
    out.push_back(std::move(k));
  }
  return out;
}

Status CheckRootShape(const Json& root, const fs::path& where) {
  auto st = [&]() -> Status {
    const Json& s = root["signed"];
    UPK_TRY_ASSIGN(const Json* keys, GetObject(s, "keys"));
    (void)keys;
    UPK_TRY_ASSIGN(const Json* roles, GetObject(s, "roles"));
    for (Role r : kAllRoles) {
      UPK_TRY_ASSIGN(const Json* def, GetObject(*roles, RoleName(r)));
      UPK_TRY_ASSIGN(const Json* ids, GetArray(*def, "keyids"));
      for (const auto& id : *ids) {
        if (!id.is_string()) return Error(Errc::kParse, std::string("roles.") + RoleName(r) + ".keyids holds a non-string");
      }
      UPK_TRY_ASSIGN(std::int64_t threshold, GetInt(*def, "threshold"));
      if (threshold < 1) return Error(Errc::kParse, std::string("roles.") + RoleName(r) + ".threshold is not positive");
    }
    return OkStatus();
  }();
  if (!st) return st.error().Wrap(where.string());
  return OkStatus();
}

Status MakeDirectory(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Error(Errc::kIo, dir.string() + ": " + ec.message());
  return OkStatus();
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kRoot: return "root";
    case Role::kTargets: return "targets";
    case Role::kSnapshot: return "snapshot";
    case Role::kTimestamp: return "timestamp";
  }
  return "unknown";
}

Expected<Role> ParseRole(std::string_view name) {
  for (Role r : kAllRoles) {
    if (name == RoleName(r)) return r;
  }
  return Error(Errc::kInvalidArgument, "unknown role '" + std::string(name.substr(0, 32)) +
                                           "' (expected root, targets, snapshot or timestamp)");
}

std::chrono::seconds& ExpiryPolicy::For(Role role) {
  switch (role) {
    case Role::kRoot: return root;
    case Role::kTargets: return targets;
    case Role::kSnapshot: return snapshot;
    case Role::kTimestamp: break;
  }
  return timestamp;
}

std::chrono::seconds ExpiryPolicy::For(Role role) const {
  switch (role) {
    case Role::kRoot: return root;
    case Role::kTargets: return targets;
    case Role::kSnapshot: return snapshot;
    case Role::kTimestamp: break;
  }
  return timestamp;
}

Status ExpiryPolicy::Override(std::string_view text) {
  auto eq = text.find('=');
  if (eq == std::string_view::npos) {
    return Error(Errc::kInvalidArgument, "expiry '" + std::string(text.substr(0, 64)) + "' is not ROLE=DAYS");
  }
  UPK_TRY_ASSIGN(Role role, ParseRole(text.substr(0, eq)));
  std::string_view days = text.substr(eq + 1);
  if (days.empty() || days.size() > 5 || !std::all_of(days.begin(), days.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return Error(Errc::kInvalidArgument, "expiry '" + std::string(text.substr(0, 64)) + "': DAYS must be a positive integer");
  }
  int n = std::stoi(std::string(days));
  if (n < 1 || n > 36500) {
    return Error(Errc::kInvalidArgument, "expiry '" + std::string(text) + "': DAYS must be between 1 and 36500");
  }
  For(role) = std::chrono::days(n);
  return OkStatus();
}

Json TargetInfo::ToJson() const {
  Json j{{"length", length}, {"hashes", Json{{"sha256", sha256}, {"sha512", sha512}}}};
  if (!custom.is_null()) j["custom"] = custom;
  return j;
}

Expected<TargetInfo> TargetInfo::FromJson(const std::string& path, const Json& json) {
  auto parsed = [&]() -> Expected<TargetInfo> {
    TargetInfo t;
    t.path = path;
    UPK_TRY(CheckTargetPath(path));
    UPK_TRY_ASSIGN(std::int64_t declared_length, GetInt(json, "length"));
    if (declared_length < 0) return Error(Errc::kParse, "length is negative");
    t.length = static_cast<std::uint64_t>(declared_length);
    UPK_TRY_ASSIGN(const Json* hashes, GetObject(json, "hashes"));
    UPK_TRY_ASSIGN(t.sha256, GetString(*hashes, "sha256"));
    UPK_TRY_ASSIGN(t.sha512, GetString(*hashes, "sha512"));
    if (!IsLowerHex(t.sha256, 64) || !IsLowerHex(t.sha512, 128)) return Error(Errc::kParse, "hashes are not lower-case sha256/sha512 hex");
    if (json.contains("custom")) t.custom = json["custom"];
    return t;
  }();
  if (!parsed) return parsed.error().Wrap("target '" + path.substr(0, 128) + "'");
  return parsed;
}

Status CheckTargetPath(std::string_view path) {
  const std::string shown(path.substr(0, 128));
  if (path.empty()) return Error(Errc::kInvalidArgument, "target path is empty");
  if (path.size() > kMaxTargetPath) return Error(Errc::kInvalidArgument, "target path '" + shown + "...' is longer than 512 bytes");
  if (path.front() == '/') return Error(Errc::kInvalidArgument, "target path '" + shown + "' is absolute");
  std::size_t start = 0;
  for (;;) {
    std::size_t end = path.find('/', start);
    std::string_view comp = path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (comp.empty() || comp == "." || comp == "..") {
      return Error(Errc::kInvalidArgument, "target path '" + shown + "' has an empty, '.' or '..' component");
    }
    for (char c : comp) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                c == '-' || c == '+';
      if (!ok) {
        return Error(Errc::kInvalidArgument, "target path '" + shown +
                                                 "' may only hold letters, digits, '.', '_', '-', '+' and '/' (use --path)");
      }
    }
    if (end == std::string_view::npos) {
      if (comp.size() > kMaxTargetBaseName) {
        return Error(Errc::kInvalidArgument, "target path '" + shown + "': file name longer than 120 bytes");
      }
      break;
    }
    start = end + 1;
  }
  return OkStatus();
}

Expected<std::string> SerializeMetadata(const Json& metadata) {
  try {
    return metadata.dump(2) + "\n";
  } catch (const Json::exception& e) {
    return Error(Errc::kInvalidArgument, std::string("metadata cannot be serialised: ") + e.what());
  }
}

Json SnapshotSigned(std::int64_t version, SysTime expires, std::int64_t targets_version) {
  Json s = Common(Role::kSnapshot, version, expires);
  s["meta"] = Json{{"targets.json", Json{{"version", targets_version}}}};
  return s;
}

Json TimestampSigned(std::int64_t version, SysTime expires, std::int64_t snapshot_version,
                     std::string_view snapshot_bytes) {
  Json t = Common(Role::kTimestamp, version, expires);
  t["meta"] = Json{{"snapshot.json", Json{{"version", snapshot_version},
                                          {"length", snapshot_bytes.size()},
                                          {"hashes", Json{{"sha256", Sha256Hex(snapshot_bytes)},
                                                          {"sha512", Sha512Hex(snapshot_bytes)}}}}}};
  return t;
}

Json TargetsSigned(std::int64_t version, SysTime expires, const std::map<std::string, TargetInfo>& targets) {
  Json t = Common(Role::kTargets, version, expires);
  Json list = Json::object();
  for (const auto& [p, info] : targets) list[p] = info.ToJson();
  t["targets"] = list;
  return t;
}

std::string PackageTargetPath(const packages::Manifest& manifest) {
  return manifest.name + "/" + manifest.Id() + ".upk";
}

Json PackageCustom(const packages::Manifest& manifest) {
  return Json{{"upkeep", Json{{"name", manifest.name},
                              {"version", manifest.version.ToString()},
                              {"kind", packages::KindName(manifest.kind)}}}};
}

Expected<Json> SignMetadata(const Json& signed_part, const std::vector<PrivateKey>& keys) {
  if (keys.empty()) return Error(Errc::kInvalidArgument, "no signing key given");
  UPK_TRY_ASSIGN(std::string canonical, CanonicalJson(signed_part));
  std::map<std::string, const PrivateKey*> by_id;
  for (const auto& k : keys) by_id.emplace(k.keyid(), &k);
  Json sigs = Json::array();
  for (const auto& [id, key] : by_id) sigs.push_back(Json{{"keyid", id}, {"sig", ToHex(key->Sign(canonical))}});
  return Json{{"signatures", sigs}, {"signed", signed_part}};
}

Status VerifyRoleSignatures(const Json& metadata, const Json& root_signed, Role role) {
  const std::string name = RoleName(role);
  if (!metadata.is_object() || !metadata.contains("signed") || !metadata.contains("signatures") ||
      !metadata["signatures"].is_array()) {
    return Error(Errc::kParse, name + " metadata has no 'signed' or 'signatures'");
  }
  UPK_TRY(CheckRootShape(Json{{"signed", root_signed}}, "root"));
  UPK_TRY_ASSIGN(std::string canonical, CanonicalJson(metadata["signed"]));
  const Json& def = root_signed["roles"][name];
  std::set<std::string> allowed;
  for (const auto& id : def["keyids"]) allowed.insert(id.get<std::string>());
  std::set<std::string> valid;
  for (const auto& sig : metadata["signatures"]) {
    if (!sig.is_object() || !sig.contains("keyid") || !sig["keyid"].is_string() || !sig.contains("sig") ||
        !sig["sig"].is_string()) {
      return Error(Errc::kParse, name + " metadata has a malformed signature entry");
    }
    const std::string keyid = sig["keyid"].get<std::string>();
    if (!allowed.count(keyid) || valid.count(keyid) || !root_signed["keys"].contains(keyid)) continue;
    auto key = PublicKey::FromJson(root_signed["keys"][keyid]);
    auto raw = FromHex(sig["sig"].get<std::string>());
    if (key && raw && key->Verify(canonical, *raw)) valid.insert(keyid);
  }
  const auto threshold = def["threshold"].get<std::int64_t>();
  if (static_cast<std::int64_t>(valid.size()) < threshold) {
    return Error(Errc::kVerification, name + " metadata has " + std::to_string(valid.size()) +
                                          " valid signature(s), needs " + std::to_string(threshold));
  }
  return OkStatus();
}

RepositoryWriter::RepositoryWriter(fs::path dir, const Clock& clock) : dir_(std::move(dir)), clock_(clock) {}

Status RepositoryWriter::Init(const InitOptions& o) {
  if (o.root_keys.empty()) return Error(Errc::kInvalidArgument, "init needs at least one root key");
  if (o.root_threshold < 1) return Error(Errc::kInvalidArgument, "root threshold must be at least 1");
  if (static_cast<std::size_t>(o.root_threshold) > Distinct(o.root_keys)) {
    return Error(Errc::kInvalidArgument, "root threshold " + std::to_string(o.root_threshold) + " is more than the " +
                                             std::to_string(Distinct(o.root_keys)) + " distinct root key(s) given");
  }
  if (o.targets_keys.empty() || o.snapshot_keys.empty() || o.timestamp_keys.empty()) {
    return Error(Errc::kInvalidArgument, "init needs a targets, a snapshot and a timestamp key");
  }

  std::error_code ec;
  bool created = false;
  if (fs::exists(dir_, ec)) {
    if (!fs::is_directory(dir_, ec)) return Error(Errc::kInvalidArgument, dir_.string() + ": exists and is not a directory");
    if (!fs::is_empty(dir_, ec) || ec) {
      return Error(Errc::kPolicy, dir_.string() + ": exists and is not empty; refusing to initialise a repository there");
    }
  } else {
    UPK_TRY(MakeDirectory(dir_));
    created = true;
  }

  // Everything is signed in memory first, so a bad key writes nothing.
  const SysTime now = clock_.Now();
  Json keys = Json::object();
  UPK_TRY_ASSIGN(auto root_ids, KeyIds(Publics(o.root_keys), keys));
  UPK_TRY_ASSIGN(auto targets_ids, KeyIds(Publics(o.targets_keys), keys));
  UPK_TRY_ASSIGN(auto snapshot_ids, KeyIds(Publics(o.snapshot_keys), keys));
  UPK_TRY_ASSIGN(auto timestamp_ids, KeyIds(Publics(o.timestamp_keys), keys));
  Json root = Common(Role::kRoot, 1, Later(now, o.expiry.root));
  root["consistent_snapshot"] = true;
  root["keys"] = keys;
  root["roles"] = Json{{"root", RoleDefinition(root_ids, o.root_threshold)},
                       {"targets", RoleDefinition(targets_ids, 1)},
                       {"snapshot", RoleDefinition(snapshot_ids, 1)},
                       {"timestamp", RoleDefinition(timestamp_ids, 1)}};
  UPK_TRY_ASSIGN(Json root_md, SignMetadata(root, o.root_keys));
  UPK_TRY_ASSIGN(Json targets_md, SignMetadata(TargetsSigned(1, Later(now, o.expiry.targets), {}), o.targets_keys));
  UPK_TRY_ASSIGN(Json snapshot_md, SignMetadata(SnapshotSigned(1, Later(now, o.expiry.snapshot), 1), o.snapshot_keys));
  UPK_TRY_ASSIGN(std::string root_text, Serialize(root_md));
  UPK_TRY_ASSIGN(std::string targets_text, Serialize(targets_md));
  UPK_TRY_ASSIGN(std::string snapshot_text, Serialize(snapshot_md));
  UPK_TRY_ASSIGN(Json timestamp_md,
                 SignMetadata(TimestampSigned(1, Later(now, o.expiry.timestamp), 1, snapshot_text), o.timestamp_keys));
  UPK_TRY_ASSIGN(std::string timestamp_text, Serialize(timestamp_md));

  const fs::path meta = dir_ / "metadata";
  auto write_all = [&]() -> Status {
    UPK_TRY_ASSIGN(auto lock, RepoLock::Acquire(dir_));
    UPK_TRY(MakeDirectory(meta));
    UPK_TRY(MakeDirectory(dir_ / "targets"));
    UPK_TRY(WriteFileAtomic(meta / "1.root.json", root_text));
    UPK_TRY(WriteFileAtomic(meta / "root.json", root_text));
    UPK_TRY(WriteFileAtomic(meta / "1.targets.json", targets_text));
    UPK_TRY(WriteFileAtomic(meta / "1.snapshot.json", snapshot_text));
    UPK_TRY(WriteFileAtomic(meta / "timestamp.json", timestamp_text));
    return OkStatus();
  }();
  if (!write_all) {
    // The directory was empty (or absent) before: put it back that way.
    fs::remove_all(meta, ec);
    fs::remove_all(dir_ / "targets", ec);
    fs::remove(dir_ / ".upk-repo.lock", ec);
    if (created) fs::remove(dir_, ec);
    return write_all.error();
  }
  return OkStatus();
}

Expected<AddResult> RepositoryWriter::Add(const fs::path& file, const AddOptions& options) {
  UPK_TRY_ASSIGN(auto lock, LockRepository(dir_));
  UPK_TRY_ASSIGN(State st, LoadState(dir_));
  UPK_TRY_ASSIGN(Staging staging, LoadStaging(dir_));
  const std::string target_path = options.target_path.empty() ? file.filename().string() : options.target_path;
  UPK_TRY(CheckTargetPath(target_path));

  const fs::path targets_dir = dir_ / "targets";
  const fs::path dest_dir = targets_dir / fs::path(target_path).parent_path();
  UPK_TRY(MakeDirectory(dest_dir));
  const fs::path tmp = TempSibling(dest_dir / fs::path(target_path).filename());
  UPK_TRY_ASSIGN(TargetInfo info, CopyAndHash(file, tmp, options.progress));
  info.path = target_path;
  info.custom = options.custom;

  const auto effective = Effective(st, staging);
  auto existing = effective.find(target_path);
  AddResult result;
  result.target = info;
  const fs::path p256 = HashPrefixed(targets_dir, target_path, info.sha256);
  const fs::path p512 = HashPrefixed(targets_dir, target_path, info.sha512);
  std::error_code ec;
  if (existing != effective.end() && existing->second == info && fs::exists(p256, ec) && fs::exists(p512, ec)) {
    ::unlink(tmp.c_str());
    result.unchanged = true;
    return result;
  }
  if (existing != effective.end() && !(existing->second == info) && !options.replace) {
    ::unlink(tmp.c_str());
    return Error(Errc::kPolicy, "target '" + target_path + "' already lists a different file (sha256 " +
                                    existing->second.sha256.substr(0, 16) + "...); use --replace to replace it");
  }

  // Both hash-prefixed names end up on one inode; rename() makes each name appear complete.
  if (::rename(tmp.c_str(), p256.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return IoError(p256, e);
  }
  const fs::path tmp_link = TempSibling(p512);
  if (::link(p256.c_str(), tmp_link.c_str()) != 0) {
    // Some file systems have no hard links; a second copy serves clients just as well.
    int e = errno;
    if (e != EPERM && e != EXDEV && e != ENOTSUP && e != EMLINK) return IoError(tmp_link, e);
    std::error_code cec;
    fs::copy_file(p256, tmp_link, cec);
    if (cec) {
      fs::remove(tmp_link, cec);
      return Error(Errc::kIo, tmp_link.string() + ": " + cec.message());
    }
  }
  if (::rename(tmp_link.c_str(), p512.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp_link.c_str());
    return IoError(p512, e);
  }
  UPK_TRY(SyncDirectory(dest_dir));

  staging.removals.erase(target_path);
  auto pub = st.published.find(target_path);
  if (pub != st.published.end() && pub->second == info) {
    staging.adds.erase(target_path);  // back to what is published
  } else {
    staging.adds[target_path] = info;
  }
  UPK_TRY(SaveStaging(dir_, staging));
  return result;
}

Status RepositoryWriter::Remove(const std::string& target_path) {
  UPK_TRY(CheckTargetPath(target_path));
  UPK_TRY_ASSIGN(auto lock, LockRepository(dir_));
  UPK_TRY_ASSIGN(State st, LoadState(dir_));
  UPK_TRY_ASSIGN(Staging staging, LoadStaging(dir_));
  const auto effective = Effective(st, staging);
  if (!effective.count(target_path)) return Error(Errc::kNotFound, "target '" + target_path + "' is not listed");
  staging.adds.erase(target_path);
  if (st.published.count(target_path)) staging.removals.insert(target_path);
  return SaveStaging(dir_, staging);
}

Expected<PublishResult> RepositoryWriter::Publish(const PublishKeys& keys, const ExpiryPolicy& expiry) {
  UPK_TRY_ASSIGN(auto lock, LockRepository(dir_));
  UPK_TRY_ASSIGN(State st, LoadState(dir_));
  const fs::path meta = dir_ / "metadata";
  UPK_TRY(CheckRootShape(st.root, meta / "root.json"));
  UPK_TRY_ASSIGN(Staging staging, LoadStaging(dir_));
  const Json& root_signed = st.root["signed"];
  UPK_TRY(CheckSigners(root_signed, Role::kTargets, keys.targets));
  UPK_TRY(CheckSigners(root_signed, Role::kSnapshot, keys.snapshot));
  UPK_TRY(CheckSigners(root_signed, Role::kTimestamp, keys.timestamp));

  const auto targets = Effective(st, staging);
  // Never publish metadata that names a file the server does not have.
  const fs::path targets_dir = dir_ / "targets";
  for (const auto& [p, info] : targets) {
    for (const auto* hash : {&info.sha256, &info.sha512}) {
      const fs::path f = HashPrefixed(targets_dir, p, *hash);
      std::error_code ec;
      auto size = fs::file_size(f, ec);
      if (ec) return Error(Errc::kNotFound, "target '" + p + "': " + f.string() + ": " + ec.message());
      if (size != info.length) {
        return Error(Errc::kVerification, "target '" + p + "': " + f.string() + " has " + std::to_string(size) +
                                              " bytes, metadata says " + std::to_string(info.length));
      }
    }
  }

  const SysTime now = clock_.Now();
  PublishResult r;
  r.target_count = targets.size();
  r.targets = {VersionOf(st.targets) + 1, Later(now, expiry.targets)};
  r.snapshot = {VersionOf(st.snapshot) + 1, Later(now, expiry.snapshot)};
  r.timestamp = {VersionOf(st.timestamp) + 1, Later(now, expiry.timestamp)};
  UPK_TRY_ASSIGN(Json targets_md, SignMetadata(TargetsSigned(r.targets.version, r.targets.expires, targets), keys.targets));
  UPK_TRY_ASSIGN(Json snapshot_md,
                 SignMetadata(SnapshotSigned(r.snapshot.version, r.snapshot.expires, r.targets.version), keys.snapshot));
  UPK_TRY_ASSIGN(std::string targets_text, Serialize(targets_md));
  UPK_TRY_ASSIGN(std::string snapshot_text, Serialize(snapshot_md));
  UPK_TRY_ASSIGN(Json timestamp_md, SignMetadata(TimestampSigned(r.timestamp.version, r.timestamp.expires,
                                                                 r.snapshot.version, snapshot_text),
                                                 keys.timestamp));
  UPK_TRY_ASSIGN(std::string timestamp_text, Serialize(timestamp_md));

  // Order matters: the timestamp makes the new snapshot and targets visible, so it goes last.
  UPK_TRY(WriteFileAtomic(meta / (std::to_string(r.targets.version) + ".targets.json"), targets_text));
  UPK_TRY(WriteFileAtomic(meta / (std::to_string(r.snapshot.version) + ".snapshot.json"), snapshot_text));
  UPK_TRY(WriteFileAtomic(meta / "timestamp.json", timestamp_text));
  UPK_TRY(SaveStaging(dir_, Staging{}));
  return r;
}

Expected<RoleState> RepositoryWriter::RefreshTimestamp(const std::vector<PrivateKey>& timestamp_keys,
                                                       const ExpiryPolicy& expiry, std::optional<SysTime> expires_at) {
  UPK_TRY_ASSIGN(auto lock, LockRepository(dir_));
  UPK_TRY_ASSIGN(State st, LoadState(dir_));
  const fs::path meta = dir_ / "metadata";
  UPK_TRY(CheckRootShape(st.root, meta / "root.json"));
  UPK_TRY(CheckSigners(st.root["signed"], Role::kTimestamp, timestamp_keys));
  RoleState r{VersionOf(st.timestamp) + 1, expires_at ? *expires_at : Later(clock_.Now(), expiry.timestamp)};
  UPK_TRY_ASSIGN(Json md, SignMetadata(TimestampSigned(r.version, r.expires, VersionOf(st.snapshot), st.snapshot_bytes),
                                       timestamp_keys));
  UPK_TRY_ASSIGN(std::string text, Serialize(md));
  UPK_TRY(WriteFileAtomic(meta / "timestamp.json", text));
  return r;
}

Expected<RoleState> RepositoryWriter::RotateRoot(const RotateRootOptions& o) {
  if (o.new_root_keys.empty()) return Error(Errc::kInvalidArgument, "rotate-root needs at least one new root key");
  if (o.new_root_threshold < 1 || static_cast<std::size_t>(o.new_root_threshold) > Distinct(o.new_root_keys)) {
    return Error(Errc::kInvalidArgument, "new root threshold " + std::to_string(o.new_root_threshold) +
                                             " must be between 1 and the " + std::to_string(Distinct(o.new_root_keys)) +
                                             " distinct new root key(s) given");
  }
  UPK_TRY_ASSIGN(auto lock, LockRepository(dir_));
  const fs::path meta = dir_ / "metadata";
  UPK_TRY_ASSIGN(Json old_root, LoadRoot(meta));
  UPK_TRY(CheckRootShape(old_root, meta / "root.json"));
  const Json& old_signed = old_root["signed"];
  auto old_ok = CheckSigners(old_signed, Role::kRoot, o.old_root_keys);
  if (!old_ok) return old_ok.error().Wrap("old root keys");

  Json keys = Json::object();
  UPK_TRY_ASSIGN(auto root_ids, KeyIds(Publics(o.new_root_keys), keys));
  Json roles = Json::object();
  roles["root"] = RoleDefinition(root_ids, o.new_root_threshold);
  for (Role role : {Role::kTargets, Role::kSnapshot, Role::kTimestamp}) {
    const auto& replacement = role == Role::kTargets    ? o.targets_keys
                              : role == Role::kSnapshot ? o.snapshot_keys
                                                        : o.timestamp_keys;
    std::vector<PublicKey> current;
    if (replacement.empty()) {
      UPK_TRY_ASSIGN(current, RoleKeys(old_signed, role));
    }
    const auto& use = replacement.empty() ? current : replacement;
    UPK_TRY_ASSIGN(auto ids, KeyIds(use, keys));
    int threshold = replacement.empty() ? static_cast<int>(old_signed["roles"][RoleName(role)]["threshold"].get<std::int64_t>()) : 1;
    if (static_cast<std::size_t>(threshold) > ids.size()) threshold = static_cast<int>(ids.size());
    roles[RoleName(role)] = RoleDefinition(ids, threshold);
  }
  RoleState r{VersionOf(old_root) + 1, Later(clock_.Now(), o.expiry.root)};
  Json root = Common(Role::kRoot, r.version, r.expires);
  root["consistent_snapshot"] = true;
  root["keys"] = keys;
  root["roles"] = roles;
  // Clients accept version N+1 only if signed by a threshold of both the old and the new root keys.
  std::vector<PrivateKey> signers = o.old_root_keys;
  signers.insert(signers.end(), o.new_root_keys.begin(), o.new_root_keys.end());
  UPK_TRY_ASSIGN(Json md, SignMetadata(root, signers));
  UPK_TRY_ASSIGN(std::string text, Serialize(md));
  UPK_TRY(WriteFileAtomic(meta / (std::to_string(r.version) + ".root.json"), text));
  UPK_TRY(WriteFileAtomic(meta / "root.json", text));
  return r;
}

Expected<RepositoryStatus> RepositoryWriter::GetStatus() const {
  UPK_TRY_ASSIGN(State st, LoadState(dir_));
  UPK_TRY_ASSIGN(Staging staging, LoadStaging(dir_));
  RepositoryStatus s;
  s.root = StateOf(st.root);
  s.targets = StateOf(st.targets);
  s.snapshot = StateOf(st.snapshot);
  s.timestamp = StateOf(st.timestamp);
  const Json& root_signed = st.root["signed"];
  s.consistent_snapshot = root_signed.contains("consistent_snapshot") && root_signed["consistent_snapshot"].is_boolean() &&
                          root_signed["consistent_snapshot"].get<bool>();
  for (const auto& [p, info] : st.published) s.targets_list.push_back(info);
  for (const auto& [p, info] : staging.adds) s.staged_adds.push_back(info);
  s.staged_removals.assign(staging.removals.begin(), staging.removals.end());
  return s;
}

}  // namespace upkeep::tuf
