// Byte helpers shared by every part: hex and base64 encoding.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/error.hpp"

namespace upkeep {

using Bytes = std::vector<std::uint8_t>;

std::string ToHex(std::span<const std::uint8_t> data);
inline std::string ToHex(std::string_view data) {
  return ToHex(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()));
}
// Lower- or upper-case hex, even length; anything else is a kParse error.
Expected<Bytes> FromHex(std::string_view hex);
// True when every character is 0-9 or a-f (the form digests, ids and nonces take on the wire).
// With `length`, the size must be exactly that too.
bool IsLowerHex(std::string_view s);
inline bool IsLowerHex(std::string_view s, std::size_t length) { return s.size() == length && IsLowerHex(s); }

// RFC 4648 base64 with padding (the standard alphabet), through libsodium. Decoding is strict:
// no spaces, no missing padding, nothing after the value; over `max_bytes` decoded is kLimit
// (checked on the text length before decoding), anything malformed kParse.
std::string Base64Encode(std::span<const std::uint8_t> data);
inline std::string Base64Encode(std::string_view data) {
  return Base64Encode(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()));
}
Expected<Bytes> Base64Decode(std::string_view text, std::size_t max_bytes);

inline std::span<const std::uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace upkeep
