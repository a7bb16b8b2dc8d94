// The .upkb bundle: header rules, streaming writer, pull reader (bundle.hpp, docs/bundle.md).
#include "upkeep/bundle/bundle.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"

namespace upkeep::bundle {
namespace {

constexpr std::uint8_t kMagic[8] = {'U', 'P', 'K', 'B', 'N', 'D', 'L', 0x01};
constexpr std::size_t kPrefixBytes = 12;  // magic + u32 header length
constexpr std::size_t kChunk = 1u << 20;
constexpr std::size_t kMaxNameBytes = 200;
constexpr std::uint64_t kMaxTrailingCount = 1ull << 30;  // how far we count trailing garbage

Error HeaderError(const std::string& why) { return Error(Errc::kParse, "bundle header: " + why); }

bool IsSafeName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes || name[0] == '.') return false;
  for (char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::uint64_t MaxLength(EntryType t) {
  switch (t) {
    case EntryType::kMetadata: return kMaxMetadataBytes;
    case EntryType::kAssignment: return kMaxAssignmentBytes;
    case EntryType::kBlob: return kMaxBlobBytes;
  }
  return 0;
}

Expected<EntryType> ParseType(const std::string& s) {
  if (s == "metadata") return EntryType::kMetadata;
  if (s == "assignment") return EntryType::kAssignment;
  if (s == "blob") return EntryType::kBlob;
  return Error(Errc::kParse, "unknown type '" + s + "'");
}

std::string Describe(const EntryInfo& e) { return std::string(EntryTypeName(e.type)) + " " + e.name; }

std::string Quote(const std::string& s) {
  // Names in messages come from hostile headers: show only a bounded, printable prefix.
  std::string out;
  for (char c : s.substr(0, 64)) out.push_back((c >= 0x20 && c < 0x7f) ? c : '?');
  if (s.size() > 64) out += "...";
  return "'" + out + "'";
}

Expected<EntryInfo> EntryFromJson(const Json& j, std::size_t i) {
  const std::string where = "entries[" + std::to_string(i) + "]";
  if (!j.is_object()) return HeaderError(where + " is not an object");
  EntryInfo e;
  auto type = GetString(j, "type");
  if (!type.ok()) return HeaderError(where + ": " + type.error().message());
  auto t = ParseType(*type);
  if (!t.ok()) return HeaderError(where + ": " + t.error().message());
  e.type = *t;
  auto name = GetString(j, "name");
  if (!name.ok()) return HeaderError(where + ": " + name.error().message());
  if (!IsSafeName(*name)) {
    return HeaderError(where + ": name " + Quote(*name) +
                       " is not a safe file name ([A-Za-z0-9._-], no leading '.', at most 200 bytes)");
  }
  e.name = *name;
  const std::string what = where + " (" + Describe(e) + ")";
  if (!j.contains("length") || !j["length"].is_number_unsigned()) {
    return HeaderError(what + ": field 'length' must be a non-negative integer");
  }
  e.length = j["length"].get<std::uint64_t>();
  if (e.length > MaxLength(e.type)) {
    return Error(Errc::kLimit, "bundle header: " + what + " is " + std::to_string(e.length) + " bytes, more than " +
                                   std::to_string(MaxLength(e.type)) + " allowed for a " + EntryTypeName(e.type));
  }
  auto sha = GetString(j, "sha256");
  if (!sha.ok()) return HeaderError(what + ": " + sha.error().message());
  if (!IsLowerHex(*sha, 64)) return HeaderError(what + ": field 'sha256' must be 64 lower-case hex digits");
  e.sha256 = *sha;
  if (e.type == EntryType::kBlob && e.name != e.sha256) {
    return HeaderError(what + ": a blob's name must be its SHA-256");
  }
  return e;
}

std::string SerializeHeader(const Header& h) { return h.ToJson().dump(); }

void PutU32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}

// Fills in what an entry source leaves empty. With `hash_files`, a file without a digest is
// hashed (one extra pass); otherwise only its length is needed (sizes don't depend on digests).
Expected<std::vector<EntryInfo>> PrepareEntries(const std::vector<EntrySource>& entries, bool hash_files) {
  std::vector<EntryInfo> out;
  out.reserve(entries.size());
  for (const EntrySource& src : entries) {
    EntryInfo info = src.info;
    if (src.file.empty()) {
      const std::string actual = Sha256Hex(src.data);
      if ((!info.sha256.empty() && info.sha256 != actual) || (info.length != 0 && info.length != src.data.size())) {
        return Error(Errc::kVerification, "bundle entry " + Describe(info) +
                                              ": its data does not match the length or SHA-256 given for it");
      }
      info.length = src.data.size();
      info.sha256 = actual;
    } else if (info.sha256.empty()) {
      if (hash_files) {
        auto d = HashFile(src.file);
        if (!d.ok()) return d.error().Wrap("bundle entry " + Describe(info));
        info.length = d->size;
        info.sha256 = d->sha256_hex;
      } else {
        std::error_code ec;
        const auto size = std::filesystem::file_size(src.file, ec);
        if (ec) return Error(Errc::kIo, "bundle entry " + Describe(info) + ": " + src.file.string() + ": " + ec.message());
        info.length = size;
        info.sha256 = std::string(64, '0');
      }
    }
    if (info.type == EntryType::kBlob && info.name.empty()) info.name = info.sha256;
    out.push_back(std::move(info));
  }
  return out;
}

Expected<Header> BuildHeader(const std::string& bundle_id, SysTime created, const std::vector<std::string>& appliances,
                             std::vector<EntryInfo> entries) {
  Header h;
  h.bundle_id = bundle_id;
  h.created = created;
  h.appliances = appliances;
  h.entries = std::move(entries);
  // The writer applies exactly the reader's rules, so it never writes a bundle the reader refuses.
  auto checked = Header::FromJson(h.ToJson());
  if (!checked.ok()) {
    const Errc code = checked.error().code() == Errc::kLimit ? Errc::kLimit : Errc::kInvalidArgument;
    return Error(code, "bundle to write: " + checked.error().message());
  }
  return h;
}

class PartFile {
 public:
  explicit PartFile(std::filesystem::path out) : out_(std::move(out)), part_(out_.string() + ".part") {}
  ~PartFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!done_) ::unlink(part_.c_str());
  }
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;

  Status Open() {
    fd_ = ::open(part_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0) return Error(Errc::kIo, part_.string() + ": " + std::strerror(errno));
    ::fchmod(fd_, 0600);
    return OkStatus();
  }
  Status Write(std::string_view data) { return WriteAll(fd_, data, part_); }
  Status Commit() {
    if (::fsync(fd_) != 0) return Error(Errc::kIo, part_.string() + ": fsync: " + std::strerror(errno));
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return Error(Errc::kIo, part_.string() + ": close: " + std::strerror(errno));
    if (::rename(part_.c_str(), out_.c_str()) != 0) {
      return Error(Errc::kIo, out_.string() + ": rename: " + std::strerror(errno));
    }
    done_ = true;
    return SyncDirectory(out_.parent_path());
  }

 private:
  std::filesystem::path out_, part_;
  int fd_ = -1;
  bool done_ = false;
};

}  // namespace

const char* EntryTypeName(EntryType t) {
  switch (t) {
    case EntryType::kMetadata: return "metadata";
    case EntryType::kAssignment: return "assignment";
    case EntryType::kBlob: return "blob";
  }
  return "?";
}

std::uint64_t Header::TotalBytes() const {
  std::uint64_t total = kPrefixBytes + SerializeHeader(*this).size();
  for (const auto& e : entries) total += e.length;
  return total;
}

Json Header::ToJson() const {
  Json j = Json::object();
  j["format"] = kFormat;
  j["bundle_id"] = bundle_id;
  j["created"] = FormatTimestamp(created);
  j["appliances"] = appliances;
  Json list = Json::array();
  for (const auto& e : entries) {
    Json o = Json::object();
    o["type"] = EntryTypeName(e.type);
    o["name"] = e.name;
    o["length"] = e.length;
    o["sha256"] = e.sha256;
    list.push_back(std::move(o));
  }
  j["entries"] = std::move(list);
  return j;
}

Expected<Header> Header::FromJson(const Json& json) {
  try {
    if (!json.is_object()) return HeaderError("not a JSON object");
    if (!json.contains("format") || !json["format"].is_number_integer()) {
      return HeaderError("field 'format' is missing");
    }
    if (json["format"].get<std::int64_t>() != kFormat) {
      return HeaderError("format " + json["format"].dump() + " is not supported (this version reads format 1)");
    }
    Header h;
    auto id = GetString(json, "bundle_id");
    if (!id.ok()) return HeaderError(id.error().message());
    if (!IsLowerHex(*id, 32)) return HeaderError("field 'bundle_id' must be 32 lower-case hex digits");
    h.bundle_id = *id;
    auto created = GetString(json, "created");
    if (!created.ok()) return HeaderError(created.error().message());
    auto t = ParseTimestamp(*created);
    if (!t.ok()) return HeaderError("field 'created': " + t.error().message());
    h.created = *t;

    auto appliances = GetArray(json, "appliances");
    if (!appliances.ok()) return HeaderError(appliances.error().message());
    if ((*appliances)->empty() || (*appliances)->size() > kMaxEntries) {
      return HeaderError("field 'appliances' must list 1.." + std::to_string(kMaxEntries) + " appliances");
    }
    std::set<std::string, std::less<>> seen_appliances;
    for (const Json& a : **appliances) {
      if (!a.is_string() || !IsSafeName(a.get_ref<const std::string&>())) {
        return HeaderError("field 'appliances' holds a malformed appliance id");
      }
      const std::string& s = a.get_ref<const std::string&>();
      if (!seen_appliances.insert(s).second) return HeaderError("appliance " + s + " is listed twice");
      h.appliances.push_back(s);
    }

    auto entries = GetArray(json, "entries");
    if (!entries.ok()) return HeaderError(entries.error().message());
    if ((*entries)->size() > kMaxEntries) {
      return Error(Errc::kLimit, "bundle header: " + std::to_string((*entries)->size()) + " entries, more than " +
                                     std::to_string(kMaxEntries));
    }
    std::set<std::pair<EntryType, std::string>> seen;
    bool blobs_started = false;
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < (*entries)->size(); ++i) {
      UPK_TRY_ASSIGN(EntryInfo e, EntryFromJson((**entries)[i], i));
      const std::string what = "entries[" + std::to_string(i) + "] (" + Describe(e) + ")";
      if (!seen.emplace(e.type, e.name).second) return HeaderError(what + " appears twice");
      if (e.type == EntryType::kBlob) {
        blobs_started = true;
      } else if (blobs_started) {
        return HeaderError(what + " comes after a blob (metadata and assignments come first)");
      }
      if (e.type == EntryType::kAssignment && !seen_appliances.contains(e.name)) {
        return HeaderError(what + " is for an appliance the bundle does not list");
      }
      if (e.length > UINT64_MAX - sum) return HeaderError("entry lengths overflow");
      sum += e.length;
      h.entries.push_back(std::move(e));
    }
    return h;
  } catch (const std::exception& e) {
    return HeaderError(e.what());
  }
}

Expected<std::uint64_t> BundleSize(const std::string& bundle_id, SysTime created,
                                   const std::vector<std::string>& appliances, const std::vector<EntrySource>& entries) {
  UPK_TRY_ASSIGN(auto infos, PrepareEntries(entries, /*hash_files=*/false));
  UPK_TRY_ASSIGN(Header h, BuildHeader(bundle_id, created, appliances, std::move(infos)));
  return h.TotalBytes();
}

Expected<Header> WriteBundle(const std::filesystem::path& out, std::string bundle_id, SysTime created,
                             std::vector<std::string> appliances, std::vector<EntrySource> entries,
                             const WriteOptions& options) {
  UPK_TRY_ASSIGN(auto infos, PrepareEntries(entries, /*hash_files=*/true));
  UPK_TRY_ASSIGN(Header h, BuildHeader(bundle_id, created, appliances, std::move(infos)));
  const std::string header_text = SerializeHeader(h);
  if (header_text.size() > kMaxHeaderBytes) {
    return Error(Errc::kLimit, "bundle to write: header of " + std::to_string(header_text.size()) +
                                   " bytes is over the 16 MiB limit");
  }
  const std::uint64_t total = h.TotalBytes();

  PartFile part(out);
  UPK_TRY(part.Open());
  std::uint8_t prefix[kPrefixBytes];
  std::copy(std::begin(kMagic), std::end(kMagic), prefix);
  PutU32(prefix + 8, static_cast<std::uint32_t>(header_text.size()));
  UPK_TRY(part.Write(std::string_view(reinterpret_cast<const char*>(prefix), sizeof prefix)));
  UPK_TRY(part.Write(header_text));
  std::uint64_t written = kPrefixBytes + header_text.size();
  if (options.progress) options.progress(written, total);

  std::vector<std::uint8_t> buffer;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const EntrySource& src = entries[i];
    const EntryInfo& info = h.entries[i];
    if (src.file.empty()) {
      for (std::size_t off = 0; off < src.data.size(); off += kChunk) {
        const auto piece = std::string_view(src.data).substr(off, kChunk);
        UPK_TRY(part.Write(piece));
        written += piece.size();
        if (options.progress) options.progress(written, total);
      }
      continue;
    }
    if (buffer.empty()) buffer.resize(kChunk);
    auto source_or = packages::OpenFileSource(src.file);
    if (!source_or.ok()) return source_or.error().Wrap("bundle entry " + Describe(info));
    packages::ByteSource& source = **source_or;
    Hasher hasher;
    std::uint64_t copied = 0;
    for (;;) {
      UPK_TRY_ASSIGN(std::size_t n, source.Read(buffer));
      if (n == 0) break;
      copied += n;
      if (copied > info.length) {
        return Error(Errc::kIo, "bundle entry " + Describe(info) + ": " + src.file.string() + " is longer than the " +
                                    std::to_string(info.length) + " bytes given for it");
      }
      hasher.Update(std::span<const std::uint8_t>(buffer.data(), n));
      UPK_TRY(part.Write(std::string_view(reinterpret_cast<const char*>(buffer.data()), n)));
      written += n;
      if (options.progress) options.progress(written, total);
    }
    if (copied < info.length) {
      return Error(Errc::kIo, "bundle entry " + Describe(info) + ": " + src.file.string() + " has " +
                                  std::to_string(copied) + " bytes, not the " + std::to_string(info.length) +
                                  " given for it");
    }
    const std::string actual = hasher.FinishHex();
    if (actual != info.sha256) {
      return Error(Errc::kVerification, "bundle entry " + Describe(info) + ": " + src.file.string() +
                                            " has SHA-256 " + actual + ", not " + info.sha256);
    }
  }
  UPK_TRY(part.Commit());
  return h;
}

// ---- Reader ----

Error Reader::Fail(Error e) {
  error_ = e;
  return e;
}

Error Reader::Truncated() const {
  return Error(Errc::kIo, "bundle is truncated: it ends at byte " + std::to_string(offset_) + " of " +
                              std::to_string(total_));
}

Expected<std::size_t> Reader::Fill(std::size_t n) {
  if (buffer_.size() < n) buffer_.resize(n);
  std::size_t got = 0;
  while (got < n) {
    auto r = source_.Read(std::span<std::uint8_t>(buffer_.data() + got, n - got));
    if (!r.ok()) return Fail(r.error());
    if (*r == 0) break;
    got += *r;
  }
  offset_ += got;
  return got;
}

Expected<std::unique_ptr<Reader>> Reader::Open(packages::ByteSource& source) {
  std::unique_ptr<Reader> r(new Reader(source));
  UPK_TRY_ASSIGN(std::size_t got, r->Fill(sizeof kMagic));
  const bool prefix_matches = std::equal(r->buffer_.begin(), r->buffer_.begin() + static_cast<std::ptrdiff_t>(got),
                                         std::begin(kMagic));
  if (got < sizeof kMagic) {
    if (got > 0 && prefix_matches) {
      return Error(Errc::kIo, "bundle is truncated: it ends at byte " + std::to_string(got) + ", inside its magic");
    }
    return Error(Errc::kParse, "not an Upkeep bundle (it is only " + std::to_string(got) + " bytes long)");
  }
  if (!prefix_matches) {
    if (std::equal(r->buffer_.begin(), r->buffer_.begin() + 7, std::begin(kMagic))) {
      return Error(Errc::kParse, "not an Upkeep bundle (format version " + std::to_string(r->buffer_[7]) +
                                     " is not supported; this version reads 1)");
    }
    return Error(Errc::kParse, "not an Upkeep bundle (its first bytes are not \"UPKBNDL\")");
  }
  UPK_TRY_ASSIGN(got, r->Fill(4));
  if (got < 4) {
    return Error(Errc::kIo, "bundle is truncated: it ends at byte " + std::to_string(r->offset_) +
                                ", inside its header length");
  }
  const std::uint32_t len = (std::uint32_t{r->buffer_[0]} << 24) | (std::uint32_t{r->buffer_[1]} << 16) |
                            (std::uint32_t{r->buffer_[2]} << 8) | r->buffer_[3];
  if (len == 0) return Error(Errc::kParse, "bundle header: its length is 0");
  if (len > kMaxHeaderBytes) {
    return Error(Errc::kLimit, "bundle header of " + std::to_string(len) + " bytes is over the 16 MiB limit");
  }
  // The header is read in chunks so a lying length costs no memory before the bytes exist.
  std::string text;
  while (text.size() < len) {
    const std::size_t want = std::min<std::size_t>(kChunk, len - text.size());
    UPK_TRY_ASSIGN(got, r->Fill(want));
    text.append(reinterpret_cast<const char*>(r->buffer_.data()), got);
    if (got < want) {
      return Error(Errc::kIo, "bundle is truncated: it ends at byte " + std::to_string(r->offset_) + ", inside its " +
                                  std::to_string(len) + "-byte header");
    }
  }
  auto json = ParseJson(text);
  if (!json.ok()) return HeaderError(json.error().message());
  UPK_TRY_ASSIGN(r->header_, Header::FromJson(*json));
  // Not header_.TotalBytes(): that re-serialises; the header read may be spelled differently.
  r->total_ = kPrefixBytes + len;
  for (const auto& e : r->header_.entries) r->total_ += e.length;
  return r;
}

Expected<std::optional<EntryInfo>> Reader::Next() {
  if (error_) return *error_;
  if (current_open_) {
    return Error(Errc::kInvalidArgument, "bundle reader: entry " + Describe(header_.entries[next_ - 1]) +
                                             " must be read or skipped before the next one");
  }
  if (next_ < header_.entries.size()) {
    current_open_ = true;
    return std::optional<EntryInfo>(header_.entries[next_++]);
  }
  // After the last entry the source must be at its end.
  UPK_TRY_ASSIGN(std::size_t got, Fill(1));
  if (got == 0) return std::optional<EntryInfo>();
  std::uint64_t extra = got;
  while (extra < kMaxTrailingCount) {
    UPK_TRY_ASSIGN(got, Fill(kChunk));
    if (got == 0) break;
    extra += got;
  }
  return Fail(Error(Errc::kParse, "bundle has " + std::string(extra >= kMaxTrailingCount ? "at least " : "") +
                                      std::to_string(extra) + " bytes after its last entry"));
}

Status Reader::Read(const Sink& sink) {
  if (error_) return *error_;
  if (!current_open_) return Error(Errc::kInvalidArgument, "bundle reader: no current entry (call Next() first)");
  const EntryInfo& e = header_.entries[next_ - 1];
  Hasher hasher;
  std::uint64_t left = e.length;
  while (left > 0) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, left));
    UPK_TRY_ASSIGN(std::size_t got, Fill(want));
    if (got < want) return Fail(Truncated());
    const std::span<const std::uint8_t> chunk(buffer_.data(), got);
    hasher.Update(chunk);
    left -= got;
    if (sink) {
      auto st = sink(std::string_view(reinterpret_cast<const char*>(chunk.data()), chunk.size()));
      if (!st.ok()) return Fail(st.error());
    }
  }
  current_open_ = false;
  const std::string actual = hasher.FinishHex();
  if (actual != e.sha256) {
    return Fail(Error(Errc::kVerification, "bundle entry " + Describe(e) + " is damaged or tampered with (SHA-256 " +
                                               actual + ", the header says " + e.sha256 + ")"));
  }
  return OkStatus();
}

Status Reader::Skip() { return Read(Sink()); }

}  // namespace upkeep::bundle
