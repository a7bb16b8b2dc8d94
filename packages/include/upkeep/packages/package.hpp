// The .upk package file: an uncompressed pax/ustar tar archive laid out as
//
//   1. manifest.json   the manifest's canonical bytes (Manifest::Serialize())
//   2. manifest.sig    {"signatures": [{"keyid": "...", "sig": "<hex>"}]} over exactly those bytes
//   3. payload/<path>  every payload entry, in the manifest's order
//
// so a reader can check the signatures and plan before any payload byte arrives. The manifest
// pins each file's size and SHA-256, so the signatures cover the whole package. See
// docs/package-format.md for the rules and bounds.
//
// Everything here streams through fixed buffers: memory use does not grow with payload size.
// Errors about the package's content are kVerification, kUnsafe or kLimit (exit code 1); failing
// to open or read a file is kIo/kNotFound (exit code 2). No function here throws.
// A PackageReader is single-threaded; distinct readers are independent.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/error.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/packages/manifest.hpp"
#include "upkeep/packages/source.hpp"

namespace upkeep::packages {

inline constexpr std::string_view kManifestEntryName = "manifest.json";
inline constexpr std::string_view kSignatureEntryName = "manifest.sig";
inline constexpr std::string_view kPayloadPrefix = "payload/";
inline constexpr std::uint64_t kMaxSignatureFileBytes = 64u << 10;
inline constexpr std::size_t kMaxSignatures = 256;

// Called with (bytes done, bytes total) as payload bytes are hashed, written or extracted.
using ProgressFn = std::function<void(std::uint64_t done, std::uint64_t total)>;

// One detached signature from manifest.sig.
struct Signature {
  std::string keyid;
  std::string sig_hex;
};

// manifest.sig in and out. Parsing is bounded (kMaxSignatureFileBytes, kMaxSignatures).
Expected<std::vector<Signature>> ParseSignatureFile(std::string_view text);
std::string SerializeSignatureFile(const std::vector<Signature>& signatures);
// One signature per key over `manifest_bytes`.
std::vector<Signature> SignManifestBytes(std::string_view manifest_bytes, const std::vector<PrivateKey>& signers);

// Verifies detached signatures over `manifest_bytes` against `trusted` (distinct key ids;
// `threshold` of them must have a valid signature). Returns the key ids that verified; a shortfall
// is kVerification ("manifest.sig: ..."), bad arguments kInvalidArgument. PackageReader uses it,
// and so does the updater for the manifest a publisher posts beside its encrypted package.
Expected<std::vector<std::string>> VerifyManifestSignatures(std::string_view manifest_bytes,
                                                            const std::vector<Signature>& signatures,
                                                            const std::vector<PublicKey>& trusted,
                                                            std::size_t threshold);

// Checks what a manifest may declare beyond what Manifest::Parse checks, so the layout is safe
// to extract before any payload is read: every symlink target stays inside the payload
// (relative, its ".." components only leading and never climbing above the payload root), and
// no entry lies below a symlink or a file entry.
Status CheckPayloadLayout(const Manifest& manifest);
Status CheckSymlinkTarget(std::string_view link_path, std::string_view target);

// ---------------------------------------------------------------------------------------------
// Reading

// Reads only the first entry (manifest.json) and parses it. No signature check: use it to plan
// or display, never to trust. Refuses a first entry that is not manifest.json, is larger than
// kMaxManifestBytes, is not canonical JSON, or declares an unsafe layout.
Expected<Manifest> ReadPackageManifest(const std::filesystem::path& upk);

// Streaming reader. Open*() reads manifest.json and manifest.sig; the payload stays locked until
// VerifySignatures() succeeded or SkipSignatureCheck() was called. NextEntry()/ReadData() then
// walk the payload, checking each entry against the manifest (name in order, type, mode, size,
// SHA-256, symlink target). After the first error every call returns that error.
class PackageReader {
 public:
  static Expected<PackageReader> OpenFile(const std::filesystem::path& upk);
  // `bytes` must outlive the reader. Used by the fuzzer and by callers holding a small package.
  static Expected<PackageReader> OpenMemory(std::span<const std::uint8_t> bytes);
  // Reads the package from `source` (owned by the reader from now on), pulling it through two
  // fixed 1 MiB buffers. The same checks as OpenFile, including the end-of-archive trailer: once
  // NextEntry() returned nullptr the source was read to its very end (so a source that checks
  // something at its end, like an encrypted blob's digest, has checked it). An error from the
  // source surfaces unchanged (same code and message) from OpenSource/NextEntry/ReadData.
  static Expected<PackageReader> OpenSource(std::unique_ptr<ByteSource> source);

  PackageReader(PackageReader&&) noexcept;
  PackageReader& operator=(PackageReader&&) noexcept;
  ~PackageReader();

  const Manifest& manifest() const;
  const std::string& manifest_bytes() const;
  const std::vector<Signature>& signatures() const;
  // Size of the whole package as stored (file size or buffer size). For OpenSource: the bytes
  // taken from the source so far (read-ahead included), which is the whole package once
  // NextEntry() returned nullptr.
  std::uint64_t package_bytes() const;
  // Key ids the last successful VerifySignatures() accepted; empty when it was not called (or
  // SkipSignatureCheck() was used instead).
  const std::vector<std::string>& signed_by() const;

  // Verifies manifest.sig against `trusted` (distinct key ids; `threshold` of them must have a
  // valid signature). Returns the key ids that verified. Unlocks the payload on success; a
  // failure does not poison the reader.
  Expected<std::vector<std::string>> VerifySignatures(const std::vector<PublicKey>& trusted, std::size_t threshold = 1);
  // Integrity-only reading: unlocks the payload without checking who signed the manifest.
  void SkipSignatureCheck();

  // Advances to the next payload entry (draining and verifying any unread data of the previous
  // one). Returns nullptr once every manifest entry was read and the archive ended cleanly
  // (end-of-archive marker present, nothing but zero padding after it).
  Expected<const PayloadEntry*> NextEntry();
  // The next chunk of the current file entry, valid until the next call. An empty span means the
  // entry ended and its size and SHA-256 matched the manifest.
  Expected<std::span<const std::uint8_t>> ReadData();

  // Payload bytes read so far, and entries started so far.
  std::uint64_t payload_bytes_read() const;
  std::size_t entries_read() const;

  struct Impl;  // opaque; defined in package_reader.cpp

 private:
  explicit PackageReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// What the caller trusts. No keys: integrity only (every digest and size is checked, but not who
// signed the manifest).
struct VerifyOptions {
  std::vector<PublicKey> trusted;
  std::size_t threshold = 1;
};

struct VerifyResult {
  Manifest manifest;
  bool integrity_only = true;          // no trusted keys were given; authorship NOT checked
  std::vector<std::string> signed_by;  // trusted key ids whose signature verified
  std::size_t entries = 0;
  std::uint64_t payload_bytes = 0;
  std::uint64_t package_bytes = 0;
};

// Reads and verifies a whole package: signatures first, then every payload entry.
Expected<VerifyResult> VerifyPackage(const std::filesystem::path& upk, const VerifyOptions& options, ProgressFn progress = {});

// ---------------------------------------------------------------------------------------------
// Writing

// What to pack. The manifest's metadata (name, version, kind, requires, ...) is used as given;
// its payload list is ignored and rebuilt from the source. Exactly one source must be set:
// a directory (walked in byte order of names, parents before children), or an existing archive
// in any format libarchive reads (entries kept in archive order).
struct PackSpec {
  Manifest manifest;
  std::filesystem::path payload_dir;
  std::filesystem::path payload_tar;
};

struct PackedFile {
  std::uint64_t bytes = 0;
  std::string sha256;  // of the whole .upk file, as a blob store addresses it
};

// Writes a package to `out` in two passes: hash every payload entry to fill the manifest, then
// write manifest, signatures and payload (re-hashing to catch input that changed in between).
// The file appears under `out` only when complete (temp sibling, fsync, rename). Refuses device
// nodes, FIFOs, sockets, hard links, set-uid/set-gid/sticky bits, symlinks leaving the payload,
// and paths with "..", each with an error naming the entry. Needs at least one signer.
Expected<Manifest> WritePackage(const PackSpec& spec, const std::vector<PrivateKey>& signers,
                                const std::filesystem::path& out, ProgressFn progress = {},
                                PackedFile* packed = nullptr);

}  // namespace upkeep::packages
