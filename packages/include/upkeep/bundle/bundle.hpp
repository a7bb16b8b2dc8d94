// The .upkb bundle: one file carrying everything an air-gapped appliance needs for an update
// (docs/bundle.md): the TUF metadata (every root version from the one it trusts to the newest,
// timestamp, snapshot, targets), one director-signed assignment per appliance it is for (one
// for a single appliance, several for a cluster), and the encrypted packages the assignments
// name. Nothing in the container itself is trusted: every entry is verified by what it is (TUF
// signatures, the assignment's signature, blob hashes pinned by the assignment); the per-entry
// SHA-256 in the header only tells tampering and truncation apart early and clearly.
//
// Layout:
//   8 bytes  "UPKBNDL" 0x01
//   u32 BE   header length (1 .. 16 MiB)
//   header   JSON object: {"format": 1, "bundle_id": 32 hex, "created": RFC 3339,
//            "appliances": [ids], "entries": [{"type", "name", "length", "sha256"}, ...]}
//   entries  their bytes, concatenated in header order; nothing after the last one.
// Entry types and names:
//   "metadata"   name = the file name under /repo/metadata ("3.root.json", "timestamp.json",
//                "7.snapshot.json", "7.targets.json", delegated "7.ROLE.json"); <= 5 MB each
//   "assignment" name = the appliance id; the signed envelope; <= 1 MiB
//   "blob"       name = the blob's SHA-256 (64 hex, equal to "sha256"); <= 64 GiB
// Rules the reader enforces: names are unique per type and safe as file names ([A-Za-z0-9._-],
// no leading '.', <= 200 bytes), every "metadata" and "assignment" entry comes before the first
// "blob", at most 10,000 entries, lengths add up without overflow.
//
// Both sides stream in constant memory whatever the size: the writer copies sources through one
// 1 MiB buffer (hashing as it goes), the reader hands each entry to a sink in chunks of at most
// 1 MiB. Neither is thread-safe; neither keeps global state.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/source.hpp"

namespace upkeep::bundle {

constexpr std::uint32_t kFormat = 1;
constexpr std::size_t kMaxHeaderBytes = 16u << 20;
constexpr std::size_t kMaxEntries = 10000;
constexpr std::uint64_t kMaxMetadataBytes = 5000000;
constexpr std::uint64_t kMaxAssignmentBytes = 1u << 20;
constexpr std::uint64_t kMaxBlobBytes = 64ull << 30;

enum class EntryType { kMetadata, kAssignment, kBlob };
const char* EntryTypeName(EntryType t);

struct EntryInfo {
  EntryType type = EntryType::kBlob;
  std::string name;
  std::uint64_t length = 0;
  std::string sha256;  // 64 lower-case hex
};

struct Header {
  std::string bundle_id;  // 32 lower-case hex
  SysTime created{};
  std::vector<std::string> appliances;
  std::vector<EntryInfo> entries;

  std::uint64_t TotalBytes() const;  // the whole file: magic, length, header JSON, entries
  Json ToJson() const;
  static Expected<Header> FromJson(const Json& json);  // every rule above; errors name the entry
};

// What the writer puts in one entry: bytes in memory (metadata, assignments) or a file (blobs).
struct EntrySource {
  EntryInfo info;          // type and name; length and sha256 are filled from `data` when empty
  std::string data;        // used when `file` is empty
  std::filesystem::path file;  // read front to back; must be info.length bytes with info.sha256
};

struct WriteOptions {
  // (bytes written, total) after each chunk; may be empty.
  std::function<void(std::uint64_t, std::uint64_t)> progress;
};

// Writes the bundle to `out` atomically: into "<out>.part" (0600), fsync'd, renamed. A file
// source that turns out shorter, longer or with another SHA-256 than its info says fails the
// write (kIo/kVerification naming the entry) and leaves no file behind. header.entries is
// filled from `entries`. Returns the header as written.
Expected<Header> WriteBundle(const std::filesystem::path& out, std::string bundle_id, SysTime created,
                             std::vector<std::string> appliances, std::vector<EntrySource> entries,
                             const WriteOptions& options = {});

// The size WriteBundle will produce for these entries (for Content-Length and free-space checks).
Expected<std::uint64_t> BundleSize(const std::string& bundle_id, SysTime created,
                                   const std::vector<std::string>& appliances, const std::vector<EntrySource>& entries);

// Pull reader over a ByteSource (a file on a USB stick, an upload being received).
// Errors: kParse "not an Upkeep bundle (...)" / "bundle header: ..." (bad magic, format, JSON,
// rules), kLimit (header too large), kIo "bundle is truncated: it ends at byte N of M" when the
// source ends early, kVerification "bundle entry TYPE NAME is damaged or tampered with (SHA-256
// ...)", kParse "bundle has N bytes after its last entry" when more follows. Any error is final.
class Reader {
 public:
  using Sink = std::function<Status(std::string_view chunk)>;

  // Reads and checks the magic and the header.
  static Expected<std::unique_ptr<Reader>> Open(packages::ByteSource& source);

  const Header& header() const { return header_; }

  // The next entry's info, or nullopt after the last one (then it checks the source is at its
  // end). The previous entry must have been read or skipped.
  Expected<std::optional<EntryInfo>> Next();
  // Streams the current entry to `sink` (chunks <= 1 MiB), then checks its length and SHA-256.
  // A sink error stops the read and is returned as is.
  Status Read(const Sink& sink);
  // Reads past the current entry (still hashed: a damaged entry is reported even when skipped).
  Status Skip();

 private:
  explicit Reader(packages::ByteSource& source) : source_(source) {}
  // Reads up to n bytes into buffer_ (fewer only at the source's end); errors are final.
  Expected<std::size_t> Fill(std::size_t n);
  Error Fail(Error e);
  Error Truncated() const;

  packages::ByteSource& source_;
  Header header_;
  std::size_t next_ = 0;
  bool current_open_ = false;
  std::optional<Error> error_;     // set by the first failure: every later call returns it
  std::uint64_t offset_ = 0;       // bytes consumed from the source
  std::uint64_t total_ = 0;        // the whole bundle's size, from the header
  std::vector<std::uint8_t> buffer_;  // one chunk (<= 1 MiB), allocated on first use
};

}  // namespace upkeep::bundle
