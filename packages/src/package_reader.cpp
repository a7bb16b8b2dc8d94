// Streaming .upk reader and verifier, on libarchive's tar reader (tar only, no decompression).
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <locale.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <set>
#include <unordered_map>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/hash.hpp"
#include "archive_util.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/packages/source.hpp"

namespace upkeep::packages {
namespace {

// Large reads keep verification at hashing speed; libarchive hands out pointers into this buffer.
constexpr std::size_t kReadBlock = 1u << 20;
// After the last entry: the 1024-byte end-of-archive marker plus at most a tar record of padding.
constexpr std::uint64_t kMaxTrailerBytes = 20480;

using internal::Quote;
using internal::Utf8Locale;

std::string ArchiveMessage(archive* a) {
  const char* msg = archive_error_string(a);
  return msg ? msg : "damaged tar archive";
}

const char* EntryName(archive_entry* entry) {
  const char* name = archive_entry_pathname_utf8(entry);
  if (!name) name = archive_entry_pathname(entry);
  return name ? name : "";
}

// Describes a tar entry type we refuse, or returns nullptr for the three we accept.
const char* RefusedType(archive_entry* entry) {
  if (archive_entry_hardlink(entry) != nullptr) return "hard link";
  switch (archive_entry_filetype(entry)) {
    case AE_IFREG:
    case AE_IFDIR:
    case AE_IFLNK: return nullptr;
    case AE_IFCHR: return "character device node";
    case AE_IFBLK: return "block device node";
    case AE_IFIFO: return "FIFO";
    case AE_IFSOCK: return "socket";
    default: return "entry of unknown type";
  }
}

}  // namespace

struct PackageReader::Impl {
  archive* a = nullptr;
  archive_entry* entry = nullptr;  // owned by `a`
  int fd = -1;
  std::span<const std::uint8_t> memory;
  std::uint64_t source_size = 0;
  std::string label;

  // Source mode: libarchive pulls through SourceRead into two alternating buffers, each filled
  // completely unless the source ended, so the bytes after the last entry (at most
  // kMaxTrailerBytes < kReadBlock) are still in the last two buffers when CheckTrailer runs.
  std::unique_ptr<ByteSource> source;
  std::optional<Error> source_error;  // the source's own error, surfaced instead of libarchive's
  std::vector<std::uint8_t> bufs[2];
  std::uint64_t buf_start[2] = {0, 0};
  std::size_t buf_len[2] = {0, 0};
  int cur_buf = 1;
  std::uint64_t delivered = 0;
  std::vector<std::string> signed_by;

  Manifest manifest;
  std::string manifest_bytes;
  std::vector<Signature> signatures;

  bool unlocked = false;
  bool finished = false;
  std::optional<Error> failed;
  std::size_t next_index = 0;
  const PayloadEntry* current = nullptr;
  bool in_data = false;
  std::uint64_t entry_done = 0;
  std::uint64_t payload_done = 0;
  Hasher hasher;
  std::unordered_map<std::string_view, std::size_t> index_of;  // built only to word an error

  ~Impl() {
    if (a) archive_read_free(a);
    if (fd >= 0) ::close(fd);
  }

  Error Fail(Errc code, const std::string& message) {
    // Whatever libarchive made of it, a failing source is reported with its own error.
    failed = source_error ? *source_error : Error(code, label + ": " + message);
    return *failed;
  }

  static la_ssize_t SourceRead(archive* ar, void* client, const void** out) {
    auto* m = static_cast<Impl*>(client);
    if (m->source_error) {
      archive_set_error(ar, EIO, "%s", m->source_error->message().c_str());
      return -1;
    }
    const int i = m->cur_buf = 1 - m->cur_buf;
    std::vector<std::uint8_t>& b = m->bufs[i];
    std::size_t got = 0;
    while (got < b.size()) {
      auto n = m->source->Read(std::span<std::uint8_t>(b.data() + got, b.size() - got));
      if (!n.ok()) {
        m->source_error = n.error();
        archive_set_error(ar, EIO, "%s", m->source_error->message().c_str());
        return -1;
      }
      if (*n == 0) break;
      got += std::min(*n, b.size() - got);
    }
    m->buf_start[i] = m->delivered;
    m->buf_len[i] = got;
    m->delivered += got;
    *out = b.data();
    return static_cast<la_ssize_t>(got);
  }

  Status OpenArchive() {
    a = archive_read_new();
    if (!a) return Error(Errc::kInternal, label + ": cannot allocate an archive reader");
    archive_read_support_format_tar(a);
    int r = ARCHIVE_OK;
    if (source) {
      bufs[0].resize(kReadBlock);
      bufs[1].resize(kReadBlock);
      r = archive_read_open(a, this, nullptr, &Impl::SourceRead, nullptr);
    } else {
      r = fd >= 0 ? archive_read_open_fd(a, fd, kReadBlock) : archive_read_open_memory(a, memory.data(), memory.size());
    }
    if (r != ARCHIVE_OK) return Fail(Errc::kVerification, "not a package: " + ArchiveMessage(a));
    return OkStatus();
  }

  // Reads the next header, which must be a regular file called `name` of at most `max` bytes.
  Expected<std::string> ReadMetaEntry(std::string_view name, std::uint64_t max) {
    int r = archive_read_next_header(a, &entry);
    if (r == ARCHIVE_EOF) return Fail(Errc::kVerification, "not a package: no " + std::string(name) + " entry");
    if (r != ARCHIVE_OK) return Fail(Errc::kVerification, "not a package: " + ArchiveMessage(a));
    std::string_view got = EntryName(entry);
    if (got != name) {
      return Fail(Errc::kVerification, "not a package: expected entry " + Quote(name) + ", found " + Quote(got));
    }
    if (RefusedType(entry) || archive_entry_filetype(entry) != AE_IFREG) {
      return Fail(Errc::kVerification, std::string(name) + ": not a regular file");
    }
    if (!archive_entry_size_is_set(entry) || archive_entry_size(entry) < 0) {
      return Fail(Errc::kVerification, std::string(name) + ": no size");
    }
    auto size = static_cast<std::uint64_t>(archive_entry_size(entry));
    if (size > max) {
      return Fail(Errc::kLimit, std::string(name) + ": " + std::to_string(size) + " bytes, over the limit of " +
                                    std::to_string(max));
    }
    std::string out;
    out.reserve(static_cast<std::size_t>(size));
    for (;;) {
      const void* buf = nullptr;
      std::size_t n = 0;
      la_int64_t offset = 0;
      r = archive_read_data_block(a, &buf, &n, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r != ARCHIVE_OK) return Fail(Errc::kVerification, std::string(name) + ": " + ArchiveMessage(a));
      if (offset != static_cast<la_int64_t>(out.size()) || out.size() + n > size) {
        return Fail(Errc::kVerification, std::string(name) + ": sparse or oversized entry");
      }
      out.append(static_cast<const char*>(buf), n);
    }
    if (out.size() != size) return Fail(Errc::kVerification, std::string(name) + ": truncated");
    return out;
  }

  Status ReadManifest() {
    UPK_TRY_ASSIGN(manifest_bytes, ReadMetaEntry(kManifestEntryName, kMaxManifestBytes));
    auto m = Manifest::Parse(manifest_bytes);
    if (!m) {
      Errc code = m.error().code() == Errc::kParse ? Errc::kVerification : m.error().code();
      return Fail(code, "manifest.json: " + m.error().message());
    }
    // One signed document, one reading: the bytes must be exactly what Serialize() would write.
    if (m->Serialize() != manifest_bytes) return Fail(Errc::kVerification, "manifest.json: not in canonical form");
    if (auto s = CheckPayloadLayout(*m); !s) return Fail(s.error().code(), "manifest.json: " + s.error().message());
    manifest = std::move(*m);
    return OkStatus();
  }

  Status ReadSignatures() {
    UPK_TRY_ASSIGN(std::string text, ReadMetaEntry(kSignatureEntryName, kMaxSignatureFileBytes));
    auto sigs = ParseSignatureFile(text);
    if (!sigs) return Fail(sigs.error().code(), sigs.error().message());
    signatures = std::move(*sigs);
    return OkStatus();
  }

  // Source mode: the bytes after the entries that libarchive already pulled must be zero (they
  // sit in the last two buffers); then the source is read to its end, so it can run its own
  // end checks, and what it still delivers must be zero too.
  Status CheckSourceTrailer(std::uint64_t end_of_entries) {
    if (end_of_entries > delivered) return Fail(Errc::kVerification, "archive ends inside its last entry");
    std::uint64_t covered = 0;
    for (int i = 0; i < 2; ++i) {
      const std::uint64_t lo = std::max(end_of_entries, buf_start[i]);
      const std::uint64_t hi = buf_start[i] + buf_len[i];
      if (hi <= lo) continue;
      const std::uint8_t* p = bufs[i].data() + (lo - buf_start[i]);
      if (std::any_of(p, p + (hi - lo), [](std::uint8_t c) { return c != 0; })) {
        return Fail(Errc::kVerification, "trailing data after the last entry");
      }
      covered += hi - lo;
    }
    std::uint64_t tail = delivered - end_of_entries;
    if (covered != tail) {
      return Fail(Errc::kVerification, std::to_string(tail) + " bytes of trailing data after the last entry");
    }
    std::vector<std::uint8_t> rest(4096);
    while (tail <= kMaxTrailerBytes) {
      auto n = source->Read(rest);
      if (!n.ok()) {
        source_error = n.error();
        return Fail(Errc::kIo, source_error->message());
      }
      if (*n == 0) break;
      const std::size_t got = std::min(*n, rest.size());
      if (std::any_of(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(got), [](std::uint8_t c) { return c != 0; })) {
        return Fail(Errc::kVerification, "trailing data after the last entry");
      }
      tail += got;
    }
    if (tail < 1024) return Fail(Errc::kVerification, "truncated: end-of-archive marker missing");
    if (tail > kMaxTrailerBytes) {
      return Fail(Errc::kVerification, "more than " + std::to_string(kMaxTrailerBytes - 1024) +
                                           " bytes of trailing data after the end-of-archive marker");
    }
    return OkStatus();
  }

  // What follows the last entry must be the end-of-archive marker and zero padding, nothing else.
  Status CheckTrailer(std::uint64_t end_of_entries) {
    if (source) return CheckSourceTrailer(end_of_entries);
    if (end_of_entries > source_size) return Fail(Errc::kVerification, "archive ends inside its last entry");
    std::uint64_t tail = source_size - end_of_entries;
    if (tail < 1024) return Fail(Errc::kVerification, "truncated: end-of-archive marker missing");
    if (tail > kMaxTrailerBytes) {
      return Fail(Errc::kVerification, std::to_string(tail - 1024) + " bytes of trailing data after the end-of-archive marker");
    }
    std::string buf(static_cast<std::size_t>(tail), '\0');
    if (fd >= 0) {
      std::size_t got = 0;
      while (got < buf.size()) {
        ssize_t n = ::pread(fd, buf.data() + got, buf.size() - got, static_cast<off_t>(end_of_entries + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return Fail(Errc::kIo, std::string("reading the end of the archive: ") + (n < 0 ? std::strerror(errno) : "file shrank"));
        got += static_cast<std::size_t>(n);
      }
    } else {
      std::memcpy(buf.data(), memory.data() + end_of_entries, buf.size());
    }
    if (std::any_of(buf.begin(), buf.end(), [](char c) { return c != '\0'; })) {
      return Fail(Errc::kVerification, "trailing data after the last entry");
    }
    return OkStatus();
  }

  std::string EntryLabel(const PayloadEntry& e) const { return "payload entry " + Quote(e.path); }

  Expected<const PayloadEntry*> Next() {
    if (failed) return *failed;
    if (!unlocked) {
      return Error(Errc::kPolicy, label + ": payload read before the signatures were checked or explicitly skipped");
    }
    if (finished) return static_cast<const PayloadEntry*>(nullptr);
    while (in_data) {
      UPK_TRY_ASSIGN(auto chunk, Read());
      (void)chunk;
    }
    current = nullptr;
    // Everything before this point has been consumed, so this is where the entries end.
    std::uint64_t end_of_entries = static_cast<std::uint64_t>(archive_filter_bytes(a, 0));
    int r = archive_read_next_header(a, &entry);
    if (next_index == manifest.payload.size()) {
      if (r == ARCHIVE_EOF) {
        UPK_TRY(CheckTrailer(end_of_entries));
        finished = true;
        return static_cast<const PayloadEntry*>(nullptr);
      }
      if (r == ARCHIVE_OK || r == ARCHIVE_WARN) {
        return Fail(Errc::kVerification, "entry " + Quote(EntryName(entry)) + ": not in the manifest (extra entry)");
      }
      return Fail(Errc::kVerification, "after the last payload entry: " + ArchiveMessage(a));
    }
    const PayloadEntry& want = manifest.payload[next_index];
    if (r == ARCHIVE_EOF) {
      return Fail(Errc::kVerification, "truncated: " + EntryLabel(want) + " (" + std::to_string(next_index + 1) + " of " +
                                           std::to_string(manifest.payload.size()) + ") is missing");
    }
    if (r != ARCHIVE_OK) return Fail(Errc::kVerification, "at " + EntryLabel(want) + ": " + ArchiveMessage(a));

    std::string_view raw = EntryName(entry);
    std::string_view name = raw;
    if (name.size() > kPayloadPrefix.size() + kMaxPathLength + 1) {
      return Fail(Errc::kLimit, "entry " + Quote(raw) + ": path longer than " + std::to_string(kMaxPathLength));
    }
    if (name.substr(0, kPayloadPrefix.size()) != kPayloadPrefix) {
      return Fail(Errc::kVerification, "entry " + Quote(raw) + ": outside payload/ (manifest expects " +
                                           Quote(std::string(kPayloadPrefix) + want.path) + ")");
    }
    name.remove_prefix(kPayloadPrefix.size());
    if (!name.empty() && name.back() == '/' && archive_entry_filetype(entry) == AE_IFDIR) name.remove_suffix(1);
    if (name != want.path) {
      if (index_of.empty()) {
        for (std::size_t i = 0; i < manifest.payload.size(); ++i) index_of.emplace(manifest.payload[i].path, i);
      }
      if (index_of.count(name)) {
        return Fail(Errc::kVerification, "entry " + Quote(raw) + ": out of order (the manifest expects " +
                                             Quote(std::string(kPayloadPrefix) + want.path) + " here)");
      }
      return Fail(Errc::kVerification, "entry " + Quote(raw) + ": not in the manifest");
    }
    if (const char* refused = RefusedType(entry)) {
      return Fail(Errc::kUnsafe, EntryLabel(want) + ": " + refused + " refused");
    }
    auto mode = static_cast<std::uint32_t>(archive_entry_mode(entry));
    if (mode & 07000) return Fail(Errc::kUnsafe, EntryLabel(want) + ": set-uid, set-gid or sticky bit refused");
    EntryType type = archive_entry_filetype(entry) == AE_IFREG   ? EntryType::kFile
                     : archive_entry_filetype(entry) == AE_IFDIR ? EntryType::kDirectory
                                                                 : EntryType::kSymlink;
    if (type != want.type) {
      return Fail(Errc::kVerification, EntryLabel(want) + ": is a " + EntryTypeName(type) + ", the manifest says " +
                                           EntryTypeName(want.type));
    }
    if (type != EntryType::kSymlink && (mode & 0777) != want.mode) {
      char buf[64];
      std::snprintf(buf, sizeof buf, ": mode %04o, the manifest says %04o", mode & 0777, want.mode);
      return Fail(Errc::kVerification, EntryLabel(want) + buf);
    }
    std::int64_t size = archive_entry_size_is_set(entry) ? archive_entry_size(entry) : -1;
    if (type == EntryType::kFile) {
      if (size < 0 || static_cast<std::uint64_t>(size) != want.size) {
        return Fail(Errc::kVerification, EntryLabel(want) + ": size " + std::to_string(size) + ", the manifest says " +
                                             std::to_string(want.size));
      }
    } else if (size > 0) {
      return Fail(Errc::kVerification, EntryLabel(want) + ": a " + EntryTypeName(type) + " with data");
    }
    if (type == EntryType::kSymlink) {
      const char* target = archive_entry_symlink_utf8(entry);
      if (!target) target = archive_entry_symlink(entry);
      if (!target || want.target != target) {
        return Fail(Errc::kVerification, EntryLabel(want) + ": symlink target " + Quote(target ? target : "") +
                                             ", the manifest says " + Quote(want.target));
      }
    }
    current = &want;
    ++next_index;
    entry_done = 0;
    in_data = type == EntryType::kFile;
    return current;
  }

  Expected<std::span<const std::uint8_t>> Read() {
    if (failed) return *failed;
    if (!current || !in_data) return std::span<const std::uint8_t>();
    for (;;) {
      const void* buf = nullptr;
      std::size_t n = 0;
      la_int64_t offset = 0;
      int r = archive_read_data_block(a, &buf, &n, &offset);
      if (r == ARCHIVE_EOF) {
        in_data = false;
        if (entry_done != current->size) {
          return Fail(Errc::kVerification, EntryLabel(*current) + ": " + std::to_string(entry_done) +
                                               " bytes, the manifest says " + std::to_string(current->size));
        }
        std::string digest = hasher.FinishHex();
        if (digest != current->sha256) {
          return Fail(Errc::kVerification, EntryLabel(*current) + ": SHA-256 " + digest + " differs from the manifest's " +
                                               current->sha256);
        }
        return std::span<const std::uint8_t>();
      }
      if (r != ARCHIVE_OK) return Fail(Errc::kVerification, EntryLabel(*current) + ": " + ArchiveMessage(a));
      if (offset != static_cast<la_int64_t>(entry_done)) {
        return Fail(Errc::kUnsafe, EntryLabel(*current) + ": sparse entries are not allowed");
      }
      if (n == 0) continue;
      if (n > current->size - entry_done) return Fail(Errc::kVerification, EntryLabel(*current) + ": more data than its size");
      std::span<const std::uint8_t> chunk(static_cast<const std::uint8_t*>(buf), n);
      hasher.Update(chunk);
      entry_done += n;
      payload_done += n;
      return chunk;
    }
  }
};

PackageReader::PackageReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PackageReader::PackageReader(PackageReader&&) noexcept = default;
PackageReader& PackageReader::operator=(PackageReader&&) noexcept = default;
PackageReader::~PackageReader() = default;

namespace {

Expected<std::unique_ptr<PackageReader::Impl>> OpenFd(const std::filesystem::path& path) {
  auto impl = std::make_unique<PackageReader::Impl>();
  impl->label = path.string();
  impl->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (impl->fd < 0) {
    int e = errno;
    return Error(e == ENOENT ? Errc::kNotFound : Errc::kIo, impl->label + ": " + std::strerror(e));
  }
  struct stat st {};
  if (::fstat(impl->fd, &st) != 0) return Error(Errc::kIo, impl->label + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return Error(Errc::kInvalidArgument, impl->label + ": not a regular file");
  impl->source_size = static_cast<std::uint64_t>(st.st_size);
  ::posix_fadvise(impl->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  return impl;
}

}  // namespace

Expected<PackageReader> PackageReader::OpenFile(const std::filesystem::path& upk) {
  Utf8Locale locale;
  UPK_TRY_ASSIGN(auto impl, OpenFd(upk));
  UPK_TRY(impl->OpenArchive());
  UPK_TRY(impl->ReadManifest());
  UPK_TRY(impl->ReadSignatures());
  return PackageReader(std::move(impl));
}

Expected<PackageReader> PackageReader::OpenSource(std::unique_ptr<ByteSource> source) {
  if (!source) return Error(Errc::kInvalidArgument, "package: no byte source");
  Utf8Locale locale;
  auto impl = std::make_unique<Impl>();
  impl->label = "package";
  impl->source = std::move(source);
  UPK_TRY(impl->OpenArchive());
  UPK_TRY(impl->ReadManifest());
  UPK_TRY(impl->ReadSignatures());
  return PackageReader(std::move(impl));
}

Expected<PackageReader> PackageReader::OpenMemory(std::span<const std::uint8_t> bytes) {
  Utf8Locale locale;
  auto impl = std::make_unique<Impl>();
  impl->label = "package";
  impl->memory = bytes;
  impl->source_size = bytes.size();
  UPK_TRY(impl->OpenArchive());
  UPK_TRY(impl->ReadManifest());
  UPK_TRY(impl->ReadSignatures());
  return PackageReader(std::move(impl));
}

const Manifest& PackageReader::manifest() const { return impl_->manifest; }
const std::string& PackageReader::manifest_bytes() const { return impl_->manifest_bytes; }
const std::vector<Signature>& PackageReader::signatures() const { return impl_->signatures; }
std::uint64_t PackageReader::package_bytes() const {
  return impl_->source ? impl_->source->position() : impl_->source_size;
}
const std::vector<std::string>& PackageReader::signed_by() const { return impl_->signed_by; }
std::uint64_t PackageReader::payload_bytes_read() const { return impl_->payload_done; }
std::size_t PackageReader::entries_read() const { return impl_->next_index; }

Expected<std::vector<std::string>> VerifyManifestSignatures(std::string_view manifest_bytes,
                                                            const std::vector<Signature>& signatures,
                                                            const std::vector<PublicKey>& trusted,
                                                            std::size_t threshold) {
  std::vector<const PublicKey*> keys;
  std::set<std::string> seen;
  for (const auto& k : trusted) {
    if (seen.insert(k.keyid()).second) keys.push_back(&k);
  }
  if (keys.empty()) return Error(Errc::kInvalidArgument, "no trusted keys given");
  if (threshold == 0 || threshold > keys.size()) {
    return Error(Errc::kInvalidArgument, "threshold " + std::to_string(threshold) + " must be between 1 and the " +
                                             std::to_string(keys.size()) + " distinct trusted keys");
  }
  std::vector<std::string> good;
  std::vector<std::string> invalid;
  for (const PublicKey* key : keys) {
    bool found = false, ok = false;
    for (const auto& sig : signatures) {
      if (sig.keyid != key->keyid()) continue;
      found = true;
      auto raw = FromHex(sig.sig_hex);
      if (raw && key->Verify(manifest_bytes, *raw)) {
        ok = true;
        break;
      }
    }
    if (ok) {
      good.push_back(key->keyid());
    } else if (found) {
      invalid.push_back(key->keyid().substr(0, 12));
    }
  }
  if (good.size() < threshold) {
    std::string why = "manifest.sig: " + std::to_string(good.size()) + " of the " + std::to_string(threshold) +
                      " required signatures by trusted keys verified";
    if (!invalid.empty()) {
      why += "; invalid signature by key";
      for (const auto& id : invalid) why += " " + id;
    }
    if (signatures.empty()) why += "; the package carries no signatures";
    return Error(Errc::kVerification, why);
  }
  return good;
}

Expected<std::vector<std::string>> PackageReader::VerifySignatures(const std::vector<PublicKey>& trusted,
                                                                     std::size_t threshold) {
  Impl& m = *impl_;
  if (m.failed) return *m.failed;
  auto good = VerifyManifestSignatures(m.manifest_bytes, m.signatures, trusted, threshold);
  // Not sticky: the caller may retry with other keys or fall back to integrity-only reading.
  if (!good.ok()) {
    if (good.error().code() == Errc::kVerification) return Error(Errc::kVerification, m.label + ": " + good.error().message());
    return good.error();
  }
  m.unlocked = true;
  m.signed_by = *good;
  return good;
}

void PackageReader::SkipSignatureCheck() { impl_->unlocked = true; }

Expected<const PayloadEntry*> PackageReader::NextEntry() {
  Utf8Locale locale;
  return impl_->Next();
}

Expected<std::span<const std::uint8_t>> PackageReader::ReadData() {
  Utf8Locale locale;
  return impl_->Read();
}

Expected<Manifest> ReadPackageManifest(const std::filesystem::path& upk) {
  Utf8Locale locale;
  UPK_TRY_ASSIGN(auto impl, OpenFd(upk));
  UPK_TRY(impl->OpenArchive());
  UPK_TRY(impl->ReadManifest());
  return std::move(impl->manifest);
}

Expected<VerifyResult> VerifyPackage(const std::filesystem::path& upk, const VerifyOptions& options, ProgressFn progress) {
  UPK_TRY_ASSIGN(PackageReader reader, PackageReader::OpenFile(upk));
  VerifyResult result;
  if (options.trusted.empty()) {
    reader.SkipSignatureCheck();
  } else {
    UPK_TRY_ASSIGN(result.signed_by, reader.VerifySignatures(options.trusted, options.threshold));
    result.integrity_only = false;
  }
  const std::uint64_t total = reader.manifest().PayloadBytes();
  for (;;) {
    UPK_TRY_ASSIGN(const PayloadEntry* e, reader.NextEntry());
    if (!e) break;
    if (e->type != EntryType::kFile) continue;
    for (;;) {
      UPK_TRY_ASSIGN(auto chunk, reader.ReadData());
      if (chunk.empty()) break;
      if (progress) progress(reader.payload_bytes_read(), total);
    }
  }
  if (progress) progress(total, total);
  result.manifest = reader.manifest();
  result.entries = reader.entries_read();
  result.payload_bytes = reader.payload_bytes_read();
  result.package_bytes = reader.package_bytes();
  return result;
}

}  // namespace upkeep::packages
