// Writes .upk packages: payload from a directory or from any archive libarchive reads.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <locale.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <set>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "archive_util.hpp"
#include "upkeep/packages/package.hpp"

namespace upkeep::packages {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kBufferBytes = 1u << 20;

using internal::Quote;
using internal::Utf8Locale;
std::string Errno(int e) { return std::strerror(e); }

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

bool IsValidUtf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    std::uint32_t cp = len == 1 ? c : c & (0x7f >> len);
    for (std::size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += len;
  }
  return true;
}

// A payload path must survive the manifest (JSON, UTF-8) and the extractor's path rules.
Status CheckPackPath(std::string_view path) {
  UPK_TRY(CheckRelativePath(path));
  if (!IsValidUtf8(path)) return Error(Errc::kInvalidArgument, "path " + Quote(path) + ": not valid UTF-8");
  if (std::any_of(path.begin(), path.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    return Error(Errc::kInvalidArgument, "path " + Quote(path) + ": contains a control character");
  }
  return OkStatus();
}

Status CheckModeBits(std::string_view path, std::uint32_t mode) {
  if (mode & 07000) return Error(Errc::kUnsafe, "entry " + Quote(path) + ": set-uid, set-gid or sticky bit refused");
  return OkStatus();
}

struct Progress {
  ProgressFn fn;
  std::uint64_t total = 0;
  void Report(std::uint64_t done) const {
    if (fn) fn(std::min(done, total), total);
  }
};

// ---- the output archive --------------------------------------------------------------------

class TarWriter {
 public:
  ~TarWriter() {
    if (a_) archive_write_free(a_);
  }

  Status Open(int fd, const fs::path& label) {
    fd_ = fd;
    label_ = label.string();
    a_ = archive_write_new();
    if (!a_) return Error(Errc::kInternal, "cannot allocate an archive writer");
    // pax_restricted: plain ustar headers, pax extensions only where ustar can't express a field.
    if (archive_write_set_format_pax_restricted(a_) != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(a_, 0) != ARCHIVE_OK ||
        archive_write_open(a_, this, nullptr, &TarWriter::WriteCallback, nullptr) != ARCHIVE_OK) {
      return Failure("opening the archive");
    }
    return OkStatus();
  }

  Status Add(std::string_view name, EntryType type, std::uint64_t size, std::uint32_t mode, const std::string& target) {
    archive_entry* e = archive_entry_new();
    if (!e) return Error(Errc::kInternal, "cannot allocate an archive entry");
    std::string n(name);
    archive_entry_set_pathname_utf8(e, n.c_str());
    // Fixed owner and time: the same input always gives the same package bytes.
    archive_entry_set_mtime(e, 0, 0);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    switch (type) {
      case EntryType::kFile:
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_size(e, static_cast<la_int64_t>(size));
        archive_entry_set_perm(e, mode);
        break;
      case EntryType::kDirectory:
        archive_entry_set_filetype(e, AE_IFDIR);
        archive_entry_set_size(e, 0);
        archive_entry_set_perm(e, mode);
        break;
      case EntryType::kSymlink:
        archive_entry_set_filetype(e, AE_IFLNK);
        archive_entry_set_size(e, 0);
        archive_entry_set_perm(e, 0777);
        archive_entry_set_symlink_utf8(e, target.c_str());
        break;
    }
    int r = archive_write_header(a_, e);
    archive_entry_free(e);
    if (r != ARCHIVE_OK) return Failure("writing the header of " + Quote(name));
    return OkStatus();
  }

  Status Write(std::span<const std::uint8_t> data, std::string_view name) {
    la_ssize_t n = archive_write_data(a_, data.data(), data.size());
    if (n < 0 || static_cast<std::size_t>(n) != data.size()) return Failure("writing the data of " + Quote(name));
    return OkStatus();
  }

  Status Close() {
    if (archive_write_close(a_) != ARCHIVE_OK) return Failure("finishing the archive");
    return OkStatus();
  }

  std::uint64_t bytes() const { return bytes_; }
  std::string Sha256Hex() { return whole_.FinishHex(); }

 private:
  static la_ssize_t WriteCallback(archive*, void* self_ptr, const void* buf, std::size_t len) {
    auto* self = static_cast<TarWriter*>(self_ptr);
    const auto* p = static_cast<const std::uint8_t*>(buf);
    std::size_t left = len;
    while (left > 0) {
      ssize_t n = ::write(self->fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        self->write_errno_ = errno;
        return -1;
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    self->whole_.Update(std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(buf), len));
    self->bytes_ += len;
    return static_cast<la_ssize_t>(len);
  }

  Error Failure(const std::string& what) const {
    if (write_errno_) return Error(Errc::kIo, label_ + ": " + what + ": " + Errno(write_errno_));
    const char* msg = archive_error_string(a_);
    return Error(Errc::kIo, label_ + ": " + what + ": " + (msg ? msg : "libarchive failed"));
  }

  archive* a_ = nullptr;
  int fd_ = -1;
  int write_errno_ = 0;
  std::string label_;
  std::uint64_t bytes_ = 0;
  Hasher whole_;
};

// ---- payload from a directory --------------------------------------------------------------

struct DirItem {
  PayloadEntry entry;
  fs::path file;  // where a file's bytes live
};

Status WalkDir(const fs::path& root, const std::string& rel, std::vector<DirItem>& out) {
  fs::path here = rel.empty() ? root : root / rel;
  DIR* d = ::opendir(here.c_str());
  if (!d) return Error(Errc::kIo, here.string() + ": " + Errno(errno));
  std::vector<std::string> names;
  errno = 0;
  while (dirent* de = ::readdir(d)) {
    std::string_view n = de->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  int e = errno;
  ::closedir(d);
  if (e) return Error(Errc::kIo, here.string() + ": " + Errno(e));
  std::sort(names.begin(), names.end());  // byte order: reproducible packages
  for (const auto& name : names) {
    std::string path = rel.empty() ? name : rel + "/" + name;
    fs::path full = root / path;
    UPK_TRY(CheckPackPath(path));
    if (out.size() >= kMaxPayloadEntries) {
      return Error(Errc::kLimit, "payload has more than " + std::to_string(kMaxPayloadEntries) + " entries");
    }
    struct stat st {};
    if (::lstat(full.c_str(), &st) != 0) return Error(Errc::kIo, full.string() + ": " + Errno(errno));
    auto mode = static_cast<std::uint32_t>(st.st_mode & 07777);
    DirItem item;
    item.entry.path = path;
    if (S_ISREG(st.st_mode)) {
      UPK_TRY(CheckModeBits(path, mode));
      if (st.st_nlink > 1) return Error(Errc::kUnsafe, "entry " + Quote(path) + ": hard link refused (link count " + std::to_string(st.st_nlink) + ")");
      item.entry.type = EntryType::kFile;
      item.entry.size = static_cast<std::uint64_t>(st.st_size);
      item.entry.mode = mode;
      item.file = full;
      out.push_back(std::move(item));
    } else if (S_ISDIR(st.st_mode)) {
      UPK_TRY(CheckModeBits(path, mode));
      item.entry.type = EntryType::kDirectory;
      item.entry.mode = mode;
      out.push_back(std::move(item));
      UPK_TRY(WalkDir(root, path, out));
    } else if (S_ISLNK(st.st_mode)) {
      char buf[kMaxPathLength + 1];
      ssize_t n = ::readlink(full.c_str(), buf, sizeof buf);
      if (n < 0) return Error(Errc::kIo, full.string() + ": " + Errno(errno));
      if (static_cast<std::size_t>(n) > kMaxPathLength) return Error(Errc::kLimit, "symlink " + Quote(path) + ": target too long");
      item.entry.type = EntryType::kSymlink;
      item.entry.target.assign(buf, static_cast<std::size_t>(n));
      item.entry.mode = 0777;
      UPK_TRY(CheckSymlinkTarget(path, item.entry.target));
      if (!IsValidUtf8(item.entry.target)) return Error(Errc::kInvalidArgument, "symlink " + Quote(path) + ": target not valid UTF-8");
      out.push_back(std::move(item));
    } else {
      const char* what = S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "device node"
                         : S_ISFIFO(st.st_mode)                     ? "FIFO"
                         : S_ISSOCK(st.st_mode)                     ? "socket"
                                                                    : "file of unknown type";
      return Error(Errc::kUnsafe, "entry " + Quote(path) + ": " + what + " refused");
    }
  }
  return OkStatus();
}

// Streams one file of the source directory through `sink`, checking it is still what the walk saw.
template <typename Sink>
Expected<std::string> StreamFile(const DirItem& item, std::vector<std::uint8_t>& buf, Sink&& sink) {
  Fd fd(::open(item.file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) return Error(Errc::kIo, item.file.string() + ": " + Errno(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error(Errc::kIo, item.file.string() + ": " + Errno(errno));
  auto changed = [&] { return Error(Errc::kIo, "entry " + Quote(item.entry.path) + ": changed while packing"); };
  if (!S_ISREG(st.st_mode) || static_cast<std::uint64_t>(st.st_size) != item.entry.size ||
      static_cast<std::uint32_t>(st.st_mode & 07777) != item.entry.mode || st.st_nlink > 1) {
    return changed();
  }
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  Hasher h;
  std::uint64_t done = 0;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error(Errc::kIo, item.file.string() + ": " + Errno(errno));
    }
    if (n == 0) break;
    std::span<const std::uint8_t> chunk(buf.data(), static_cast<std::size_t>(n));
    done += chunk.size();
    if (done > item.entry.size) return changed();
    h.Update(chunk);
    UPK_TRY(sink(chunk));
  }
  if (done != item.entry.size) return changed();
  return h.FinishHex();
}

// ---- payload from an archive ---------------------------------------------------------------

class ArchiveInput {
 public:
  ~ArchiveInput() {
    if (a_) archive_read_free(a_);
  }

  Status Open(const fs::path& path) {
    path_ = path;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      int e = errno;
      return Error(e == ENOENT ? Errc::kNotFound : Errc::kIo, path.string() + ": " + Errno(e));
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
    a_ = archive_read_new();
    if (!a_) return Error(Errc::kInternal, "cannot allocate an archive reader");
    archive_read_support_filter_all(a_);
    archive_read_support_format_all(a_);
    if (archive_read_open_filename(a_, path.c_str(), kBufferBytes) != ARCHIVE_OK) return Failure("opening");
    return OkStatus();
  }

  // The next payload item (path normalised, root entries skipped); false at the end.
  Expected<bool> Next(PayloadEntry& item) {
    for (;;) {
      archive_entry* e = nullptr;
      int r = archive_read_next_header(a_, &e);
      if (r == ARCHIVE_EOF) return false;
      if (r != ARCHIVE_OK) return Failure("reading");
      const char* raw = archive_entry_pathname_utf8(e);
      if (!raw) raw = archive_entry_pathname(e);
      std::string name = raw ? raw : "";
      while (name.size() >= 2 && name.compare(0, 2, "./") == 0) name.erase(0, 2);
      while (name.size() > 1 && name.back() == '/') name.pop_back();
      const auto type = archive_entry_filetype(e);
      if ((name.empty() || name == ".") && type == AE_IFDIR) continue;  // the archive's root
      UPK_TRY(CheckPackPath(name));
      if (const char* link = archive_entry_hardlink(e)) {
        return Error(Errc::kUnsafe, "entry " + Quote(name) + ": hard link (to " + Quote(link) + ") refused");
      }
      auto mode = static_cast<std::uint32_t>(archive_entry_perm(e));
      item = PayloadEntry{};
      item.path = name;
      if (type == AE_IFREG) {
        UPK_TRY(CheckModeBits(name, mode));
        item.type = EntryType::kFile;
        item.mode = mode;
        declared_size_ = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
      } else if (type == AE_IFDIR) {
        UPK_TRY(CheckModeBits(name, mode));
        item.type = EntryType::kDirectory;
        item.mode = mode;
      } else if (type == AE_IFLNK) {
        const char* target = archive_entry_symlink_utf8(e);
        if (!target) target = archive_entry_symlink(e);
        item.type = EntryType::kSymlink;
        item.mode = 0777;
        item.target = target ? target : "";
        UPK_TRY(CheckSymlinkTarget(name, item.target));
        if (!IsValidUtf8(item.target)) return Error(Errc::kInvalidArgument, "symlink " + Quote(name) + ": target not valid UTF-8");
      } else {
        const char* what = type == AE_IFCHR || type == AE_IFBLK ? "device node"
                           : type == AE_IFIFO                   ? "FIFO"
                           : type == AE_IFSOCK                  ? "socket"
                                                                : "entry of unknown type";
        return Error(Errc::kUnsafe, "entry " + Quote(name) + ": " + what + " refused");
      }
      return true;
    }
  }

  // Streams the current file's bytes through `sink`, holes of sparse entries as zeros.
  template <typename Sink>
  Expected<std::uint64_t> Stream(const std::string& name, Sink&& sink) {
    static const std::uint8_t kZeros[64 << 10] = {};
    std::uint64_t done = 0;
    auto zeros_to = [&](std::uint64_t end) -> Status {
      while (done < end) {
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(sizeof kZeros, end - done));
        UPK_TRY(sink(std::span<const std::uint8_t>(kZeros, n)));
        done += n;
      }
      return OkStatus();
    };
    for (;;) {
      const void* buf = nullptr;
      std::size_t n = 0;
      la_int64_t offset = 0;
      int r = archive_read_data_block(a_, &buf, &n, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r != ARCHIVE_OK) return Failure("reading " + Quote(name));
      if (offset < 0 || static_cast<std::uint64_t>(offset) < done) return Failure("reading " + Quote(name) + " (overlapping blocks)");
      UPK_TRY(zeros_to(static_cast<std::uint64_t>(offset)));
      UPK_TRY(sink(std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(buf), n)));
      done += n;
    }
    if (declared_size_ >= 0) {
      if (done > static_cast<std::uint64_t>(declared_size_)) return Failure(Quote(name) + " holds more data than its size");
      UPK_TRY(zeros_to(static_cast<std::uint64_t>(declared_size_)));
    }
    return done;
  }

  // Raw input bytes consumed, for progress.
  std::uint64_t consumed() const { return static_cast<std::uint64_t>(std::max<la_int64_t>(0, archive_filter_bytes(a_, -1))); }
  std::uint64_t size() const { return size_; }

 private:
  Error Failure(const std::string& what) const {
    const char* msg = archive_error_string(a_);
    return Error(Errc::kParse, path_.string() + ": " + what + ": " + (msg ? msg : "not a readable archive"));
  }

  archive* a_ = nullptr;
  fs::path path_;
  std::uint64_t size_ = 0;
  la_int64_t declared_size_ = -1;
};

// ---- the two passes ------------------------------------------------------------------------

// Temp output file that disappears unless committed.
class TempOutput {
 public:
  explicit TempOutput(fs::path out) : out_(std::move(out)), tmp_(TempSibling(out_)) {}
  ~TempOutput() {
    if (!committed_) ::unlink(tmp_.c_str());
  }
  Expected<int> Create() {
    int fd = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return Error(Errc::kIo, tmp_.string() + ": " + Errno(errno));
    fd_.Reset(fd);
    return fd;
  }
  Status Commit() {
    if (::fsync(fd_.get()) != 0) return Error(Errc::kIo, tmp_.string() + ": " + Errno(errno));
    if (::close(fd_.Release()) != 0) return Error(Errc::kIo, tmp_.string() + ": " + Errno(errno));
    if (::rename(tmp_.c_str(), out_.c_str()) != 0) return Error(Errc::kIo, out_.string() + ": " + Errno(errno));
    committed_ = true;
    return SyncDirectory(out_.parent_path());
  }

 private:
  fs::path out_, tmp_;
  Fd fd_;
  bool committed_ = false;
};

Status WriteMeta(TarWriter& w, std::string_view name, std::string_view bytes) {
  UPK_TRY(w.Add(name, EntryType::kFile, bytes.size(), 0644, ""));
  return w.Write(AsBytes(bytes), name);
}

Expected<Manifest> FinishManifest(const PackSpec& spec, std::vector<PayloadEntry> payload) {
  Manifest m = spec.manifest;
  m.payload = std::move(payload);
  UPK_TRY(CheckPayloadLayout(m));
  // Re-reading what we are about to sign catches anything the reader would refuse.
  auto again = Manifest::Parse(m.Serialize());
  if (!again) return again.error().Wrap("manifest");
  return again;
}

}  // namespace

Expected<Manifest> WritePackage(const PackSpec& spec, const std::vector<PrivateKey>& signers, const fs::path& out,
                                ProgressFn progress_fn, PackedFile* packed) {
  Utf8Locale locale;
  if (signers.empty()) return Error(Errc::kInvalidArgument, "a package needs at least one signing key");
  if (spec.payload_dir.empty() == spec.payload_tar.empty()) {
    return Error(Errc::kInvalidArgument, "give exactly one payload source: a directory or an archive");
  }
  if (out.empty() || !out.has_filename()) return Error(Errc::kInvalidArgument, "output path " + Quote(out.string()) + " is not a file name");
  std::vector<std::uint8_t> buf(kBufferBytes);
  Progress progress{std::move(progress_fn), 0};
  TempOutput temp(out);
  TarWriter writer;
  Manifest manifest;

  auto begin_output = [&]() -> Status {
    UPK_TRY_ASSIGN(int fd, temp.Create());
    UPK_TRY(writer.Open(fd, out));
    std::string bytes = manifest.Serialize();
    UPK_TRY(WriteMeta(writer, kManifestEntryName, bytes));
    return WriteMeta(writer, kSignatureEntryName, SerializeSignatureFile(SignManifestBytes(bytes, signers)));
  };

  if (!spec.payload_dir.empty()) {
    struct stat st {};
    if (::stat(spec.payload_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return Error(Errc::kNotFound, spec.payload_dir.string() + ": not a directory");
    }
    std::vector<DirItem> items;
    UPK_TRY(WalkDir(spec.payload_dir, "", items));
    std::uint64_t bytes = 0;
    for (const auto& it : items) bytes += it.entry.size;
    progress.total = 2 * bytes;
    std::uint64_t done = 0;
    std::vector<PayloadEntry> payload;
    for (auto& it : items) {
      if (it.entry.type == EntryType::kFile) {
        UPK_TRY_ASSIGN(it.entry.sha256, StreamFile(it, buf, [&](std::span<const std::uint8_t> c) -> Status {
                         progress.Report(done += c.size());
                         return OkStatus();
                       }));
      }
      payload.push_back(it.entry);
    }
    UPK_TRY_ASSIGN(manifest, FinishManifest(spec, std::move(payload)));
    UPK_TRY(begin_output());
    for (const auto& it : items) {
      const std::string name = std::string(kPayloadPrefix) + it.entry.path;
      UPK_TRY(writer.Add(name, it.entry.type, it.entry.size, it.entry.mode, it.entry.target));
      if (it.entry.type != EntryType::kFile) continue;
      UPK_TRY_ASSIGN(std::string digest, StreamFile(it, buf, [&](std::span<const std::uint8_t> c) -> Status {
                       UPK_TRY(writer.Write(c, name));
                       progress.Report(done += c.size());
                       return OkStatus();
                     }));
      if (digest != it.entry.sha256) return Error(Errc::kIo, "entry " + Quote(it.entry.path) + ": changed while packing");
    }
  } else {
    std::vector<PayloadEntry> payload;
    std::set<std::string> seen;
    {
      ArchiveInput in;
      UPK_TRY(in.Open(spec.payload_tar));
      progress.total = 2 * in.size();
      PayloadEntry item;
      for (;;) {
        UPK_TRY_ASSIGN(bool more, in.Next(item));
        if (!more) break;
        if (!seen.insert(item.path).second) return Error(Errc::kInvalidArgument, "entry " + Quote(item.path) + ": appears twice");
        if (payload.size() >= kMaxPayloadEntries) {
          return Error(Errc::kLimit, "payload has more than " + std::to_string(kMaxPayloadEntries) + " entries");
        }
        if (item.type == EntryType::kFile) {
          Hasher h;
          UPK_TRY_ASSIGN(item.size, in.Stream(item.path, [&](std::span<const std::uint8_t> c) -> Status {
                           h.Update(c);
                           progress.Report(in.consumed());
                           return OkStatus();
                         }));
          item.sha256 = h.FinishHex();
        }
        payload.push_back(item);
      }
    }
    UPK_TRY_ASSIGN(manifest, FinishManifest(spec, payload));
    UPK_TRY(begin_output());
    ArchiveInput in;
    UPK_TRY(in.Open(spec.payload_tar));
    const std::uint64_t first_pass = in.size();
    PayloadEntry item;
    for (const auto& want : manifest.payload) {
      UPK_TRY_ASSIGN(bool more, in.Next(item));
      auto changed = [&] { return Error(Errc::kIo, "entry " + Quote(want.path) + ": input archive changed while packing"); };
      if (!more || item.path != want.path || item.type != want.type) return changed();
      const std::string name = std::string(kPayloadPrefix) + want.path;
      UPK_TRY(writer.Add(name, want.type, want.size, want.mode, want.target));
      if (want.type != EntryType::kFile) continue;
      Hasher h;
      std::uint64_t written = 0;
      UPK_TRY_ASSIGN(std::uint64_t size, in.Stream(want.path, [&](std::span<const std::uint8_t> c) -> Status {
                       if ((written += c.size()) > want.size) return changed();
                       h.Update(c);
                       UPK_TRY(writer.Write(c, name));
                       progress.Report(first_pass + in.consumed());
                       return OkStatus();
                     }));
      if (size != want.size || h.FinishHex() != want.sha256) return changed();
    }
    UPK_TRY_ASSIGN(bool extra, in.Next(item));
    if (extra) return Error(Errc::kIo, "entry " + Quote(item.path) + ": input archive changed while packing");
  }
  UPK_TRY(writer.Close());
  UPK_TRY(temp.Commit());
  progress.Report(progress.total);
  if (packed) {
    packed->bytes = writer.bytes();
    packed->sha256 = writer.Sha256Hex();
  }
  return manifest;
}

}  // namespace upkeep::packages
