// Configuration backups: the .upkbak writer and reader, restore, and the backup directory.
// Format and guarantees: docs/agent/backup.md.
#include "upkeep/agent/backup.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <set>
#include <system_error>
#include <utility>

#include "backup_internal.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/utf8_locale.hpp"
#include "upkeep/trust/secret.hpp"

namespace upkeep::agent {
namespace fs = std::filesystem;

namespace {

constexpr std::array<char, 8> kMagic = {'U', 'P', 'K', 'B', 'A', 'K', '1', '\n'};
constexpr std::size_t kChunkBytes = 64 * 1024;
constexpr std::size_t kKeyBytes = 32;
constexpr std::size_t kDigestBytes = 32;
constexpr std::size_t kSaltBytes = crypto_pwhash_SALTBYTES;
constexpr std::size_t kAbytes = crypto_secretstream_xchacha20poly1305_ABYTES;
constexpr std::size_t kMaxRoots = 1000;
constexpr std::size_t kMaxExcluded = 1000;
constexpr std::size_t kMaxReasonBytes = 4096;
constexpr std::size_t kMaxNameBytes = 255;
constexpr std::uint64_t kMaxVaultKeyBytes = 64 * 1024;
constexpr std::string_view kExt = ".upkbak";

std::string Quote(std::string_view s) { return "'" + std::string(s.substr(0, 300)) + "'"; }
Error IoError(const fs::path& p, int err) { return Error(Errc::kIo, p.string() + ": " + std::strerror(err)); }

void EnsureSodium() {
  static const int once = sodium_init();
  (void)once;
}

using Utf8Locale = upkeep::ScopedUtf8Locale;

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  int Release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

void PutBe32(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}
std::uint32_t GetBe32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

bool IsUnder(const std::string& p, const std::string& root) {
  return p == root || (p.size() > root.size() && p.compare(0, root.size(), root) == 0 && p[root.size()] == '/');
}

// Absolute, lexically normal, not "/" itself, no trailing slash.
Status CheckSourcePath(const fs::path& p, const char* what) {
  const std::string s = p.string();
  if (s.empty() || s[0] != '/' || s == "/" || s.back() == '/' || p.lexically_normal() != p ||
      s.find("/../") != std::string::npos || s.size() > kBackupMaxPathBytes)
    return Error(Errc::kInvalidArgument, std::string(what) + " " + Quote(s) + ": not a normal absolute path");
  return OkStatus();
}

Status CheckKdf(const trust::KdfParams& kdf, Errc code) {
  if (kdf.opslimit < crypto_pwhash_argon2id_OPSLIMIT_MIN || kdf.opslimit > kBackupMaxOpslimit ||
      kdf.memlimit < crypto_pwhash_argon2id_MEMLIMIT_MIN || kdf.memlimit > kBackupMaxMemlimit)
    return Error(code, "kdf: opslimit/memlimit out of bounds (opslimit 1.." + std::to_string(kBackupMaxOpslimit) +
                           ", memlimit 8 KiB..1 GiB)");
  return OkStatus();
}

Status CheckPassword(std::string_view password) {
  if (password.empty()) return Error(Errc::kInvalidArgument, "password: empty password refused");
  if (password.size() > trust::kMaxPasswordBytes) return Error(Errc::kLimit, "password: too long");
  return OkStatus();
}

struct Keys {
  trust::SecretBytes stream{kKeyBytes};
  trust::SecretBytes check{kKeyBytes};
};

// Argon2id gives a master key; two labelled BLAKE2b keyed hashes split it into the stream key and
// a password check, so a wrong password is told apart from a tampered file.
Expected<Keys> DeriveKeys(std::string_view password, std::span<const std::uint8_t> salt, std::uint64_t ops,
                          std::size_t mem) {
  EnsureSodium();
  trust::SecretBytes master(kKeyBytes);
  if (crypto_pwhash(master.data(), kKeyBytes, password.data(), password.size(), salt.data(), ops, mem,
                    crypto_pwhash_ALG_ARGON2ID13) != 0)
    return Error(Errc::kInternal, "key derivation failed (out of memory?)");
  Keys k;
  static constexpr std::string_view kStreamLabel = "upkeep-backup-stream-key";
  static constexpr std::string_view kCheckLabel = "upkeep-backup-password-check";
  crypto_generichash(k.stream.data(), kKeyBytes, reinterpret_cast<const unsigned char*>(kStreamLabel.data()),
                     kStreamLabel.size(), master.data(), kKeyBytes);
  crypto_generichash(k.check.data(), kKeyBytes, reinterpret_cast<const unsigned char*>(kCheckLabel.data()),
                     kCheckLabel.size(), master.data(), kKeyBytes);
  return k;
}

// ---------------------------------------------------------------------------------------------
// Framing: header, then chunks (sealed, or plain with a digest of the whole file at the end).

class FrameWriter {
 public:
  FrameWriter(int fd, fs::path path) : fd_(fd), path_(std::move(path)), chunk_(kChunkBytes) {}

  Status Begin(const std::string& header_bytes, const trust::SecretBytes* stream_key) {
    header_ = header_bytes;
    crypto_generichash_init(&hash_, nullptr, 0, kDigestBytes);
    UPK_TRY(Emit(AsBytes(header_)));
    if (stream_key) {
      encrypted_ = true;
      std::array<std::uint8_t, crypto_secretstream_xchacha20poly1305_HEADERBYTES> h{};
      crypto_secretstream_xchacha20poly1305_init_push(&state_, h.data(), stream_key->data());
      UPK_TRY(Emit(h));
    }
    return OkStatus();
  }

  Status Write(const void* data, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    while (n > 0) {
      std::size_t take = std::min(n, kChunkBytes - fill_);
      std::memcpy(chunk_.data() + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ == kChunkBytes) UPK_TRY(Seal(false));
    }
    return OkStatus();
  }

  Status Finish() {
    if (encrypted_) return Seal(true);
    if (fill_ > 0) UPK_TRY(Seal(false));
    std::array<std::uint8_t, 4> end{};
    UPK_TRY(Emit(end));
    std::array<std::uint8_t, kDigestBytes> digest{};
    crypto_generichash_final(&hash_, digest.data(), digest.size());
    return WriteAll(fd_, std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()), path_);
  }

 private:
  Status Emit(std::span<const std::uint8_t> bytes) {
    if (!encrypted_) crypto_generichash_update(&hash_, bytes.data(), bytes.size());
    return WriteAll(fd_, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path_);
  }

  Status Seal(bool final) {
    std::array<std::uint8_t, 4> len{};
    if (encrypted_) {
      cipher_.resize(fill_ + kAbytes);
      unsigned long long clen = 0;
      crypto_secretstream_xchacha20poly1305_push(
          &state_, cipher_.data(), &clen, chunk_.data(), fill_, reinterpret_cast<const unsigned char*>(header_.data()),
          header_.size(),
          final ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
      PutBe32(len.data(), static_cast<std::uint32_t>(clen));
      UPK_TRY(Emit(len));
      UPK_TRY(Emit({cipher_.data(), static_cast<std::size_t>(clen)}));
    } else {
      PutBe32(len.data(), static_cast<std::uint32_t>(fill_));
      UPK_TRY(Emit(len));
      UPK_TRY(Emit({chunk_.data(), fill_}));
    }
    sodium_memzero(chunk_.data(), fill_);
    fill_ = 0;
    return OkStatus();
  }

  int fd_;
  fs::path path_;
  std::string header_;
  bool encrypted_ = false;
  crypto_generichash_state hash_{};
  crypto_secretstream_xchacha20poly1305_state state_{};
  std::vector<std::uint8_t> chunk_;
  std::size_t fill_ = 0;
  std::vector<std::uint8_t> cipher_;
};

struct Header {
  BackupInfo info;
  std::string bytes;  // magic .. end of JSON: the additional data of every sealed chunk
  Bytes salt;
  std::uint64_t opslimit = 0;
  std::size_t memlimit = 0;
  Bytes check;
};

class FrameReader {
 public:
  FrameReader(int fd, std::string name) : fd_(fd), name_(std::move(name)), plain_(kChunkBytes) {}

  Expected<std::string> ReadHeaderBytes() {
    crypto_generichash_init(&hash_, nullptr, 0, kDigestBytes);
    std::array<std::uint8_t, kMagic.size() + 4> start{};
    UPK_TRY_ASSIGN(std::size_t got, ReadUpTo(start.data(), start.size()));
    if (got < kMagic.size() || std::memcmp(start.data(), kMagic.data(), kMagic.size()) != 0)
      return Error(Errc::kParse, "not an Upkeep backup (bad magic)");
    if (got < start.size()) return Error(Errc::kParse, "header truncated");
    std::uint32_t len = GetBe32(start.data() + kMagic.size());
    if (len == 0 || len > kBackupMaxHeaderBytes)
      return Error(Errc::kLimit, "header length " + std::to_string(len) + " out of bounds (max " +
                                     std::to_string(kBackupMaxHeaderBytes) + ")");
    std::string bytes(reinterpret_cast<const char*>(start.data()), start.size());
    bytes.resize(start.size() + len);
    UPK_TRY_ASSIGN(std::size_t got_json, ReadUpTo(reinterpret_cast<std::uint8_t*>(bytes.data()) + start.size(), len));
    if (got_json < len) return Error(Errc::kParse, "header truncated");
    return bytes;
  }

  Status StartBody(const trust::SecretBytes* stream_key, std::string ad) {
    ad_ = std::move(ad);
    if (!stream_key) return OkStatus();
    encrypted_ = true;
    std::array<std::uint8_t, crypto_secretstream_xchacha20poly1305_HEADERBYTES> h{};
    UPK_TRY(ReadExact(h.data(), h.size()));
    if (crypto_secretstream_xchacha20poly1305_init_pull(&state_, h.data(), stream_key->data()) != 0)
      return Error(Errc::kVerification, "stream header invalid (tampered or corrupted)");
    return OkStatus();
  }

  bool done() const { return done_; }

  // The next chunk of tar bytes; empty at the end (done()) and, rarely, for an empty sealed chunk.
  // The first error is sticky: once the stream failed, every later call reports the same error.
  Expected<std::span<const std::uint8_t>> Next() {
    if (failed_) return *failed_;
    auto chunk = NextChunk();
    if (!chunk) failed_ = chunk.error();
    return chunk;
  }

 private:
  Expected<std::span<const std::uint8_t>> NextChunk() {
    if (done_) return std::span<const std::uint8_t>{};
    std::array<std::uint8_t, 4> lenb{};
    UPK_TRY(ReadExact(lenb.data(), lenb.size()));
    const std::uint32_t len = GetBe32(lenb.data());
    const std::string where = "chunk " + std::to_string(chunks_);
    ++chunks_;
    if (encrypted_) {
      if (len < kAbytes || len > kChunkBytes + kAbytes)
        return Error(Errc::kVerification, where + ": invalid length (tampered or corrupted)");
      cipher_.resize(len);
      UPK_TRY(ReadExact(cipher_.data(), len));
      unsigned long long plen = 0;
      unsigned char tag = 0;
      if (crypto_secretstream_xchacha20poly1305_pull(&state_, plain_.data(), &plen, &tag, cipher_.data(), len,
                                                     reinterpret_cast<const unsigned char*>(ad_.data()),
                                                     ad_.size()) != 0)
        return Error(Errc::kVerification, where + ": failed authentication (header or content tampered or corrupted)");
      if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
        UPK_TRY(ExpectEof());
        done_ = true;
      } else if (tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE) {
        return Error(Errc::kVerification, where + ": unexpected tag");
      }
      return std::span<const std::uint8_t>(plain_.data(), static_cast<std::size_t>(plen));
    }
    if (len == 0) {
      std::array<std::uint8_t, kDigestBytes> want{};
      crypto_generichash_final(&hash_, want.data(), want.size());
      hashing_ = false;
      std::array<std::uint8_t, kDigestBytes> got{};
      UPK_TRY(ReadExact(got.data(), got.size()));
      if (sodium_memcmp(want.data(), got.data(), kDigestBytes) != 0)
        return Error(Errc::kVerification, "digest mismatch (header or content tampered or corrupted)");
      UPK_TRY(ExpectEof());
      done_ = true;
      return std::span<const std::uint8_t>{};
    }
    if (len > kChunkBytes) return Error(Errc::kVerification, where + ": invalid length (tampered or corrupted)");
    UPK_TRY(ReadExact(plain_.data(), len));
    return std::span<const std::uint8_t>(plain_.data(), len);
  }

  Expected<std::size_t> ReadUpTo(std::uint8_t* p, std::size_t n) {
    std::size_t got = 0;
    while (got < n) {
      ssize_t r = ::read(fd_, p + got, n - got);
      if (r < 0) {
        if (errno == EINTR) continue;
        return IoError(name_, errno);
      }
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
    }
    if (hashing_) crypto_generichash_update(&hash_, p, got);
    return got;
  }
  Status ReadExact(std::uint8_t* p, std::size_t n) {
    UPK_TRY_ASSIGN(std::size_t got, ReadUpTo(p, n));
    if (got < n) return Error(Errc::kVerification, "ends before its final chunk (truncated)");
    return OkStatus();
  }
  Status ExpectEof() {
    std::uint8_t extra = 0;
    hashing_ = false;
    UPK_TRY_ASSIGN(std::size_t got, ReadUpTo(&extra, 1));
    if (got != 0) return Error(Errc::kVerification, "unexpected bytes after the final chunk");
    return OkStatus();
  }

  int fd_;
  std::string name_;
  bool encrypted_ = false;
  bool done_ = false;
  bool hashing_ = true;
  std::optional<Error> failed_;
  std::uint64_t chunks_ = 0;
  std::string ad_;
  crypto_generichash_state hash_{};
  crypto_secretstream_xchacha20poly1305_state state_{};
  std::vector<std::uint8_t> plain_;
  std::vector<std::uint8_t> cipher_;
};

// ---------------------------------------------------------------------------------------------
// Header JSON.

Expected<std::vector<ExcludedSecret>> ParseExcluded(const Json& j) {
  UPK_TRY_ASSIGN(const Json* arr, GetArray(j, "excluded"));
  if (arr->size() > kMaxExcluded) return Error(Errc::kLimit, "field 'excluded': too many entries");
  std::vector<ExcludedSecret> out;
  for (const auto& e : *arr) {
    ExcludedSecret s;
    UPK_TRY_ASSIGN(std::string path, GetString(e, "path"));
    UPK_TRY_ASSIGN(s.kind, GetString(e, "kind"));
    UPK_TRY_ASSIGN(s.reason, GetString(e, "reason"));
    if (path.size() > kBackupMaxPathBytes || s.kind.size() > 64 || s.reason.size() > kMaxReasonBytes)
      return Error(Errc::kLimit, "field 'excluded': entry too long");
    s.path = path;
    out.push_back(std::move(s));
  }
  return out;
}

Expected<Header> ParseHeaderJson(std::string bytes) {
  const std::string_view text = std::string_view(bytes).substr(kMagic.size() + 4);
  UPK_TRY_ASSIGN(Json j, ParseJson(text));
  if (!j.is_object()) return Error(Errc::kParse, "expected a JSON object");
  Header h;
  UPK_TRY_ASSIGN(std::int64_t format, GetInt(j, "format"));
  if (format != 1) return Error(Errc::kParse, "field 'format': unsupported version " + std::to_string(format));
  UPK_TRY_ASSIGN(std::string created, GetString(j, "created"));
  UPK_TRY_ASSIGN(h.info.created, ParseTimestamp(created));
  UPK_TRY_ASSIGN(h.info.reason, GetString(j, "reason"));
  if (h.info.reason.size() > kMaxReasonBytes) return Error(Errc::kLimit, "field 'reason': too long");
  UPK_TRY_ASSIGN(const Json* installed, GetObject(j, "installed"));
  h.info.installed = *installed;
  UPK_TRY_ASSIGN(h.info.encrypted, GetBool(j, "encrypted"));
  UPK_TRY_ASSIGN(const Json* roots, GetArray(j, "roots"));
  if (roots->empty() || roots->size() > kMaxRoots)
    return Error(Errc::kLimit, "field 'roots': 1.." + std::to_string(kMaxRoots) + " entries");
  for (const auto& r : *roots) {
    if (!r.is_string()) return Error(Errc::kParse, "field 'roots': not a string");
    fs::path p = r.get<std::string>();
    if (auto s = CheckSourcePath(p, "root"); !s) return Error(Errc::kUnsafe, "field 'roots': " + s.error().message());
    h.info.roots.push_back(std::move(p));
  }
  UPK_TRY_ASSIGN(h.info.excluded, ParseExcluded(j));
  if (h.info.encrypted) {
    UPK_TRY_ASSIGN(const Json* kdf, GetObject(j, "kdf"));
    UPK_TRY_ASSIGN(std::string name, GetString(*kdf, "name"));
    if (name != "argon2id13") return Error(Errc::kParse, "field 'kdf.name': unsupported " + Quote(name));
    UPK_TRY_ASSIGN(std::string salt, GetString(*kdf, "salt"));
    UPK_TRY_ASSIGN(h.salt, FromHex(salt));
    if (h.salt.size() != kSaltBytes) return Error(Errc::kParse, "field 'kdf.salt': not 16 bytes");
    UPK_TRY_ASSIGN(std::int64_t ops, GetInt(*kdf, "opslimit"));
    UPK_TRY_ASSIGN(std::int64_t mem, GetInt(*kdf, "memlimit"));
    if (ops < 0 || mem < 0) return Error(Errc::kLimit, "field 'kdf': negative limits");
    h.opslimit = static_cast<std::uint64_t>(ops);
    h.memlimit = static_cast<std::size_t>(mem);
    trust::KdfParams params;
    params.opslimit = h.opslimit;
    params.memlimit = h.memlimit;
    UPK_TRY(CheckKdf(params, Errc::kLimit));
    UPK_TRY_ASSIGN(std::string check, GetString(*kdf, "check"));
    UPK_TRY_ASSIGN(h.check, FromHex(check));
    if (h.check.size() != kKeyBytes) return Error(Errc::kParse, "field 'kdf.check': not 32 bytes");
  }
  h.bytes = std::move(bytes);
  return h;
}

bool ValidId(std::string_view id) {
  // YYYYMMDDTHHMMSSZ-xxxx
  if (id.size() != 21) return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    char c = id[i];
    bool ok = (i == 8)    ? c == 'T'
              : (i == 15) ? c == 'Z'
              : (i == 16) ? c == '-'
              : (i > 16)  ? ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))
                          : (c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

struct OpenedBackup {
  UniqueFd fd;
  Header header;
};

Expected<OpenedBackup> OpenBackup(const fs::path& file) {
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return Error(Errc::kNotFound, file.string() + ": no such backup");
    return IoError(file, errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return IoError(file, errno);
  if (!S_ISREG(st.st_mode)) return Error(Errc::kInvalidArgument, file.string() + ": not a regular file");
  FrameReader reader(fd.get(), file.string());
  auto bytes = reader.ReadHeaderBytes();
  if (!bytes) return bytes.error().Wrap(file.string());
  auto header = ParseHeaderJson(std::move(bytes).value());
  if (!header) return header.error().Wrap(file.string() + ": header");
  header->info.path = file;
  header->info.bytes = static_cast<std::uint64_t>(st.st_size);
  const std::string stem = file.filename().string();
  if (stem.size() > kExt.size() && stem.ends_with(kExt) && ValidId(stem.substr(0, stem.size() - kExt.size())))
    header->info.id = stem.substr(0, stem.size() - kExt.size());
  OpenedBackup out;
  out.fd = std::move(fd);
  out.header = std::move(header).value();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tar reading, shared by verification and restore.

struct EntryInfo {
  std::string name;  // relative, e.g. "etc/upkeep/settings.json"
  fs::path abs;      // "/etc/upkeep/settings.json"
  fs::path root;     // the recorded source path it is under
  unsigned type = 0;
  unsigned mode = 0;
  std::int64_t uid = 0, gid = 0;
  std::int64_t mtime = 0;
  long mtime_ns = 0;
  std::uint64_t size = 0;
  std::string target;
};

using DataFn = std::function<Expected<std::size_t>(std::uint8_t*, std::size_t)>;
using Visitor = std::function<Status(const EntryInfo&, const DataFn&)>;

struct ReadCtx {
  FrameReader* reader = nullptr;
  std::optional<Error> error;
};

la_ssize_t ReadCallback(struct archive* a, void* client, const void** buffer) {
  auto* ctx = static_cast<ReadCtx*>(client);
  for (;;) {
    auto chunk = ctx->reader->Next();
    if (!chunk) {
      ctx->error = chunk.error();
      archive_set_error(a, EIO, "backup stream failed");
      return -1;
    }
    if (!chunk->empty()) {
      *buffer = chunk->data();
      return static_cast<la_ssize_t>(chunk->size());
    }
    if (ctx->reader->done()) return 0;
  }
}

Expected<EntryInfo> ValidateEntry(struct archive_entry* e, const Header& h, std::uint64_t& total) {
  const char* raw = archive_entry_pathname(e);
  if (!raw || !*raw) return Error(Errc::kUnsafe, "entry with no name");
  std::string name = raw;
  const std::string q = "entry " + Quote(name);
  if (name.size() > kBackupMaxPathBytes) return Error(Errc::kLimit, q + ": path too long");
  while (!name.empty() && name.front() == '/') name.erase(0, 1);
  while (!name.empty() && name.back() == '/') name.pop_back();
  if (name.empty()) return Error(Errc::kUnsafe, q + ": empty path");
  std::size_t start = 0;
  for (;;) {
    std::size_t end = name.find('/', start);
    std::string_view comp = std::string_view(name).substr(start, end == std::string::npos ? end : end - start);
    if (comp.empty() || comp == "." || comp == "..")
      return Error(Errc::kUnsafe, q + ": '..', '.' or empty path component");
    if (comp.size() > kMaxNameBytes) return Error(Errc::kLimit, q + ": name component too long");
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (archive_entry_hardlink(e)) return Error(Errc::kUnsafe, q + ": hard links are not allowed");
  EntryInfo info;
  info.type = archive_entry_filetype(e);
  if (info.type != AE_IFREG && info.type != AE_IFDIR && info.type != AE_IFLNK)
    return Error(Errc::kUnsafe, q + ": device nodes, fifos and sockets are not allowed");
  info.abs = "/" + name;
  const std::string abs = info.abs.string();
  for (const auto& r : h.info.roots) {
    if (IsUnder(abs, r.string()) && r.string().size() > info.root.string().size()) info.root = r;
  }
  if (info.root.empty()) return Error(Errc::kUnsafe, q + ": outside the backup's source paths");
  info.name = std::move(name);
  info.mode = static_cast<unsigned>(archive_entry_perm(e)) & 07777u;
  info.uid = archive_entry_uid(e);
  info.gid = archive_entry_gid(e);
  info.mtime = archive_entry_mtime(e);
  info.mtime_ns = archive_entry_mtime_nsec(e);
  if (info.type == AE_IFREG) {
    const la_int64_t size = archive_entry_size(e);
    if (size < 0) return Error(Errc::kParse, q + ": negative size");
    info.size = static_cast<std::uint64_t>(size);
    if (info.size > kBackupMaxTotalBytes - total)
      return Error(Errc::kLimit, q + ": backup content exceeds the total size bound");
    total += info.size;
  } else if (info.type == AE_IFLNK) {
    const char* t = archive_entry_symlink(e);
    if (!t || !*t) return Error(Errc::kUnsafe, q + ": symlink without a target");
    info.target = t;
    if (info.target.size() > kBackupMaxPathBytes) return Error(Errc::kLimit, q + ": symlink target too long");
  }
  return info;
}

// Reads every entry of the tar stream through `visit`, then the rest of the stream to its end
// (final chunk or digest), so a successful walk means the whole file was verified.
Status WalkArchive(FrameReader& reader, const Header& h, const Visitor& visit) {
  Utf8Locale locale;
  std::unique_ptr<struct archive, int (*)(struct archive*)> a(archive_read_new(), archive_read_free);
  if (!a) return Error(Errc::kInternal, "archive_read_new failed");
  archive_read_support_format_tar(a.get());
  ReadCtx ctx;
  ctx.reader = &reader;
  auto failure = [&](const std::string& what) -> Error {
    if (ctx.error) return *ctx.error;
    const char* msg = archive_error_string(a.get());
    return Error(Errc::kParse, "tar: " + what + ": " + (msg ? msg : "unknown error"));
  };
  if (archive_read_open(a.get(), &ctx, nullptr, ReadCallback, nullptr) != ARCHIVE_OK) return failure("opening");
  std::size_t count = 0;
  std::uint64_t total = 0;
  std::set<std::string> links;
  for (;;) {
    struct archive_entry* e = nullptr;
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK) return failure("reading entry " + std::to_string(count));
    if (++count > kBackupMaxEntries)
      return Error(Errc::kLimit, "more than " + std::to_string(kBackupMaxEntries) + " entries");
    UPK_TRY_ASSIGN(EntryInfo info, ValidateEntry(e, h, total));
    // An entry below an earlier symlink entry would be written through it: refused here, so the
    // verification pass (before any write) already catches it.
    for (std::size_t slash = info.name.find('/'); slash != std::string::npos; slash = info.name.find('/', slash + 1)) {
      if (links.count(info.name.substr(0, slash)))
        return Error(Errc::kUnsafe, "entry " + Quote(info.name) + ": below a symlink entry of the backup");
    }
    if (info.type == AE_IFLNK) links.insert(info.name);
    DataFn data = [&](std::uint8_t* buf, std::size_t n) -> Expected<std::size_t> {
      la_ssize_t got = archive_read_data(a.get(), buf, n);
      if (got < 0) return failure("reading " + Quote(info.name));
      return static_cast<std::size_t>(got);
    };
    auto visited = visit(info, data);
    if (!visited) return visited.error();
  }
  // libarchive may read ahead past the end-of-archive blocks and not report a failed read.
  if (ctx.error) return *ctx.error;
  while (!reader.done()) {
    auto chunk = reader.Next();
    if (!chunk) return chunk.error();
  }
  return OkStatus();
}

// Opens the file, checks the password and verifies everything; on success the fd is rewound.
Expected<OpenedBackup> OpenAndVerify(const fs::path& file, std::optional<std::string_view> password,
                                     std::optional<Keys>& keys, std::uint64_t* total_bytes) {
  UPK_TRY_ASSIGN(OpenedBackup opened, OpenBackup(file));
  const Header& h = opened.header;
  if (h.info.encrypted) {
    if (!password) return Error(Errc::kInvalidArgument, file.string() + ": encrypted backup: password required");
    UPK_TRY(CheckPassword(*password));
    UPK_TRY_ASSIGN(keys, DeriveKeys(*password, h.salt, h.opslimit, h.memlimit));
    if (sodium_memcmp(keys->check.data(), h.check.data(), kKeyBytes) != 0)
      return Error(Errc::kVerification, file.string() + ": wrong password");
  }
  auto verify = [&]() -> Status {
    if (::lseek(opened.fd.get(), 0, SEEK_SET) != 0) return IoError(file, errno);
    FrameReader reader(opened.fd.get(), file.string());
    UPK_TRY_ASSIGN(std::string bytes, reader.ReadHeaderBytes());
    if (bytes != h.bytes) return Error(Errc::kVerification, "header changed while reading");
    UPK_TRY(reader.StartBody(keys ? &keys->stream : nullptr, h.bytes));
    std::uint64_t total = 0;
    std::vector<std::uint8_t> sink(kChunkBytes);
    auto walked = WalkArchive(reader, h, [&](const EntryInfo& info, const DataFn& data) -> Status {
      std::uint64_t seen = 0;
      for (;;) {
        UPK_TRY_ASSIGN(std::size_t got, data(sink.data(), sink.size()));
        if (got == 0) break;
        seen += got;
      }
      if (seen != info.size) return Error(Errc::kVerification, "entry " + Quote(info.name) + ": size mismatch");
      total += seen;
      return OkStatus();
    });
    if (!walked && !h.info.encrypted) {
      // Plain backups: a damaged byte usually shows first as a tar error; the digest names the cause.
      while (!reader.done()) {
        auto chunk = reader.Next();
        if (!chunk) {
          if (chunk.error().code() == Errc::kVerification) return chunk.error();
          break;
        }
      }
    }
    if (!walked) return walked;
    if (total_bytes) *total_bytes = total;
    return OkStatus();
  };
  if (auto s = verify(); !s) return s.error().Wrap(file.string());
  if (::lseek(opened.fd.get(), 0, SEEK_SET) != 0) return IoError(file, errno);
  return opened;
}

// ---------------------------------------------------------------------------------------------
// Restore: writes without following symlinks below a recorded source path.

std::string TempName(const std::string& name) {
  unsigned char rnd[6];
  randombytes_buf(rnd, sizeof rnd);
  return "." + name.substr(0, 200) + ".upk-restore-" + ToHex(std::span<const std::uint8_t>(rnd, sizeof rnd));
}

fs::path DestOf(const fs::path& prefix, const fs::path& abs) {
  return prefix.empty() ? abs : prefix / abs.relative_path();
}

struct ParentDir {
  UniqueFd fd;
  std::string name;
  fs::path dir;  // for messages
};

// The directory that holds `abs`: the parent of its source path is reached normally (it is the
// system's layout), everything below with O_NOFOLLOW, so an entry can't redirect a later one.
Expected<ParentDir> OpenParent(const fs::path& prefix, const EntryInfo& e, bool create) {
  const fs::path root_parent = e.root.parent_path();
  fs::path dir = DestOf(prefix, root_parent);
  if (create) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return Error(Errc::kIo, dir.string() + ": " + ec.message());
  }
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return IoError(dir, errno);
  std::vector<std::string> comps;
  for (const auto& c : e.abs.lexically_relative(root_parent)) comps.push_back(c.string());
  if (comps.empty()) return Error(Errc::kInternal, "entry " + Quote(e.name) + ": empty relative path");
  for (std::size_t i = 0; i + 1 < comps.size(); ++i) {
    dir /= comps[i];
    int next = ::openat(fd.get(), comps[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0 && errno == ENOENT && create) {
      if (::mkdirat(fd.get(), comps[i].c_str(), 0700) != 0 && errno != EEXIST) return IoError(dir, errno);
      next = ::openat(fd.get(), comps[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (next < 0) {
      if (errno == ELOOP || errno == ENOTDIR)
        return Error(Errc::kUnsafe, dir.string() + ": a symlink or not a directory; refusing to write through it");
      return IoError(dir, errno);
    }
    fd = UniqueFd(next);
  }
  ParentDir out;
  out.fd = std::move(fd);
  out.name = comps.back();
  out.dir = dir;
  return out;
}

struct Restorer {
  fs::path prefix;
  bool as_root = ::geteuid() == 0;
  std::vector<EntryInfo> dirs;
  RestoreReport report;

  Status Owner(int fd, const char* name, int flags, const EntryInfo& e, const fs::path& dest) {
    if (!as_root) return OkStatus();
    if (::fchownat(fd, name, static_cast<uid_t>(e.uid), static_cast<gid_t>(e.gid), flags) != 0)
      return IoError(dest, errno);
    return OkStatus();
  }

  Status Entry(const EntryInfo& e, const DataFn& data, std::uint64_t& done, std::uint64_t total,
               const BackupProgressFn& progress) {
    const fs::path dest = DestOf(prefix, e.abs);
    UPK_TRY_ASSIGN(ParentDir parent, OpenParent(prefix, e, true));
    const int dfd = parent.fd.get();
    const timespec times[2] = {{e.mtime, e.mtime_ns}, {e.mtime, e.mtime_ns}};
    if (e.type == AE_IFDIR) {
      if (::mkdirat(dfd, parent.name.c_str(), 0700) != 0) {
        if (errno != EEXIST) return IoError(dest, errno);
        struct stat st {};
        if (::fstatat(dfd, parent.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return IoError(dest, errno);
        if (!S_ISDIR(st.st_mode)) return Error(Errc::kIo, dest.string() + ": exists and is not a directory");
      }
      dirs.push_back(e);
      report.restored.push_back(dest);
      return OkStatus();
    }
    const std::string tmp = TempName(parent.name);
    auto fail = [&](Error err) -> Error {
      ::unlinkat(dfd, tmp.c_str(), 0);
      return err;
    };
    if (e.type == AE_IFLNK) {
      if (::symlinkat(e.target.c_str(), dfd, tmp.c_str()) != 0) return IoError(dest, errno);
      if (auto s = Owner(dfd, tmp.c_str(), AT_SYMLINK_NOFOLLOW, e, dest); !s) return fail(s.error());
      if (::utimensat(dfd, tmp.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) return fail(IoError(dest, errno));
    } else {
      UniqueFd f(::openat(dfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (f.get() < 0) return IoError(dest, errno);
      std::vector<std::uint8_t> buf(kChunkBytes);
      for (;;) {
        auto got = data(buf.data(), buf.size());
        if (!got) return fail(got.error());
        if (*got == 0) break;
        if (auto w = WriteAll(f.get(), std::string_view(reinterpret_cast<const char*>(buf.data()), *got), dest); !w)
          return fail(w.error());
        done += *got;
        if (progress) progress(done, total);
      }
      if (auto s = Owner(f.get(), "", AT_EMPTY_PATH, e, dest); !s) return fail(s.error());
      // set-id bits are dropped: configuration never needs them and a hostile backup could ask.
      if (::fchmod(f.get(), e.mode & 01777u) != 0) return fail(IoError(dest, errno));
      if (::futimens(f.get(), times) != 0) return fail(IoError(dest, errno));
      if (::fsync(f.get()) != 0) return fail(IoError(dest, errno));
      if (::close(f.Release()) != 0) return fail(IoError(dest, errno));
    }
    if (::renameat(dfd, tmp.c_str(), dfd, parent.name.c_str()) != 0) return fail(IoError(dest, errno));
    ::fsync(dfd);
    report.restored.push_back(dest);
    return OkStatus();
  }

  // Directory modes, owners and mtimes last (children first), so a read-only directory or the
  // writes into it don't undo them.
  Status FinishDirs() {
    for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
      const EntryInfo& e = *it;
      const fs::path dest = DestOf(prefix, e.abs);
      UPK_TRY_ASSIGN(ParentDir parent, OpenParent(prefix, e, false));
      UniqueFd d(::openat(parent.fd.get(), parent.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (d.get() < 0) return IoError(dest, errno);
      UPK_TRY(Owner(d.get(), "", AT_EMPTY_PATH, e, dest));
      if (::fchmod(d.get(), e.mode & 01777u) != 0) return IoError(dest, errno);
      const timespec times[2] = {{e.mtime, e.mtime_ns}, {e.mtime, e.mtime_ns}};
      if (::futimens(d.get(), times) != 0) return IoError(dest, errno);
      ::fsync(d.get());
    }
    return OkStatus();
  }
};

// ---------------------------------------------------------------------------------------------
// Creating.

struct SourceEntry {
  fs::path abs;
  struct stat st {};
};

struct Collector {
  std::vector<std::string> excluded;
  // The excluded secrets' files by identity too, so another spelling of the same file (through a
  // symlinked directory, or a hard link) is left out as well.
  std::vector<std::pair<dev_t, ino_t>> excluded_ids;
  std::vector<SourceEntry> entries;
  std::uint64_t total = 0;

  bool IsExcluded(const fs::path& p) const {
    return std::any_of(excluded.begin(), excluded.end(), [&](const std::string& x) { return IsUnder(p.string(), x); });
  }

  void Exclude(const fs::path& p) {
    excluded.push_back(p.string());
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) excluded_ids.emplace_back(st.st_dev, st.st_ino);
  }

  // False when `p` is an excluded secret under another name.
  Expected<bool> Add(const fs::path& p) {
    SourceEntry e;
    e.abs = p;
    if (::lstat(p.c_str(), &e.st) != 0) {
      if (errno == ENOENT) return Error(Errc::kNotFound, p.string() + ": source path does not exist");
      return IoError(p, errno);
    }
    if (!S_ISREG(e.st.st_mode) && !S_ISDIR(e.st.st_mode) && !S_ISLNK(e.st.st_mode))
      return Error(Errc::kUnsafe, p.string() + ": not a regular file, directory or symlink");
    if (!S_ISLNK(e.st.st_mode) && std::find(excluded_ids.begin(), excluded_ids.end(),
                                            std::make_pair(e.st.st_dev, e.st.st_ino)) != excluded_ids.end())
      return false;
    if (p.string().size() > kBackupMaxPathBytes)
      return Error(Errc::kLimit, p.string().substr(0, 300) + ": path too long");
    if (entries.size() >= kBackupMaxEntries)
      return Error(Errc::kLimit, "more than " + std::to_string(kBackupMaxEntries) + " files to back up");
    if (S_ISREG(e.st.st_mode)) {
      const auto size = static_cast<std::uint64_t>(e.st.st_size);
      if (size > kBackupMaxTotalBytes - total)
        return Error(Errc::kLimit, "backup content exceeds the total size bound");
      total += size;
    }
    entries.push_back(std::move(e));
    return true;
  }

  Status Root(const fs::path& root) {
    if (IsExcluded(root)) return OkStatus();
    UPK_TRY_ASSIGN(bool added, Add(root));
    if (!added) return OkStatus();
    if (!S_ISDIR(entries.back().st.st_mode)) return OkStatus();
    std::error_code ec;
    fs::recursive_directory_iterator it(root, fs::directory_options::none, ec);
    if (ec) return Error(Errc::kIo, root.string() + ": " + ec.message());
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) return Error(Errc::kIo, root.string() + ": " + ec.message());
      const fs::path p = it->path();
      if (IsExcluded(p)) {
        it.disable_recursion_pending();
        continue;
      }
      UPK_TRY_ASSIGN(bool kept, Add(p));
      if (!kept) it.disable_recursion_pending();
    }
    if (ec) return Error(Errc::kIo, root.string() + ": " + ec.message());
    return OkStatus();
  }
};

struct WriteCtx {
  FrameWriter* writer = nullptr;
  std::optional<Error> error;
};

la_ssize_t WriteCallback(struct archive* a, void* client, const void* buffer, size_t length) {
  auto* ctx = static_cast<WriteCtx*>(client);
  if (auto s = ctx->writer->Write(buffer, length); !s) {
    ctx->error = s.error();
    archive_set_error(a, EIO, "backup write failed");
    return -1;
  }
  return static_cast<la_ssize_t>(length);
}

Status WriteEntries(struct archive* a, const std::vector<SourceEntry>& entries, const BackupProgressFn& progress,
                    std::uint64_t total) {
  std::uint64_t done = 0;
  std::vector<char> buf(kChunkBytes);
  for (const auto& e : entries) {
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> ae(archive_entry_new(), archive_entry_free);
    const std::string name = e.abs.relative_path().string();
    archive_entry_copy_pathname(ae.get(), name.c_str());
    archive_entry_set_perm(ae.get(), e.st.st_mode & 07777);
    archive_entry_set_uid(ae.get(), e.st.st_uid);
    archive_entry_set_gid(ae.get(), e.st.st_gid);
    archive_entry_set_mtime(ae.get(), e.st.st_mtim.tv_sec, e.st.st_mtim.tv_nsec);
    std::uint64_t size = 0;
    if (S_ISDIR(e.st.st_mode)) {
      archive_entry_set_filetype(ae.get(), AE_IFDIR);
    } else if (S_ISLNK(e.st.st_mode)) {
      archive_entry_set_filetype(ae.get(), AE_IFLNK);
      std::string target(kBackupMaxPathBytes + 1, '\0');
      ssize_t n = ::readlink(e.abs.c_str(), target.data(), target.size());
      if (n < 0) return IoError(e.abs, errno);
      if (static_cast<std::size_t>(n) > kBackupMaxPathBytes)
        return Error(Errc::kLimit, e.abs.string() + ": symlink target too long");
      target.resize(static_cast<std::size_t>(n));
      archive_entry_copy_symlink(ae.get(), target.c_str());
    } else {
      archive_entry_set_filetype(ae.get(), AE_IFREG);
      size = static_cast<std::uint64_t>(e.st.st_size);
      archive_entry_set_size(ae.get(), static_cast<la_int64_t>(size));
    }
    UniqueFd f;
    if (S_ISREG(e.st.st_mode)) {
      f = UniqueFd(::open(e.abs.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (f.get() < 0) return IoError(e.abs, errno);
    }
    if (archive_write_header(a, ae.get()) != ARCHIVE_OK) {
      const char* msg = archive_error_string(a);
      return Error(Errc::kIo, e.abs.string() + ": tar: " + (msg ? msg : "write failed"));
    }
    std::uint64_t left = size;
    while (left > 0) {
      ssize_t n = ::read(f.get(), buf.data(), static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size())));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return IoError(e.abs, errno);
      if (n == 0) return Error(Errc::kIo, e.abs.string() + ": file shrank while being backed up");
      if (archive_write_data(a, buf.data(), static_cast<std::size_t>(n)) != n) {
        const char* msg = archive_error_string(a);
        return Error(Errc::kIo, e.abs.string() + ": tar: " + (msg ? msg : "write failed"));
      }
      left -= static_cast<std::uint64_t>(n);
      done += static_cast<std::uint64_t>(n);
      if (progress) progress(done, total);
    }
  }
  return OkStatus();
}

std::string FormatId(SysTime t, std::span<const std::uint8_t> rnd) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return std::string(buf) + "-" + ToHex(rnd.first(2));
}

Json ExcludedJson(const std::vector<ExcludedSecret>& excluded) {
  Json arr = Json::array();
  for (const auto& e : excluded) arr.push_back({{"path", e.path.string()}, {"kind", e.kind}, {"reason", e.reason}});
  return arr;
}

Json RootsJson(const std::vector<fs::path>& roots) {
  Json arr = Json::array();
  for (const auto& r : roots) arr.push_back(r.string());
  return arr;
}

}  // namespace

namespace backup_internal {

Status WriteBackupFile(const fs::path& out, Json header, std::optional<std::string_view> password,
                       const trust::KdfParams& kdf, Random& random,
                       const std::function<Status(struct archive*)>& fill) {
  EnsureSodium();
  std::optional<Keys> keys;
  try {
    header["format"] = 1;
    header["encrypted"] = password.has_value();
    if (password) {
      UPK_TRY(CheckPassword(*password));
      UPK_TRY(CheckKdf(kdf, Errc::kInvalidArgument));
      Bytes salt = random.Generate(kSaltBytes);
      if (salt.size() != kSaltBytes) return Error(Errc::kInternal, "random: short salt");
      UPK_TRY_ASSIGN(keys, DeriveKeys(*password, salt, kdf.opslimit, kdf.memlimit));
      header["kdf"] = {{"name", "argon2id13"},
                       {"salt", ToHex(salt)},
                       {"opslimit", kdf.opslimit},
                       {"memlimit", kdf.memlimit},
                       {"check", ToHex(keys->check.span())}};
    }
  } catch (const std::exception& e) {
    return Error(Errc::kInvalidArgument, std::string("header: ") + e.what());
  }
  std::string json;
  try {
    json = header.dump();
  } catch (const std::exception&) {
    return Error(Errc::kInvalidArgument, "header: a field is not valid UTF-8");
  }
  if (json.size() > kBackupMaxHeaderBytes) return Error(Errc::kLimit, "header: larger than 1 MiB");
  std::string header_bytes(kMagic.data(), kMagic.size());
  std::array<std::uint8_t, 4> len{};
  PutBe32(len.data(), static_cast<std::uint32_t>(json.size()));
  header_bytes.append(reinterpret_cast<const char*>(len.data()), len.size());
  header_bytes += json;

  const fs::path tmp = TempSibling(out);
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0) return IoError(tmp, errno);
  auto write = [&]() -> Status {
    FrameWriter writer(fd.get(), out);
    UPK_TRY(writer.Begin(header_bytes, keys ? &keys->stream : nullptr));
    {
      Utf8Locale locale;
      std::unique_ptr<struct archive, int (*)(struct archive*)> a(archive_write_new(), archive_write_free);
      if (!a) return Error(Errc::kInternal, "archive_write_new failed");
      WriteCtx ctx;
      ctx.writer = &writer;
      archive_write_set_format_pax(a.get());
      if (archive_write_open(a.get(), &ctx, nullptr, WriteCallback, nullptr) != ARCHIVE_OK)
        return ctx.error ? *ctx.error : Error(Errc::kInternal, "tar: cannot open writer");
      auto filled = fill(a.get());
      if (!filled) return ctx.error ? *ctx.error : filled.error();
      if (archive_write_close(a.get()) != ARCHIVE_OK)
        return ctx.error ? *ctx.error : Error(Errc::kIo, out.string() + ": tar: closing failed");
    }
    UPK_TRY(writer.Finish());
    if (::fsync(fd.get()) != 0) return IoError(out, errno);
    if (::close(fd.Release()) != 0) return IoError(out, errno);
    // link() refuses an existing name: a backup or export is never overwritten.
    if (::link(tmp.c_str(), out.c_str()) != 0) {
      if (errno == EEXIST)
        return Error(Errc::kInvalidArgument, out.string() + ": already exists; refusing to overwrite");
      return IoError(out, errno);
    }
    return OkStatus();
  };
  auto written = write();
  fd.Reset();
  ::unlink(tmp.c_str());
  if (!written) return written;
  return SyncDirectory(out.parent_path());
}

}  // namespace backup_internal

// ---------------------------------------------------------------------------------------------

Expected<BackupInfo> InspectBackupFile(const fs::path& file) {
  UPK_TRY_ASSIGN(OpenedBackup opened, OpenBackup(file));
  return opened.header.info;
}

Expected<BackupInfo> VerifyBackupFile(const fs::path& file, std::optional<std::string_view> password) {
  std::optional<Keys> keys;
  UPK_TRY_ASSIGN(OpenedBackup opened, OpenAndVerify(file, password, keys, nullptr));
  return opened.header.info;
}

Expected<RestoreReport> RestoreBackupFile(const fs::path& file, std::optional<std::string_view> password,
                                          const RestoreOptions& options) {
  if (!options.root.empty() && !options.root.is_absolute())
    return Error(Errc::kInvalidArgument, "restore root " + Quote(options.root.string()) + ": not absolute");
  std::optional<Keys> keys;
  std::uint64_t total = 0;
  UPK_TRY_ASSIGN(OpenedBackup opened, OpenAndVerify(file, password, keys, &total));
  const Header& h = opened.header;
  Restorer restorer;
  restorer.prefix = options.root;
  restorer.report.id = h.info.id;
  restorer.report.not_in_backup = h.info.excluded;
  FrameReader reader(opened.fd.get(), file.string());
  auto run = [&]() -> Status {
    UPK_TRY_ASSIGN(std::string bytes, reader.ReadHeaderBytes());
    if (bytes != h.bytes) return Error(Errc::kVerification, "header changed since verification");
    UPK_TRY(reader.StartBody(keys ? &keys->stream : nullptr, h.bytes));
    std::uint64_t done = 0;
    UPK_TRY(WalkArchive(reader, h, [&](const EntryInfo& e, const DataFn& data) {
      return restorer.Entry(e, data, done, total, options.progress);
    }));
    return restorer.FinishDirs();
  };
  if (auto s = run(); !s) return s.error().Wrap(file.string() + ": restore");
  return std::move(restorer.report);
}

Status ExportVaultKey(const fs::path& vault_key, const fs::path& out, std::string_view password,
                      const trust::KdfParams& kdf, Random& random, const Clock& clock) {
  UPK_TRY(CheckPassword(password));
  UPK_TRY(CheckSourcePath(vault_key, "vault key"));
  Collector collector;
  UPK_TRY(collector.Root(vault_key));
  if (!S_ISREG(collector.entries.front().st.st_mode))
    return Error(Errc::kInvalidArgument, vault_key.string() + ": vault key is not a regular file");
  if (collector.total > kMaxVaultKeyBytes) return Error(Errc::kLimit, vault_key.string() + ": larger than 64 KiB");
  Json header = {{"created", FormatTimestamp(clock.Now())},
                 {"reason", "vault key export"},
                 {"installed", Json::object()},
                 {"roots", RootsJson({vault_key})},
                 {"excluded", Json::array()}};
  return backup_internal::WriteBackupFile(out, std::move(header), password, kdf, random, [&](struct archive* a) {
    return WriteEntries(a, collector.entries, {}, collector.total);
  });
}

// ---------------------------------------------------------------------------------------------

BackupStore::BackupStore(fs::path dir, std::size_t keep_last_n, const Clock& clock, Random& random)
    : dir_(std::move(dir)), keep_last_n_(std::max<std::size_t>(keep_last_n, 1)), clock_(clock), random_(random) {}

fs::path BackupStore::PathOf(const std::string& id) const { return dir_ / (id + std::string(kExt)); }

Expected<BackupInfo> BackupStore::Create(const BackupSource& source, const BackupOptions& options,
                                         const Json& installed, BackupProgressFn progress) {
  if (!installed.is_object()) return Error(Errc::kInvalidArgument, "installed: not a JSON object");
  if (options.reason.size() > kMaxReasonBytes) return Error(Errc::kInvalidArgument, "reason: too long");
  if (options.password) UPK_TRY(CheckPassword(*options.password));
  if (options.include_vault_key && !options.password)
    return Error(Errc::kPolicy, "vault key: only exported in a password-protected backup");
  if (source.paths.empty()) return Error(Errc::kInvalidArgument, "backup source: no paths");

  std::vector<fs::path> roots;
  std::vector<ExcludedSecret> excluded;
  Collector collector;
  auto add_root = [&](const fs::path& p) {
    if (std::none_of(roots.begin(), roots.end(), [&](const fs::path& r) { return IsUnder(p.string(), r.string()); }))
      roots.push_back(p);
  };
  auto secret = [&](const fs::path& p, const char* kind, bool include, const char* reason) -> Status {
    if (p.empty()) return OkStatus();
    UPK_TRY(CheckSourcePath(p, kind));
    if (include) {
      add_root(p);
    } else {
      ExcludedSecret e;
      e.path = p;
      e.kind = kind;
      e.reason = reason;
      excluded.push_back(std::move(e));
      collector.Exclude(p);
    }
    return OkStatus();
  };
  // Roots that are under another root are dropped (their files are already in).
  std::vector<fs::path> sorted = source.paths;
  for (const auto& p : sorted) UPK_TRY(CheckSourcePath(p, "source path"));
  std::sort(sorted.begin(), sorted.end(), [](const fs::path& a, const fs::path& b) { return a.string() < b.string(); });
  for (const auto& p : sorted) add_root(p);
  for (const auto& k : source.tls_key_paths)
    UPK_TRY(secret(k, "tls_key", options.include_tls_keys, "not requested (include_tls_keys)"));
  UPK_TRY(secret(source.licence_path, "licence", options.include_licence, "not requested (include_licence)"));
  UPK_TRY(secret(source.vault_key_path, "vault_key", options.include_vault_key,
                 options.password ? "not requested (include_vault_key)" : "needs a password-protected backup"));
  // A secret that is included never hides under an excluded one: exclusion is checked per path.
  for (const auto& r : roots) UPK_TRY(collector.Root(r));

  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return Error(Errc::kIo, dir_.string() + ": " + ec.message());
  fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::replace, ec);

  const SysTime now = clock_.Now();
  std::string id;
  for (int attempt = 0; attempt < 16 && id.empty(); ++attempt) {
    Bytes rnd = random_.Generate(2);
    if (rnd.size() != 2) return Error(Errc::kInternal, "random: short read");
    std::string candidate = FormatId(now, rnd);
    if (!fs::exists(PathOf(candidate), ec)) id = candidate;
  }
  if (id.empty()) return Error(Errc::kIo, dir_.string() + ": no free backup id");

  Json header = {{"created", FormatTimestamp(now)},
                 {"reason", options.reason},
                 {"installed", installed},
                 {"roots", RootsJson(roots)},
                 {"excluded", ExcludedJson(excluded)}};
  UPK_TRY(backup_internal::WriteBackupFile(
      PathOf(id), std::move(header), options.password, options.kdf, random_,
      [&](struct archive* a) { return WriteEntries(a, collector.entries, progress, collector.total); }));
  UPK_TRY_ASSIGN(BackupInfo info, InspectBackupFile(PathOf(id)));

  // Prune: keep the newest keep_last_n (ids sort by time), always including the new one.
  std::vector<std::string> ids;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() > kExt.size() && name.ends_with(kExt) && ValidId(name.substr(0, name.size() - kExt.size())))
      ids.push_back(name.substr(0, name.size() - kExt.size()));
  }
  std::sort(ids.rbegin(), ids.rend());
  std::size_t kept = 1;
  for (const auto& other : ids) {
    if (other == id) continue;
    if (kept < keep_last_n_) {
      ++kept;
      continue;
    }
    ::unlink(PathOf(other).c_str());
  }
  (void)SyncDirectory(dir_);  // pruning is best effort
  return info;
}

Expected<std::vector<BackupInfo>> BackupStore::List() {
  std::vector<BackupInfo> out;
  std::error_code ec;
  fs::directory_iterator it(dir_, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return out;
    return Error(Errc::kIo, dir_.string() + ": " + ec.message());
  }
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return Error(Errc::kIo, dir_.string() + ": " + ec.message());
    const std::string name = it->path().filename().string();
    if (!(name.size() > kExt.size() && name.ends_with(kExt))) continue;
    const std::string id = name.substr(0, name.size() - kExt.size());
    if (!ValidId(id)) continue;
    auto info = InspectBackupFile(it->path());
    if (info) {
      out.push_back(std::move(info).value());
    } else {
      BackupInfo damaged;
      damaged.id = id;
      damaged.path = it->path();
      struct stat st {};
      if (::stat(it->path().c_str(), &st) == 0) damaged.bytes = static_cast<std::uint64_t>(st.st_size);
      damaged.error = info.error();
      out.push_back(std::move(damaged));
    }
  }
  std::sort(out.begin(), out.end(), [](const BackupInfo& a, const BackupInfo& b) { return a.id > b.id; });
  return out;
}

Expected<BackupInfo> BackupStore::Inspect(const std::string& id) {
  if (!ValidId(id)) return Error(Errc::kInvalidArgument, "backup id " + Quote(id) + ": invalid");
  return InspectBackupFile(PathOf(id));
}

Expected<RestoreReport> BackupStore::Restore(const std::string& id, std::optional<std::string_view> password,
                                             const RestoreOptions& options) {
  if (!ValidId(id)) return Error(Errc::kInvalidArgument, "backup id " + Quote(id) + ": invalid");
  auto report = RestoreBackupFile(PathOf(id), password, options);
  if (report) report->id = id;
  return report;
}

}  // namespace upkeep::agent
