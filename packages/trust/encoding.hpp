// Internal helpers of upkeep_trust: base32/base64 text forms, big-endian integers, wiping JSON
// strings that held secrets, and libsodium initialisation. Not a public header.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep::trust::internal {

// sodium_init() once per process; safe from any thread.
void EnsureSodium();

// RFC 4648 base32, lower case, no padding.
std::string Base32Lower(std::span<const std::uint8_t> data);
// The same with the upper-case alphabet (download keys: QR alphanumeric mode).
std::string Base32Upper(std::span<const std::uint8_t> data);
// Decodes unpadded RFC 4648 base32 in either case. Refuses (kParse) characters outside the
// alphabet, impossible lengths and non-zero trailing bits, so every byte string has exactly one
// text form.
Expected<Bytes> Base32Decode(std::string_view text);

// RFC 4648 base64 with padding: the one implementation lives in common (bytes.hpp).
using ::upkeep::Base64Decode;
using ::upkeep::Base64Encode;

// Overwrites every string in a JSON value (recursively) with zeros, before it is freed.
void WipeJsonStrings(Json& value);
// Overwrites a string's bytes with zeros.
void WipeString(std::string& s);

void PutU16(std::uint8_t* p, std::uint16_t v);
void PutU32(std::uint8_t* p, std::uint32_t v);
std::uint16_t GetU16(const std::uint8_t* p);
std::uint32_t GetU32(const std::uint8_t* p);

// True when s is exactly 64 lower-case hex characters (a SHA-256 digest as TUF writes it).
bool IsSha256Hex(std::string_view s);

}  // namespace upkeep::trust::internal
