#include "upkeep/trust/payload.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <optional>
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

// The one decrypting loop, shared by DecryptFile and the streaming blob source: checks the
// header, then authenticates and decrypts chunk by chunk from a borrowed descriptor. When given a
// hasher, every blob byte read goes through it.
class BlobReader {
 public:
  BlobReader(const ContentKey& key, std::string name, Hasher* hasher) : key_(key), name_(std::move(name)), hasher_(hasher) {}

  Status Start(int fd, const std::filesystem::path& path) {
    internal::EnsureSodium();
    fd_ = fd;
    path_ = path;
    UPK_TRY_ASSIGN(std::size_t got, Fill(header_, sizeof header_));
    if (got < sizeof kMagic || std::memcmp(header_, kMagic, sizeof kMagic) != 0) {
      return Error(Errc::kParse, name_ + ": not an encrypted Upkeep payload (bad magic)");
    }
    if (got < sizeof header_) {
      return Error(Errc::kVerification,
                   name_ + ": truncated inside the " + std::to_string(kPayloadHeaderBytes) + "-byte header");
    }
    const std::uint16_t version = internal::GetU16(header_ + 8);
    if (version != kFormatVersion) {
      return Error(Errc::kParse, name_ + ": payload format version " + std::to_string(version) + " is not supported");
    }
    if (internal::GetU16(header_ + 10) != 0) return Error(Errc::kParse, name_ + ": unknown payload flags");
    chunk_ = internal::GetU32(header_ + 12);
    if (chunk_ < kMinPayloadChunkBytes || chunk_ > kMaxPayloadChunkBytes) {
      return Error(Errc::kParse, name_ + ": chunk size " + std::to_string(chunk_) + " is outside 4 KiB .. 16 MiB");
    }
    length_ = GetU64(header_ + kLengthOffset);
    if (length_ > kMaxPlaintextBytes) return Error(Errc::kParse, name_ + ": plaintext length out of range");
    std::uint8_t check[kKeyCheckBytes];
    KeyCheck(key_, check);
    if (sodium_memcmp(check, header_ + kKeyCheckOffset, kKeyCheckBytes) != 0) {
      return Error(Errc::kVerification,
                   name_ + ": wrong content key for this payload (or its header's key check was altered)");
    }
    if (crypto_secretstream_xchacha20poly1305_init_pull(&st_.state, header_ + kStreamHeaderOffset, key_.data()) != 0) {
      return Error(Errc::kVerification, name_ + ": invalid stream header");
    }
    sealed_.resize(std::size_t{chunk_} + kPayloadChunkOverhead);
    // The header's length (authenticated as additional data of every chunk) fixes every chunk's
    // size, so a short read is truncation and anything after the FINAL chunk is trailing data.
    chunks_ = length_ / chunk_ + 1;
    started_ = true;
    return OkStatus();
  }

  bool done() const { return index_ == chunks_; }
  std::uint32_t chunk_bytes() const { return chunk_; }
  std::uint64_t plaintext_bytes() const { return length_; }
  std::uint64_t blob_bytes_read() const { return offset_; }

  // Decrypts the next chunk into `out` (room for chunk_bytes()) and returns its plaintext size;
  // after the FINAL chunk, also checks that the blob ends there.
  Expected<std::size_t> Next(std::uint8_t* out) {
    if (!started_ || done()) return Error(Errc::kInternal, name_ + ": no chunk left to decrypt");
    const bool last = index_ + 1 == chunks_;
    const std::size_t want = (last ? static_cast<std::size_t>(length_ % chunk_) : chunk_) + kPayloadChunkOverhead;
    const std::uint64_t at = offset_;
    UPK_TRY_ASSIGN(std::size_t n, Fill(sealed_.data(), want));
    if (n != want) {
      return Error(Errc::kVerification, name_ + ": truncated: ends " + (n == 0 ? "before chunk " : "inside chunk ") +
                                            std::to_string(index_) + " of " + std::to_string(chunks_) + " (at byte " +
                                            std::to_string(at + n) + ")");
    }
    unsigned long long plain_len = 0;
    unsigned char tag = 0;
    if (crypto_secretstream_xchacha20poly1305_pull(&st_.state, out, &plain_len, &tag, sealed_.data(), n, header_,
                                                   kAdBytes) != 0) {
      return Error(Errc::kVerification, name_ + ": chunk " + std::to_string(index_) + " (at byte " + std::to_string(at) +
                                            ") failed authentication: the payload was altered");
    }
    const unsigned char want_tag =
        last ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
    if (tag != want_tag) {
      return Error(Errc::kVerification, name_ + ": chunk " + std::to_string(index_) + " has the wrong tag (" +
                                            (last ? "expected FINAL" : "unexpected FINAL") + ")");
    }
    ++index_;
    if (last) {
      std::uint8_t extra = 0;
      UPK_TRY_ASSIGN(std::size_t trailing, Fill(&extra, 1));
      if (trailing != 0) return Error(Errc::kVerification, name_ + ": trailing data after the final chunk");
    }
    return static_cast<std::size_t>(plain_len);
  }

 private:
  Expected<std::size_t> Fill(std::uint8_t* buf, std::size_t size) {
    UPK_TRY_ASSIGN(std::size_t n, ReadFull(fd_, buf, size, path_));
    if (hasher_) hasher_->Update(std::span<const std::uint8_t>(buf, n));
    offset_ += n;
    return n;
  }

  const ContentKey& key_;
  std::string name_;
  Hasher* hasher_;
  int fd_ = -1;
  std::filesystem::path path_;
  std::uint8_t header_[kPayloadHeaderBytes] = {};
  StreamState st_;
  std::vector<std::uint8_t> sealed_;
  std::uint32_t chunk_ = 0;
  std::uint64_t length_ = 0;
  std::uint64_t chunks_ = 0;
  std::uint64_t index_ = 0;
  std::uint64_t offset_ = 0;
  bool started_ = false;
};

// The plaintext of a blob file, served as it is decrypted; see OpenEncryptedBlob.
//
// One worker thread reads, hashes and decrypts chunk by chunk into a ring of kSlots chunk
// buffers; Read() (the consumer's thread) copies out of them. So the blob's SHA-256 and the
// decryption run beside whatever the consumer does (parsing the tar, hashing entries, writing
// files), and memory stays at kSlots + 1 chunk buffers. Only the worker touches reader_ and
// hasher_ once it runs; slots change hands under mu_.
class EncryptedBlobSource final : public packages::ByteSource {
 public:
  EncryptedBlobSource(int fd, const std::filesystem::path& path, const ContentKey& key, const BlobExpectation& expect)
      : fd_(fd), path_(path), key_(CopyKey(key)), reader_(key_, path.string(), &hasher_), expect_(expect) {}
  ~EncryptedBlobSource() override {
    if (worker_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
      }
      free_cv_.notify_all();
      worker_.join();
    }
    ::close(fd_);
  }
  EncryptedBlobSource(const EncryptedBlobSource&) = delete;
  EncryptedBlobSource& operator=(const EncryptedBlobSource&) = delete;

  // Checks the header on the caller's thread (so open errors come from OpenEncryptedBlob), then
  // starts the worker.
  Status Start() {
    UPK_TRY(reader_.Start(fd_, path_));
    for (int i = 0; i < kSlots; ++i) {
      slots_[i].buf.resize(reader_.chunk_bytes());
      free_.push_back(i);
    }
    try {
      worker_ = std::thread([this] { Work(); });
    } catch (const std::exception& e) {
      return Error(Errc::kInternal, path_.string() + ": cannot start the decrypting thread: " + e.what());
    }
    return OkStatus();
  }

  Expected<std::size_t> Read(std::span<std::uint8_t> buf) override {
    if (error_) return *error_;
    if (ended_ || buf.empty()) return std::size_t{0};
    for (;;) {
      if (cur_ >= 0 && off_ < slots_[cur_].len) {
        const std::size_t n = std::min(buf.size(), slots_[cur_].len - off_);
        std::memcpy(buf.data(), slots_[cur_].buf.data() + off_, n);
        off_ += n;
        position_ += n;
        return n;
      }
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (cur_ >= 0) free_.push_back(cur_);
        free_cv_.notify_one();
        full_cv_.wait(lock, [this] { return !full_.empty(); });
        cur_ = full_.front();
        full_.pop_front();
      }
      off_ = 0;
      const Slot& slot = slots_[cur_];
      if (slot.error) {
        error_ = slot.error;
        return *error_;
      }
      if (slot.end) {
        ended_ = true;
        return std::size_t{0};
      }
    }
  }

  std::uint64_t position() const override { return position_; }

 private:
  static constexpr int kSlots = 3;
  struct Slot {
    std::vector<std::uint8_t> buf;
    std::size_t len = 0;
    bool end = false;  // the blob ended and matched the expectation
    std::optional<Error> error;
  };

  void Work() {
    for (;;) {
      int i = -1;
      {
        std::unique_lock<std::mutex> lock(mu_);
        free_cv_.wait(lock, [this] { return stop_ || !free_.empty(); });
        if (stop_) return;
        i = free_.front();
        free_.pop_front();
      }
      Slot& slot = slots_[i];
      slot.len = 0;
      if (reader_.done()) {
        if (auto s = CheckEnd(); !s) slot.error = s.error();
        else slot.end = true;
      } else if (auto n = reader_.Next(slot.buf.data()); !n.ok()) {
        slot.error = n.error();
      } else {
        slot.len = *n;
      }
      const bool last = slot.end || slot.error.has_value();
      {
        std::lock_guard<std::mutex> lock(mu_);
        full_.push_back(i);
      }
      full_cv_.notify_one();
      if (last) return;
    }
  }

  Status CheckEnd() {
    if (reader_.blob_bytes_read() != expect_.length) {
      return Error(Errc::kVerification, path_.string() + ": blob length " + std::to_string(reader_.blob_bytes_read()) +
                                            ", expected " + std::to_string(expect_.length));
    }
    if (hasher_.FinishHex() != expect_.sha256_hex) {
      return Error(Errc::kVerification, path_.string() + ": blob sha256 mismatch");
    }
    return OkStatus();
  }

  // A copy of the key (it wipes itself), so the caller's key need not outlive the source.
  static ContentKey CopyKey(const ContentKey& key) { return std::move(ContentKey::FromBytes(key.bytes())).value(); }

  int fd_;
  std::filesystem::path path_;
  ContentKey key_;
  Hasher hasher_;
  BlobReader reader_;
  BlobExpectation expect_;

  Slot slots_[kSlots];
  std::mutex mu_;
  std::condition_variable free_cv_, full_cv_;
  std::deque<int> free_, full_;  // slot indexes: for the worker to fill, for Read to drain
  bool stop_ = false;
  std::thread worker_;

  // Consumer side.
  int cur_ = -1;
  std::size_t off_ = 0;
  std::uint64_t position_ = 0;
  bool ended_ = false;
  std::optional<Error> error_;
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
  StreamFiles files;
  UPK_TRY(files.Open(input, output, options.mode));
  BlobReader reader(key, input.string(), nullptr);
  UPK_TRY(reader.Start(files.in(), input));
  std::vector<std::uint8_t> plain(reader.chunk_bytes());
  while (!reader.done()) {
    UPK_TRY_ASSIGN(std::size_t n, reader.Next(plain.data()));
    UPK_TRY(files.Write(plain.data(), n));
  }
  UPK_TRY(files.Commit());
  return reader.plaintext_bytes();
}

Expected<std::unique_ptr<packages::ByteSource>> OpenEncryptedBlob(const std::filesystem::path& blob,
                                                                   const ContentKey& key,
                                                                   const BlobExpectation& expect) {
  BlobExpectation want = expect;
  for (char& c : want.sha256_hex) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (want.sha256_hex.size() != 64 ||
      want.sha256_hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return Error(Errc::kInvalidArgument, blob.string() + ": expected sha256 is not 64 hex digits");
  }
  int fd = ::open(blob.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return Error(e == ENOENT ? Errc::kNotFound : Errc::kIo, blob.string() + ": " + std::strerror(e));
  }
  // From here the source owns the descriptor.
  auto source = std::make_unique<EncryptedBlobSource>(fd, blob, key, want);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return IoError(blob, errno);
  if (!S_ISREG(st.st_mode)) return Error(Errc::kInvalidArgument, blob.string() + ": not a regular file");
  if (static_cast<std::uint64_t>(st.st_size) != want.length) {
    return Error(Errc::kVerification, blob.string() + ": blob length " + std::to_string(st.st_size) + ", expected " +
                                          std::to_string(want.length));
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  UPK_TRY(source->Start());
  return std::unique_ptr<packages::ByteSource>(std::move(source));
}

Expected<packages::PackageReader> OpenEncryptedPackage(const std::filesystem::path& blob, const ContentKey& key,
                                                       const BlobExpectation& expect) {
  UPK_TRY_ASSIGN(auto source, OpenEncryptedBlob(blob, key, expect));
  return packages::PackageReader::OpenSource(std::move(source));
}

}  // namespace upkeep::trust
