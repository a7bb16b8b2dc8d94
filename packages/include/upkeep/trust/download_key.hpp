// Download keys: the short token an air-gapped appliance shows its admin, who pastes it into the
// download portal on any internet-connected machine (docs/airgap.md). It says who the appliance
// is, what it has installed, what its clock said and a fresh nonce, signed by the appliance's
// identity key, so the portal can plan for an appliance it has never heard from and bind the
// bundle it builds to exactly this request.
//
// Binary form (all integers big-endian), then RFC 4648 base32 upper-case without padding:
//   "UDK" 0x01                         magic and format version
//   20  appliance id                   the 20 bytes its 32 base32 characters spell ("apl-" implied)
//   i64 issued                         the appliance's clock, Unix seconds (0 .. year 9999)
//   u32 validity                       seconds (60 .. 90 days)
//   16  nonce                          random
//   u8  count, then per package:       at most 64 packages, names sorted and unique
//       u8 len + name (1..255 bytes of ASCII 0x21..0x7e),
//       major, minor, build            each an unsigned LEB128 varint (canonical, <= 999999999)
//   64  ed25519 signature over "upkeep-download-key-v1\0" + every byte above
// (The raw id and the varints keep a 3-package key under 300 characters of text.)
// Text form: "UPK1-" then the base32 in groups of 6 characters joined by '-', a line break
// after every 8 groups. Decoding ignores ASCII whitespace (line breaks a mail client or a
// terminal added), '-' and case, and accepts the text with or without the "UPK1-" prefix.
// The alphabet is QR alphanumeric, so the QR code of the text is compact.
//
// Errors: kParse "download key is damaged: ..." (bad characters, short, trailing bytes, bad
// magic, malformed field: never a crash, whatever the text), kLimit for a text over 4 KiB,
// kVerification "download key signature does not verify for APPLIANCE (damaged or forged)",
// kPolicy for expiry and clock skew (CheckDownloadKeyTime). All functions are pure and
// thread-safe.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/identity.hpp"

namespace upkeep::trust {

constexpr std::size_t kDownloadKeyNonceBytes = 16;
constexpr std::size_t kMaxDownloadKeyText = 4096;
constexpr std::chrono::seconds kMinDownloadKeyValidity{60};
constexpr std::chrono::seconds kMaxDownloadKeyValidity{90 * 24 * 3600};

struct DownloadKey {
  std::string appliance_id;
  InstalledSet installed;
  SysTime issued{};                       // whole seconds
  std::chrono::seconds validity{24 * 3600};
  std::array<std::uint8_t, kDownloadKeyNonceBytes> nonce{};

  SysTime expires() const { return issued + validity; }
  std::string nonce_hex() const;            // 32 lower-case hex: the assignment's "nonce"
  std::string state_digest() const { return StateDigest(installed); }
};

// A decoded key: the fields plus what its signature covers, for a later check against the
// appliance's public key (which the reader finds by key.appliance_id).
struct DecodedDownloadKey {
  DownloadKey key;
  Bytes signed_bytes;  // the domain prefix + binary fields
  Bytes signature;     // 64 bytes
};

// Signs and encodes. kInvalidArgument when the identity is not key.appliance_id's, the
// validity is out of range, or a package name is empty/longer than 255 bytes/not printable ASCII.
Expected<std::string> EncodeDownloadKey(const DownloadKey& key, const ApplianceIdentity& identity);

// Decodes the text form (tolerant as described above); does not check the signature.
Expected<DecodedDownloadKey> DecodeDownloadKey(std::string_view text);

// The signature check against the appliance's public key (whose id must be key.appliance_id).
Status VerifyDownloadKeySignature(const DecodedDownloadKey& decoded, const AppliancePublicKey& appliance);

// Time checks at `now`: kPolicy "download key expired at T (made at T0, valid N h): make a new
// one on the appliance", and, when |issued - now| > max_skew, kPolicy naming the appliance clock
// and NTP: "the appliance's clock is 3h 12m behind this server's (it said T0 when it made the
// key, this server's time is T): set the appliance's clock or enable NTP, then make a new key".
// The measured offset (issued - now, seconds) is returned on success.
Expected<std::int64_t> CheckDownloadKeyTime(const DownloadKey& key, SysTime now, std::chrono::seconds max_skew);

}  // namespace upkeep::trust
