// Payload encryption, once per release: a .upk file (any file) encrypted with a content key into
// the blob the update server serves and CDNs cache. Streaming in fixed-size chunks, so memory
// stays at two chunk buffers whatever the file size.
//
// Blob layout (all integers big-endian), see docs/trust.md:
//   0  magic "UPKCRYPT" (8)        8  format version = 1 (u16)     10  flags = 0 (u16)
//   12 chunk size C, plaintext bytes per chunk (u32, 4 KiB .. 16 MiB)
//   16 plaintext length N (u64)
//   24 key check (16): BLAKE2b-128 keyed with the content key over "upkeep payload key check v1"
//   40 crypto_secretstream_xchacha20poly1305 header (24)
//   64 N / C + 1 chunks: each a secretstream message of C plaintext bytes + 17, tagged MESSAGE,
//      except the last, which holds the remaining N mod C bytes (possibly 0) and is tagged FINAL.
//      Every chunk carries header bytes 0..40 as additional data.
// So a blob is 64 + N + 17 * (N / C + 1) bytes, and truncation, reordering, a dropped or added
// chunk, trailing bytes and any altered byte (header included) are all detected. Encrypting
// twice gives different blobs (fresh stream header); encrypt once per release and publish that
// blob's SHA-256 and length in the TUF targets.
//
// Outputs are written to a temporary sibling and linked into place only on success, so a
// failed decrypt leaves nothing behind (and never touches an existing file at the destination).
// Functions are thread-safe; each call uses its own buffers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "upkeep/common/error.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/packages/source.hpp"
#include "upkeep/trust/content_key.hpp"

namespace upkeep::trust {

constexpr std::uint32_t kDefaultPayloadChunkBytes = 1u << 20;
constexpr std::uint32_t kMinPayloadChunkBytes = 4096;
constexpr std::uint32_t kMaxPayloadChunkBytes = 16u << 20;
constexpr std::size_t kPayloadHeaderBytes = 64;
constexpr std::size_t kPayloadChunkOverhead = 17;

struct EncryptOptions {
  std::uint32_t chunk_bytes = kDefaultPayloadChunkBytes;
  unsigned mode = 0644;  // permission bits of the blob
};

struct EncryptedBlobInfo {
  std::uint64_t plaintext_bytes = 0;
  std::uint64_t blob_bytes = 0;  // goes into the TUF target's "length"
  std::string blob_sha256_hex;   // goes into the TUF target's "hashes"
};

// The blob size for a plaintext of `plaintext_bytes` (what EncryptFile will produce).
std::uint64_t EncryptedBlobSize(std::uint64_t plaintext_bytes, std::uint32_t chunk_bytes);

// Encrypts the regular file `input` to `output` (refuses to overwrite an existing output; an
// input that changes size meanwhile is an error). Hashes the blob while writing it, so the TUF
// figures need no second pass.
Expected<EncryptedBlobInfo> EncryptFile(const std::filesystem::path& input, const std::filesystem::path& output,
                                        const ContentKey& key, const EncryptOptions& options = {});

struct DecryptOptions {
  unsigned mode = 0644;  // permission bits of the plaintext file
};

// Decrypts a blob to `output` (the same decrypting code as OpenEncryptedBlob; refuses to overwrite an existing output). Errors: kParse for a
// header that is not an Upkeep blob (or an unknown version/flags/chunk size), kVerification for
// a wrong content key ("wrong content key"), a chunk that fails authentication ("chunk I ...
// altered"), a blob that ends early ("truncated") or has bytes after its FINAL chunk ("trailing
// data"). Returns the plaintext size.
Expected<std::uint64_t> DecryptFile(const std::filesystem::path& input, const std::filesystem::path& output,
                                    const ContentKey& key, const DecryptOptions& options = {});

// ---------------------------------------------------------------------------------------------
// Streaming: verify + decrypt + install in one pass, no plaintext on disk.

// What the TUF target (length, sha256) and the assignment say the blob must be.
struct BlobExpectation {
  std::uint64_t length = 0;
  std::string sha256_hex;  // 64 hex digits (either case)
};

// Reads the blob file in chunks, SHA-256s every blob byte, decrypts chunk by chunk and serves the
// plaintext (memory: one sealed chunk, plus one plaintext chunk only if the caller reads with
// buffers smaller than a chunk). Checked up front: `expect.sha256_hex` well-formed
// (kInvalidArgument), the file's size equals expect.length (kVerification "blob length X,
// expected Y", before any decrypt), the header (as DecryptFile: kParse, "wrong content key").
// While reading: everything DecryptFile reports ("chunk I ... altered", "truncated", "trailing
// data"). At the end, before the final 0 is returned: kVerification "blob length X, expected Y"
// and "blob sha256 mismatch", so a consumer that reads to the end never accepts a blob that
// differs from the expectation. Plaintext served before the end is authenticated chunk by chunk
// but the blob as a whole is only accepted at the end: commit nothing before. The key is copied;
// the source is single-threaded and errors are final.
Expected<std::unique_ptr<packages::ByteSource>> OpenEncryptedBlob(const std::filesystem::path& blob,
                                                                   const ContentKey& key,
                                                                   const BlobExpectation& expect);
// OpenEncryptedBlob + PackageReader::OpenSource. The reader reads the blob to its end before
// NextEntry() returns nullptr, so ExtractFromReader renames into place only after the blob
// length and digest were checked.
Expected<packages::PackageReader> OpenEncryptedPackage(const std::filesystem::path& blob, const ContentKey& key,
                                                       const BlobExpectation& expect);

}  // namespace upkeep::trust
