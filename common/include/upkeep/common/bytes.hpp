// Byte helpers shared by every part: hex encoding and constant-size digests.
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

inline std::span<const std::uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace upkeep
