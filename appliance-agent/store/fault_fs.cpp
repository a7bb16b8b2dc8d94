// FaultFs: crash points and a power-loss model over a real directory (see fault_fs.hpp).
// The model keeps inodes (kind, mode, synced content, symlink target) and two entry maps per
// directory inode: `live` (what the directory holds now) and `durable` (as of its last SyncDir).
#include "upkeep/agent/fault_fs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>
#include <vector>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"

namespace upkeep::agent {
namespace fs = std::filesystem;

namespace {

enum class Kind { kFile, kDir, kSymlink };

struct Inode {
  Kind kind = Kind::kFile;
  unsigned mode = 0644;
  std::string synced;  // file content as of the last sync
  fs::path target;     // symlinks
};

using Entries = std::map<std::string, std::uint64_t>;

constexpr std::uint64_t kMaxModelRead = std::uint64_t{1} << 34;

Expected<std::string> ReadAllFd(int fd, const fs::path& path) {
  std::string out;
  char buf[65536];
  off_t off = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buf, sizeof buf, off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error(Errc::kIo, path.string() + ": FaultFs read back: " + std::strerror(errno));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    off += n;
  }
  return out;
}

fs::path DirOf(const fs::path& path) {
  fs::path dir = path.parent_path();
  return dir.empty() ? fs::path(".") : dir;
}

fs::path Normal(const fs::path& p) {
  fs::path n = p.lexically_normal();
  if (!n.has_filename() && n.has_relative_path()) n = n.parent_path();  // trailing '/'
  return n;
}

}  // namespace

struct FaultFs::Model {
  std::map<std::uint64_t, Inode> inodes;
  std::map<std::uint64_t, Entries> live;
  std::map<std::uint64_t, Entries> durable;
  std::uint64_t next_id = 1;
  std::uint64_t root_id = 0;
  std::string error;  // set when the snapshot failed
  fs::path root;

  std::uint64_t New(Kind kind, unsigned mode) {
    std::uint64_t id = next_id++;
    Inode n;
    n.kind = kind;
    n.mode = mode;
    inodes[id] = std::move(n);
    return id;
  }

  // Components of `path` below the root, or nullopt if it is not under the root.
  std::optional<std::vector<std::string>> Components(const fs::path& path) const {
    fs::path p = Normal(path);
    if (!p.is_absolute()) return std::nullopt;
    fs::path rel = p.lexically_relative(root);
    if (rel.empty()) return std::nullopt;
    std::vector<std::string> out;
    for (const auto& c : rel) {
      std::string s = c.string();
      if (s == "..") return std::nullopt;
      if (s == "." || s.empty()) continue;
      out.push_back(s);
    }
    return out;
  }

  std::optional<std::uint64_t> Lookup(const fs::path& path, bool follow_last, int depth = 0) {
    if (depth > 16) return std::nullopt;
    auto comps = Components(path);
    if (!comps) return std::nullopt;
    std::uint64_t cur = root_id;
    fs::path cur_path = root;
    for (std::size_t i = 0; i < comps->size(); ++i) {
      const Entries& ents = live[cur];
      auto it = ents.find((*comps)[i]);
      if (it == ents.end()) return std::nullopt;
      std::uint64_t id = it->second;
      const Inode& n = inodes[id];
      bool last = i + 1 == comps->size();
      if (n.kind == Kind::kSymlink && (!last || follow_last)) {
        fs::path next = n.target.is_absolute() ? n.target : cur_path / n.target;
        for (std::size_t j = i + 1; j < comps->size(); ++j) next /= (*comps)[j];
        return Lookup(next, follow_last, depth + 1);
      }
      if (!last && n.kind != Kind::kDir) return std::nullopt;
      cur = id;
      cur_path /= (*comps)[i];
    }
    return cur;
  }

  // The directory inode holding `path`'s entry, and the entry's name.
  std::optional<std::pair<std::uint64_t, std::string>> Parent(const fs::path& path) {
    fs::path p = Normal(path);
    if (!p.has_filename() || p == root) return std::nullopt;
    auto dir = Lookup(p.parent_path(), true);
    if (!dir || inodes[*dir].kind != Kind::kDir) return std::nullopt;
    return std::make_pair(*dir, p.filename().string());
  }

  Status Scan(std::uint64_t dir_id, const fs::path& dir, int depth) {
    if (depth > 64) return Error(Errc::kInternal, dir.string() + ": FaultFs: tree too deep");
    std::error_code ec;
    Entries& ents = live[dir_id];
    for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
      fs::path p = it->path();
      struct stat st;
      if (::lstat(p.c_str(), &st) != 0) return Error(Errc::kIo, p.string() + ": lstat: " + std::strerror(errno));
      std::uint64_t id = 0;
      if (S_ISLNK(st.st_mode)) {
        id = New(Kind::kSymlink, 0777);
        std::error_code lec;
        inodes[id].target = fs::read_symlink(p, lec);
        if (lec) return Error(Errc::kIo, p.string() + ": readlink: " + lec.message());
      } else if (S_ISDIR(st.st_mode)) {
        id = New(Kind::kDir, st.st_mode & 07777);
        UPK_TRY(Scan(id, p, depth + 1));
      } else if (S_ISREG(st.st_mode)) {
        id = New(Kind::kFile, st.st_mode & 07777);
        UPK_TRY_ASSIGN(inodes[id].synced, ReadFileBounded(p, kMaxModelRead));
      } else {
        continue;  // sockets, fifos: not modelled
      }
      ents[p.filename().string()] = id;
    }
    if (ec) return Error(Errc::kIo, dir.string() + ": FaultFs scan: " + ec.message());
    durable[dir_id] = ents;
    return OkStatus();
  }

  void Snapshot() {
    inodes.clear();
    live.clear();
    durable.clear();
    error.clear();
    root_id = New(Kind::kDir, 0755);
    Status st = Scan(root_id, root, 0);
    if (!st) error = st.error().message();
  }

  Status Rebuild(std::uint64_t dir_id, const fs::path& dir, int depth) {
    if (depth > 64) return Error(Errc::kInternal, dir.string() + ": FaultFs: tree too deep");
    auto d = durable.find(dir_id);
    if (d == durable.end()) return OkStatus();
    for (const auto& [name, id] : d->second) {
      const Inode& n = inodes[id];
      fs::path p = dir / name;
      switch (n.kind) {
        case Kind::kFile: {
          int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, n.mode);
          if (fd < 0) return Error(Errc::kIo, p.string() + ": FaultFs rebuild: " + std::strerror(errno));
          Status st = WriteAll(fd, n.synced, p);
          ::fchmod(fd, n.mode);
          ::close(fd);
          UPK_TRY(st);
          break;
        }
        case Kind::kDir:
          if (::mkdir(p.c_str(), n.mode) != 0 && errno != EEXIST)
            return Error(Errc::kIo, p.string() + ": FaultFs rebuild: " + std::strerror(errno));
          UPK_TRY(Rebuild(id, p, depth + 1));
          break;
        case Kind::kSymlink:
          if (::symlink(n.target.c_str(), p.c_str()) != 0)
            return Error(Errc::kIo, p.string() + ": FaultFs rebuild: " + std::strerror(errno));
          break;
      }
    }
    return OkStatus();
  }
};

namespace {
// The root or a directory above it: outside the model, but a store whose directory is the root
// syncs its parent, so SyncDir/CreateDirectories on these pass through (the root is durable).
bool AtOrAboveRoot(const fs::path& path, const fs::path& root) {
  fs::path p = Normal(path);
  if (!p.is_absolute()) return false;
  fs::path rel = root.lexically_relative(p);
  return !rel.empty() && (rel.begin() == rel.end() || *rel.begin() != "..");
}

Error Untracked(const fs::path& path) {
  return Error(Errc::kInvalidArgument, path.string() + ": FaultFs: not under its root or not created through it");
}
}  // namespace

class FaultAppendFile final : public AppendFile {
 public:
  FaultAppendFile(FaultFs* owner, std::unique_ptr<AppendFile> inner, std::uint64_t inode, int read_fd, fs::path path)
      : fs_(owner), inner_(std::move(inner)), inode_(inode), read_fd_(read_fd), path_(std::move(path)) {}
  ~FaultAppendFile() override { ::close(read_fd_); }
  FaultAppendFile(const FaultAppendFile&) = delete;
  FaultAppendFile& operator=(const FaultAppendFile&) = delete;

  Status Append(std::string_view data) override {
    std::lock_guard<std::mutex> lock(fs_->mu_);
    bool crashing = false;
    Status st = fs_->BeginOp("append", path_, &crashing);
    if (!st) {
      if (crashing && fs_->torn_writes_) (void)inner_->Append(data.substr(0, data.size() / 2));
      return st;
    }
    return inner_->Append(data);
  }
  Status Sync() override {
    std::lock_guard<std::mutex> lock(fs_->mu_);
    UPK_TRY(fs_->BeginOp("sync", path_));
    UPK_TRY(inner_->Sync());
    UPK_TRY_ASSIGN(std::string content, ReadAllFd(read_fd_, path_));
    fs_->RecordFileSync(inode_, std::move(content));
    return OkStatus();
  }
  std::uint64_t size() const override { return inner_->size(); }

 private:
  FaultFs* fs_;
  std::unique_ptr<AppendFile> inner_;
  std::uint64_t inode_;
  int read_fd_;
  fs::path path_;
};

class FaultWritableFile final : public WritableFile {
 public:
  FaultWritableFile(FaultFs* owner, std::unique_ptr<WritableFile> inner, std::uint64_t inode, int read_fd, fs::path path)
      : fs_(owner), inner_(std::move(inner)), inode_(inode), read_fd_(read_fd), path_(std::move(path)) {}
  ~FaultWritableFile() override { ::close(read_fd_); }
  FaultWritableFile(const FaultWritableFile&) = delete;
  FaultWritableFile& operator=(const FaultWritableFile&) = delete;

  Status Write(std::span<const std::uint8_t> data) override {
    std::lock_guard<std::mutex> lock(fs_->mu_);
    bool crashing = false;
    Status st = fs_->BeginOp("write", path_, &crashing);
    if (!st) {
      if (crashing && fs_->torn_writes_) (void)inner_->Write(data.subspan(0, data.size() / 2));
      return st;
    }
    return inner_->Write(data);
  }
  Status Sync() override {
    std::lock_guard<std::mutex> lock(fs_->mu_);
    UPK_TRY(fs_->BeginOp("sync", path_));
    UPK_TRY(inner_->Sync());
    UPK_TRY_ASSIGN(std::string content, ReadAllFd(read_fd_, path_));
    fs_->RecordFileSync(inode_, std::move(content));
    return OkStatus();
  }
  Status Close() override {
    std::lock_guard<std::mutex> lock(fs_->mu_);
    Status alive = fs_->CheckAlive("close", path_);
    Status st = inner_->Close();
    if (!alive) return alive;
    return st;
  }

 private:
  FaultFs* fs_;
  std::unique_ptr<WritableFile> inner_;
  std::uint64_t inode_;
  int read_fd_;
  fs::path path_;
};

FaultFs::FaultFs(fs::path root) : model_(std::make_unique<Model>()) {
  // Not canonicalised: callers build their paths from the root they passed.
  std::error_code ec;
  fs::path abs = fs::absolute(root, ec);
  root_ = Normal(ec ? root : abs);
  model_->root = root_;
  model_->Snapshot();
}

FaultFs::~FaultFs() = default;

void FaultFs::CrashAfter(std::uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  crash_at_ = ops_ + n;
}

void FaultFs::SetTornWrites(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  torn_writes_ = on;
}

bool FaultFs::crashed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dead_;
}

std::uint64_t FaultFs::operations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ops_;
}

void FaultFs::Restart() {
  std::lock_guard<std::mutex> lock(mu_);
  dead_ = false;
  crash_at_.reset();
}

Status FaultFs::SimulatePowerLoss() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!model_->error.empty()) return Error(Errc::kInternal, "FaultFs: " + model_->error);
  std::error_code ec;
  std::vector<fs::path> children;
  for (fs::directory_iterator it(root_, ec); !ec && it != fs::directory_iterator(); it.increment(ec))
    children.push_back(it->path());
  if (ec) return Error(Errc::kIo, root_.string() + ": FaultFs power loss: " + ec.message());
  for (const auto& c : children) {
    fs::remove_all(c, ec);
    if (ec) return Error(Errc::kIo, c.string() + ": FaultFs power loss: " + ec.message());
  }
  UPK_TRY(model_->Rebuild(model_->root_id, root_, 0));
  model_->Snapshot();
  dead_ = false;
  crash_at_.reset();
  return OkStatus();
}

Status FaultFs::BeginOp(const char* op, const fs::path& path, bool* crashing_now) {
  if (!model_->error.empty()) return Error(Errc::kInternal, "FaultFs: " + model_->error);
  if (!dead_ && crash_at_ && ops_ >= *crash_at_) {
    dead_ = true;
    if (crashing_now) *crashing_now = true;
  }
  if (dead_)
    return Error(Errc::kIo, "injected crash at operation " + std::to_string(ops_ + 1) + " (" + op + " " +
                                path.string() + ")");
  ++ops_;
  return OkStatus();
}

Status FaultFs::CheckAlive(const char* op, const fs::path& path) {
  if (dead_)
    return Error(Errc::kIo, "injected crash at operation " + std::to_string(ops_ + 1) + " (" + op + " " +
                                path.string() + ")");
  return OkStatus();
}

void FaultFs::RecordFileSync(std::uint64_t inode, std::string content) {
  auto it = model_->inodes.find(inode);
  if (it != model_->inodes.end()) it->second.synced = std::move(content);
}

Expected<std::string> FaultFs::ReadFile(const fs::path& path, std::uint64_t max_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(CheckAlive("read", path));
  return real_.ReadFile(path, max_bytes);
}

Expected<bool> FaultFs::Exists(const fs::path& path) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(CheckAlive("exists", path));
  return real_.Exists(path);
}

Expected<std::vector<std::string>> FaultFs::ListDir(const fs::path& dir) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(CheckAlive("list", dir));
  return real_.ListDir(dir);
}

Expected<std::uint64_t> FaultFs::FileSize(const fs::path& path) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(CheckAlive("size", path));
  return real_.FileSize(path);
}

Expected<fs::path> FaultFs::ReadSymlink(const fs::path& link) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(CheckAlive("readlink", link));
  return real_.ReadSymlink(link);
}

// Built from the counted primitives so that a crash can land between any two of its steps.
Status FaultFs::WriteFileAtomic(const fs::path& path, std::string_view data, unsigned mode) {
  fs::path tmp = TempSibling(path);
  UPK_TRY_ASSIGN(std::unique_ptr<WritableFile> file, OpenForWrite(tmp, mode));
  Status st = file->Write(AsBytes(data));
  if (st) st = file->Sync();
  Status closed = file->Close();
  if (st) st = closed;
  file.reset();
  if (st) st = Rename(tmp, path);
  if (!st) {
    (void)Remove(tmp);
    return st;
  }
  return SyncDir(DirOf(path));
}

Expected<std::unique_ptr<AppendFile>> FaultFs::OpenForAppend(const fs::path& path) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(BeginOp("open-append", path));
  auto parent = model_->Parent(path);
  if (!parent) return Untracked(path);
  UPK_TRY_ASSIGN(std::unique_ptr<AppendFile> inner, real_.OpenForAppend(path));
  Entries& ents = model_->live[parent->first];
  auto it = ents.find(parent->second);
  std::uint64_t id = it != ents.end() ? it->second : model_->New(Kind::kFile, 0644);
  ents[parent->second] = id;
  int rfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (rfd < 0) return Error(Errc::kIo, path.string() + ": FaultFs open: " + std::strerror(errno));
  return std::unique_ptr<AppendFile>(std::make_unique<FaultAppendFile>(this, std::move(inner), id, rfd, path));
}

Expected<std::unique_ptr<WritableFile>> FaultFs::OpenForWrite(const fs::path& path, unsigned mode) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(BeginOp("open-write", path));
  auto parent = model_->Parent(path);
  if (!parent) return Untracked(path);
  UPK_TRY_ASSIGN(std::unique_ptr<WritableFile> inner, real_.OpenForWrite(path, mode));
  Entries& ents = model_->live[parent->first];
  auto it = ents.find(parent->second);
  std::uint64_t id = it != ents.end() ? it->second : model_->New(Kind::kFile, mode);
  ents[parent->second] = id;
  int rfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (rfd < 0) return Error(Errc::kIo, path.string() + ": FaultFs open: " + std::strerror(errno));
  return std::unique_ptr<WritableFile>(std::make_unique<FaultWritableFile>(this, std::move(inner), id, rfd, path));
}

Status FaultFs::Truncate(const fs::path& path, std::uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(BeginOp("truncate", path));
  if (!model_->Lookup(path, true)) return Untracked(path);
  return real_.Truncate(path, size);
}

Status FaultFs::Rename(const fs::path& from, const fs::path& to) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(BeginOp("rename", from));
  auto pf = model_->Parent(from);
  auto pt = model_->Parent(to);
  if (!pf) return Untracked(from);
  if (!pt) return Untracked(to);
  UPK_TRY(real_.Rename(from, to));
  if (*pf == *pt) return OkStatus();
  Entries& src = model_->live[pf->first];
  auto it = src.find(pf->second);
  if (it == src.end()) return Untracked(from);
  std::uint64_t id = it->second;
  src.erase(it);
  model_->live[pt->first][pt->second] = id;
  return OkStatus();
}

Status FaultFs::Remove(const fs::path& path) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(BeginOp("remove", path));
  auto parent = model_->Parent(path);
  if (!parent) return Untracked(path);
  UPK_TRY(real_.Remove(path));
  model_->live[parent->first].erase(parent->second);
  return OkStatus();
}

Status FaultFs::RemoveAll(const fs::path& path) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(BeginOp("remove-all", path));
  auto parent = model_->Parent(path);
  if (!parent) return Untracked(path);
  UPK_TRY(real_.RemoveAll(path));
  model_->live[parent->first].erase(parent->second);
  return OkStatus();
}

Status FaultFs::CreateDirectories(const fs::path& dir, unsigned mode) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(BeginOp("mkdir", dir));
  if (AtOrAboveRoot(dir, root_)) return real_.CreateDirectories(dir, mode);
  auto comps = model_->Components(dir);
  if (!comps) return Untracked(dir);
  UPK_TRY(real_.CreateDirectories(dir, mode));
  fs::path p = root_;
  for (const auto& c : *comps) {
    p /= c;
    if (model_->Lookup(p, true)) continue;
    auto parent = model_->Parent(p);
    if (!parent) return Untracked(p);
    model_->live[parent->first][parent->second] = model_->New(Kind::kDir, mode);
  }
  return OkStatus();
}

Status FaultFs::CreateSymlink(const fs::path& link, const fs::path& target) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(BeginOp("symlink", link));
  auto parent = model_->Parent(link);
  if (!parent) return Untracked(link);
  if (::symlink(target.c_str(), link.c_str()) != 0)
    return Error(Errc::kIo, link.string() + ": symlink: " + std::strerror(errno));
  std::uint64_t id = model_->New(Kind::kSymlink, 0777);
  model_->inodes[id].target = target;
  model_->live[parent->first][parent->second] = id;
  return OkStatus();
}

Status FaultFs::ReplaceSymlink(const fs::path& link, const fs::path& target) {
  fs::path tmp = TempSibling(link);
  UPK_TRY(CreateSymlink(tmp, target));
  Status st = Rename(tmp, link);
  if (!st) {
    (void)Remove(tmp);
    return st;
  }
  return SyncDir(DirOf(link));
}

Status FaultFs::SyncDir(const fs::path& dir) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(BeginOp("sync-dir", dir));
  if (AtOrAboveRoot(dir, root_) && Normal(dir) != root_) return real_.SyncDir(dir);
  auto id = model_->Lookup(dir, true);
  if (!id || model_->inodes[*id].kind != Kind::kDir) return Untracked(dir);
  UPK_TRY(real_.SyncDir(dir));
  model_->durable[*id] = model_->live[*id];
  return OkStatus();
}

Status FaultFs::SyncFile(const fs::path& path) {
  std::lock_guard<std::mutex> lock(mu_);
  UPK_TRY(BeginOp("sync-file", path));
  auto id = model_->Lookup(path, true);
  if (!id || model_->inodes[*id].kind != Kind::kFile) return Untracked(path);
  UPK_TRY(real_.SyncFile(path));
  UPK_TRY_ASSIGN(std::string content, real_.ReadFile(path, kMaxModelRead));
  RecordFileSync(*id, std::move(content));
  return OkStatus();
}

}  // namespace upkeep::agent
