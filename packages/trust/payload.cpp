#include "upkeep/trust/payload.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "encoding.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"

namespace upkeep::trust {
namespace {

constexpr char kMagic[8] = {'U', 'P', 'K', 'C', 'R', 'Y', 'P', 'T'};
constexpr std::uint16_t kFormatVersion = 1;
constexpr std::size_t kLengthOffset = 16;
constexpr std::size_t kKeyCheckOffset = 24;
constexpr std::size_t kKeyCheckBytes = 16;
constexpr std::size_t kStreamHeaderOffset = 40;
constexpr std::uint64_t kMaxPlaintextBytes = std::uint64_t{1} << 50;
constexpr std::size_t kAdBytes = kStreamHeaderOffset;  // magic .. key check, bound into every chunk
constexpr char kKeyCheckContext[] = "upkeep payload key check v1";

static_assert(kStreamHeaderOffset + crypto_secretstream_xchacha20poly1305_HEADERBYTES == kPayloadHeaderBytes);
static_assert(crypto_secretstream_xchacha20poly1305_ABYTES == kPayloadChunkOverhead);

Error IoError(const std::filesystem::path& path, int err) {
  return Error(Errc::kIo, path.string() + ": " + std::strerror(err));
}

void PutU64(std::uint8_t* p, std::uint64_t v) {
  internal::PutU32(p, static_cast<std::uint32_t>(v >> 32));
  internal::PutU32(p + 4, static_cast<std::uint32_t>(v));
}
std::uint64_t GetU64(const std::uint8_t* p) {
  return (std::uint64_t{internal::GetU32(p)} << 32) | internal::GetU32(p + 4);
}

void KeyCheck(const ContentKey& key, std::uint8_t* out) {
  crypto_generichash(out, kKeyCheckBytes, reinterpret_cast<const unsigned char*>(kKeyCheckContext),
                     sizeof kKeyCheckContext - 1, key.data(), ContentKey::kBytes);
}

// Reads until `size` bytes or end of file; returns how many were read.
Expected<std::size_t> ReadFull(int fd, std::uint8_t* buf, std::size_t size, const std::filesystem::path& path) {
  std::size_t got = 0;
  while (got < size) {
    ssize_t n = ::read(fd, buf + got, size - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(path, errno);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return got;
}

// Owns the input descriptor and the temporary output; unless committed, the temporary file is
// removed, so a failed run leaves nothing at or next to the destination.
class StreamFiles {
 public:
  ~StreamFiles() {
    if (in_ >= 0) ::close(in_);
    if (out_ >= 0) ::close(out_);
    if (!tmp_.empty()) ::unlink(tmp_.c_str());
  }

  Status Open(const std::filesystem::path& input, const std::filesystem::path& output, unsigned mode) {
    in_path_ = input;
    out_path_ = output;
    struct stat st;
    if (::lstat(output.c_str(), &st) == 0) {
      return Error(Errc::kInvalidArgument, output.string() + ": already exists; refusing to overwrite");
    }
    in_ = ::open(input.c_str(), O_RDONLY | O_CLOEXEC);
    if (in_ < 0) {
      int e = errno;
      return Error(e == ENOENT ? Errc::kNotFound : Errc::kIo, input.string() + ": " + std::strerror(e));
    }
    if (::fstat(in_, &st) != 0) return IoError(input, errno);
    if (!S_ISREG(st.st_mode)) return Error(Errc::kInvalidArgument, input.string() + ": not a regular file");
    in_size_ = static_cast<std::uint64_t>(st.st_size);
    auto tmp = TempSibling(output);
    out_ = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (out_ < 0) return IoError(tmp, errno);
    tmp_ = tmp;
    ::fchmod(out_, mode);
    return OkStatus();
  }

  Status Write(const std::uint8_t* data, std::size_t size) {
    return WriteAll(out_, std::string_view(reinterpret_cast<const char*>(data), size), out_path_);
  }

  // fsync, then link into place (link refuses an existing destination, unlike rename).
  Status Commit() {
    if (::fsync(out_) != 0) return IoError(out_path_, errno);
    int rc = ::close(out_);
    out_ = -1;
    if (rc != 0) return IoError(out_path_, errno);
    if (::link(tmp_.c_str(), out_path_.c_str()) != 0) {
      int e = errno;
      if (e == EEXIST)
        return Error(Errc::kInvalidArgument, out_path_.string() + ": already exists; refusing to overwrite");
      return IoError(out_path_, e);
    }
    ::unlink(tmp_.c_str());
    tmp_.clear();
    return SyncDirectory(out_path_.parent_path());
  }

  int in() const { return in_; }
  std::uint64_t in_size() const { return in_size_; }
  const std::filesystem::path& in_path() const { return in_path_; }

 private:
  int in_ = -1;
  int out_ = -1;
  std::uint64_t in_size_ = 0;
  std::filesystem::path in_path_, out_path_, tmp_;
};

// Wipes the secretstream state (it holds a key derived from the content key).
struct StreamState {
  crypto_secretstream_xchacha20poly1305_state state;
  ~StreamState() { sodium_memzero(&state, sizeof state); }
};

}  // namespace

std::uint64_t EncryptedBlobSize(std::uint64_t plaintext_bytes, std::uint32_t chunk_bytes) {
  return kPayloadHeaderBytes + plaintext_bytes + kPayloadChunkOverhead * (plaintext_bytes / chunk_bytes + 1);
}

Expected<EncryptedBlobInfo> EncryptFile(const std::filesystem::path& input, const std::filesystem::path& output,
                                        const ContentKey& key, const EncryptOptions& options) {
  internal::EnsureSodium();
  const std::uint32_t chunk = options.chunk_bytes;
  if (chunk < kMinPayloadChunkBytes || chunk > kMaxPayloadChunkBytes) {
    return Error(Errc::kInvalidArgument, "chunk size " + std::to_string(chunk) + " is outside 4 KiB .. 16 MiB");
  }
  StreamFiles files;
  UPK_TRY(files.Open(input, output, options.mode));
  const std::uint64_t length = files.in_size();
  if (length > kMaxPlaintextBytes) return Error(Errc::kLimit, input.string() + ": too large to encrypt");

  std::uint8_t header[kPayloadHeaderBytes] = {};
  std::memcpy(header, kMagic, sizeof kMagic);
  internal::PutU16(header + 8, kFormatVersion);
  internal::PutU16(header + 10, 0);
  internal::PutU32(header + 12, chunk);
  PutU64(header + kLengthOffset, length);
  KeyCheck(key, header + kKeyCheckOffset);
  StreamState st;
  crypto_secretstream_xchacha20poly1305_init_push(&st.state, header + kStreamHeaderOffset, key.data());

  Hasher hasher;
  EncryptedBlobInfo info;
  hasher.Update(std::span<const std::uint8_t>(header, sizeof header));
  UPK_TRY(files.Write(header, sizeof header));
  info.blob_bytes = sizeof header;

  std::vector<std::uint8_t> plain(chunk);
  std::vector<std::uint8_t> sealed(std::size_t{chunk} + kPayloadChunkOverhead);
  const std::uint64_t chunks = length / chunk + 1;
  for (std::uint64_t index = 0; index < chunks; ++index) {
    const bool last = index + 1 == chunks;
    // Every chunk is full except the FINAL one, which holds the rest (possibly nothing).
    const std::size_t want = last ? static_cast<std::size_t>(length % chunk) : chunk;
    UPK_TRY_ASSIGN(std::size_t n, ReadFull(files.in(), plain.data(), want, input));
    if (n != want) return Error(Errc::kIo, input.string() + ": file shrank while it was being encrypted");
    unsigned long long sealed_len = 0;
    crypto_secretstream_xchacha20poly1305_push(
        &st.state, sealed.data(), &sealed_len, plain.data(), n, header, kAdBytes,
        last ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
    const std::span<const std::uint8_t> out(sealed.data(), static_cast<std::size_t>(sealed_len));
    hasher.Update(out);
    UPK_TRY(files.Write(out.data(), out.size()));
    info.plaintext_bytes += n;
    info.blob_bytes += out.size();
  }
  std::uint8_t extra = 0;
  UPK_TRY_ASSIGN(std::size_t grown, ReadFull(files.in(), &extra, 1, input));
  if (grown != 0) return Error(Errc::kIo, input.string() + ": file grew while it was being encrypted");
  UPK_TRY(files.Commit());
  info.blob_sha256_hex = hasher.FinishHex();
  return info;
}

Expected<std::uint64_t> DecryptFile(const std::filesystem::path& input, const std::filesystem::path& output,
                                    const ContentKey& key, const DecryptOptions& options) {
  internal::EnsureSodium();
  StreamFiles files;
  UPK_TRY(files.Open(input, output, options.mode));
  const std::string name = input.string();

  std::uint8_t header[kPayloadHeaderBytes];
  UPK_TRY_ASSIGN(std::size_t got, ReadFull(files.in(), header, sizeof header, input));
  if (got < sizeof kMagic || std::memcmp(header, kMagic, sizeof kMagic) != 0) {
    return Error(Errc::kParse, name + ": not an encrypted Upkeep payload (bad magic)");
  }
  if (got < sizeof header) {
    return Error(Errc::kVerification,
                 name + ": truncated inside the " + std::to_string(kPayloadHeaderBytes) + "-byte header");
  }
  const std::uint16_t version = internal::GetU16(header + 8);
  if (version != kFormatVersion) {
    return Error(Errc::kParse, name + ": payload format version " + std::to_string(version) + " is not supported");
  }
  if (internal::GetU16(header + 10) != 0) return Error(Errc::kParse, name + ": unknown payload flags");
  const std::uint32_t chunk = internal::GetU32(header + 12);
  if (chunk < kMinPayloadChunkBytes || chunk > kMaxPayloadChunkBytes) {
    return Error(Errc::kParse, name + ": chunk size " + std::to_string(chunk) + " is outside 4 KiB .. 16 MiB");
  }
  const std::uint64_t length = GetU64(header + kLengthOffset);
  if (length > kMaxPlaintextBytes) return Error(Errc::kParse, name + ": plaintext length out of range");
  std::uint8_t check[kKeyCheckBytes];
  KeyCheck(key, check);
  if (sodium_memcmp(check, header + kKeyCheckOffset, kKeyCheckBytes) != 0) {
    return Error(Errc::kVerification,
                 name + ": wrong content key for this payload (or its header's key check was altered)");
  }
  StreamState st;
  if (crypto_secretstream_xchacha20poly1305_init_pull(&st.state, header + kStreamHeaderOffset, key.data()) != 0) {
    return Error(Errc::kVerification, name + ": invalid stream header");
  }

  std::vector<std::uint8_t> sealed(std::size_t{chunk} + kPayloadChunkOverhead);
  std::vector<std::uint8_t> plain(chunk);
  // The header's length (authenticated as additional data of every chunk) fixes every chunk's
  // size, so a short read is truncation and anything after the FINAL chunk is trailing data.
  const std::uint64_t chunks = length / chunk + 1;
  std::uint64_t offset = kPayloadHeaderBytes;
  for (std::uint64_t index = 0; index < chunks; ++index) {
    const bool last = index + 1 == chunks;
    const std::size_t want = (last ? static_cast<std::size_t>(length % chunk) : chunk) + kPayloadChunkOverhead;
    UPK_TRY_ASSIGN(std::size_t n, ReadFull(files.in(), sealed.data(), want, input));
    if (n != want) {
      return Error(Errc::kVerification, name + ": truncated: ends " + (n == 0 ? "before chunk " : "inside chunk ") +
                                            std::to_string(index) + " of " + std::to_string(chunks) + " (at byte " +
                                            std::to_string(offset + n) + ")");
    }
    unsigned long long plain_len = 0;
    unsigned char tag = 0;
    if (crypto_secretstream_xchacha20poly1305_pull(&st.state, plain.data(), &plain_len, &tag, sealed.data(), n, header,
                                                   kAdBytes) != 0) {
      return Error(Errc::kVerification, name + ": chunk " + std::to_string(index) + " (at byte " +
                                            std::to_string(offset) +
                                            ") failed authentication: the payload was altered");
    }
    const unsigned char want_tag =
        last ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
    if (tag != want_tag) {
      return Error(Errc::kVerification, name + ": chunk " + std::to_string(index) + " has the wrong tag (" +
                                            (last ? "expected FINAL" : "unexpected FINAL") + ")");
    }
    UPK_TRY(files.Write(plain.data(), static_cast<std::size_t>(plain_len)));
    offset += n;
  }
  std::uint8_t extra = 0;
  UPK_TRY_ASSIGN(std::size_t trailing, ReadFull(files.in(), &extra, 1, input));
  if (trailing != 0) return Error(Errc::kVerification, name + ": trailing data after the final chunk");
  UPK_TRY(files.Commit());
  return length;
}

}  // namespace upkeep::trust
