// Safe extraction: verify while writing into a private temp directory, rename only on success.
#include "archive_util.hpp"
#include "upkeep/packages/extract.hpp"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <system_error>

#include "upkeep/common/files.hpp"

namespace upkeep::packages {
namespace {

namespace fs = std::filesystem;

using internal::Quote;

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// Removes a tree we created, even where a directory already lost its write bit.
void ForceRemoveTree(const fs::path& root) {
  std::error_code ec;
  auto st = fs::symlink_status(root, ec);
  if (ec) return;
  if (fs::is_directory(st)) {
    ::chmod(root.c_str(), 0700);
    for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) ForceRemoveTree(it->path());
  }
  fs::remove(root, ec);
}

class Extractor {
 public:
  Extractor(PackageReader& reader, const ExtractOptions& options) : reader_(reader), options_(options) {}

  Status Run(int root, ProgressFn& progress) {
    root_ = root;
    const std::uint64_t total = reader_.manifest().PayloadBytes();
    for (;;) {
      UPK_TRY_ASSIGN(const PayloadEntry* e, reader_.NextEntry());
      if (!e) break;
      UPK_TRY(Place(*e, progress, total));
    }
    if (progress) progress(total, total);
    return FinishDirectories();
  }

 private:
  Error Named(const PayloadEntry& e, Errc code, const std::string& why) const {
    return Error(code, "payload entry " + Quote(e.path) + ": " + why);
  }

  // Opens the directory made of the first `count` components of `parts`, never following a
  // symlink; missing components are created (0700 until the end) when `create` is set.
  Expected<Fd> OpenDir(const PayloadEntry& e, const std::vector<std::string>& parts, std::size_t count, bool create) {
    Fd cur(::dup(root_));
    if (cur.get() < 0) return Named(e, Errc::kIo, std::strerror(errno));
    std::string prefix;
    for (std::size_t i = 0; i < count; ++i) {
      const std::string& part = parts[i];
      prefix += (i ? "/" : "") + part;
      int fd = ::openat(cur.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0 && errno == ENOENT && create) {
        if (::mkdirat(cur.get(), part.c_str(), 0700) != 0) return Named(e, Errc::kIo, "creating " + Quote(prefix) + ": " + std::strerror(errno));
        dir_modes_.emplace(prefix, 0755);  // an explicit dir entry later overrides this
        fd = ::openat(cur.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      }
      if (fd < 0) {
        int err = errno;
        if (err == ELOOP || err == ENOTDIR) {
          return Named(e, Errc::kUnsafe, Quote(prefix) + " is not a directory (a symlink or file is in the way)");
        }
        return Named(e, Errc::kIo, "opening " + Quote(prefix) + ": " + std::strerror(err));
      }
      cur = Fd(fd);
    }
    return cur;
  }

  static std::vector<std::string> Split(const std::string& path) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    while (start <= path.size()) {
      std::size_t end = path.find('/', start);
      if (end == std::string::npos) end = path.size();
      parts.emplace_back(path, start, end - start);
      start = end + 1;
    }
    return parts;
  }

  Status Place(const PayloadEntry& e, ProgressFn& progress, std::uint64_t total) {
    // The reader already checked the path; check again here, since this is what touches disk.
    if (auto s = CheckRelativePath(e.path); !s) return s.error();
    auto parts = Split(e.path);
    UPK_TRY_ASSIGN(Fd parent, OpenDir(e, parts, parts.size() - 1, true));
    const std::string& name = parts.back();
    switch (e.type) {
      case EntryType::kDirectory: {
        if (::mkdirat(parent.get(), name.c_str(), 0700) != 0) {
          struct stat st {};
          bool implicit = errno == EEXIST && ::fstatat(parent.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                          S_ISDIR(st.st_mode) && dir_modes_.count(e.path);
          if (!implicit) return Named(e, Errc::kUnsafe, std::string("cannot create directory: ") + std::strerror(errno));
        }
        dir_modes_[e.path] = e.mode;
        return OkStatus();
      }
      case EntryType::kSymlink:
        if (auto s = CheckSymlinkTarget(e.path, e.target); !s) return s.error();
        if (::symlinkat(e.target.c_str(), parent.get(), name.c_str()) != 0) {
          return Named(e, Errc::kUnsafe, std::string("cannot create symlink: ") + std::strerror(errno));
        }
        return OkStatus();
      case EntryType::kFile: {
        Fd fd(::openat(parent.get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (fd.get() < 0) return Named(e, Errc::kUnsafe, std::string("cannot create file: ") + std::strerror(errno));
        for (;;) {
          UPK_TRY_ASSIGN(auto chunk, reader_.ReadData());
          if (chunk.empty()) break;
          const std::uint8_t* p = chunk.data();
          std::size_t left = chunk.size();
          while (left > 0) {
            ssize_t n = ::write(fd.get(), p, left);
            if (n < 0) {
              if (errno == EINTR) continue;
              return Named(e, Errc::kIo, std::strerror(errno));
            }
            p += n;
            left -= static_cast<std::size_t>(n);
          }
          if (progress) progress(reader_.payload_bytes_read(), total);
        }
        // fchmod ignores the umask: the file gets exactly the manifest's mode.
        if (::fchmod(fd.get(), e.mode) != 0) return Named(e, Errc::kIo, std::strerror(errno));
        // Durability comes from one syncfs() at the end (FinishDirectories); here writeback only
        // starts, so the disk works while we decrypt and hash the next entries. One fsync per
        // file would force a journal commit per file (about 3x the time of the whole extraction).
        if (options_.fsync && ::sync_file_range(fd.get(), 0, 0, SYNC_FILE_RANGE_WRITE) != 0) {
          return Named(e, Errc::kIo, std::strerror(errno));
        }
        if (::close(fd.Release()) != 0) return Named(e, Errc::kIo, std::strerror(errno));
        return OkStatus();
      }
    }
    return OkStatus();
  }

  // Deepest first, so a read-only directory is locked only after everything below it is done.
  Status FinishDirectories() {
    std::vector<std::pair<std::string, std::uint32_t>> dirs(dir_modes_.begin(), dir_modes_.end());
    auto depth = [](const std::string& p) { return std::count(p.begin(), p.end(), '/'); };
    std::stable_sort(dirs.begin(), dirs.end(), [&](const auto& x, const auto& y) { return depth(x.first) > depth(y.first); });
    for (const auto& [path, mode] : dirs) {
      PayloadEntry e;
      e.path = path;
      auto parts = Split(path);
      UPK_TRY_ASSIGN(Fd fd, OpenDir(e, parts, parts.size(), false));
      if (::fchmod(fd.get(), mode) != 0) return Named(e, Errc::kIo, std::strerror(errno));
    }
    if (::fchmod(root_, 0755) != 0) return Error(Errc::kIo, std::string("destination: ") + std::strerror(errno));
    // Every file, directory and mode we wrote is durable before the rename: syncfs flushes the
    // whole filesystem holding the temporary directory and (Linux >= 5.8) reports writeback errors.
    if (options_.fsync && ::syncfs(root_) != 0) return Error(Errc::kIo, std::string("destination: syncfs: ") + std::strerror(errno));
    return OkStatus();
  }

  PackageReader& reader_;
  const ExtractOptions& options_;
  int root_ = -1;
  std::map<std::string, std::uint32_t> dir_modes_;
};

// `dest_in` normalized, if it names a directory that does not exist yet.
Expected<fs::path> NewDestination(const fs::path& dest_in) {
  fs::path dest = dest_in.lexically_normal();
  if (!dest.has_filename()) dest = dest.parent_path();
  if (dest.empty() || dest == "." || dest == "..") return Error(Errc::kInvalidArgument, "destination " + Quote(dest_in.string()) + " is not a new directory name");
  struct stat st {};
  if (::lstat(dest.c_str(), &st) == 0) return Error(Errc::kInvalidArgument, "destination " + Quote(dest.string()) + " already exists");
  return dest;
}

}  // namespace

Expected<VerifyResult> ExtractFromReader(PackageReader& reader, const fs::path& dest_in, ProgressFn progress,
                                         const ExtractOptions& extract) {
  UPK_TRY_ASSIGN(fs::path dest, NewDestination(dest_in));

  const fs::path temp = TempSibling(dest);
  if (::mkdir(temp.c_str(), 0700) != 0) return Error(Errc::kIo, temp.string() + ": " + std::strerror(errno));
  struct Cleanup {
    const fs::path& path;
    bool keep = false;
    ~Cleanup() {
      if (!keep) ForceRemoveTree(path);
    }
  } cleanup{temp};
  Fd root(::open(temp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (root.get() < 0) return Error(Errc::kIo, temp.string() + ": " + std::strerror(errno));

  Extractor extractor(reader, extract);
  if (auto s = extractor.Run(root.get(), progress); !s) return s.error();
  // RENAME_NOREPLACE: a destination that appeared meanwhile is never replaced.
  if (::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) != 0) {
    int e = errno;
    return Error(e == EEXIST ? Errc::kInvalidArgument : Errc::kIo, "destination " + Quote(dest.string()) + ": " + std::strerror(e));
  }
  cleanup.keep = true;
  if (extract.fsync) UPK_TRY(SyncDirectory(dest.parent_path()));

  VerifyResult result;
  result.signed_by = reader.signed_by();
  result.integrity_only = result.signed_by.empty();
  result.manifest = reader.manifest();
  result.entries = reader.entries_read();
  result.payload_bytes = reader.payload_bytes_read();
  result.package_bytes = reader.package_bytes();
  return result;
}

Expected<VerifyResult> ExtractPackage(const fs::path& upk, const fs::path& dest_in, const VerifyOptions& options,
                                      ProgressFn progress, const ExtractOptions& extract) {
  // Refuse a bad destination before opening the package (ExtractFromReader checks it again).
  UPK_TRY(NewDestination(dest_in));

  UPK_TRY_ASSIGN(PackageReader reader, PackageReader::OpenFile(upk));
  if (options.trusted.empty()) {
    reader.SkipSignatureCheck();
  } else {
    UPK_TRY(reader.VerifySignatures(options.trusted, options.threshold));
  }
  return ExtractFromReader(reader, dest_in, std::move(progress), extract);
}

}  // namespace upkeep::packages
