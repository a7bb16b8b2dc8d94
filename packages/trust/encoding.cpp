#include "encoding.hpp"
#include "upkeep/common/bytes.hpp"

#include <sodium.h>

#include <mutex>

namespace upkeep::trust::internal {

void EnsureSodium() {
  static std::once_flag once;
  std::call_once(once, [] {
    // sodium_init returns 1 when already initialised; only -1 is a failure, and then nothing
    // in this library could work safely.
    if (sodium_init() < 0) __builtin_trap();
  });
}

namespace {

std::string Base32With(std::span<const std::uint8_t> data, const char* kAlphabet) {
  std::string out;
  out.reserve((data.size() * 8 + 4) / 5);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (std::uint8_t b : data) {
    buffer = (buffer << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out.push_back(kAlphabet[(buffer >> (bits - 5)) & 31u]);
      bits -= 5;
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(buffer << (5 - bits)) & 31u]);
  return out;
}

}  // namespace

std::string Base32Lower(std::span<const std::uint8_t> data) {
  return Base32With(data, "abcdefghijklmnopqrstuvwxyz234567");
}

std::string Base32Upper(std::span<const std::uint8_t> data) {
  return Base32With(data, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
}

Expected<Bytes> Base32Decode(std::string_view text) {
  // Lengths 1, 3 and 6 (mod 8) leave bits that no byte string encodes to.
  const std::size_t rem = text.size() % 8;
  if (rem == 1 || rem == 3 || rem == 6) {
    return Error(Errc::kParse, "base32 text has an impossible length (" + std::to_string(text.size()) + ")");
  }
  Bytes out;
  out.reserve(text.size() * 5 / 8);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    std::uint32_t v;
    if (c >= 'A' && c <= 'Z') {
      v = static_cast<std::uint32_t>(c - 'A');
    } else if (c >= 'a' && c <= 'z') {
      v = static_cast<std::uint32_t>(c - 'a');
    } else if (c >= '2' && c <= '7') {
      v = static_cast<std::uint32_t>(c - '2') + 26;
    } else {
      return Error(Errc::kParse, "character " + std::to_string(i + 1) + " is not base32");
    }
    buffer = ((buffer << 5) | v) & 0xffffu;
    bits += 5;
    if (bits >= 8) {
      out.push_back(static_cast<std::uint8_t>(buffer >> (bits - 8)));
      bits -= 8;
    }
  }
  if (bits > 0 && (buffer & ((1u << bits) - 1)) != 0) return Error(Errc::kParse, "base32 text has stray trailing bits");
  return out;
}

void WipeString(std::string& s) {
  if (!s.empty()) sodium_memzero(s.data(), s.size());
}

void WipeJsonStrings(Json& value) {
  if (value.is_string()) {
    WipeString(value.get_ref<std::string&>());
  } else if (value.is_structured()) {
    for (auto& child : value) WipeJsonStrings(child);
  }
}

void PutU16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

void PutU32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}

std::uint16_t GetU16(const std::uint8_t* p) { return static_cast<std::uint16_t>((p[0] << 8) | p[1]); }

std::uint32_t GetU32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

bool IsSha256Hex(std::string_view s) { return IsLowerHex(s, 64); }

}  // namespace upkeep::trust::internal
