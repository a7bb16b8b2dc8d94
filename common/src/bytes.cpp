#include "upkeep/common/bytes.hpp"

#include <sodium.h>

#include <mutex>

namespace upkeep {

std::string ToHex(std::span<const std::uint8_t> data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (std::uint8_t b : data) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xf]);
  }
  return out;
}

static int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Expected<Bytes> FromHex(std::string_view hex) {
  if (hex.size() % 2 != 0) return Error(Errc::kParse, "hex string has odd length");
  Bytes out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return Error(Errc::kParse, "invalid hex character");
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return out;
}

namespace {
void EnsureSodium() {
  static std::once_flag once;
  // sodium_init returns 1 when already initialised; only -1 is a failure, and then no
  // libsodium function could be used safely.
  std::call_once(once, [] {
    if (sodium_init() < 0) __builtin_trap();
  });
}
}  // namespace

std::string Base64Encode(std::span<const std::uint8_t> data) {
  EnsureSodium();
  const std::size_t len = sodium_base64_ENCODED_LEN(data.size(), sodium_base64_VARIANT_ORIGINAL);
  std::string out(len, '\0');
  sodium_bin2base64(out.data(), len, data.data(), data.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(len - 1);  // drop the terminating NUL libsodium writes
  return out;
}

Expected<Bytes> Base64Decode(std::string_view text, std::size_t max_bytes) {
  EnsureSodium();
  if (text.size() > (max_bytes / 3 + 1) * 4) {
    return Error(Errc::kLimit, "base64 text longer than " + std::to_string(max_bytes) + " bytes allow");
  }
  Bytes out(text.size() / 4 * 3 + 3);
  std::size_t n = 0;
  const char* end = nullptr;
  if (sodium_base642bin(out.data(), out.size(), text.data(), text.size(), nullptr, &n, &end,
                        sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != text.data() + text.size()) {
    return Error(Errc::kParse, "not valid base64");
  }
  if (n > max_bytes) return Error(Errc::kLimit, "base64 value larger than " + std::to_string(max_bytes) + " bytes");
  out.resize(n);
  return out;
}

}  // namespace upkeep
