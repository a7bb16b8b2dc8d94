// Secret bytes that wipe themselves: private keys, content keys, derived keys.
//
// A SecretBytes owns a fixed-size buffer that is zeroed (sodium_memzero) when it is destroyed,
// assigned over or moved from, so a secret never outlives its owner in freed memory. It is
// move-only on purpose: a copy would be one more place to wipe. Not thread-safe; give each
// thread its own or guard it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace upkeep::trust {

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(std::size_t size) : bytes_(size, 0) {}
  explicit SecretBytes(std::span<const std::uint8_t> data) : bytes_(data.begin(), data.end()) {}
  ~SecretBytes() { Wipe(); }

  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  SecretBytes(SecretBytes&& other) noexcept : bytes_(std::move(other.bytes_)) { other.bytes_.clear(); }
  SecretBytes& operator=(SecretBytes&& other) noexcept {
    if (this != &other) {
      Wipe();
      bytes_ = std::move(other.bytes_);
      other.bytes_.clear();
    }
    return *this;
  }

  std::uint8_t* data() { return bytes_.data(); }
  const std::uint8_t* data() const { return bytes_.data(); }
  std::size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }
  std::span<const std::uint8_t> span() const { return {bytes_.data(), bytes_.size()}; }

  // Zeroes the bytes and leaves the buffer empty.
  void Wipe();

 private:
  std::vector<std::uint8_t> bytes_;
};

}  // namespace upkeep::trust
