#include "upkeep/tuf/updater.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <utility>
#include <vector>

#include "upkeep/common/files.hpp"

namespace upkeep::tuf {
namespace {

std::string WithSlash(std::string url) {
  if (!url.empty() && url.back() != '/') url.push_back('/');
  return url;
}

// What identifies a role's keys for the fast-forward recovery rule (5.3.11): the threshold and
// each listed id together with the key it stands for.
std::pair<std::int64_t, std::set<std::pair<std::string, std::string>>> KeyIdentity(const Root& root,
                                                                                   const std::string& role) {
  std::pair<std::int64_t, std::set<std::pair<std::string, std::string>>> out;
  auto it = root.roles.find(role);
  if (it == root.roles.end()) return out;
  out.first = it->second.threshold;
  for (const auto& id : it->second.keyids) {
    auto k = root.keys.find(id);
    std::string actual = (k != root.keys.end() && k->second) ? k->second->keyid() : std::string();
    out.second.emplace(id, actual);
  }
  return out;
}

}  // namespace

std::string PercentEncode(std::string_view s, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                      c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
    if (unreserved) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

Updater::Updater(UpdaterOptions options, Fetcher& fetcher, const Clock& clock)
    : options_(std::move(options)), fetcher_(fetcher), clock_(clock) {
  options_.metadata_base_url = WithSlash(options_.metadata_base_url);
  options_.target_base_url = WithSlash(options_.target_base_url);
}

std::filesystem::path Updater::MetadataPath(const std::string& role) const {
  return options_.metadata_dir / (PercentEncode(role) + ".json");
}

Expected<std::string> Updater::LoadLocal(const std::string& role, std::uint64_t max_length) const {
  return ReadFileBounded(MetadataPath(role), max_length);
}

Status Updater::Persist(const std::string& role, std::string_view data) const {
  return WriteFileAtomic(MetadataPath(role), data);
}

Expected<std::string> Updater::DownloadMetadata(const std::string& role, std::uint64_t max_length,
                                                std::optional<std::int64_t> version) {
  std::string url = options_.metadata_base_url;
  if (version) url += std::to_string(*version) + ".";
  url += PercentEncode(role) + ".json";
  return fetcher_.Fetch(url, max_length);
}

Status Updater::Refresh() {
  trusted_.reset();
  // 5.1: one reference time for the whole cycle.
  const SysTime now = clock_.Now();
  auto root_bytes = LoadLocal(kRootRole, options_.config.root_max_length);
  if (!root_bytes) return root_bytes.error().Wrap("no trusted root (run init first)");
  UPK_TRY_ASSIGN(TrustedMetadataSet set, TrustedMetadataSet::Create(*root_bytes, now));
  trusted_.emplace(std::move(set));

  const Root initial = trusted_->root().signed_body;
  UPK_TRY(LoadRoot());

  // 5.3.11: new timestamp or snapshot keys mean the old copies may be from a compromised
  // repository with inflated versions; forget them so the recovered repository can proceed.
  const Root& final_root = trusted_->root().signed_body;
  if (KeyIdentity(initial, kTimestampRole) != KeyIdentity(final_root, kTimestampRole) ||
      KeyIdentity(initial, kSnapshotRole) != KeyIdentity(final_root, kSnapshotRole)) {
    std::error_code ec;
    std::filesystem::remove(MetadataPath(kTimestampRole), ec);
    std::filesystem::remove(MetadataPath(kSnapshotRole), ec);
  }

  UPK_TRY(LoadTimestamp());
  UPK_TRY(LoadSnapshot());
  auto targets = LoadTargets(kTargetsRole, kRootRole);
  if (!targets) return targets.error();
  return OkStatus();
}

Status Updater::LoadRoot() {
  for (std::uint32_t i = 0; i < options_.config.max_root_rotations; ++i) {
    const std::int64_t next = trusted_->root().signed_body.version + 1;
    auto data = DownloadMetadata(kRootRole, options_.config.root_max_length, next);
    if (!data) {
      // No N+1 on the server: the trusted root is the newest.
      if (data.error().code() == Errc::kNotFound) return OkStatus();
      return data.error();
    }
    UPK_TRY(trusted_->UpdateRoot(*data));
    UPK_TRY(Persist(kRootRole, *data));
  }
  return OkStatus();
}

Status Updater::LoadTimestamp() {
  // A valid local copy (even expired) is the baseline for the rollback checks.
  if (auto local = LoadLocal(kTimestampRole, options_.config.timestamp_max_length)) {
    (void)trusted_->UpdateTimestamp(*local);
  }
  UPK_TRY_ASSIGN(std::string data, DownloadMetadata(kTimestampRole, options_.config.timestamp_max_length, std::nullopt));
  UPK_TRY_ASSIGN(TimestampUpdate update, trusted_->UpdateTimestamp(data));
  if (update == TimestampUpdate::kUnchanged) return OkStatus();
  return Persist(kTimestampRole, data);
}

Status Updater::LoadSnapshot() {
  if (auto local = LoadLocal(kSnapshotRole, options_.config.snapshot_max_length)) {
    // Valid as final: no need to download. Otherwise it still guards against rollback.
    if (trusted_->UpdateSnapshot(*local, /*trusted=*/true)) return OkStatus();
  }
  const MetaFile& meta = trusted_->timestamp()->signed_body.snapshot_meta;
  const std::uint64_t max = meta.length && *meta.length > 0 ? *meta.length : options_.config.snapshot_max_length;
  std::optional<std::int64_t> version;
  if (trusted_->root().signed_body.consistent_snapshot) version = meta.version;
  UPK_TRY_ASSIGN(std::string data, DownloadMetadata(kSnapshotRole, max, version));
  UPK_TRY(trusted_->UpdateSnapshot(data));
  return Persist(kSnapshotRole, data);
}

Expected<const Targets*> Updater::LoadTargets(const std::string& role, const std::string& parent) {
  if (const auto* t = trusted_->targets(role)) return &t->signed_body;
  if (auto local = LoadLocal(role, options_.config.targets_max_length)) {
    auto loaded = trusted_->UpdateDelegatedTargets(*local, role, parent, /*trusted=*/true);
    if (loaded) return loaded;
  }
  const auto& meta_map = trusted_->snapshot()->signed_body.meta;
  auto it = meta_map.find(role + ".json");
  if (it == meta_map.end()) {
    return Error(Errc::kVerification, "role '" + role + "' is delegated but snapshot.json does not list it");
  }
  const MetaFile& meta = it->second;
  const std::uint64_t max = meta.length && *meta.length > 0 ? *meta.length : options_.config.targets_max_length;
  std::optional<std::int64_t> version;
  if (trusted_->root().signed_body.consistent_snapshot) version = meta.version;
  UPK_TRY_ASSIGN(std::string data, DownloadMetadata(role, max, version));
  UPK_TRY_ASSIGN(const Targets* loaded, trusted_->UpdateDelegatedTargets(data, role, parent));
  UPK_TRY(Persist(role, data));
  return loaded;
}

Expected<std::optional<TargetFile>> Updater::GetTargetInfo(const std::string& target_path) {
  if (!trusted_ || !trusted_->targets(kTargetsRole)) UPK_TRY(Refresh());
  // Pre-order depth-first search; the stack holds (role, delegator).
  std::vector<std::pair<std::string, std::string>> to_visit = {{kTargetsRole, kRootRole}};
  std::set<std::string> visited;
  while (visited.size() <= options_.config.max_delegations && !to_visit.empty()) {
    auto [role, parent] = to_visit.back();
    to_visit.pop_back();
    if (visited.count(role)) continue;
    UPK_TRY_ASSIGN(const Targets* targets, LoadTargets(role, parent));
    auto found = targets->targets.find(target_path);
    if (found != targets->targets.end()) return std::optional<TargetFile>(found->second);
    visited.insert(role);
    if (!targets->delegations) continue;
    std::vector<std::pair<std::string, std::string>> children;
    for (const auto& child : targets->delegations->roles) {
      if (!child.IsDelegatedPath(target_path)) continue;
      children.emplace_back(child.name, role);
      if (child.terminating) {
        // Nothing outside this role's subtree may answer for the path.
        to_visit.clear();
        break;
      }
    }
    to_visit.insert(to_visit.end(), children.rbegin(), children.rend());
  }
  return std::optional<TargetFile>();
}

std::filesystem::path Updater::DefaultTargetPath(const TargetFile& info) const {
  return options_.target_dir / PercentEncode(info.path);
}

std::optional<std::filesystem::path> Updater::FindCachedTarget(const TargetFile& info,
                                                               const std::filesystem::path& file) const {
  std::filesystem::path path = file.empty() ? DefaultTargetPath(info) : file;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;
  if (!info.VerifyFile(path)) return std::nullopt;
  return path;
}

Expected<std::filesystem::path> Updater::DownloadTarget(const TargetFile& info, const std::filesystem::path& file,
                                                        const std::string& base_url, const Progress& progress) {
  // The naming rule (consistent snapshots) comes from the trusted root.
  if (!trusted_) return Error(Errc::kInvalidArgument, "download of '" + info.path + "' before Refresh()");
  if (file.empty() && options_.target_dir.empty()) {
    return Error(Errc::kInvalidArgument, "no target directory given for '" + info.path + "'");
  }
  const std::string base = base_url.empty() ? options_.target_base_url : WithSlash(base_url);
  if (base.empty()) return Error(Errc::kInvalidArgument, "no target base URL given for '" + info.path + "'");
  const std::filesystem::path dest = file.empty() ? DefaultTargetPath(info) : file;

  std::string url_path = PercentEncode(info.path, /*keep_slash=*/true);
  if (trusted_->root().signed_body.consistent_snapshot && options_.config.prefix_targets_with_hash) {
    auto h = info.hashes.find("sha256");
    const std::string& digest = h != info.hashes.end() ? h->second : info.hashes.begin()->second;
    auto slash = info.path.rfind('/');
    std::string dir = slash == std::string::npos ? std::string() : info.path.substr(0, slash + 1);
    std::string name = slash == std::string::npos ? info.path : info.path.substr(slash + 1);
    url_path = PercentEncode(dir, true) + PercentEncode(digest) + "." + PercentEncode(name);
  }
  const std::string url = base + url_path;

  UPK_TRY_ASSIGN(DigestChecker checker, DigestChecker::Create(info.length, info.hashes, "target '" + info.path + "'"));
  const std::filesystem::path tmp = TempSibling(dest);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Error(Errc::kIo, tmp.string() + ": " + std::strerror(errno));
  auto st = fetcher_.Stream(url, info.length, [&](std::string_view chunk) -> Status {
    checker.Update(chunk);
    if (checker.size() > info.length) {
      return Error(Errc::kVerification, "target '" + info.path + "': longer than the " + std::to_string(info.length) +
                                            " bytes its metadata gives");
    }
    UPK_TRY(WriteAll(fd, chunk, tmp));
    if (progress) progress(checker.size(), info.length);
    return OkStatus();
  });
  if (!st && st.error().code() == Errc::kLimit) {
    st = Error(Errc::kVerification, "target '" + info.path + "': longer than the " + std::to_string(info.length) +
                                        " bytes its metadata gives");
  }
  if (st) st = checker.Finish();
  if (st && ::fsync(fd) != 0) st = Error(Errc::kIo, tmp.string() + ": " + std::strerror(errno));
  if (::close(fd) != 0 && st) st = Error(Errc::kIo, tmp.string() + ": " + std::strerror(errno));
  if (st && std::rename(tmp.c_str(), dest.c_str()) != 0) {
    st = Error(Errc::kIo, dest.string() + ": " + std::strerror(errno));
  }
  if (!st) {
    ::unlink(tmp.c_str());
    return st.error();
  }
  UPK_TRY(SyncDirectory(dest.parent_path()));
  return dest;
}

}  // namespace upkeep::tuf
