// Download keys: binary form, base32 text form, signature and clock checks (download_key.hpp).
#include "upkeep/trust/download_key.hpp"

#include <cstdlib>
#include <string>

#include "encoding.hpp"
#include "upkeep/common/bytes.hpp"

namespace upkeep::trust {
namespace {

constexpr std::uint8_t kMagic[4] = {'U', 'D', 'K', 0x01};
constexpr std::string_view kDomain("upkeep-download-key-v1\0", 23);
constexpr std::string_view kTextPrefix = "UPK1";
constexpr std::size_t kIdRawBytes = 20;  // "apl-" + 32 base32 characters
constexpr std::size_t kSignatureBytes = 64;
constexpr std::size_t kMaxPackages = 64;
constexpr std::uint32_t kMaxVersionComponent = 999999999;
constexpr std::size_t kGroup = 6;
constexpr std::size_t kGroupsPerLine = 8;
// Keeps time arithmetic and formatting far from overflow: 1970 .. 9999.
constexpr std::int64_t kMaxIssued = 253402300799;

Error Damaged(const std::string& why) { return Error(Errc::kParse, "download key is damaged: " + why); }

bool IsPrintableName(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  for (char c : name) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

void PutVarint(Bytes& out, std::uint32_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<std::uint8_t>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<std::uint8_t>(v));
}

// Bounds-checked cursor over the binary form; every read names what it was reading.
class Cursor {
 public:
  explicit Cursor(std::span<const std::uint8_t> data) : data_(data) {}
  std::size_t left() const { return data_.size() - pos_; }

  Expected<std::span<const std::uint8_t>> Take(std::size_t n, const char* what) {
    if (left() < n) return Damaged(std::string("it is too short (ends inside ") + what + ")");
    auto s = data_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  Expected<std::uint8_t> U8(const char* what) {
    UPK_TRY_ASSIGN(auto s, Take(1, what));
    return s[0];
  }
  Expected<std::uint64_t> U64(const char* what) {
    UPK_TRY_ASSIGN(auto s, Take(8, what));
    std::uint64_t v = 0;
    for (std::uint8_t b : s) v = (v << 8) | b;
    return v;
  }
  Expected<std::uint32_t> U32(const char* what) {
    UPK_TRY_ASSIGN(auto s, Take(4, what));
    return internal::GetU32(s.data());
  }
  // Canonical LEB128 of at most 5 bytes (no redundant trailing zero group).
  Expected<std::uint32_t> Varint(const char* what) {
    std::uint64_t v = 0;
    for (int i = 0; i < 5; ++i) {
      UPK_TRY_ASSIGN(std::uint8_t b, U8(what));
      v |= std::uint64_t{b & 0x7fu} << (7 * i);
      if ((b & 0x80) == 0) {
        if (i > 0 && b == 0) return Damaged(std::string("malformed ") + what);
        if (v > kMaxVersionComponent) return Damaged(std::string(what) + " is out of range");
        return static_cast<std::uint32_t>(v);
      }
    }
    return Damaged(std::string("malformed ") + what);
  }

 private:
  std::span<const std::uint8_t> data_;
  std::size_t pos_ = 0;
};

std::string FormatOffset(std::int64_t seconds) {
  std::int64_t s = seconds < 0 ? -seconds : seconds;
  const std::int64_t h = s / 3600, m = (s % 3600) / 60, sec = s % 60;
  if (h > 0) return std::to_string(h) + "h " + std::to_string(m) + "m";
  if (m > 0) return std::to_string(m) + "m " + std::to_string(sec) + "s";
  return std::to_string(sec) + "s";
}

std::string FormatHours(std::chrono::seconds d) {
  const auto s = d.count();
  if (s % 3600 == 0) return std::to_string(s / 3600) + " h";
  return std::to_string(s / 60) + " min";
}

}  // namespace

std::string DownloadKey::nonce_hex() const { return ToHex(std::span<const std::uint8_t>(nonce.data(), nonce.size())); }

Expected<std::string> EncodeDownloadKey(const DownloadKey& key, const ApplianceIdentity& identity) {
  if (identity.appliance_id() != key.appliance_id) {
    return Error(Errc::kInvalidArgument, "download key for " + key.appliance_id + " cannot be signed by the identity of " +
                                             identity.appliance_id());
  }
  if (key.validity < kMinDownloadKeyValidity || key.validity > kMaxDownloadKeyValidity) {
    return Error(Errc::kInvalidArgument, "download key validity " + std::to_string(key.validity.count()) +
                                             " s is outside 60 s .. 90 days");
  }
  const std::int64_t issued_s = key.issued.time_since_epoch().count();
  if (issued_s < 0 || issued_s > kMaxIssued) {
    return Error(Errc::kInvalidArgument, "download key time is out of range (1970 .. 9999)");
  }
  if (key.installed.size() > kMaxPackages) {
    return Error(Errc::kInvalidArgument, "download key can list at most 64 packages, not " +
                                             std::to_string(key.installed.size()));
  }
  // The id's 32 base32 characters are exactly 20 bytes: carrying those keeps the text short.
  UPK_TRY_ASSIGN(Bytes id_raw, internal::Base32Decode(std::string_view(key.appliance_id).substr(4)));
  if (id_raw.size() != kIdRawBytes) return Error(Errc::kInternal, "appliance id does not decode to 20 bytes");

  Bytes bin;
  bin.reserve(512);  // also keeps g++ 12's -Warray-bounds from misjudging the inserts below at -O2
  for (std::uint8_t m : kMagic) bin.push_back(m);
  for (std::uint8_t b : id_raw) bin.push_back(b);
  const auto issued = static_cast<std::uint64_t>(key.issued.time_since_epoch().count());
  for (int i = 7; i >= 0; --i) bin.push_back(static_cast<std::uint8_t>(issued >> (8 * i)));
  std::uint8_t u32[4];
  internal::PutU32(u32, static_cast<std::uint32_t>(key.validity.count()));
  bin.insert(bin.end(), u32, u32 + 4);
  bin.insert(bin.end(), key.nonce.begin(), key.nonce.end());
  bin.push_back(static_cast<std::uint8_t>(key.installed.size()));
  for (const auto& [name, version] : key.installed) {
    if (!IsPrintableName(name)) {
      return Error(Errc::kInvalidArgument, "download key: package name '" + name +
                                               "' must be 1..255 printable ASCII characters without spaces");
    }
    if (version.major > kMaxVersionComponent || version.minor > kMaxVersionComponent ||
        version.build > kMaxVersionComponent) {
      return Error(Errc::kInvalidArgument, "download key: version of " + name + " is out of range");
    }
    bin.push_back(static_cast<std::uint8_t>(name.size()));
    bin.insert(bin.end(), name.begin(), name.end());
    PutVarint(bin, version.major);
    PutVarint(bin, version.minor);
    PutVarint(bin, version.build);
  }
  std::string message(kDomain);
  message.append(reinterpret_cast<const char*>(bin.data()), bin.size());
  const Bytes sig = identity.Sign(message);
  bin.insert(bin.end(), sig.begin(), sig.end());

  const std::string b32 = internal::Base32Upper(bin);
  std::string text = std::string(kTextPrefix) + "-";
  for (std::size_t i = 0, group = 0; i < b32.size(); i += kGroup, ++group) {
    if (group > 0) text.push_back(group % kGroupsPerLine == 0 ? '\n' : '-');
    text.append(b32, i, kGroup);
  }
  return text;
}

Expected<DecodedDownloadKey> DecodeDownloadKey(std::string_view text) {
  if (text.size() > kMaxDownloadKeyText) {
    return Error(Errc::kLimit, "download key text is " + std::to_string(text.size()) + " bytes, more than the " +
                                   std::to_string(kMaxDownloadKeyText) + " a key can be");
  }
  std::string clean;
  clean.reserve(text.size());
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == '-') continue;
    clean.push_back((c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c);
  }
  // The binary form starts with "UDK", whose base32 starts with 'K': the prefix is unambiguous.
  if (clean.starts_with(kTextPrefix)) clean.erase(0, kTextPrefix.size());
  if (clean.empty()) return Damaged("it is empty");
  auto bin_or = internal::Base32Decode(clean);
  if (!bin_or.ok()) return Damaged(bin_or.error().message());
  const Bytes& bin = *bin_or;

  Cursor cur(bin);
  UPK_TRY_ASSIGN(auto magic, cur.Take(4, "the magic"));
  if (!std::equal(magic.begin(), magic.end(), std::begin(kMagic))) {
    return Damaged("it does not start like an Upkeep download key (UDK version 1)");
  }
  DecodedDownloadKey out;
  UPK_TRY_ASSIGN(auto id_raw, cur.Take(kIdRawBytes, "the appliance id"));
  out.key.appliance_id = "apl-" + internal::Base32Lower(id_raw);
  UPK_TRY_ASSIGN(std::uint64_t issued, cur.U64("the time"));
  if (issued > static_cast<std::uint64_t>(kMaxIssued)) return Damaged("its time is out of range");
  out.key.issued = SysTime(std::chrono::seconds(static_cast<std::int64_t>(issued)));
  UPK_TRY_ASSIGN(std::uint32_t validity, cur.U32("the validity"));
  out.key.validity = std::chrono::seconds(validity);
  if (out.key.validity < kMinDownloadKeyValidity || out.key.validity > kMaxDownloadKeyValidity) {
    return Damaged("validity " + std::to_string(validity) + " s is outside 60 s .. 90 days");
  }
  UPK_TRY_ASSIGN(auto nonce, cur.Take(kDownloadKeyNonceBytes, "the nonce"));
  std::copy(nonce.begin(), nonce.end(), out.key.nonce.begin());
  UPK_TRY_ASSIGN(std::uint8_t count, cur.U8("the package count"));
  if (count > kMaxPackages) return Damaged("it lists " + std::to_string(count) + " packages (at most 64)");
  std::string previous;
  for (std::uint8_t i = 0; i < count; ++i) {
    UPK_TRY_ASSIGN(std::uint8_t len, cur.U8("a package name"));
    UPK_TRY_ASSIGN(auto raw, cur.Take(len, "a package name"));
    std::string name(raw.begin(), raw.end());
    if (!IsPrintableName(name)) return Damaged("package " + std::to_string(i + 1) + " has a malformed name");
    // Sorted and unique, as the encoder writes them: one binary form per key.
    if (i > 0 && name <= previous) return Damaged("package names are not in order or repeat ('" + name + "')");
    packages::Version v;
    UPK_TRY_ASSIGN(v.major, cur.Varint("a version"));
    UPK_TRY_ASSIGN(v.minor, cur.Varint("a version"));
    UPK_TRY_ASSIGN(v.build, cur.Varint("a version"));
    out.key.installed.emplace(name, v);
    previous = std::move(name);
  }
  if (cur.left() < kSignatureBytes) return Damaged("it is too short (ends inside the signature)");
  if (cur.left() > kSignatureBytes) {
    return Damaged(std::to_string(cur.left() - kSignatureBytes) + " unexpected bytes after its signature");
  }
  const std::size_t body = bin.size() - kSignatureBytes;
  out.signed_bytes.assign(kDomain.begin(), kDomain.end());
  out.signed_bytes.insert(out.signed_bytes.end(), bin.begin(), bin.begin() + static_cast<std::ptrdiff_t>(body));
  out.signature.assign(bin.begin() + static_cast<std::ptrdiff_t>(body), bin.end());
  return out;
}

Status VerifyDownloadKeySignature(const DecodedDownloadKey& decoded, const AppliancePublicKey& appliance) {
  const std::string& id = decoded.key.appliance_id;
  if (appliance.appliance_id() != id) {
    return Error(Errc::kVerification, "download key is for " + id + ", not for " + appliance.appliance_id() +
                                          " whose key was given");
  }
  const std::string_view message(reinterpret_cast<const char*>(decoded.signed_bytes.data()),
                                 decoded.signed_bytes.size());
  if (decoded.signature.size() != kSignatureBytes || !message.starts_with(kDomain) ||
      !appliance.signing_key().Verify(message, decoded.signature)) {
    return Error(Errc::kVerification, "download key signature does not verify for " + id + " (damaged or forged)");
  }
  return OkStatus();
}

Expected<std::int64_t> CheckDownloadKeyTime(const DownloadKey& key, SysTime now, std::chrono::seconds max_skew) {
  const std::int64_t offset = (key.issued - now).count();
  if (now >= key.expires()) {
    return Error(Errc::kPolicy, "download key expired at " + FormatTimestamp(key.expires()) + " (made at " +
                                    FormatTimestamp(key.issued) + ", valid " + FormatHours(key.validity) +
                                    "): make a new one on the appliance");
  }
  if (std::llabs(offset) > max_skew.count()) {
    return Error(Errc::kPolicy, "the appliance's clock is " + FormatOffset(offset) +
                                    (offset < 0 ? " behind" : " ahead of") + " this server's (it said " +
                                    FormatTimestamp(key.issued) + " when it made the key, this server's time is " +
                                    FormatTimestamp(now) + "): set the appliance's clock or enable NTP, then make a new key");
  }
  return offset;
}

}  // namespace upkeep::trust
