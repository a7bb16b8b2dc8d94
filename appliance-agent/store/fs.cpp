// RealFs: the production filesystem seam, plain POSIX calls. Stateless, so safe from several
// threads for distinct files.
#include "upkeep/agent/fs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "upkeep/common/files.hpp"

namespace upkeep::agent {
namespace fs = std::filesystem;

namespace {

Error IoError(const fs::path& path, int err, const char* what) {
  Errc code = err == ENOENT ? Errc::kNotFound : Errc::kIo;
  return Error(code, path.string() + ": " + what + ": " + std::strerror(err));
}

Status FsyncFd(int fd, const fs::path& path) {
  if (::fsync(fd) != 0) return IoError(path, errno, "fsync");
  return OkStatus();
}

Status WriteFd(int fd, const char* p, std::size_t left, const fs::path& path) {
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(path, errno, "write");
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  return OkStatus();
}

fs::path DirOf(const fs::path& path) {
  fs::path dir = path.parent_path();
  return dir.empty() ? fs::path(".") : dir;
}

class RealAppendFile final : public AppendFile {
 public:
  RealAppendFile(int fd, fs::path path, std::uint64_t size) : fd_(fd), path_(std::move(path)), size_(size) {}
  ~RealAppendFile() override { ::close(fd_); }
  RealAppendFile(const RealAppendFile&) = delete;
  RealAppendFile& operator=(const RealAppendFile&) = delete;

  Status Append(std::string_view data) override {
    UPK_TRY(WriteFd(fd_, data.data(), data.size(), path_));
    size_ += data.size();
    return OkStatus();
  }
  Status Sync() override {
    if (::fdatasync(fd_) != 0) return IoError(path_, errno, "fdatasync");
    return OkStatus();
  }
  std::uint64_t size() const override { return size_; }

 private:
  int fd_;
  fs::path path_;
  std::uint64_t size_;
};

class RealWritableFile final : public WritableFile {
 public:
  RealWritableFile(int fd, fs::path path) : fd_(fd), path_(std::move(path)) {}
  ~RealWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }
  RealWritableFile(const RealWritableFile&) = delete;
  RealWritableFile& operator=(const RealWritableFile&) = delete;

  Status Write(std::span<const std::uint8_t> data) override {
    if (fd_ < 0) return Error(Errc::kInternal, path_.string() + ": write after close");
    return WriteFd(fd_, reinterpret_cast<const char*>(data.data()), data.size(), path_);
  }
  Status Sync() override {
    if (fd_ < 0) return Error(Errc::kInternal, path_.string() + ": sync after close");
    return FsyncFd(fd_, path_);
  }
  Status Close() override {
    if (fd_ < 0) return OkStatus();
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return IoError(path_, errno, "close");
    return OkStatus();
  }

 private:
  int fd_;
  fs::path path_;
};

}  // namespace

RealFs& RealFs::Instance() {
  static RealFs instance;
  return instance;
}

Expected<std::string> RealFs::ReadFile(const fs::path& path, std::uint64_t max_bytes) {
  return ReadFileBounded(path, max_bytes);
}

Expected<bool> RealFs::Exists(const fs::path& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) return true;
  if (errno == ENOENT || errno == ENOTDIR) return false;
  return IoError(path, errno, "lstat");
}

Expected<std::vector<std::string>> RealFs::ListDir(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    Errc code = ec == std::errc::no_such_file_or_directory ? Errc::kNotFound : Errc::kIo;
    return Error(code, dir.string() + ": list: " + ec.message());
  }
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    names.push_back(it->path().filename().string());
  }
  if (ec) return Error(Errc::kIo, dir.string() + ": list: " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

Expected<std::uint64_t> RealFs::FileSize(const fs::path& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return IoError(path, errno, "stat");
  return static_cast<std::uint64_t>(st.st_size);
}

Expected<fs::path> RealFs::ReadSymlink(const fs::path& link) {
  std::string buf(256, '\0');
  for (;;) {
    ssize_t n = ::readlink(link.c_str(), buf.data(), buf.size());
    if (n < 0) return IoError(link, errno, "readlink");
    if (static_cast<std::size_t>(n) < buf.size()) {
      buf.resize(static_cast<std::size_t>(n));
      return fs::path(buf);
    }
    if (buf.size() >= 65536) return Error(Errc::kLimit, link.string() + ": symlink target too long");
    buf.resize(buf.size() * 2);
  }
}

Status RealFs::WriteFileAtomic(const fs::path& path, std::string_view data, unsigned mode) {
  fs::path tmp = TempSibling(path);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return IoError(tmp, errno, "create");
  Status st = WriteFd(fd, data.data(), data.size(), tmp);
  if (st) st = FsyncFd(fd, tmp);
  if (::close(fd) != 0 && st) st = IoError(tmp, errno, "close");
  if (st && ::rename(tmp.c_str(), path.c_str()) != 0) st = IoError(path, errno, "rename");
  if (!st) {
    ::unlink(tmp.c_str());
    return st;
  }
  return SyncDir(DirOf(path));
}

Expected<std::unique_ptr<AppendFile>> RealFs::OpenForAppend(const fs::path& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return IoError(path, errno, "open for append");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return IoError(path, e, "fstat");
  }
  return std::unique_ptr<AppendFile>(
      std::make_unique<RealAppendFile>(fd, path, static_cast<std::uint64_t>(st.st_size)));
}

Expected<std::unique_ptr<WritableFile>> RealFs::OpenForWrite(const fs::path& path, unsigned mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return IoError(path, errno, "open for write");
  return std::unique_ptr<WritableFile>(std::make_unique<RealWritableFile>(fd, path));
}

Status RealFs::Truncate(const fs::path& path, std::uint64_t size) {
  if (::truncate(path.c_str(), static_cast<off_t>(size)) != 0) return IoError(path, errno, "truncate");
  return OkStatus();
}

Status RealFs::Rename(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    int e = errno;
    return Error(e == ENOENT ? Errc::kNotFound : Errc::kIo,
                 from.string() + ": rename to " + to.string() + ": " + std::strerror(e));
  }
  return OkStatus();
}

Status RealFs::Remove(const fs::path& path) {
  if (::unlink(path.c_str()) == 0) return OkStatus();
  int e = errno;
  if (e == ENOENT) return OkStatus();
  if (e == EISDIR || e == EPERM) {
    if (::rmdir(path.c_str()) == 0 || errno == ENOENT) return OkStatus();
    e = errno;
  }
  return IoError(path, e, "remove");
}

Status RealFs::RemoveAll(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return Error(Errc::kIo, path.string() + ": remove all: " + ec.message());
  return OkStatus();
}

Status RealFs::CreateDirectories(const fs::path& dir, unsigned mode) {
  // Creates one level at a time so every new directory gets `mode` (fs::create_directories
  // cannot set it).
  fs::path partial;
  for (const auto& part : dir) {
    partial /= part;
    if (::mkdir(partial.c_str(), mode) != 0 && errno != EEXIST) return IoError(partial, errno, "mkdir");
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return IoError(dir, errno, "stat");
  if (!S_ISDIR(st.st_mode)) return Error(Errc::kIo, dir.string() + ": exists and is not a directory");
  return OkStatus();
}

Status RealFs::ReplaceSymlink(const fs::path& link, const fs::path& target) {
  fs::path tmp = TempSibling(link);
  if (::symlink(target.c_str(), tmp.c_str()) != 0) return IoError(tmp, errno, "symlink");
  if (::rename(tmp.c_str(), link.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return IoError(link, e, "rename symlink");
  }
  return SyncDir(DirOf(link));
}

Status RealFs::SyncDir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError(dir, errno, "open dir");
  Status st = FsyncFd(fd, dir);
  ::close(fd);
  return st;
}

Status RealFs::SyncFile(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError(path, errno, "open");
  Status st = FsyncFd(fd, path);
  ::close(fd);
  return st;
}

}  // namespace upkeep::agent
